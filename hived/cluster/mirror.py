"""The mirror: this node's topics, copied into the engine's streams in order, never doubled.

How it works: :class:`Tap` stands between the hub and the store. Every event the hub records
goes to the store as before and marks its topic *dirty* for the mirror — a set insertion, so
publishing never waits for the engine. :meth:`Mirror.serve` takes dirty topics one at a time
and sends what the engine lacks, read back from the store (which answers from memory for what
it has not written yet), in pages through :data:`~hived.cluster.keys.MIRROR_SCRIPT`, which takes
an entry only at ``top + 1``. Its answer carries the stream's ``top``, which becomes the
topic's cursor: a duplicate or a gap only moves the cursor, and the next page starts from it.

What the mirror does not know it asks: a topic seen for the first time (after a start, or once
the engine is back) is probed first. A stream whose top is *ahead* of this node (its store lost
its last events in a crash and gives their seqs out again) or whose history cannot be made
contiguous (the store no longer keeps what the stream lacks) is reset: deleted, and made again
from the store with a new epoch, so that clients resuming with the old epoch re-read. A stream
with no meta (a new one, or an engine that lost its data) takes its first entry at the oldest
seq the store keeps. An engine that is down costs nothing but a retry loop: every topic stays
dirty and is caught up, in order, when the engine answers again.

The ``sessions`` topic also holds what other nodes' sessions did (``data.node`` names their
node); only this node's own events are mirrored, so its stream's seqs grow with gaps: it is
mirrored in the script's monotonic mode.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any, Final

import orjson
import trio

from hived.cluster.engine import ENGINE_ERRORS, Engine, retry_delay_s
from hived.cluster.keys import (
    MIRROR_SCRIPT,
    SESSIONS_TOPIC,
    Keys,
    MirrorAnswer,
    Mode,
    Status,
    mirror_args,
)
from hived.core.events import Event
from hived.history import History

log = logging.getLogger(__name__)

EPOCH_LIMIT: Final = 1 << 53
PAGE_EVENTS: Final = 256
"""Events sent to the engine in one script call."""


def new_epoch() -> int:
    """A random epoch for a new stream: positive, and exact as a JSON number (< 2**53)."""
    return secrets.randbelow(EPOCH_LIMIT - 1) + 1


class Tap:
    """A :class:`~hived.history.History` that passes everything to ``inner`` and tells
    ``recorded`` which event was kept (synchronously: it must not block)."""

    def __init__(self, inner: History, recorded: Callable[[Event], None]) -> None:
        self._inner = inner
        self._recorded = recorded

    def last_seqs(self) -> dict[str, int]:
        return self._inner.last_seqs()

    def record(self, event: Event, frame: str) -> None:
        self._inner.record(event, frame)
        self._recorded(event)

    async def read(self, topic: str, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
        return await self._inner.read(topic, after, upto, limit)

    def oldest_seq(self, topic: str) -> int | None:
        return self._inner.oldest_seq(topic)

    async def wait_writable(self) -> None:
        wait = getattr(self._inner, "wait_writable", None)
        if wait is not None:
            await wait()
        else:
            await trio.lowlevel.checkpoint()


def is_foreign(data: Any, me: str) -> bool:
    """Whether a ``sessions`` event is another node's, shown here (not mirrored back)."""
    return isinstance(data, dict) and data.get("node") not in (None, me)


