from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

import hived.hub
from hived.core.events import Event, encode_event
from hived.hub import (
    BURST_GAP_S,
    FAST_FRAME_BYTES,
    Hub,
    MemoryHistory,
    Subscriber,
    SubscribeResult,
)
from tests.test_fuzz import json_values


def seqs(frames: list[str]) -> list[int]:
    return [orjson.loads(frame)["seq"] for frame in frames]


def publish_many(hub: Hub, topic: str, count: int) -> None:
    for i in range(count):
        hub.publish(topic, "text", {"line": i})


class SlowHistory(MemoryHistory):
    """A history whose reads take time, so that publishes land between replay pages."""

    def __init__(self, keep: int | None = None) -> None:
        super().__init__(keep)
        self.reads = 0

    async def read(self, topic: str, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
        self.reads += 1
        await trio.sleep(0.01)
        return await super().read(topic, after, upto, limit)


class InterleavingHistory(MemoryHistory):
    """A history whose reads yield to other tasks a few times, as a store's thread would."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def read(self, topic: str, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
        self.reads += 1
        assert self.reads < 10_000, "the replay makes no progress"
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        return await super().read(topic, after, upto, limit)


class PushingBackHistory(MemoryHistory):
    def __init__(self) -> None:
        super().__init__()
        self.writable = trio.Event()

    async def wait_writable(self) -> None:
        await self.writable.wait()


class FrameHistory(MemoryHistory):
    """Keeps each event recorded with its frame."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[tuple[Event, str]] = []

    def record(self, event: Event, frame: str) -> None:
        super().record(event, frame)
        self.recorded.append((event, frame))


async def collect(sub: Subscriber, into: list[int], until: int) -> None:
    """Read batches until the frame with seq `until` has arrived (fails rather than hangs)."""
    with trio.fail_after(1000):
        while not into or into[-1] < until:
            into.extend(seqs(await sub.receive_batch()))


async def test_seq_starts_at_1_and_has_no_gaps_per_topic() -> None:
    hub = Hub()
    published = [hub.publish(topic, "text", {}) for topic in ["a", "b", "a", "a", "b"]]
    assert [(e.topic, e.seq) for e in published] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("a", 3),
        ("b", 2),
    ]
    assert (hub.last_seq("a"), hub.last_seq("b"), hub.last_seq("never")) == (3, 2, 0)


