"""Where the hub keeps events older than its in-memory ring.

The hub calls :meth:`History.record` for every event it publishes (synchronously, with the
event's frame text already encoded) and :meth:`History.read` when a subscriber resumes from a
``since`` older than the hub's ring. The SQLite store implements this interface;
:class:`MemoryHistory` implements it in memory, for tests and for a daemon that keeps nothing.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import trio

from hived.core.events import Event


class History(Protocol):
    """The event history behind the hub.

    Every method but :meth:`read` is called from the hub's hot path, on the trio thread, and
    must return at once. ``read`` must return every event that was ``record``-ed, including
    events not yet written to disk: the hub asks it for events that have just left its ring.

    A history may also offer ``async def wait_writable(self) -> None``, returning once it can
    take more events; :meth:`hived.hub.Hub.wait_writable` awaits it when present.
    And ``def forgotten(self, session_id: str) -> str | None``: when a session was forgotten
    (``session.forget``), so that a subscription to its topic says so after a restart too.
    """

    def last_seqs(self) -> dict[str, int]:
        """The last seq kept per topic, so that the hub continues each topic's counter."""
        ...

    def record(self, event: Event, frame: str) -> None:
        """Keep one published event and its frame text (an event made from an agent's output
        carries its place in the spool: ``event.mark``); never blocks."""
        ...

    async def read(self, topic: str, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
        """``(seq, frame text)`` of ``topic``'s events with ``after < seq <= upto``, ascending,
        at most ``limit``.

        The seqs come with the frames so that the hub never parses a frame (up to 1 MiB) to
        learn its seq.
        """
        ...

    def oldest_seq(self, topic: str) -> int | None:
        """The smallest seq still kept for ``topic``; None when nothing is kept."""
        ...


@attrs.define
class _Kept:
    first: int
    """The seq of ``frames[0]``; seqs are contiguous, as the hub records them."""
    frames: list[str] = attrs.Factory(list)


@attrs.define
class MemoryHistory:
    """A :class:`History` in memory: the last ``keep`` events per topic, or every event if None.

    It trims in steps, so a topic holds between ``keep`` and ``2 * keep - 1`` events; what it
    holds it serves. Nothing survives the process. ``read`` checkpoints once, like a store that
    must await its worker thread would, so code tested against it sees the same interleavings.
    """

    keep: int | None = None
    _topics: dict[str, _Kept] = attrs.field(factory=dict, init=False)

    def last_seqs(self) -> dict[str, int]:
        return {topic: kept.first + len(kept.frames) - 1 for topic, kept in self._topics.items()}

    def record(self, event: Event, frame: str) -> None:
        kept = self._topics.get(event.topic)
        if kept is None:
            kept = self._topics[event.topic] = _Kept(first=event.seq)
        kept.frames.append(frame)
        # Trimming in steps keeps its cost O(1) per event on average.
        if self.keep is not None and len(kept.frames) >= 2 * self.keep:
            drop = len(kept.frames) - self.keep
            del kept.frames[:drop]
            kept.first += drop

    async def read(self, topic: str, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
        await trio.lowlevel.checkpoint()
        kept = self._topics.get(topic)
        if kept is None:
            return []
        first = kept.first
        start = max(after + 1, first) - first
        stop = min(upto - first + 1, start + limit, len(kept.frames))
        return list(zip(range(first + start, first + stop), kept.frames[start:stop], strict=True))

    def oldest_seq(self, topic: str) -> int | None:
        kept = self._topics.get(topic)
        return kept.first if kept is not None and kept.frames else None
