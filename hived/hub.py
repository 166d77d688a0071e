"""The hub: topics, per-topic seq, fan-out to bounded subscriber queues, replay with ``since``.

How it works: :meth:`Hub.publish` is synchronous and is the hot path. It gives the event the
topic's next seq, encodes it once (:func:`~hived.core.events.encode_event`'s text, built
faster), appends that text to the topic's ring (the last ``ring_size`` frames, a cache in front
of the history), hands it to the :class:`~hived.history.History`, and appends the same ``str``
object to the queue of every subscriber of the topic, waking a writer that waits. A subscriber
whose queue is full — ``queue_size`` frames, or ``queue_bytes`` of them (a frame counts as its
length, as in the rings; a lone frame larger than that still fits an empty queue) — is
*overflowed*: it is dropped from every topic and its connection closes with 4008; the client
resumes with ``since``, so it loses nothing. The bytes are not added up per delivery (that
doubled a delivery's cost): each subscriber knows how many more frames of up to
:data:`FAST_FRAME_BYTES` fit both bounds (its *limit*), so that a publish of such a frame
checks one count; the queue's bytes are summed, in C, only from the limit on and for larger
frames, each frame once.

A connection's sender calls :meth:`Subscriber.receive_batch`, which takes everything queued at
once: one await per batch, not per event (DESIGN §6). A sender that waits there has nothing in
hand, so a frame published to it after a quiet gap (:data:`BURST_GAP_S` since the last publish
ended) skips the queue: the subscriber's ``send_now`` writes it to the socket from the
publishing task (as ``websockets.broadcast`` does) and the sender sleeps on. At a steady rate
each delivery is then one ``send``, with no task switch in between (which is what the last of
many subscribers waits for) nor after (a woken sender would find nothing to send). A publish
within the gap queues its frame and wakes the sender, which takes it and whatever is published
until it runs as one batch: a burst, and lines that arrive together because the daemon fell
behind, still go out in batches. An idle connection's sender may *park* instead of waiting
(:meth:`Subscriber.park`): no task waits, and whatever would wake it (a publish within a
burst, :meth:`Subscriber.wake`, an overflow) calls the connection back to start one.

:meth:`Hub.subscribe` with ``since`` *chases* the topic: it keeps a cursor (the last seq it
queued) and feeds the subscriber from the history while the cursor is older than the ring, then
from the ring, as fast as the writer drains. The moment the rest of the ring fits in the queue
it queues it and makes the subscriber live, with no await in between: no gap and no duplicate
at the seam, and no buffer of live frames, since the ring and the history already hold them.

Rules:

- **since past the end.** A ``since`` greater than the topic's last seq comes from a client
  that saw events this hub no longer has (a daemon killed within the store's sync window loses
  its last events, and then hands out their seqs again): the subscriber is live from now and
  the answer is ``recovered: false`` with the real ``last_seq``, so that the client resets its
  cursor instead of dropping the new events as duplicates (``reset: true``). ``since`` equal to
  the last seq is caught up (``recovered: true``).
- **Across a crash.** A history may number the daemon's runs (``epoch``) and keep, for a run
  that ended uncleanly, where each topic stood on disk (its *fence*, ``fence(topic, epoch)``).
  A client resuming with the ``epoch`` of its earlier subscribe result and a ``since`` past
  that run's fence saw events that were lost, whose seqs were handed out again: it is treated
  like a ``since`` past the end (live from now, ``recovered: false``, ``reset: true``), even
  when the topic has grown past ``since`` meanwhile. A ``since`` at or below the fence is
  resumed exactly as usual.
- **Ring memory.** The frames of all rings together take at most ``rings_max_bytes`` (64 MiB
  by default). A frame counts as its length: its size for the ASCII text most frames are
  (CPython adds ~50 bytes an object, and stores other text in 2 or 4 bytes a character).
  Past the bound, the rings of the topics published to least recently are dropped whole;
  when only the publishing topic's ring is left, its oldest frames go. A topic whose ring is
  gone keeps its seq counter, and a replay reads from the history what the ring held.
  Without a history (a ring-only hub) what was dropped is gone: a replay that needs it says
  ``recovered: false``. Each frame enters and leaves a ring once: O(1) per publish.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from itertools import islice
from math import inf
from typing import Any, Final

import attrs
import trio
from orjson import dumps

from hived.core.errors import RequestError
from hived.core.events import Event, SpoolMark, utc_timestamp
from hived.history import History, MemoryHistory

__all__ = ["History", "Hub", "HubStats", "MemoryHistory", "SubscribeResult", "Subscriber"]

log = logging.getLogger(__name__)

HISTORY_PAGE_MAX: Final = 1024
"""Most frames asked of the history in one read during a replay."""
RINGS_MAX_BYTES: Final = 64 << 20
"""The default bound of the memory taken by the frames of all topics' rings together."""
QUEUE_BYTES: Final = 16 << 20
"""The default bound of the frames queued for one subscriber, in bytes."""
BURST_GAP_S: Final = 0.0005
"""A publish that begins less than this after the last one ended is part of a burst: a frame
for a waiting sender is queued and the sender woken, to send what follows as one batch. After
a longer gap the frame is written at once (``send_now``) and the sender sleeps on: at a steady
rate, waking it would only find nothing to send. Measured from the end of the last publish,
not its start, so that lines that arrive together go out in batches however long each
publish takes (a fan-out to many slow sockets)."""
JSON_NAMES_MAX: Final = 4096
"""Most names whose JSON text the hub keeps (see :class:`_JsonNames`)."""
FAST_FRAME_BYTES: Final = 4096
"""Frames up to this long are queued by a count check alone while under a subscriber's limit
(see the module docstring); longer ones have their bytes checked."""