async def test_event_is_encoded_once_and_every_reader_gets_the_same_str(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    real_dumps = orjson.dumps

    def counting_dumps(value: object) -> bytes:
        calls.append(value)
        return real_dumps(value)

    monkeypatch.setattr(hived.hub, "dumps", counting_dumps)
    recorded: list[str] = []

    class RecordingHistory(MemoryHistory):
        def record(self, event: Event, frame: str) -> None:
            recorded.append(frame)
            super().record(event, frame)

    hub = Hub(RecordingHistory())
    subs = [hub.subscriber(16) for _ in range(3)]
    for sub in subs:
        await hub.subscribe(sub, "t", None)
    data = {"text": "hi"}
    event = hub.publish("t", "message", data)
    batches = [await sub.receive_batch() for sub in subs]
    assert [value for value in calls if value is data] == [data]
    assert recorded == [encode_event(event)]
    assert all(batch[0] is recorded[0] for batch in batches)
    assert orjson.loads(recorded[0]) == {
        "type": "event",
        "topic": "t",
        "seq": 1,
        "ts": event.ts,
        "kind": "message",
        "session": None,
        "data": {"text": "hi"},
    }


async def test_receive_batch_returns_everything_queued_in_one_call() -> None:
    hub = Hub()
    sub = hub.subscriber(100)
    await hub.subscribe(sub, "a", None)
    await hub.subscribe(sub, "b", None)
    publish_many(hub, "a", 5)
    publish_many(hub, "b", 2)
    assert sub.depth == 7
    batch = await sub.receive_batch()
    assert [(f["topic"], f["seq"]) for f in map(orjson.loads, batch)] == [
        *[("a", n) for n in range(1, 6)],
        ("b", 1),
        ("b", 2),
    ]
    assert sub.depth == 0


async def _append_batch(sub: Subscriber, got: list[list[str]]) -> None:
    got.append(await sub.receive_batch())


@contextlib.asynccontextmanager
async def waiting(sub: Subscriber) -> AsyncIterator[list[list[str]]]:
    """A task waiting in ``sub.receive_batch()`` during the block; the batch it got is in the
    list yielded once the block is over."""
    got: list[list[str]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _append_batch(sub, got))
        await trio.testing.wait_all_tasks_blocked()
        yield got


async def test_receive_batch_waits_for_a_publish() -> None:
    hub = Hub()
    sub = hub.subscriber(10)
    await hub.subscribe(sub, "t", None)
    async with waiting(sub) as got:
        assert got == []
        publish_many(hub, "t", 3)
    assert seqs(got[0]) == [1, 2, 3]


async def test_wake_makes_a_waiting_receive_batch_return_empty() -> None:
    hub = Hub()
    sub = hub.subscriber(10)
    await hub.subscribe(sub, "t", None)
    async with waiting(sub) as got:
        sub.wake()
    assert got == [[]]
    publish_many(hub, "t", 2)
    assert seqs(await sub.receive_batch()) == [1, 2]


async def test_overflow_wakes_a_waiting_receive_batch() -> None:
    hub = Hub()
    sub = hub.subscriber(1)
    await hub.subscribe(sub, "t", None)
    async with waiting(sub) as got:
        publish_many(hub, "t", 2)  # the second overflows before the waiter runs
    assert sub.overflowed
    assert got == [[]]


class Socket:
    """A ``send_now`` that takes frames while ``open``."""

    def __init__(self, open: bool = True) -> None:
        self.open = open
        self.sent: list[str] = []

    def send_now(self, frame: str) -> bool:
        if self.open:
            self.sent.append(frame)
        return self.open


async def test_a_frame_for_a_waiting_subscriber_is_sent_at_once_and_the_rest_queued() -> None:
    hub = Hub()
    socket = Socket()
    sub = hub.subscriber(10, socket.send_now)
    await hub.subscribe(sub, "t", None)
    async with waiting(sub) as got:
        publish_many(hub, "t", 3)  # one tick: the first goes at once, the next two wait
    assert seqs(socket.sent) == [1]
    assert [seqs(batch) for batch in got] == [[2, 3]]


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_after_a_quiet_gap_a_frame_is_sent_at_once_and_the_sender_sleeps_on() -> None:
    clock = Clock()
    hub = Hub(clock=clock)
    socket = Socket()
    sub = hub.subscriber(10, socket.send_now)
    await hub.subscribe(sub, "t", None)
    async with waiting(sub) as got:
        for _ in range(3):  # a steady rate: each frame alone
            publish_many(hub, "t", 1)
            clock.now += 2 * BURST_GAP_S
        await trio.testing.wait_all_tasks_blocked()
        assert got == [], "the sender was woken with nothing to send"
        publish_many(hub, "t", 3)  # a burst: the first at once, the rest as one batch
    assert seqs(socket.sent) == [1, 2, 3, 4]
    assert [seqs(batch) for batch in got] == [[5, 6]]


async def test_a_publish_soon_after_the_last_one_ended_is_batched_however_long_that_took() -> None:
    # Lines that arrive together go out in batches even when each publish takes long (a
    # fan-out to many slow sockets): the gap is counted from the end of the last publish.
    clock = Clock()
    hub = Hub(clock=clock)
    slow, fast = Socket(), Socket()

    def slow_send(frame: str) -> bool:
        clock.now += 10 * BURST_GAP_S  # this write takes long
        return slow.send_now(frame)

    subs = [hub.subscriber(10, slow_send), hub.subscriber(10, fast.send_now)]
    for sub in subs:
        await hub.subscribe(sub, "t", None)
    async with waiting(subs[0]) as got_slow, waiting(subs[1]) as got_fast:
        publish_many(hub, "t", 3)
    assert seqs(slow.sent) == seqs(fast.sent) == [1]
    assert [seqs(batch) for batch in got_slow] == [seqs(batch) for batch in got_fast] == [[2, 3]]


async def test_a_frame_send_now_refuses_is_queued() -> None:
    hub = Hub()
    socket = Socket(open=False)
    sub = hub.subscriber(10, socket.send_now)
    await hub.subscribe(sub, "t", None)
    async with waiting(sub) as got:
        publish_many(hub, "t", 1)
    assert [seqs(batch) for batch in got] == [[1]]


async def test_send_now_is_not_tried_while_the_subscriber_is_not_waiting() -> None:
    hub = Hub()
    socket = Socket()
    sub = hub.subscriber(10, socket.send_now)
    await hub.subscribe(sub, "t", None)
    publish_many(hub, "t", 2)
    assert socket.sent == []
    assert seqs(await sub.receive_batch()) == [1, 2]


async def test_slow_subscriber_overflows_while_fast_one_gets_every_event(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = Hub()
    slow, fast = hub.subscriber(10), hub.subscriber(10)
    await hub.subscribe(slow, "t", None)
    await hub.subscribe(fast, "t", None)
    received: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, fast, received, 50)
        for _ in range(50):
            hub.publish("t", "text", {})
            await trio.sleep(0.001)
    assert received == list(range(1, 51))
    assert slow.overflowed
    assert not fast.overflowed
    assert (slow.topics, slow.depth) == (set(), 0)
    assert hub.stats().subscribers_closed_slow == 1
    assert await slow.receive_batch() == [], "an overflowed subscriber gets no more frames"


async def test_subscriber_overflows_exactly_when_its_queue_is_full() -> None:
    hub = Hub()
    sub = hub.subscriber(3)
    await hub.subscribe(sub, "t", None)
    publish_many(hub, "t", 3)
    assert not sub.overflowed
    hub.publish("t", "text", {})
    assert sub.overflowed


async def test_subscriber_overflows_when_its_queue_would_pass_its_bytes() -> None:
    """Events of varying size are bounded in bytes: 4 events of 3 kB overflow a queue of
    10 kB that would take 1000 small ones."""
    hub = Hub()
    sub = hub.subscriber(1000, queue_bytes=10_000)
    await hub.subscribe(sub, "t", None)
    for _ in range(3):
        hub.publish("t", "text", {"pad": "x" * 3000})
    assert (sub.overflowed, sub.depth) == (False, 3)
    assert 9000 < sub.depth_bytes <= 10_000
    hub.publish("t", "text", {"pad": "x" * 3000})
    assert sub.overflowed
    assert (sub.depth, sub.depth_bytes) == (0, 0)


@pytest.mark.parametrize("pad", [10, 3900, 5000])
async def test_the_byte_bound_holds_exactly_on_the_count_checked_path(pad: int) -> None:
    """Frames under FAST_FRAME_BYTES are queued by a count check until the subscriber's limit,
    larger ones by their bytes: either way the queue overflows on the first frame that would
    take it past its bytes, never before."""
    hub = Hub()
    bound = 5 * FAST_FRAME_BYTES + 123
    sub = hub.subscriber(100_000, queue_bytes=bound)
    await hub.subscribe(sub, "t", None)
    sizes: list[int] = []
    while not sub.overflowed:
        event = hub.publish("t", "text", {"pad": "x" * pad})
        sizes.append(len(encode_event(event)))
        assert sub.overflowed or sub.depth_bytes == sum(sizes)
    assert sum(sizes[:-1]) <= bound < sum(sizes)


async def test_an_event_larger_than_the_byte_bound_still_fits_an_empty_queue() -> None:
    hub = Hub()
    sub = hub.subscriber(1000, queue_bytes=1000)
    await hub.subscribe(sub, "t", None)
    hub.publish("t", "text", {"pad": "x" * 5000})
    assert (sub.overflowed, sub.depth) == (False, 1)
    assert seqs(await sub.receive_batch()) == [1]
    assert sub.depth_bytes == 0
    hub.publish("t", "text", {"pad": "x" * 10})
    hub.publish("t", "text", {"pad": "x" * 5000})
    assert sub.overflowed


@pytest.mark.parametrize("since", [0, 150, 195])
async def test_a_replay_of_big_events_keeps_the_queue_within_its_bytes(
    autojump_clock: trio.abc.Clock, since: int
) -> None:
    """A replay feeds the queue as the writer drains it, by bytes too: never more than the
    byte bound queued (a lone big frame aside), no gap, no duplicate, no overflow."""
    history = InterleavingHistory()
    hub = Hub(history, ring_size=8)
    for i in range(200):
        hub.publish("t", "text", {"pad": "x" * (100 + (i * 7919) % 4000)})
    bound = 10_000
    sub = hub.subscriber(4096, queue_bytes=bound)
    received: list[int] = []
    most = 0

    async def reader() -> None:
        nonlocal most
        with trio.fail_after(1000):
            while not received or received[-1] < 300:
                most = max(most, sub.depth_bytes)
                batch = await sub.receive_batch()
                assert sum(map(len, batch)) <= bound or len(batch) == 1
                received.extend(seqs(batch))

    async def publisher() -> None:
        while hub.last_seq("t") < 300:
            hub.publish("t", "text", {"pad": "y" * 1500})
            for _ in range(5):
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(publisher)
        result = await hub.subscribe(sub, "t", since)
    assert result.recovered
    assert received == list(range(since + 1, 301))
    assert not sub.overflowed
    assert most <= bound


@pytest.mark.parametrize(
    ("since", "queue_size"),
    [(0, 16), (37, 16), (37, 4096), (150, 3), (195, 2), (195, 16), (199, 4096)],
)
async def test_replay_then_live_has_no_gap_and_no_duplicate_under_concurrent_publishing(
    autojump_clock: trio.abc.Clock, since: int, queue_size: int
) -> None:
    history = InterleavingHistory()
    hub = Hub(history, ring_size=8)
    publish_many(hub, "t", 200)
    sub = hub.subscriber(queue_size)
    received: list[int] = []
    rng = random.Random(since * 10_000 + queue_size)

    async def publisher() -> None:
        # At most one event per scheduling round, and fewer than the replay feeds, so that
        # the replay catches up even with small queues (and so small history pages).
        while hub.last_seq("t") < 1000:
            if rng.random() < 0.3:
                hub.publish("t", "text", {})
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
        nursery.start_soon(collect, sub, received, 1000)
        result = await hub.subscribe(sub, "t", since)
        published_during_replay = hub.last_seq("t") - result.last_seq
    assert result == SubscribeResult("t", recovered=True, last_seq=200)
    assert received == list(range(since + 1, 1001))
    assert not sub.overflowed
    fits_at_once = since >= 192 and 200 - since <= queue_size
    assert (published_during_replay == 0) == fits_at_once
    assert (history.reads > 0) == (since < 192)


async def test_replay_from_the_ring_alone_does_not_await() -> None:
    hub = Hub(SlowHistory(), ring_size=64)
    publish_many(hub, "t", 100)
    sub = hub.subscriber(100)
    coro = hub.subscribe(sub, "t", 60)
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value == SubscribeResult("t", recovered=True, last_seq=100)
    assert seqs(await sub.receive_batch()) == list(range(61, 101))


async def test_replay_that_fills_the_queue_goes_live_only_after_the_writer_drains() -> None:
    hub = Hub(ring_size=20)
    publish_many(hub, "t", 20)
    sub = hub.subscriber(10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.subscribe, sub, "t", 10)
        await trio.testing.wait_all_tasks_blocked()
        assert sub.depth == 10
        hub.publish("t", "text", {})
        assert not sub.overflowed
        assert seqs(await sub.receive_batch()) == list(range(11, 21))
    hub.publish("t", "text", {})
    assert seqs(await sub.receive_batch()) == [21, 22]


async def test_replay_of_100k_stored_events_fits_a_queue_of_4096() -> None:
    history = MemoryHistory()
    hub = Hub(history)
    publish_many(hub, "t", 100_000)
    sub = hub.subscriber(4096)
    received: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sub, received, 100_000)
        result = await hub.subscribe(sub, "t", 0)
        assert sub.depth <= 4096
    assert result == SubscribeResult("t", recovered=True, last_seq=100_000)
    assert received == list(range(1, 100_001))
    assert not sub.overflowed


