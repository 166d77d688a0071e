"""Following another node's session from the engine: replay after ``since``, then live.

How it works: one :class:`RemoteTopic` per followed topic reads its stream for every client of
this node that follows it, so that a hundred followers cost one engine read, not a hundred
(the fan-out is the hub's, :meth:`~hived.hub.Hub.push`). It keeps a cursor (the last seq it
read) and reads after it (``XREAD … <cursor>-0``, blocking a while when there is nothing new).
Entry ids are seqs, so every seam is exact. A client joins with its ``since``
(:meth:`RemoteTopic.join`): it is fed the range up to the topic's cursor (``XRANGE``), then
becomes a member, with no await in between, and from then on gets what the topic reads; each
member remembers the last seq it was given, so nothing reaches it twice. Where the stream does
not reach back far enough (trimmed, or not yet caught up after the engine lost its data) the
missing seqs are read from the owning node (``fill``, a forwarded ``session.events``). A
member leaves when its subscriber is gone or overflowed, or on :meth:`RemoteTopic.leave`; the
topic stops reading once it has no member.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from hived.cluster.engine import ENGINE_ERRORS, Engine, retry_delay_s
from hived.cluster.keys import entry_id, entry_seq
from hived.hub import Hub, Subscriber

log = logging.getLogger(__name__)

Fill = Callable[[int, int], Awaitable[list[tuple[int, str]]]]
"""``(after, upto)`` → the owner's ``(seq, frame)`` pairs in between, ascending."""

READ_BLOCK_MS: Final = 1000
"""How long one read waits for news; members are checked between reads."""
READ_COUNT: Final = 1024


class RemoteTopic:
    """One topic of another node, read from ``stream`` for every member (see the module doc)."""

    def __init__(self, engine: Engine, stream: str, hub: Hub, fill: Fill, cursor: int) -> None:
        self._engine = engine
        self._stream = stream
        self._hub = hub
        self._fill = fill
        self.cursor = cursor
        """The last seq read from the stream (or filled)."""
        self.members: dict[Subscriber, int] = {}
        """Each member and the last seq it was given."""
        self.serving = False
        """Whether a task runs :meth:`serve` (its owner's business)."""

    async def join(self, sub: Subscriber, since: int) -> None:
        """Feed ``sub`` everything after ``since`` up to the cursor, then make it a member."""
        while since < self.cursor:
            pairs = await self._read(since, self.cursor)
            if not pairs:
                since = self.cursor  # kept nowhere: the caller said recovered false if it knew
                break
            if not self._hub.push(sub, [frame for _, frame in pairs]):
                return
            since = pairs[-1][0]
        self.members[sub] = since  # no await since the last check of the cursor

    def leave(self, sub: Subscriber) -> None:
        self.members.pop(sub, None)

    async def _read(self, after: int, upto: int) -> list[tuple[int, str]]:
        """The stream's pairs in ``(after, upto]``, holes filled from the owner."""
        entries = await self._engine.xrange(
            self._stream, entry_id(after + 1), entry_id(upto), count=READ_COUNT
        )
        return await self._contiguous(after, entries)

    async def _contiguous(self, after: int, entries: Any) -> list[tuple[int, str]]:
        pairs: list[tuple[int, str]] = []
        cursor = after
        for entry in entries:
            try:
                seq = entry_seq(str(entry.identifier))
            except ValueError as exc:
                log.warning(
                    "cluster: %s: skipped an entry hived did not write: %s", self._stream, exc
                )
                continue
            if seq <= cursor:
                continue
            if seq > cursor + 1:
                for filled, frame in await self._fill(cursor, seq - 1):
                    if filled == cursor + 1:
                        pairs.append((filled, frame))
                        cursor = filled
                if cursor < seq - 1:
                    log.warning(
                        "cluster: %s: seqs %d..%d are kept nowhere",
                        self._stream,
                        cursor + 1,
                        seq - 1,
                    )
            pairs.append((seq, str(entry.field_values.get("f", ""))))
            cursor = seq
        return pairs

    async def serve(self) -> None:
        """Read the stream for the members until none is left (or cancelled)."""
        failures = 0
        while self.members:
            try:
                got = await self._engine.xread(
                    {self._stream: entry_id(self.cursor) if self.cursor > 0 else "0-0"},
                    count=READ_COUNT,
                    block=READ_BLOCK_MS,
                )
                pairs = await self._contiguous(self.cursor, (got or {}).get(self._stream, ()))
            except ENGINE_ERRORS as exc:
                failures += 1
                if failures == 1:
                    log.warning("cluster: cannot follow %s (%s); retrying", self._stream, exc)
                self._deliver([])
                await trio.sleep(retry_delay_s(failures))
                continue
            failures = 0
            if pairs:
                self.cursor = pairs[-1][0]
            self._deliver(pairs)

    def _deliver(self, pairs: list[tuple[int, str]]) -> None:
        """Push ``pairs`` to every member (what it lacks of them); drop members that are gone."""
        frames = [frame for _, frame in pairs]
        last = pairs[-1][0] if pairs else None
        for sub, given in list(self.members.items()):
            if pairs and given >= pairs[0][0]:
                mine = [frame for seq, frame in pairs if seq > given]
            else:
                mine = frames
            if not self._hub.push(sub, mine):
                del self.members[sub]
            elif last is not None:
                self.members[sub] = max(given, last)