class Mirror:
    """Copies this node's topics into the engine (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        keys: Keys,
        node: str,
        history: History,
        last_seq: Callable[[str], int],
        mirrored: Callable[[str], None] = lambda topic: None,
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._node = node
        self._history = history
        self._last_seq = last_seq
        self._mirrored = mirrored
        """Called after a topic was brought up to date (the node refreshes its summaries)."""
        self._script = engine.register_script(MIRROR_SCRIPT)
        self._dirty: dict[str, None] = {}
        self._cursor: dict[str, int] = {}
        """Per topic: the stream's top as the engine last said (-1: no stream); absent:
        unknown, probe first."""
        self._wake = trio.Event()
        self._syncing: str | None = None
        self._progress = trio.Event()
        """Set (and replaced) after each try at a topic."""
        self.connected = False
        """Whether the last call to the engine succeeded."""
        self.sent = 0
        """Events the engine took from this node."""

    def recorded(self, event: Event) -> None:
        """The :class:`Tap`'s callback: ``event`` was kept; its topic is dirty."""
        if event.topic == SESSIONS_TOPIC and is_foreign(event.data, self._node):
            return
        self.mark(event.topic)

    def mark(self, topic: str) -> None:
        """Make the mirror look at ``topic`` (never waits)."""
        self._dirty[topic] = None
        self._wake.set()

    def forget_cursors(self, topics: list[str]) -> None:
        """The engine may have lost its data: probe every topic again and mark them dirty."""
        self._cursor.clear()
        for topic in topics:
            self.mark(topic)

    def epoch_known(self, topic: str) -> bool:
        return topic in self._cursor

    async def wait_mirrored(self, topic: str) -> None:
        """Until the engine has everything of ``topic`` that was recorded so far."""
        while topic in self._dirty or self._syncing == topic:
            await self._progress.wait()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Mirror dirty topics until cancelled; an engine that is down is retried."""
        task_status.started()
        failures = 0
        while True:
            if not self._dirty:
                self._wake = trio.Event()
                await self._wake.wait()
            # The lifecycle first: the node says it is alive only once that one is mirrored.
            topic = SESSIONS_TOPIC if SESSIONS_TOPIC in self._dirty else next(iter(self._dirty))
            del self._dirty[topic]
            self._syncing = topic
            try:
                await self._sync(topic)
            except (*ENGINE_ERRORS, ValueError) as exc:  # ValueError: an answer not the script's
                self._dirty[topic] = None
                self._cursor.clear()
                self._tried()
                failures += 1
                if self.connected or failures == 1:
                    log.warning("cluster: the engine does not answer (%s); mirroring waits", exc)
                self.connected = False
                await trio.sleep(retry_delay_s(failures))
                continue
            self._tried()
            if not self.connected:
                log.info("cluster: mirroring to the engine")
            self.connected = True
            failures = 0
            self._mirrored(topic)

    def _tried(self) -> None:
        self._syncing = None
        self._progress.set()
        self._progress = trio.Event()

    async def _call(self, topic: str, start_ok: bool, pairs: list[tuple[int, str]]) -> MirrorAnswer:
        mode = Mode.MONOTONIC if topic == SESSIONS_TOPIC else Mode.STRICT
        minid = self._history.oldest_seq(topic) or 0
        args = mirror_args(self._node, new_epoch(), mode, start_ok, minid if pairs else 0, pairs)
        keys = [self._keys.stream(topic, self._node), self._keys.meta(topic, self._node)]
        answer = MirrorAnswer.parse(await self._script(keys=keys, args=args))
        self.sent += max(0, len(pairs)) if answer.status is Status.OK else 0
        return answer

    async def _reset(self, topic: str, why: str) -> None:
        log.warning("cluster: %s: %s; making its stream again with a new epoch", topic, why)
        await self._engine.delete(
            [self._keys.stream(topic, self._node), self._keys.meta(topic, self._node)]
        )

    async def _sync(self, topic: str) -> None:
        upto = self._last_seq(topic)
        cursor = self._cursor.get(topic)
        if cursor is None:
            cursor = (await self._call(topic, False, [])).top
            if cursor > upto:
                await self._reset(topic, f"the engine has seq {cursor}, this node only {upto}")
                cursor = -1
        self._cursor[topic] = cursor
        read = max(cursor, 0)
        """The last seq read from the store (above the stream's top in the monotonic mode)."""
        while read < upto:
            pairs = await self._history.read(topic, read, upto, PAGE_EVENTS)
            if not pairs:
                return  # nothing kept in between: nothing to mirror
            last_read = pairs[-1][0]
            if topic == SESSIONS_TOPIC:
                pairs = [(seq, f) for seq, f in pairs if not _foreign_frame(f, self._node)]
            elif cursor >= 0 and pairs[0][0] != cursor + 1:
                await self._reset(topic, f"the store no longer keeps seq {cursor + 1}")
                self._cursor[topic] = cursor = -1
                read = 0
                continue
            if pairs:
                answer = await self._call(topic, cursor < 0, pairs)
                if answer.status is Status.GAP:
                    # The engine lost the stream meanwhile, or is behind: start from its top.
                    self._cursor[topic] = cursor = answer.top
                    read = max(cursor, 0)
                    continue
                self._cursor[topic] = cursor = answer.top
            read = max(last_read, cursor)


def _foreign_frame(frame: str, me: str) -> bool:
    try:
        event = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return False
    return isinstance(event, dict) and is_foreign(event.get("data"), me)