async def test_replay_is_not_recovered_when_history_no_longer_reaches_since() -> None:
    hub = Hub(MemoryHistory(keep=10), ring_size=5)
    publish_many(hub, "t", 100)
    sub = hub.subscriber(1000)
    result = await hub.subscribe(sub, "t", 3)
    assert result == SubscribeResult("t", recovered=False, last_seq=100)
    got = seqs(await sub.receive_batch())
    assert got == list(range(got[0], 101))
    assert got[0] > 4


async def test_ring_only_hub_replays_the_ring_and_says_not_recovered() -> None:
    hub = Hub(ring_size=5)
    publish_many(hub, "t", 20)
    sub = hub.subscriber(100)
    assert await hub.subscribe(sub, "t", 3) == SubscribeResult("t", False, 20)
    assert seqs(await sub.receive_batch()) == [16, 17, 18, 19, 20]
    assert await hub.subscribe(sub, "t", 16) == SubscribeResult("t", True, 20)


async def test_since_none_is_live_only_and_since_at_the_end_is_caught_up() -> None:
    hub = Hub()
    publish_many(hub, "t", 5)
    live, caught_up = hub.subscriber(10), hub.subscriber(10)
    assert await hub.subscribe(live, "t", None) == SubscribeResult("t", True, 5)
    assert await hub.subscribe(caught_up, "t", 5) == SubscribeResult("t", True, 5)
    assert live.depth == caught_up.depth == 0
    hub.publish("t", "text", {})
    assert seqs(await live.receive_batch()) == seqs(await caught_up.receive_batch()) == [6]