@attrs.frozen
class SubscribeResult:
    """The answer to a subscribe request (the wire's ``result`` payload)."""

    topic: str
    recovered: bool
    """False when some events after ``since`` are no longer kept, or ``since`` is past the
    topic's last seq (seqs were handed out again after a crash)."""
    last_seq: int
    """The topic's seq at the subscribe request; the replay covers at least up to it."""
    epoch: int = 0
    """The daemon run's number in the history (0 without one): what a resume passes back."""
    reset: bool = False
    """``since`` named events that are no longer the topic's (lost in a crash): nothing was
    replayed, the subscriber is live from ``last_seq``, which the client takes as its own."""


@attrs.frozen
class HubStats:
    """Counters for the admin channel."""

    topics: int
    events_published: int
    subscribers: int
    """Subscribers the hub feeds now (made, and neither removed nor overflowed)."""
    subscribers_closed_slow: int
    """Subscribers dropped because their queue overflowed."""
    ring_bytes: int
    """The length of the frames in all topics' rings, at most ``rings_max_bytes``."""


class Subscriber:
    """One connection's queue of frames, shared by all its topics.

    Made by :meth:`Hub.subscriber`. ``topics`` is the set of topics it is subscribed to (read
    only); ``depth`` the number of frames queued now, ``depth_bytes`` their length. When a
    publish finds no room in the queue — ``queue_size`` frames, or a frame that would take it
    past ``queue_bytes`` (unless it is empty) — ``overflowed`` turns True, the queue is emptied
    and the hub stops feeding it: the connection closes with 4008.

    ``send_now``, when given, delivers a frame at once without awaiting (it writes to the
    socket) and says whether it did; a live publish tries it when the subscriber's task waits
    with nothing in hand, and queues the frame when it returns False (see :meth:`Hub.publish`).

    ``on_overflow``, when given, is called (synchronously, from the publishing task) the moment
    the queue overflows: its connection may be stuck in a send that never ends (a client that
    stopped reading), where :meth:`receive_batch` would never be reached to learn of it.
    """

    __slots__ = (
        "_bytes",
        "_counted",
        "_drained",
        "_frames",
        "_limit",
        "_waiter",
        "bound",
        "bound_bytes",
        "on_overflow",
        "overflowed",
        "send_now",
        "topics",
    )

    def __init__(
        self,
        queue_size: int,
        send_now: Callable[[str], bool] | None = None,
        on_overflow: Callable[[], None] | None = None,
        queue_bytes: int = QUEUE_BYTES,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size: expected an integer ≥ 1, got {queue_size}")
        if queue_bytes < 1:
            raise ValueError(f"queue_bytes: expected an integer ≥ 1, got {queue_bytes}")
        self.bound: Final = queue_size
        self.bound_bytes: Final = queue_bytes
        self._bytes = 0
        """The length of ``_frames[:_counted]``: the rest is summed when needed."""
        self._counted = 0
        self._limit = 0
        """While the queue is shorter, a frame of at most :data:`FAST_FRAME_BYTES` fits it."""
        self.send_now = send_now
        self.on_overflow = on_overflow
        self.topics: set[str] = set()
        self.overflowed = False
        self._frames: list[str] = []
        self._waiter: trio.lowlevel.Task | Callable[[], None] | None = None
        """The task waiting in :meth:`receive_batch`, or what to call instead of waking one
        while the subscriber is parked (:meth:`park`); None while its receiver is busy."""
        self._drained: trio.Event | None = None
        self._empty()

    @property
    def depth(self) -> int:
        return len(self._frames)

    @property
    def depth_bytes(self) -> int:
        frames, counted = self._frames, self._counted
        if counted < len(frames):
            self._bytes += sum(map(len, frames[counted:]))
            self._counted = len(frames)
        return self._bytes

    def _empty(self) -> None:
        self._frames = []
        self._bytes = self._counted = 0
        self._limit = min(self.bound, self.bound_bytes // FAST_FRAME_BYTES)

    def _relimit(self) -> None:
        """Recompute the limit from the queue's bytes (after frames were added other than by
        the count check)."""
        room = max(self.bound_bytes - self.depth_bytes, 0)
        self._limit = min(self.bound, len(self._frames) + room // FAST_FRAME_BYTES)

    def _admit(self, frame: str, size: int) -> bool:
        """Queue ``frame`` (``size`` long) if it fits both bounds, checking its bytes."""
        frames = self._frames
        if len(frames) >= self.bound or (frames and self.depth_bytes + size > self.bound_bytes):
            return False
        frames.append(frame)
        self._relimit()
        return True

    def _fitting(self, frames: Iterable[str], most: int) -> list[str]:
        """The first of ``frames`` (at most ``most``) that the queue has room for in bytes —
        the first anyway when the queue is empty, so that a replay always moves on."""
        room = self.bound_bytes - self.depth_bytes
        taken: list[str] = []
        for frame in islice(frames, most):
            size = len(frame)
            if size > room and (taken or self._frames):
                break
            room -= size
            taken.append(frame)
        return taken

    def _queue(self, frames: list[str]) -> None:
        self._frames.extend(frames)
        self._relimit()

    async def receive_batch(self) -> list[str]:
        """Wait until a frame is queued, the queue overflows or :meth:`wake` is called; then
        take every queued frame (none after an overflow, maybe none after a wake-up).

        Call it from one task at a time (the connection's sender). Waking it up is how that
        task is told of other work (a reply to send, the connection ending) without a second
        task or a cancel scope per wait.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._frames or self.overflowed:
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
        frames = self._frames
        if frames:
            self._empty()
            self._release_replays()
        return frames

    @property
    def waiting(self) -> bool:
        """A task waits in :meth:`receive_batch`."""
        return isinstance(self._waiter, trio.lowlevel.Task)

    def wake(self) -> None:
        """Make a waiting :meth:`receive_batch` return (with the frames queued, if any), or
        call a parked subscriber's ``on_wake``."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if isinstance(waiter, trio.lowlevel.Task):
                trio.lowlevel.reschedule(waiter)
            else:
                waiter()

    def park(self, on_wake: Callable[[], None]) -> bool:
        """Say that no task will wait in :meth:`receive_batch` until ``on_wake`` is called
        (once: by the next publish to it, :meth:`wake`, or its overflow), so that an idle
        connection needs no task of its own for it. False, and nothing done, when frames are
        queued, it overflowed, or a task waits."""
        if self._frames or self.overflowed or self._waiter is not None:
            return False
        self._waiter = on_wake
        return True

    def _abort_wait(self, _: Any) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _release_replays(self) -> None:
        """Wake the replays waiting for room in the queue (or for news of being called off)."""
        if self._drained is not None:
            self._drained.set()
            self._drained = None

    async def _wait_drained(self) -> None:
        if self._drained is None:
            self._drained = trio.Event()
        await self._drained.wait()


@attrs.define(eq=False)
class _Chase:
    """One replay in progress (see :meth:`Hub.subscribe`)."""

    cursor: int
    """The last seq queued."""
    limit: int
    """The subscriber overflows when the topic's seq runs further than this ahead of cursor."""
    gap: bool = False
    """Set when some events after ``since`` were no longer kept."""


class _JsonNames(dict[str | None, str]):
    """orjson's text of the names in frames (topics, kinds, session ids), made once each: a
    publish builds its frame around them. At most :data:`JSON_NAMES_MAX` are kept."""

    def __missing__(self, name: str | None) -> str:
        if len(self) >= JSON_NAMES_MAX:
            self.clear()
        text = self[name] = dumps(name).decode()
        return text


@attrs.define(eq=False)
class _Topic:
    name: str
    seq: int
    ring: deque[str] = attrs.Factory(deque)
    """The last frames; ``ring[-1]`` has seq ``seq``, and seqs are contiguous."""
    live: dict[Subscriber, None] = attrs.Factory(dict)
    """Subscribers fed directly (a dict: ordered, O(1) removal)."""
    chasing: dict[Subscriber, _Chase] = attrs.Factory(dict)
    """Subscribers still replaying, not yet live."""

    @property
    def ring_first(self) -> int:
        """The seq of ``ring[0]`` (``seq + 1`` when the ring is empty)."""
        return self.seq - len(self.ring) + 1


class Hub:
    """Topics and their subscribers; see the module docstring for how it works.

    Call every method from the trio thread. ``history`` keeps what is older than the ring (the
    last ``ring_size`` frames per topic, all rings together at most ``rings_max_bytes``); with
    None the ring is all there is. ``clock`` tells the gaps between publishes (seconds).
    """

    def __init__(
        self,
        history: History | None = None,
        ring_size: int = 1024,
        rings_max_bytes: int = RINGS_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ring_size < 1:
            raise ValueError(f"ring_size: expected an integer ≥ 1, got {ring_size}")
        if rings_max_bytes < 0:
            raise ValueError(f"rings_max_bytes: expected an integer ≥ 0, got {rings_max_bytes}")
        self._history = history
        self._clock = clock
        self._published_at = -inf
        """When the last publish ended (``clock``): what :data:`BURST_GAP_S` is counted from."""
        self._ring_size = ring_size
        self._rings_max_bytes = rings_max_bytes
        self._rings_bytes = 0
        self._topics: dict[str, _Topic] = {}
        self._json = _JsonNames()
        self._recent: OrderedDict[str, _Topic] = OrderedDict()
        """The topics whose ring holds frames, published to least recently first."""
        self._newest: _Topic | None = None
        """The topic published to last, while its ring holds frames (last in ``_recent``)."""
        self._subscribers: set[Subscriber] = set()
        self.observer: Callable[[Event], None] | None = None
        """Called with every event published (live, never a replay) once the history has it:
        the notifier (DESIGN §12), whose outbox rows then commit with the event."""
        self._published = 0
        self._closed_slow = 0
        wait = getattr(history, "wait_writable", None)
        self._history_wait: Callable[[], Awaitable[None]] | None = (
            wait if inspect.iscoroutinefunction(wait) else None
        )
        fence = getattr(history, "fence", None)
        self._fence: Callable[[str, int], Awaitable[int | None]] | None = (
            fence if inspect.iscoroutinefunction(fence) else None
        )
        self.epoch: int = getattr(history, "epoch", 0)
        """This daemon run's number in the history (0 without one)."""
        self._forgotten: dict[str, str] = {}
        self._history_forgotten: Callable[[str], str | None] | None = getattr(
            history, "forgotten", None
        )
        if history is not None:
            for name, seq in history.last_seqs().items():
                self._topics[name] = _Topic(name, seq)

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(name, 0)
        return topic

    def publish(
        self,
        topic: str,
        kind: str,
        data: Mapping[str, Any],
        session: str | None = None,
        mark: SpoolMark | None = None,
    ) -> Event:
        """Stamp, encode once, keep and fan out one event; never awaits. ``mark``: the agent
        spool position the event stands for, kept with it (DESIGN §11)."""
        t = self._topics.get(topic) or self._topic(topic)
        t.seq = seq = t.seq + 1
        ts = utc_timestamp()
        names = self._json
        # encode_event(event), byte for byte (a test holds it), at half its cost: the names'
        # JSON is made once, a timestamp needs none, and no dict is built around the data.
        frame = (
            f'{{"type":"event","topic":{names[topic]},"seq":{seq},"ts":"{ts}",'
            f'"kind":{names[kind]},"session":{names[session]},"data":{dumps(data).decode()}}}'
        )
        event = Event(topic, seq, ts, kind, session, data, mark)
        size = len(frame)
        ring = t.ring
        if len(ring) == self._ring_size:
            self._rings_bytes -= len(ring.popleft())
        ring.append(frame)
        self._rings_bytes += size
        if t is not self._newest:
            # Most publishes go to the topic published to last, and skip this.
            try:
                self._recent.move_to_end(topic)
            except KeyError:
                self._recent[topic] = t
            self._newest = t
        if self._rings_bytes > self._rings_max_bytes:
            self._evict(t)
        if self._history is not None:
            self._history.record(event, frame)
        if self.observer is not None:
            self.observer(event)
        self._published += 1
        slow: list[Subscriber] | None = None
        fast = size <= FAST_FRAME_BYTES
        quiet: bool | None = None
        for sub in t.live:
            waiter = sub._waiter
            if waiter is not None:
                # It waits with nothing in hand (so nothing queued): after a quiet gap the
                # frame goes out now, ahead of nothing, and the sender sleeps on. Within a
                # burst it is queued and the sender woken, so that what follows goes out in
                # one batch (see BURST_GAP_S).
                if quiet is None:
                    quiet = self._clock() - self._published_at >= BURST_GAP_S
                send_now = sub.send_now
                if quiet and send_now is not None and send_now(frame):
                    continue
                sub._waiter = None
                if isinstance(waiter, trio.lowlevel.Task):
                    trio.lowlevel.reschedule(waiter)
                else:
                    waiter()  # a parked sender: started again
                sub._frames.append(frame)  # to an empty queue: it fits
                if not fast:
                    sub._relimit()
                continue
            frames = sub._frames
            if fast and len(frames) < sub._limit:
                frames.append(frame)
            elif sub._admit(frame, size):
                pass
            elif slow is None:
                slow = [sub]
            else:
                slow.append(sub)
        if t.chasing:
            for sub, chase in t.chasing.items():
                if seq - chase.cursor > chase.limit:
                    slow = [sub] if slow is None else [*slow, sub]
        if slow is not None:
            for sub in slow:
                self._overflow(sub)
        self._published_at = self._clock()
        return event

    def _evict(self, publishing: _Topic) -> None:
        """Drop the least recently published rings, then the oldest frames of ``publishing``."""
        recent = self._recent
        while self._rings_bytes > self._rings_max_bytes and len(recent) > 1:
            _, t = recent.popitem(last=False)
            # Summed when dropped rather than kept per topic, which would cost every publish.
            self._rings_bytes -= sum(map(len, t.ring))
            t.ring.clear()
        ring = publishing.ring
        while self._rings_bytes > self._rings_max_bytes and ring:
            self._rings_bytes -= len(ring.popleft())
        if not ring:
            del recent[publishing.name]
            self._newest = None

    def subscriber(
        self,
        queue_size: int,
        send_now: Callable[[str], bool] | None = None,
        on_overflow: Callable[[], None] | None = None,
        queue_bytes: int = QUEUE_BYTES,
    ) -> Subscriber:
        """A new subscriber (one per connection) whose queue holds at most ``queue_size``
        frames and ``queue_bytes`` of them; see :class:`Subscriber` for ``send_now`` and
        ``on_overflow``."""
        sub = Subscriber(queue_size, send_now, on_overflow, queue_bytes)
        self._subscribers.add(sub)
        return sub

    async def subscribe(
        self, sub: Subscriber, topic: str, since: int | None, epoch: int | None = None
    ) -> SubscribeResult:
        """Subscribe ``sub`` to ``topic``; with ``since``, first replay every seq after it.

        ``since=None`` is live from now; ``since`` equal to the topic's seq is caught up;
        ``since`` past it is live from now with ``recovered`` False (see the module doc). Else
        the events after ``since`` come first, then live ones, with no gap and no duplicate.
        When the ring holds them all and they fill at most half the queue, this does not await
        (with the default ring of 1024 and queue of 4096: whenever the queue is at most a
        quarter full). A longer
        replay is fed as the writer drains the queue and returns once the subscriber is live, so
        a replay of any length works with any ``queue_size``: it counts against the bound only
        by how far the writer falls behind the live events. The subscriber overflows when
        ``queue_size`` more events were published since this call than it has queued, the rule
        for a live subscriber too. ``recovered`` is False when events after ``since`` were no
        longer kept (those that were are still replayed).

        With the ``epoch`` of an earlier run, a ``since`` past where that run left the topic on
        disk is live from now (see "Across a crash" in the module docstring).

        Subscribing again to a topic restarts it from the new ``since``.
        """
        forgotten = self._forgotten_at(topic)
        if forgotten is not None:
            raise RequestError(
                "not_found",
                f"{topic}: this session was forgotten at {forgotten} (session.forget); "
                "nothing of it is kept",
            )
        lost = False
        if since is not None and epoch is not None and epoch != self.epoch and self._fence:
            fence = await self._fence(topic, epoch)
            lost = fence is not None and since > fence
        self.unsubscribe(sub, topic)
        if sub.overflowed or sub not in self._subscribers:
            # Overflowed, or removed: its connection is ending (a subscribe request can still
            # run after the connection's close removed its subscriber); feed it nothing.
            return SubscribeResult(topic, False, self.last_seq(topic), self.epoch)
        t = self._topic(topic)
        sub.topics.add(t.name)  # the hub's string, not one per subscriber
        upto = t.seq
        if since is None or since >= upto or lost:
            t.live[sub] = None
            caught_up = since is None or (since == upto and not lost)
            reset = since is not None and (since > upto or lost)
            return SubscribeResult(topic, caught_up, upto, self.epoch, reset)
        since = max(since, 0)
        chase = t.chasing[sub] = _Chase(cursor=since, limit=upto - since + sub.bound)
        try:
            await self._chase(sub, t, chase)
        finally:
            if t.chasing.get(sub) is chase:
                # Cancelled or failed mid-replay: leave no half-subscribed topic behind.
                del t.chasing[sub]
                sub.topics.discard(topic)
        return SubscribeResult(topic, not chase.gap, upto, self.epoch)

    async def _chase(self, sub: Subscriber, t: _Topic, chase: _Chase) -> None:
        """Feed ``sub`` from the history and the ring until it is live or called off.

        It goes live once the rest fills the queue at most half, in frames and in bytes: a
        subscriber that went live with a full queue would overflow on the next publish, before
        its writer could run.
        """
        half = (sub.bound + 1) // 2
        page = min(HISTORY_PAGE_MAX, half)
        while t.chasing.get(sub) is chase:
            ring_first = t.ring_first
            if chase.cursor + 1 < ring_first:
                pairs = await self._read_history(t.name, chase, ring_first - 1, page)
                await self._feed(sub, t, chase, pairs)
                continue
            skip = chase.cursor + 1 - ring_first
            left = t.seq - chase.cursor
            room = sub.bound - len(sub._frames)
            if left <= room - sub.bound // 2 and (
                sum(map(len, islice(t.ring, skip, None)))
                <= sub.bound_bytes - sub.depth_bytes - sub.bound_bytes // 2
            ):
                # No await from here to `live`: nothing can be published in between.
                sub._queue(list(islice(t.ring, skip, None)))
                sub.wake()
                del t.chasing[sub]
                t.live[sub] = None
                return
            if room >= min(left, half):
                chunk = sub._fitting(islice(t.ring, skip, None), min(room, left))
                if chunk:
                    sub._queue(chunk)
                    sub.wake()
                    chase.cursor += len(chunk)
            await sub._wait_drained()

    async def _read_history(
        self, topic: str, chase: _Chase, upto: int, page: int
    ) -> list[tuple[int, str]]:
        """The next page after the cursor, up to ``upto``; moves the cursor past any gap."""
        pairs = (
            []
            if self._history is None
            else await self._history.read(topic, chase.cursor, upto, page)
        )
        if not pairs:
            chase.gap = True
            chase.cursor = max(chase.cursor, upto)
        elif pairs[0][0] != chase.cursor + 1:
            chase.gap = True
        return pairs

    async def _feed(
        self, sub: Subscriber, t: _Topic, chase: _Chase, pairs: list[tuple[int, str]]
    ) -> None:
        """Queue the frames of history ``pairs`` as the writer makes room, moving the cursor."""
        if not pairs:
            return
        frames = [frame for _, frame in pairs]
        half = (sub.bound + 1) // 2
        done = 0
        while done < len(frames) and t.chasing.get(sub) is chase:
            room = sub.bound - len(sub._frames)
            chunk = (
                sub._fitting(islice(frames, done, None), room)
                if room >= min(len(frames) - done, half)
                else None
            )
            if chunk:
                sub._queue(chunk)
                sub.wake()
                done += len(chunk)
            else:
                await sub._wait_drained()
        # The seq is the history's rather than counted, so that a page that skips some seqs
        # cannot make the next page repeat frames.
        chase.cursor = max(chase.cursor, pairs[-1][0])

    def forget(self, topic: str, at: str | None) -> None:
        """Drop ``topic``'s ring (its events were deleted from the history); with ``at``, the
        topic's session was forgotten then, and subscribing to it says so."""
        t = self._topics.get(topic)
        if t is not None and t.ring:
            self._rings_bytes -= sum(map(len, t.ring))
            t.ring.clear()
            self._recent.pop(topic, None)
            if self._newest is t:
                self._newest = None
        if at is not None:
            self._forgotten[topic] = at

    def _forgotten_at(self, topic: str) -> str | None:
        """When the session of ``topic`` was forgotten (by this hub, or as the history says)."""
        at = self._forgotten.get(topic)
        if at is None and self._history_forgotten is not None and topic.startswith("session/"):
            at = self._history_forgotten(topic.removeprefix("session/"))
        return at

    def push(self, sub: Subscriber, frames: list[str]) -> bool:
        """Queue frames that come from elsewhere than this hub's topics (another node's topic,
        followed through the cluster engine) for ``sub``, under its usual bound: False when
        ``sub`` is gone or overflowed (then, or now by these frames, it closes with 4008)."""
        if sub.overflowed or sub not in self._subscribers:
            return False
        if len(sub._frames) + len(frames) > sub.bound:
            self._overflow(sub)
            return False
        if frames:
            sub._queue(frames)
            sub.wake()
        return True

    def unsubscribe(self, sub: Subscriber, topic: str) -> None:
        """Stop feeding ``sub`` from ``topic`` (frames already queued stay queued)."""
        t = self._topics.get(topic)
        if t is not None:
            self._detach(sub, t)

    def remove(self, sub: Subscriber) -> None:
        """Forget ``sub`` (its connection ended)."""
        self._drop(sub)
        self._subscribers.discard(sub)

    def _detach(self, sub: Subscriber, t: _Topic) -> None:
        t.live.pop(sub, None)
        if t.chasing.pop(sub, None) is not None:
            sub._release_replays()
        sub.topics.discard(t.name)
        if t.seq == 0 and not t.live and not t.chasing:
            # Subscribed to and never published to: forget it, so that clients cannot grow
            # the topic table by subscribing to names that do not exist.
            del self._topics[t.name]

    def _drop(self, sub: Subscriber) -> None:
        for name in list(sub.topics):
            self._detach(sub, self._topics[name])

    def _overflow(self, sub: Subscriber) -> None:
        if sub.overflowed:
            return
        log.warning(
            "hub: subscriber overflowed its queue (%d frames, %d bytes) on topics %s; closing it",
            sub.bound,
            sub.bound_bytes,
            ", ".join(sorted(sub.topics)),
        )
        self._drop(sub)
        self._subscribers.discard(sub)
        self._closed_slow += 1
        sub._empty()
        sub.overflowed = True
        sub.wake()
        if sub.on_overflow is not None:
            sub.on_overflow()

    async def wait_writable(self) -> None:
        """Return once the history can take more events (at once when it never pushes back).

        Sources that can wait (agent output readers) await this before they publish, so that a
        store that falls behind slows them down instead of growing without bound.
        """
        if self._history_wait is not None:
            await self._history_wait()

    def last_seq(self, topic: str) -> int:
        """The topic's last seq, 0 when nothing was published to it."""
        t = self._topics.get(topic)
        return 0 if t is None else t.seq

    def topics(self) -> list[str]:
        """Every topic published to or with a subscriber now, sorted."""
        return sorted(self._topics)

    def stats(self) -> HubStats:
        return HubStats(
            topics=len(self._topics),
            events_published=self._published,
            subscribers=len(self._subscribers),
            subscribers_closed_slow=self._closed_slow,
            ring_bytes=self._rings_bytes,
        )
