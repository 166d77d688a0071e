"""Three real hived nodes sharing one real redis-server (docs/cluster.md).

Each node is a subprocess with its own config, state folder and port, all with the same
``[cluster]`` engine and tokens. The tests follow the issue's "done when": a session on node B
listed, followed live and answered from node A; the engine down for a while loses nothing; a
killed node's sessions show UNREACHABLE, and back once it restarts; a FLUSHALL is noticed by the
epoch and the client re-reads. Every wait polls a condition under a deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import attrs
import orjson
import pytest
import trio

from hived.client import Client, Subscription, connect
from tests.e2e.harness import (
    CLAUDE_ARGS,
    DEADLINE_S,
    SECRETS,
    Launcher,
    RunningDaemon,
    agent_toml,
    config_text,
    free_port,
    websockets_client,
)
from tests.redis_engine import RedisServer

pytestmark = pytest.mark.e2e

HEARTBEAT_S: Final = 0.5
CHATTY: Final = agent_toml(
    "chatty",
    "fake_text.py",
    extra='restart = "no"\nstop_timeout_s = 3.0',
)
"""The text agent: echoes every input line (examples/agents/fake_text.py)."""

Event = dict[str, Any]


@attrs.define
class Nodes:
    """Starts cluster nodes, each in its own folder, all on one engine."""

    tmp_path: Path
    redis: RedisServer
    launchers: dict[str, Launcher] = attrs.field(factory=dict)
    ports: dict[str, int] = attrs.field(factory=dict)

    async def start(self, name: str) -> RunningDaemon:
        folder = self.tmp_path / name
        folder.mkdir(exist_ok=True)
        launcher = self.launchers.setdefault(name, Launcher(folder))
        port = self.ports.setdefault(name, free_port())
        body = (
            CHATTY
            + f'[cluster]\nnode = "{name}"\nurl = "{self.redis.url}"\n'
            + f"heartbeat_interval_s = {HEARTBEAT_S}\nrequest_timeout_s = 5.0\n"
        )
        return await launcher.start(config_text(port, folder / "state", body=body), port=port)

    async def kill_all(self) -> None:
        for launcher in self.launchers.values():
            await launcher.kill_all()


@pytest.fixture
async def nodes(tmp_path: Path, redis: RedisServer) -> AsyncIterator[Nodes]:
    started = Nodes(tmp_path, redis)
    try:
        yield started
    finally:
        await started.kill_all()


async def until(what: str, check: Callable[[], Any], timeout_s: float = DEADLINE_S) -> Any:
    """Poll the async ``check`` until it returns something true, under a deadline."""
    last = None
    with trio.move_on_after(timeout_s):
        while True:
            last = await check()
            if last:
                return last
            await trio.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout_s} s; last: {last}")


async def listed(client: Client, session: str) -> dict[str, Any] | None:
    sessions = (await client.request("sessions", all=True))["sessions"]
    return next((s for s in sessions if s["id"] == session), None)


async def next_event(sub: Subscription, check: Callable[[Event], bool], seen: list[Event]) -> Event:
    with trio.fail_after(DEADLINE_S):
        while True:
            event = await sub.receive()
            seen.append(event)
            if check(event):
                return event


async def test_a_session_on_node_b_is_listed_followed_and_approved_from_node_a(
    nodes: Nodes,
) -> None:
    a = await nodes.start("a")
    b = await nodes.start("b")
    await nodes.start("c")
    token = SECRETS["operator"]
    async with (
        connect(a.ws_url, token, reconnect=False) as on_a,
        connect(b.ws_url, token, reconnect=False) as on_b,
    ):
        started = await on_a.request(
            "session.start", agent="claude", prompt="this needs permission", node="b"
        )
        session = started["session"]
        assert await listed(on_b, session) is not None, "session.start with node=b runs on b"

        shown = await until("the session listed on a", lambda: listed(on_a, session))
        assert shown["node"] == "b"
        assert shown["agent"] == "claude"

        seen: list[Event] = []
        sub = await on_a.subscribe(f"session/{session}", since=0)
        asked = await next_event(sub, lambda e: e["kind"] == "permission_request", seen)
        assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1)), "no gap, no duplicate"

        approved = await on_a.request(
            "session.approve",
            session=session,
            request_id=asked["data"]["request_id"],
            allow=True,
        )
        assert approved["session"] == session
        result = await next_event(sub, lambda e: e["kind"] == "tool_result", seen)
        assert result["data"]["is_error"] is False
        assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))

        # What node A delivered is what node B keeps, event for event.
        kept = await on_b.request("session.events", session=session, since=0, limit=1000)
        assert [e["seq"] for e in kept["events"]][: len(seen)] == [e["seq"] for e in seen]
        assert [e["kind"] for e in kept["events"]][: len(seen)] == [e["kind"] for e in seen]

        status = await until(
            "three nodes in status",
            lambda: _status_nodes(a),
        )
        assert {n["name"]: n["alive"] for n in status} == {"a": True, "b": True, "c": True}


async def _status_nodes(daemon: RunningDaemon) -> list[dict[str, Any]] | None:
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
        nodes = (await admin.request("status"))["cluster"]["nodes"]
    return nodes if len(nodes) == 3 else None