async def test_since_past_the_last_seq_is_live_and_not_recovered() -> None:
    # A daemon killed within the store's sync window lost seqs 96..100 that a client saw; after
    # the restart those seqs are handed out again, to other events.
    history = MemoryHistory()
    publish_many(Hub(history), "t", 95)
    restarted = Hub(history)
    sub = restarted.subscriber(10)
    assert await restarted.subscribe(sub, "t", 100) == SubscribeResult("t", False, 95, reset=True)
    assert sub.depth == 0
    assert await restarted.subscribe(sub, "never", 3) == SubscribeResult(
        "never", False, 0, reset=True
    )
    restarted.publish("t", "text", {})
    assert seqs(await sub.receive_batch()) == [96]


@attrs.define
class CrashedHistory(MemoryHistory):
    """A history whose earlier run (epoch 1) ended uncleanly with ``fences`` on disk; this is
    run 2."""

    fences: dict[str, int] = attrs.Factory(dict)
    epoch: int = 2

    async def fence(self, topic: str, epoch: int) -> int | None:
        await trio.lowlevel.checkpoint()
        return self.fences.get(topic, 0) if epoch == 1 else None


async def test_a_resume_past_a_crashed_runs_fence_is_reset_even_once_the_topic_grew() -> None:
    # Run 1 sent 1..100 and kept 1..95 when it was killed; run 2 handed out 96.. again and has
    # published up to 105 by the time the client of run 1 comes back with since=100.
    history = CrashedHistory(fences={"t": 95})
    publish_many(Hub(history), "t", 95)
    restarted = Hub(history)
    publish_many(restarted, "t", 10)
    sub = restarted.subscriber(100)
    result = await restarted.subscribe(sub, "t", 100, epoch=1)
    assert result == SubscribeResult("t", False, 105, epoch=2, reset=True)
    assert sub.depth == 0, "nothing of the new 96..105 is passed off as what it saw"
    # A position at or below the fence was kept: resumed exactly.
    other = restarted.subscriber(100)
    assert await restarted.subscribe(other, "t", 93, epoch=1) == SubscribeResult(
        "t", True, 105, epoch=2
    )
    assert seqs(await other.receive_batch()) == list(range(94, 106))
    # A position of this run, or of a run that ended cleanly, is what it always was.
    mine = restarted.subscriber(100)
    assert await restarted.subscribe(mine, "t", 100, epoch=2) == SubscribeResult(
        "t", True, 105, epoch=2
    )
    assert seqs(await mine.receive_batch()) == list(range(101, 106))


