"""The garbage-collection policy (hived/memory.py): closed connections and bad requests leave
nothing behind once the daemon's sweeps run (issue #19: the daemon's own thresholds left
cyclic garbage of every closed connection uncollected)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from hived.memory import GC_SWEEP_INTERVAL_S, run_gc_sweeps, settle_garbage_collector
from tests.test_server import Harness, ask

CONNECTIONS = 500
BAD_REQUESTS = 500


@pytest.fixture
def daemon_gc() -> Iterator[None]:
    """The daemon's policy for one test, then the interpreter's own back."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def _churn(harness: Harness, connections: int, bad_requests: int) -> None:
    """Connections that subscribe and leave; bad requests spread over them."""
    bad_each = bad_requests // connections
    for _ in range(connections):
        ws = await harness.welcomed(role="viewer")
        await ask(ws, type="subscribe", id=1, topic="sessions")
        for n in range(bad_each):
            reply = await ask(ws, type="session.start", id=n, agent="x", args=[0] * 50, nope=1)
            assert reply["code"] in ("bad_request", "forbidden")
        await ws.aclose()


async def test_closed_connections_and_bad_requests_leave_no_objects_behind(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, daemon_gc: None
) -> None:
    harness = Harness(nursery)
    await _churn(harness, 20, 20)  # warm-up: caches, interned names, lazily built hooks
    settle_garbage_collector()
    nursery.start_soon(run_gc_sweeps, lambda: harness.server.accepted_total)
    before = len(gc.get_objects())
    await _churn(harness, CONNECTIONS, BAD_REQUESTS)
    await trio.sleep(2 * GC_SWEEP_INTERVAL_S)  # the mock clock's time: a sweep runs
    grown = len(gc.get_objects()) - before
    # Without sweeps: about 17 objects kept per closed connection (~8,500 here).
    assert grown < 1_000


async def test_an_idle_daemon_is_not_swept(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sweeps: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: sweeps.append(generation) or 0)
    accepted = [0]
    nursery.start_soon(run_gc_sweeps, lambda: accepted[0])
    await trio.sleep(10 * GC_SWEEP_INTERVAL_S)
    assert sweeps == []
    accepted[0] += 1
    await trio.sleep(1.5 * GC_SWEEP_INTERVAL_S)
    assert sweeps == [2]
