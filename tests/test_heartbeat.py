"""The server's one heartbeat task: each connection beats on its own schedule."""

from __future__ import annotations

import weakref

import attrs
import pytest
import trio
import trio.testing

from hived.server.heartbeat import Heartbeat


@attrs.define
class Beats:
    """A connection that records when it beat, is due ``every`` s later, ends after ``count``."""

    every: float
    count: int
    times: list[float] = attrs.Factory(list)

    def beat(self, now: float) -> float | None:
        self.times.append(now)
        return None if len(self.times) >= self.count else now + self.every


async def test_each_connection_beats_on_its_own_schedule_until_it_ends(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    heartbeat = Heartbeat()
    nursery.start_soon(heartbeat.run)
    await trio.testing.wait_all_tasks_blocked()  # asleep with nothing due
    start = trio.current_time()
    late, soon = Beats(every=3.0, count=3), Beats(every=5.0, count=2)
    heartbeat.add(late, start + 10.0)
    heartbeat.add(soon, start + 1.0)  # earlier than the sleep under way: wakes it sooner
    await trio.sleep(100)
    assert [t - start for t in soon.times] == pytest.approx([1.0, 6.0])
    assert [t - start for t in late.times] == pytest.approx([10.0, 13.0, 16.0])
    assert len(heartbeat) == 0


async def test_a_connection_that_is_gone_is_not_kept_nor_called(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    heartbeat = Heartbeat()
    nursery.start_soon(heartbeat.run)
    gone, kept = Beats(every=1.0, count=1), Beats(every=1.0, count=1)
    heartbeat.add(gone, trio.current_time() + 5.0)
    heartbeat.add(kept, trio.current_time() + 5.0)
    seen = weakref.ref(gone)
    del gone
    assert seen() is None  # the schedule held it weakly
    await trio.sleep(10)
    assert len(kept.times) == 1
    assert len(heartbeat) == 0