async def test_seq_continues_from_the_history_and_replay_reads_it() -> None:
    history = MemoryHistory()
    publish_many(Hub(history), "t", 7)
    restarted = Hub(history)
    assert restarted.last_seq("t") == 7
    assert restarted.publish("t", "text", {}).seq == 8
    sub = restarted.subscriber(100)
    assert await restarted.subscribe(sub, "t", 2) == SubscribeResult("t", True, 8)
    assert seqs(await sub.receive_batch()) == [3, 4, 5, 6, 7, 8]


async def test_unsubscribe_stops_delivery_of_that_topic_only() -> None:
    hub = Hub()
    sub = hub.subscriber(10)
    await hub.subscribe(sub, "a", None)
    await hub.subscribe(sub, "b", None)
    hub.unsubscribe(sub, "a")
    hub.unsubscribe(sub, "never")
    hub.publish("a", "text", {})
    hub.publish("b", "text", {})
    assert sub.topics == {"b"}
    assert [orjson.loads(f)["topic"] for f in await sub.receive_batch()] == ["b"]


async def test_topic_never_published_to_is_forgotten_when_its_last_subscriber_leaves() -> None:
    hub = Hub()
    sub = hub.subscriber(10)
    await hub.subscribe(sub, "ghost", 5)
    await hub.subscribe(sub, "ghost", None)
    assert hub.topics() == ["ghost"]
    hub.unsubscribe(sub, "ghost")
    assert hub.topics() == []


