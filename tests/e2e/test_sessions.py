"""Agent sessions over the wire, against the real daemon and the fake agents of examples/agents.

A test starts sessions with ``session.start`` through our client, follows them on their
``session/<id>`` topic (and on ``sessions``), and drives them with ``session.input``,
``session.approve``, ``session.interrupt`` and ``session.stop`` as docs/protocol.md describes.
The fake Claude prints what Claude Code prints (docs/drivers.md); its usage per turn is the
constants of examples/agents/fake_claude.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import attrs
import pytest
import trio

from hived.client import Client, RemoteError, Subscription, connect
from tests.e2e.harness import CLAUDE_ARGS, DEADLINE_S, SECRETS, Launcher, agent_toml

pytestmark = pytest.mark.e2e

TURN_INPUT_TOKENS: Final = 120
TURN_OUTPUT_TOKENS: Final = 45
TURN_COST_USD: Final = 0.0042
"""What one turn of the fake Claude reports (examples/agents/fake_claude.py)."""

SLOW_CLAUDE: Final = agent_toml(
    "slowclaude",
    *CLAUDE_ARGS,
    fmt="claude",
    extra='restart = "no"\nstop_timeout_s = 3.0\nenv = { FAKE_CLAUDE_DELAY_MS = "1000" }',
)
"""A fake Claude that pauses a second between lines: a turn takes long enough to interrupt."""

Event = dict[str, Any]


@attrs.define
class Follower:
    """A subscription and every event it delivered, in order."""

    sub: Subscription
    events: list[Event] = attrs.field(factory=list)

    async def until(self, predicate: Callable[[Event], bool]) -> Event:
        """Read events until one matches ``predicate`` (or it already arrived); that one."""
        for event in self.events:
            if predicate(event):
                return event
        with trio.fail_after(DEADLINE_S):
            while True:
                event = await self.sub.receive()
                self.events.append(event)
                if predicate(event):
                    return event

    def kinds(self) -> list[str]:
        return [event["kind"] for event in self.events]

    def states(self, session: str | None = None) -> list[str]:
        return [
            e["data"]["state"]
            for e in self.events
            if e["kind"] == "state" and (session is None or e["session"] == session)
        ]


async def follow(client: Client, topic: str) -> Follower:
    return Follower(await client.subscribe(topic, since=0))


def kind(name: str, **data: Any) -> Callable[[Event], bool]:
    """Matches an event of kind ``name`` whose data holds every item of ``data``."""
    return lambda e: e["kind"] == name and all(e["data"].get(k) == v for k, v in data.items())


def state(name: str, session: str | None = None) -> Callable[[Event], bool]:
    return lambda e: (
        e["kind"] == "state"
        and e["data"]["state"] == name
        and (session is None or e["session"] == session)
    )


async def summary_of(client: Client, session: str) -> dict[str, Any]:
    listed = await client.request("sessions", all=True)
    for entry in listed["sessions"]:
        if entry["id"] == session:
            return dict(entry)
    raise AssertionError(f"session {session} is not in sessions: {listed}")


async def start(client: Client, agent: str, **fields: Any) -> str:
    started = await client.request("session.start", agent=agent, **fields)
    assert started["state"] in ("STARTING", "RUNNING", "WORKING", "WAITING"), started
    return str(started["session"])


async def test_a_claude_turn_streams_its_events_and_its_cost_shows_in_sessions(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = await start(client, "claude", prompt="run the tests", name="turns")
        events = await follow(client, f"session/{session}")
        await events.until(kind("result"))
        await events.until(state("WAITING"))

        kinds = events.kinds()
        order = [kinds.index(k) for k in ("input", "init", "tool_use", "tool_result", "result")]
        assert order == sorted(order), kinds
        assert "message" in kinds
        tool_use = next(e for e in events.events if e["kind"] == "tool_use")
        assert tool_use["data"]["name"] == "Bash"
        tool_result = next(e for e in events.events if e["kind"] == "tool_result")
        assert tool_result["data"]["tool_use_id"] == tool_use["data"]["id"]
        assert tool_result["data"]["is_error"] is False
        result = next(e for e in events.events if e["kind"] == "result")
        assert result["data"]["total_cost_usd"] == pytest.approx(TURN_COST_USD)
        assert events.states()[:2] == ["STARTING", "RUNNING"]
        assert "WORKING" in events.states()
        seqs = [e["seq"] for e in events.events]
        assert seqs == list(range(1, len(seqs) + 1))
        assert all(
            e["session"] == session and e["topic"] == f"session/{session}" for e in events.events
        )

        listed = await summary_of(client, session)
        assert (listed["name"], listed["agent"], listed["state"]) == ("turns", "claude", "WAITING")
        assert listed["observed"] is False
        assert isinstance(listed["pid"], int)
        assert listed["usage"]["cost_usd"] == pytest.approx(TURN_COST_USD)
        assert listed["usage"]["input_tokens"] == TURN_INPUT_TOKENS
        assert listed["usage"]["output_tokens"] == TURN_OUTPUT_TOKENS
        assert listed["agent_session_id"] == next(
            e["data"]["session_id"] for e in events.events if e["kind"] == "init"
        )

        answered = await client.request("session.input", session=session, text="and again")
        assert answered["session"] == session
        await events.until(kind("input", text="and again"))
        await events.until(lambda e: e["kind"] == "result" and e["seq"] > result["seq"])
        with trio.fail_after(DEADLINE_S):
            while True:
                usage = (await summary_of(client, session))["usage"]
                if usage["input_tokens"] >= 2 * TURN_INPUT_TOKENS:
                    break
                await trio.sleep(0.05)
        assert usage["input_tokens"] == 2 * TURN_INPUT_TOKENS
        assert usage["cost_usd"] == pytest.approx(2 * TURN_COST_USD)
        assert usage["output_tokens"] == 2 * TURN_OUTPUT_TOKENS


async def test_a_permission_request_waits_for_session_approve(hived: Launcher) -> None:
    daemon = await hived.start()
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = await start(client, "claude", prompt="this needs permission")
        events = await follow(client, f"session/{session}")
        asked = await events.until(kind("permission_request"))
        request_id = asked["data"]["request_id"]
        assert isinstance(request_id, str)
        assert request_id
        assert asked["data"]["tool_name"] == "Bash"
        waiting = await events.until(state("WAITING"))
        assert waiting["data"]["reason"] == "permission_request"
        assert "tool_result" not in events.kinds()
        listed = await summary_of(client, session)
        assert (listed["state"], listed["reason"]) == ("WAITING", "permission_request")

        with pytest.raises(RemoteError) as unknown:
            await client.request(
                "session.approve", session=session, request_id="no-such-request", allow=True
            )
        assert unknown.value.code == "not_found"

        approved = await client.request(
            "session.approve", session=session, request_id=request_id, allow=True
        )
        assert approved["session"] == session
        tool_result = await events.until(kind("tool_result"))
        assert tool_result["data"]["is_error"] is False
        assert tool_result["seq"] > asked["seq"]
        await events.until(kind("result"))

        await client.request("session.input", session=session, text="permission again, please")
        second = await events.until(
            lambda e: e["kind"] == "permission_request" and e["data"]["request_id"] != request_id
        )
        await client.request(
            "session.approve",
            session=session,
            request_id=second["data"]["request_id"],
            allow=False,
            message="not on prod",
        )
        denied = await events.until(
            lambda e: e["kind"] == "tool_result" and e["seq"] > second["seq"]
        )
        assert denied["data"]["is_error"] is True
        assert "not on prod" in str(denied["data"]["content"])


async def test_interrupt_ends_the_turn_and_the_session_stays(hived: Launcher) -> None:
    port, config = hived.config(body=SLOW_CLAUDE)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = await start(client, "slowclaude", prompt="take your time")
        events = await follow(client, f"session/{session}")
        await events.until(kind("init"))
        interrupted = await client.request("session.interrupt", session=session)
        assert interrupted["session"] == session
        result = await events.until(kind("result"))
        assert result["data"]["subtype"] == "error_during_execution"
        assert "tool_result" not in events.kinds()
        await events.until(state("WAITING"))
        assert (await summary_of(client, session))["state"] == "WAITING"
        assert (await client.request("session.input", session=session, text="go on"))[
            "session"
        ] == session


async def test_stop_publishes_stopping_then_exited_on_both_topics(hived: Launcher) -> None:
    daemon = await hived.start()
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        lifecycle = await follow(client, "sessions")
        session = await start(client, "claude", prompt="hello")
        events = await follow(client, f"session/{session}")
        await events.until(state("WAITING"))

        stopped = await client.request("session.stop", session=session)
        assert stopped["session"] == session
        await events.until(state("EXITED"))
        await lifecycle.until(state("EXITED", session))
        for follower in (events, lifecycle):
            states = follower.states(session)
            assert states[0] == "STARTING"
            assert states[-2:] == ["STOPPING", "EXITED"], states
        listed = await summary_of(client, session)
        assert listed["state"] == "EXITED"
        assert listed["ended_at"] is not None
        live = await client.request("sessions")
        assert session not in [s["id"] for s in live["sessions"]]
        again = await client.request("session.stop", session=session)
        assert again["session"] == session


async def test_session_requests_fail_with_the_documented_codes(hived: Launcher) -> None:
    daemon = await hived.start()
    async with (
        connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator,
        connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as viewer,
    ):

        async def code_of(client: Client, type_: str, **fields: Any) -> str:
            with pytest.raises(RemoteError) as refused:
                await client.request(type_, **fields)
            return refused.value.code

        assert await code_of(operator, "session.start", agent="no-such-agent") == "not_found"
        assert await code_of(operator, "session.input", session="no-such-session", text="x") == (
            "not_found"
        )
        assert await code_of(viewer, "session.start", agent="claude") == "forbidden"

        text = await start(operator, "text")
        assert await code_of(viewer, "session.input", session=text, text="hi") == "forbidden"
        assert await code_of(viewer, "session.stop", session=text) == "forbidden"
        await operator.request("session.stop", session=text)
        assert await code_of(operator, "session.input", session=text, text="hi") == "conflict"

        codex = await start(operator, "codex", prompt="list the files")
        assert await code_of(operator, "session.input", session=codex, text="more") == "conflict"
