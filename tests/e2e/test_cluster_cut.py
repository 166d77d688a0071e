"""The shared ``sessions`` view across outages: every lifecycle change shown once, in order.

Two real nodes on a real redis-server; node ``b`` reaches it through a relay the test cuts (a
network cut for ``b`` alone, see :class:`tests.redis_engine.EngineLink`). Sessions start and stop
on ``b`` while it is cut off, then while ``a`` is down; a client on ``a`` must see each of
``b``'s lifecycle events exactly once (``data.node_seq`` is its seq on ``b``), and the
``UNREACHABLE`` marks undone only where nothing else showed the session's state.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from hived.client import Client, Subscription, connect
from tests.e2e.harness import SECRETS, until
from tests.e2e.test_cluster import Event, Nodes, listed, next_event
from tests.redis_engine import EngineLink, RedisServer

pytestmark = pytest.mark.e2e

LIVE = {"RUNNING", "WAITING", "WORKING"}


@pytest.fixture
async def link_nodes(tmp_path: Path, redis: RedisServer) -> AsyncIterator[tuple[Nodes, EngineLink]]:
    link = EngineLink(redis.port)
    started = Nodes(tmp_path, redis)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.serve)
        try:
            yield started, link
        finally:
            await started.kill_all()
            nursery.cancel_scope.cancel()


def fed(events: list[Event]) -> list[tuple[int, str, str]]:
    """``b``'s lifecycle events as ``a`` republished them: (seq on b, session, state)."""
    return [
        (e["data"]["node_seq"], e["session"], e["data"]["state"])
        for e in events
        if e["data"].get("node") == "b" and "node_seq" in e["data"]
    ]


def own(events: list[Event]) -> list[tuple[int, str, str]]:
    """``b``'s own lifecycle events on its ``sessions`` topic."""
    return [(e["seq"], e["session"], e["data"]["state"]) for e in events if "node" not in e["data"]]


def marks(events: list[Event]) -> list[tuple[str, str]]:
    """What ``a`` showed of ``b``'s reachability: (session, state), not from b's stream."""
    return [
        (e["session"], e["data"]["state"])
        for e in events
        if e["data"].get("node") == "b" and "node_seq" not in e["data"]
    ]


def state_of(session: str, states: set[str]) -> Callable[[Event], bool]:
    return lambda e: e["session"] == session and e["data"].get("state") in states


async def all_of(
    sub: Subscription, seen: list[Event], checks: list[Callable[[Event], bool]]
) -> None:
    """Read until each check holds for an event read so far, in any order."""
    for check in checks:
        if not any(check(e) for e in seen):
            await next_event(sub, check, seen)


async def start(client: Client) -> str:
    return str((await client.request("session.start", agent="chatty"))["session"])


async def live_on(client: Client, session: str) -> dict[str, Any] | None:
    summary = await listed(client, session)
    return summary if summary is not None and summary["state"] in LIVE else None


async def test_lifecycle_changes_missed_in_a_cut_or_while_down_are_shown_once(
    link_nodes: tuple[Nodes, EngineLink],
) -> None:
    nodes, link = link_nodes
    a = await nodes.start("a")
    b = await nodes.start("b", url=link.url)
    token = SECRETS["operator"]
    on_a_seen: list[Event] = []
    on_b_seen: list[Event] = []
    async with (
        connect(a.ws_url, token, reconnect=False) as on_a,
        connect(b.ws_url, token, reconnect=False) as on_b,
    ):
        stays, stopped = await start(on_b), await start(on_b)
        for session in (stays, stopped):
            await until(f"{session} live on a's list", lambda s=session: live_on(on_a, s))
        before = await live_on(on_a, stays)
        assert before is not None
        on_a_sub = await on_a.subscribe("sessions")
        on_b_sub = await on_b.subscribe("sessions")

        link.cut()
        await all_of(on_a_sub, on_a_seen, [state_of(s, {"UNREACHABLE"}) for s in (stays, stopped)])
        await on_b.request("session.stop", session=stopped)
        started_in_cut = await start(on_b)
        short = await start(on_b)
        await next_event(on_b_sub, state_of(short, LIVE), on_b_seen)
        await on_b.request("session.stop", session=short)
        await all_of(on_b_sub, on_b_seen, [state_of(s, {"EXITED"}) for s in (stopped, short)])
        assert (await listed(on_a, stopped) or {}).get("state") == "UNREACHABLE", "cut off"

        link.restore()
        await next_event(
            on_a_sub, lambda e: e["session"] == stays and e["data"].get("state") in LIVE, on_a_seen
        )
        sentinel = await start(on_b)  # after it, nothing of the cut may still come
        await next_event(on_b_sub, state_of(sentinel, LIVE), on_b_seen)
        await next_event(on_a_sub, state_of(sentinel, LIVE), on_a_seen)

        assert fed(on_a_seen) == own(on_b_seen), "each of b's changes once, in order"
        changed = {session for _, session, _ in own(on_b_seen)}
        assert {stopped, started_in_cut, short, sentinel} <= changed
        assert sorted(marks(on_a_seen)[:2]) == sorted(
            [(stays, "UNREACHABLE"), (stopped, "UNREACHABLE")]
        )
        assert marks(on_a_seen)[2:] == [(stays, before["state"])], (
            "only the session that did not change is shown again"
        )
        last_seq_on_a = on_a_seen[-1]["seq"]

    # Now a is down while b's sessions change; once back, a feeds them after what it kept.
    a.send_signal(signal.SIGTERM)
    assert await a.wait_exit() == 0
    async with connect(b.ws_url, token, reconnect=False) as on_b:
        on_b_sub = await on_b.subscribe("sessions", since=on_b_seen[-1]["seq"])
        await on_b.request("session.stop", session=started_in_cut)
        await next_event(on_b_sub, state_of(started_in_cut, {"EXITED"}), on_b_seen)
    a = await nodes.start("a")
    async with connect(a.ws_url, token, reconnect=False) as on_a:
        resumed: Subscription = await on_a.subscribe("sessions", since=last_seq_on_a)
        after_down: list[Event] = []
        await next_event(resumed, state_of(started_in_cut, {"EXITED"}), after_down)
        async with connect(b.ws_url, token, reconnect=False) as on_b:
            sentinel_2 = await start(on_b)
        await next_event(resumed, state_of(sentinel_2, LIVE), after_down)
    missed = [t for t in own(on_b_seen) if t[0] > fed(on_a_seen)[-1][0]]
    assert [t for t in fed(after_down) if t[1] != sentinel_2] == missed, (
        "fed once after the restart"
    )
    assert missed, "b's sessions changed while a was down"