async def test_remove_stops_delivery_and_is_counted() -> None:
    hub = Hub()
    sub = hub.subscriber(10)
    await hub.subscribe(sub, "a", None)
    await hub.subscribe(sub, "b", None)
    assert hub.stats().subscribers == 1
    hub.remove(sub)
    hub.publish("a", "text", {})
    hub.publish("b", "text", {})
    assert (sub.depth, sub.topics, hub.stats().subscribers) == (0, set(), 0)


async def test_a_subscribe_after_remove_feeds_nothing() -> None:
    """A subscribe request can still run after its connection's close removed the subscriber."""
    hub = Hub()
    hub.publish("t", "text", {})
    sub = hub.subscriber(10)
    hub.remove(sub)
    result = await hub.subscribe(sub, "t", 0)
    hub.publish("t", "text", {})
    assert (result.recovered, sub.depth, sub.topics, hub.stats().subscribers) == (
        False,
        0,
        set(),
        0,
    )


async def test_unsubscribe_during_a_replay_ends_it(autojump_clock: trio.abc.Clock) -> None:
    hub = Hub(SlowHistory(), ring_size=4)
    publish_many(hub, "t", 100)
    sub = hub.subscriber(8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.subscribe, sub, "t", 0)
        await trio.sleep(0.015)
        hub.unsubscribe(sub, "t")
    hub.publish("t", "text", {})
    assert sub.topics == set()
    assert 101 not in seqs(await sub.receive_batch())


async def test_cancelled_replay_leaves_no_subscription(autojump_clock: trio.abc.Clock) -> None:
    history = SlowHistory()
    hub = Hub(history, ring_size=4)
    publish_many(hub, "t", 100)
    sub = hub.subscriber(1000)
    with trio.move_on_after(0.005):
        await hub.subscribe(sub, "t", 0)
    assert history.reads == 1
    hub.publish("t", "text", {})
    assert (sub.topics, sub.depth) == (set(), 0)


