"""Observed sessions from hook payloads. No subprocess here, so the virtual clock is safe."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from hived.agents.observed import HookLimitError, ObservedSessions, Recall, observed_name
from hived.agents.supervisor import Supervisor
from hived.core.config import Config, HooksConfig, Seconds
from hived.core.drivers.base import TurnOutcome
from hived.core.errors import RequestError
from hived.core.events import SESSIONS_TOPIC, session_topic
from hived.core.protocol import Caller, Sessions, SessionStop
from hived.core.sessions import SessionSummary, State
from hived.hub import Hub

IDLE_S = Seconds(60.0)
AGENT_ID = "9f1c2a3b-0000-4000-8000-000000000001"


def hook(name: str, session_id: str = AGENT_ID, **fields: Any) -> dict[str, Any]:
    """A payload shaped like Claude Code's (agent-formats.md)."""
    return {
        "session_id": session_id,
        "transcript_path": "/home/dev/.claude/projects/x.jsonl",
        "cwd": "/srv/app",
        "permission_mode": "default",
        "hook_event_name": name,
        **fields,
    }


class Changes:
    """The state callback: every (summary, previous) it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[SessionSummary, State | None]] = []

    def __call__(self, summary: SessionSummary, previous: State | None) -> None:
        self.calls.append((summary, previous))

    def states(self) -> list[State]:
        return [summary.state for summary, _ in self.calls]


@asynccontextmanager
async def observing(
    joined: dict[str, str] | None = None,
    recall: Recall | None = None,
    **hooks: Any,
) -> AsyncIterator[tuple[ObservedSessions, Changes, Hub]]:
    hub = Hub()
    changes = Changes()
    observed = ObservedSessions(
        hub, HooksConfig(observed_idle_s=IDLE_S, **hooks), changes, (joined or {}).get, recall
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(observed.serve_idle_watch)
        yield observed, changes, hub
        nursery.cancel_scope.cancel()


async def hook_events(hub: Hub, topic: str) -> list[dict[str, Any]]:
    sub = hub.subscriber(10_000)
    await hub.subscribe(sub, topic, 0)
    if not sub.depth:
        return []
    return [orjson.loads(f) for f in await sub.receive_batch()]


async def test_interrupt_and_stop_failure_end_the_turn_and_say_how() -> None:
    async with observing() as (observed, changes, _hub):
        observed.ingest_hook(hook("UserPromptSubmit", prompt="go"))
        observed.ingest_hook(hook("Interrupt"))  # Esc: no Stop follows
        assert changes.calls[-1][0].state is State.WAITING
        assert changes.calls[-1][0].last_turn == TurnOutcome(ok=False, error="interrupted")
        observed.ingest_hook(hook("UserPromptSubmit", prompt="again"))
        observed.ingest_hook(hook("PermissionRequest", tool_name="Bash"))
        observed.ingest_hook(hook("PermissionDenied", tool_name="Bash"))  # the agent goes on
        assert changes.calls[-1][0].state is State.WORKING
        observed.ingest_hook(hook("PostToolUseFailure", tool_name="Bash", error="exit 1"))
        observed.ingest_hook(
            hook("StopFailure", error_type="rate_limit", error="API Error: 429 rate limited")
        )
        last = changes.calls[-1][0]
        assert (last.state, last.reason) == (State.WAITING, "StopFailure")
        assert last.last_turn == TurnOutcome(
            ok=False, error="rate_limit", message="API Error: 429 rate limited"
        )
        observed.ingest_hook(hook("UserPromptSubmit", prompt="once more"))
        observed.ingest_hook(hook("Stop", stop_hook_active=False))
        assert changes.calls[-1][0].last_turn == TurnOutcome(ok=True)


async def test_hooks_move_an_observed_session_through_its_states() -> None:
    async with observing() as (observed, changes, hub):
        observed.ingest_hook(hook("SessionStart", source="startup", model="claude-opus-4-1"))
        observed.ingest_hook(hook("UserPromptSubmit", prompt="run the tests"))
        observed.ingest_hook(hook("PreToolUse", tool_name="Bash", tool_input={"command": "ls"}))
        observed.ingest_hook(hook("PostToolUse", tool_name="Bash"))  # still WORKING: no change
        observed.ingest_hook(hook("Notification", notification_type="permission_prompt"))
        observed.ingest_hook(hook("PermissionRequest", tool_name="Bash"))  # still WAITING
        observed.ingest_hook(hook("PreToolUse", tool_name="Bash"))
        observed.ingest_hook(hook("Stop", stop_hook_active=False))
        observed.ingest_hook(hook("SessionEnd", reason="logout"))
        assert changes.states() == [
            State.RUNNING,
            State.WORKING,
            State.WAITING,
            State.WORKING,
            State.WAITING,
            State.EXITED,
        ]
        assert [previous for _, previous in changes.calls][:2] == [None, State.RUNNING]
        reasons = [summary.reason for summary, _ in changes.calls]
        assert reasons[2] == "permission_prompt"
        assert reasons[-1] == "SessionEnd: logout"
        summary = changes.calls[-1][0]
        assert summary.observed
        assert summary.agent_session_id == AGENT_ID
        assert summary.cwd == "/srv/app"
        assert summary.name == "claude-9f1c2a3b"
        assert summary.ended_at is not None

        events = await hook_events(hub, session_topic(summary.id))
        assert events[0]["data"]["hook_event_name"] == "SessionStart"
        assert len(events) == 9
        assert all(e["kind"] == "hook" and e["session"] == summary.id for e in events)


async def test_a_hook_session_id_is_logged_with_its_control_characters_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hived.agents.observed")
    forged = "abc\n2026-12-01 INFO    hived.admin: daemon.stop by alice\x1b[2J"
    async with observing() as (observed, _, _):
        observed.ingest_hook(hook("SessionStart", session_id=forged))
    [line] = [r.getMessage() for r in caplog.records if "seen through hooks" in r.getMessage()]
    assert "\n" not in line
    assert "\x1b" not in line
    assert "abc\\n2026-12-01 INFO    hived.admin" in line
    assert "\\x1b[2J" in line


async def test_unknown_hooks_are_published_and_change_nothing() -> None:
    async with observing() as (observed, changes, hub):
        observed.ingest_hook(hook("SessionStart"))
        observed.ingest_hook(hook("SomethingNew", extra={"a": 1}))
        assert changes.states() == [State.RUNNING]
        events = await hook_events(hub, session_topic(changes.calls[0][0].id))
        assert events[-1]["data"]["extra"] == {"a": 1}


async def test_the_first_hook_of_an_unseen_session_creates_it_in_that_hooks_state() -> None:
    async with observing() as (observed, changes, _):
        observed.ingest_hook(hook("PreToolUse", tool_name="Edit"))
        assert changes.calls == [(changes.calls[0][0], None)]
        assert changes.states() == [State.WORKING]


async def test_session_start_after_session_end_is_a_new_session() -> None:
    async with observing() as (observed, changes, hub):
        observed.ingest_hook(hook("SessionStart"))
        observed.ingest_hook(hook("SessionEnd", reason="clear"))
        observed.ingest_hook(hook("SessionStart", source="resume"))
        first, second = changes.calls[0][0], changes.calls[-1][0]
        assert first.id != second.id
        assert second.state is State.RUNNING
        assert [s.summary.id for s in observed] == [first.id, second.id]
        # A late hook for an ended session is published, without a state change.
        observed.ingest_hook(hook("SessionEnd"))
        calls = len(changes.calls)
        observed.ingest_hook(hook("Stop"))
        assert len(changes.calls) == calls
        events = await hook_events(hub, session_topic(second.id))
        assert events[-1]["data"]["hook_event_name"] == "Stop"


@pytest.mark.parametrize(
    "payload",
    [
        {"hook_event_name": "Stop"},
        {"session_id": "", "hook_event_name": "Stop"},
        {"session_id": 7, "hook_event_name": "Stop"},
        {"session_id": "abc"},
        {"session_id": "abc", "hook_event_name": ["Stop"]},
    ],
)
async def test_a_payload_without_session_id_or_hook_name_is_a_bad_request(
    payload: dict[str, Any],
) -> None:
    async with observing() as (observed, changes, _):
        with pytest.raises(RequestError) as info:
            observed.ingest_hook(payload)
        assert info.value.code == "bad_request"
        assert "hook payload" in info.value.message
        assert changes.calls == []


async def test_a_payload_without_session_id_says_it_is_missing() -> None:
    async with observing() as (observed, _, _):
        with pytest.raises(RequestError) as info:
            observed.ingest_hook({"hook_event_name": "Stop"})
        assert info.value.message == "hook payload: session_id: missing"


async def test_a_hook_of_a_session_kept_from_an_earlier_run_brings_that_session_back() -> None:
    kept = SessionSummary(
        id="01KEPT0000000000000000000A",
        name=observed_name(AGENT_ID),
        agent="claude",
        state=State.LOST,
        reason="daemon stopped while the session ran",
        observed=True,
        agent_session_id=AGENT_ID,
    )
    asked: list[tuple[str, str]] = []

    def recall(name: str, agent_session_id: str) -> SessionSummary | None:
        asked.append((name, agent_session_id))
        return kept if agent_session_id == AGENT_ID else None

    async with observing(recall=recall) as (observed, changes, _):
        observed.ingest_hook(hook("UserPromptSubmit", prompt="go on"))
        assert asked == [(observed_name(AGENT_ID), AGENT_ID)]
        assert [s.summary.id for s in observed] == [kept.id]
        assert [(s.id, s.state, p) for s, p in changes.calls] == [
            (kept.id, State.WORKING, State.LOST)
        ]
        observed.ingest_hook(hook("Stop"))
        assert len(asked) == 1  # known now: not looked up again
        assert changes.states()[-1] is State.WAITING
        observed.ingest_hook(hook("SessionStart", session_id="another"))
        assert len(list(observed)) == 2


async def test_silence_makes_a_session_lost_and_a_hook_brings_it_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observing() as (observed, changes, _):
        observed.ingest_hook(hook("SessionStart"))
        observed.ingest_hook(hook("SessionStart", session_id="other"))
        await trio.sleep(IDLE_S / 2)
        observed.ingest_hook(hook("UserPromptSubmit"))  # AGENT_ID speaks; "other" stays quiet
        await trio.sleep(IDLE_S / 2 + 1)
        by_agent = {s.summary.agent_session_id: s.summary for s in observed}
        assert by_agent["other"].state is State.LOST
        assert by_agent["other"].reason == f"no hook for {IDLE_S:g} s"
        assert by_agent[AGENT_ID].state is State.WORKING
        await trio.sleep(IDLE_S)
        assert all(s.summary.state is State.LOST for s in observed)

        observed.ingest_hook(hook("Notification", session_id="other"))
        assert {s.summary.agent_session_id: s.summary.state for s in observed}["other"] is (
            State.WAITING
        )
        await trio.sleep(IDLE_S + 1)
        assert all(s.summary.state is State.LOST for s in observed)
        # An end after LOST: back for a moment, then EXITED.
        observed.ingest_hook(hook("SessionEnd", session_id="other"))
        assert changes.states()[-2:] == [State.RUNNING, State.EXITED]


async def test_a_hook_of_a_joined_session_goes_to_that_session_only() -> None:
    async with observing(joined={AGENT_ID: "01SUPERVISED"}) as (observed, changes, hub):
        observed.ingest_hook(hook("PreToolUse", tool_name="Bash"))
        assert changes.calls == []
        assert list(observed) == []
        events = await hook_events(hub, session_topic("01SUPERVISED"))
        assert [e["data"]["tool_name"] for e in events] == ["Bash"]


async def test_observed_sessions_show_in_the_supervisor_and_refuse_commands(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(hooks=HooksConfig(observed_idle_s=IDLE_S))
    hub = Hub()
    sup = Supervisor(config, hub)
    caller = Caller(connection=1, token_name="tester", role="operator")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.serve)
        sup.ingest_hook(hook("SessionStart"))
        answer = await sup.handlers()["sessions"](Sessions(), caller)
        [listed] = answer["sessions"]
        assert listed["observed"] is True
        assert listed["state"] == "RUNNING"
        assert sup.find("claude-9f1c2a3b").id == listed["id"]
        with pytest.raises(RequestError, match="observed through hooks") as info:
            await sup.handlers()["session.stop"](SessionStop(session=listed["id"]), caller)
        assert info.value.code == "conflict"

        lifecycle = await hook_events(hub, SESSIONS_TOPIC)
        assert [(e["kind"], e["data"]["state"]) for e in lifecycle] == [("state", "RUNNING")]
        assert lifecycle[0]["data"]["summary"]["observed"] is True

        await trio.sleep(IDLE_S + 1)
        assert sup.find(listed["id"]).state is State.LOST
        nursery.cancel_scope.cancel()


async def test_a_token_keeps_at_most_max_live_per_token_sessions_live(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observing(max_live_per_token=3) as (observed, changes, _hub):
        for i in range(3):
            observed.ingest_hook(hook("SessionStart", session_id=f"a{i}"), "alice")
        with pytest.raises(HookLimitError, match="alice already keeps 3") as info:
            observed.ingest_hook(hook("SessionStart", session_id="a3"), "alice")
        assert "hooks.max_live_per_token" in info.value.message
        assert len(list(observed)) == 3
        assert len(changes.calls) == 3, "a refused hook changes nothing"
        observed.ingest_hook(hook("PreToolUse", session_id="a0"), "alice")  # a live one: taken
        observed.ingest_hook(hook("SessionStart", session_id="b0"), "bob")  # another token
        observed.ingest_hook(hook("SessionEnd", session_id="a1"), "alice")
        observed.ingest_hook(hook("SessionStart", session_id="a3"), "alice")  # room again
        assert (observed.live_count("alice"), observed.live_count("bob")) == (3, 1)
        # Sessions that went LOST come back only while there is room.
        await trio.sleep(IDLE_S + 1)
        assert observed.live_count("alice") == 0
        for i in (0, 2, 3):
            observed.ingest_hook(hook("Notification", session_id=f"a{i}"), "alice")
        observed.ingest_hook(hook("SessionStart", session_id="a4"), "mallory")
        with pytest.raises(HookLimitError):
            observed.ingest_hook(hook("SessionStart", session_id="a5"), "alice")
        assert observed.live_count("alice") == 3


async def test_a_hook_costs_the_same_with_20000_sessions_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each new session used to scan every session kept (ended ones to forget, and the idle
    watch woken to look at every live one): 1.4 ms a hook at 0 sessions, 27 ms at 20k."""

    async def seconds_per_hook(observed: ObservedSessions, prefix: str) -> float:
        start = time.perf_counter()
        for i in range(500):
            observed.ingest_hook(hook("SessionStart", session_id=f"{prefix}{i}"))
            if i % 50 == 0:
                await trio.lowlevel.checkpoint()  # the idle watch gets to run
        return (time.perf_counter() - start) / 500

    async with observing(max_live_per_token=100_000) as (observed, _, _):
        empty = await seconds_per_hook(observed, "first-")
        for i in range(10_000):
            observed.ingest_hook(hook("SessionStart", session_id=f"live-{i}"))
            observed.ingest_hook(hook("SessionStart", session_id=f"ended-{i}"))
            observed.ingest_hook(hook("SessionEnd", session_id=f"ended-{i}"))
        await trio.testing.wait_all_tasks_blocked()
        full = await seconds_per_hook(observed, "later-")
        assert len(list(observed)) == 500 + 10_000 + 1000 + 500, (
            "ended ones past 1000 are forgotten"
        )
    assert full < 4 * empty + 0.0005, (empty, full)