async def test_replaying_subscriber_overflows_once_live_events_outrun_it_by_its_bound(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = Hub(ring_size=100)
    publish_many(hub, "t", 50)
    sub = hub.subscriber(10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.subscribe, sub, "t", 0)
        await trio.testing.wait_all_tasks_blocked()
        assert sub.depth == 10
        publish_many(hub, "t", 20)
        assert not sub.overflowed
        hub.publish("t", "text", {})
        assert sub.overflowed
    assert hub.stats().subscribers_closed_slow == 1


async def test_wait_writable_waits_for_a_history_that_pushes_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(1):
        await Hub(MemoryHistory()).wait_writable()
    history = PushingBackHistory()
    hub = Hub(history)
    with trio.move_on_after(0.01) as scope:
        await hub.wait_writable()
    assert scope.cancelled_caught
    history.writable.set()
    await hub.wait_writable()


async def test_stats_count_topics_events_subscribers_and_slow_closes() -> None:
    hub = Hub()
    subs = [hub.subscriber(2) for _ in range(3)]
    for sub in subs:
        await hub.subscribe(sub, "a", None)
    publish_many(hub, "a", 2)
    publish_many(hub, "b", 3)
    await subs[0].receive_batch()
    await subs[1].receive_batch()
    hub.publish("a", "text", {})
    stats = hub.stats()
    assert (stats.topics, stats.events_published) == (2, 6)
    assert (stats.subscribers, stats.subscribers_closed_slow) == (2, 1)
    assert hub.topics() == ["a", "b"]


def test_queue_and_ring_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        Hub().subscriber(0)
    with pytest.raises(ValueError, match="ring_size"):
        Hub(ring_size=0)


# The history interface: (seq, frame) pairs.


class OpaqueHistory(MemoryHistory):
    """A history whose frames are not JSON: the hub must take each seq from the pairs."""

    async def read(self, topic: str, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
        pairs = await super().read(topic, after, upto, limit)
        return [(seq, f"frame {seq}") for seq, _ in pairs]


async def test_replay_takes_seqs_from_the_history_without_parsing_frames() -> None:
    hub = Hub(OpaqueHistory(), ring_size=4)
    publish_many(hub, "t", 20)
    sub = hub.subscriber(100)
    assert await hub.subscribe(sub, "t", 5) == SubscribeResult("t", True, 20)
    batch = await sub.receive_batch()
    assert batch[:11] == [f"frame {seq}" for seq in range(6, 17)]
    assert seqs(batch[11:]) == [17, 18, 19, 20]


async def test_memory_history_reads_seq_frame_pairs_of_what_it_keeps() -> None:
    history = MemoryHistory(keep=10)
    hub = Hub(history)
    publish_many(hub, "t", 25)  # trimmed to 11..20 at the 20th, then 21..25 appended
    pairs = await history.read("t", 0, 100, 100)
    assert [seq for seq, _ in pairs] == list(range(11, 26))
    assert [seq for seq, _ in pairs] == seqs([frame for _, frame in pairs])
    assert [seq for seq, _ in await history.read("t", 17, 21, 3)] == [18, 19, 20]
    assert await history.read("t", 25, 30, 10) == []
    assert await history.read("never", 0, 10, 10) == []


# Ring memory.


def frame_size(topic: str, pad: int) -> int:
    """The length of a frame of ``topic`` with a ``pad``-byte text (seq 1)."""
    event = Event(topic, 1, "2026-11-26T08:00:00.000Z", "text", None, {"text": "x" * pad})
    return len(encode_event(event))


def publish_padded(hub: Hub, topic: str, count: int, pad: int = 1000) -> None:
    for _ in range(count):
        hub.publish(topic, "text", {"text": "x" * pad})


class CountingHistory(MemoryHistory):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def read(self, topic: str, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
        self.reads.append(topic)
        return await super().read(topic, after, upto, limit)


async def test_rings_of_the_least_recently_published_topics_are_evicted_first() -> None:
    history = CountingHistory()
    bound = 25 * frame_size("a", 1000)
    hub = Hub(history, ring_size=100, rings_max_bytes=bound)
    publish_padded(hub, "a", 10)
    publish_padded(hub, "b", 10)
    publish_padded(hub, "a", 1)  # now b is the least recently published
    publish_padded(hub, "c", 10)
    assert 0 < hub.stats().ring_bytes <= bound
    sub = hub.subscriber(100)
    for topic in ("a", "c"):  # still in their rings: replayed without awaiting
        coro = hub.subscribe(sub, topic, 0)
        with pytest.raises(StopIteration) as done:
            coro.send(None)
        assert done.value.value == SubscribeResult(topic, True, hub.last_seq(topic))
    assert history.reads == []
    # b kept only its seq counter; its replay comes from the history, whole.
    assert await hub.subscribe(sub, "b", 0) == SubscribeResult("b", True, 10)
    assert history.reads == ["b"]
    assert hub.publish("b", "text", {}).seq == 11
    topics = [orjson.loads(frame)["topic"] for frame in await sub.receive_batch()]
    assert topics == ["a"] * 11 + ["c"] * 10 + ["b"] * 11


async def test_a_topic_alone_past_the_bound_keeps_its_newest_frames() -> None:
    bound = 5 * frame_size("t", 1000) + 500
    hub = Hub(ring_size=100, rings_max_bytes=bound)  # no history: the ring is all there is
    publish_padded(hub, "t", 20)
    assert hub.stats().ring_bytes <= bound
    sub = hub.subscriber(100)
    assert await hub.subscribe(sub, "t", 0) == SubscribeResult("t", False, 20)
    assert seqs(await sub.receive_batch()) == [16, 17, 18, 19, 20]


async def test_a_ring_only_hub_says_not_recovered_for_an_evicted_ring() -> None:
    bound = 12 * frame_size("a", 1000)
    hub = Hub(ring_size=100, rings_max_bytes=bound)
    publish_padded(hub, "a", 10)
    publish_padded(hub, "b", 10)
    sub = hub.subscriber(100)
    assert await hub.subscribe(sub, "a", 0) == SubscribeResult("a", False, 10)
    assert sub.depth == 0
    assert await hub.subscribe(sub, "b", 0) == SubscribeResult("b", True, 10)
    assert seqs(await sub.receive_batch()) == list(range(1, 11))
    hub.publish("a", "text", {})
    assert seqs(await sub.receive_batch()) == [11]


async def test_rings_stay_within_the_bound_and_replays_stay_whole_under_mixed_publishing() -> None:
    rng = random.Random(7)
    bound = 40 * frame_size("t0", 500)
    for ring_bytes in (bound, 0):
        history = MemoryHistory()
        hub = Hub(history, ring_size=16, rings_max_bytes=ring_bytes)
        for _ in range(3000):
            topic = f"t{min(int(rng.expovariate(0.2)), 49)}"
            publish_padded(hub, topic, 1, pad=rng.randrange(1000))
            assert hub.stats().ring_bytes <= ring_bytes
        for topic in hub.topics():
            sub = hub.subscriber(4096)
            result = await hub.subscribe(sub, topic, 0)
            assert result == SubscribeResult(topic, True, hub.last_seq(topic))
            assert seqs(await sub.receive_batch()) == list(range(1, result.last_seq + 1))


def test_queue_ring_and_ring_memory_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="rings_max_bytes"):
        Hub(rings_max_bytes=-1)


async def test_frames_a_replay_queued_count_at_once_against_overflow() -> None:
    """Overflow means queue_size more events published since subscribe than queued: frames of a
    history page already queued count, even while the rest of the page waits for room."""
    hub = Hub(history=MemoryHistory(), ring_size=2)
    for _ in range(8):
        hub.publish("t", "text", {})
    sub = hub.subscriber(4)
    seqs: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.subscribe, sub, "t", 0)
        await trio.testing.wait_all_tasks_blocked()
        assert sub.depth == 4  # the first chunk of the page; the rest waits for the writer
        for _ in range(5):
            hub.publish("t", "text", {})
        assert not sub.overflowed
        while len(seqs) < 13:
            seqs += [orjson.loads(frame)["seq"] for frame in await sub.receive_batch()]
    assert seqs == list(range(1, 14))


_NAMES = st.text(max_size=10)


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(_NAMES, _NAMES, st.none() | _NAMES, st.dictionaries(_NAMES, json_values)),
        min_size=1,
        max_size=5,
    )
)
@example(
    [("session/A", "text", "A", {"line": 'a "quoted"\n\u2028 line'}), ("sessions", "", None, {})]
)
def test_a_published_frame_is_the_encoded_event_byte_for_byte(
    events: list[tuple[str, str, str | None, dict[str, Any]]],
) -> None:
    """The hub builds frames by hand around the JSON of the names and of the data."""
    history = FrameHistory()
    hub = Hub(history)
    for topic, kind, session, data in events:
        hub.publish(topic, kind, data, session)
    assert [frame for _, frame in history.recorded] == [
        encode_event(event) for event, _ in history.recorded
    ]
