"""The claude driver, replayed against what the real Claude Code 2.1.336 printed.

The transcripts in tests/fixtures/claude/ were recorded from the real binary against the local
model stand-in (tests/realagents/record_claude.py). A test feeds the agent's lines to a driver,
answers where the recording answered, and checks what the driver writes against what the
recording wrote, and what it reports against the agent's own figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hived.core.drivers.base import (
    Action,
    Answer,
    DriverLaunch,
    DriverRefusal,
    Step,
    TurnOutcome,
    act,
)
from hived.core.drivers.claude import ClaudeDriver
from hived.core.events import AgentEvent, Usage

FIXTURES = Path(__file__).parent / "fixtures" / "claude"


def transcript(scenario: str) -> list[dict[str, Any]]:
    with (FIXTURES / f"{scenario}.jsonl").open("rb") as file:
        return [orjson.loads(raw) for raw in file]


def out_lines(scenario: str, process: int | None = None) -> Iterator[str]:
    """The agent's stdout lines (of one process of a two-process scenario)."""
    current = 0
    for entry in transcript(scenario):
        if entry["dir"] == "meta":
            current = entry["process"]
        elif entry["dir"] == "out" and (process is None or process == current):
            yield orjson.dumps(entry["line"]).decode()


def in_lines(scenario: str) -> list[dict[str, Any]]:
    return [e["line"] for e in transcript(scenario) if e["dir"] == "in"]


def replay(driver: ClaudeDriver, lines: Iterator[str]) -> list[Step]:
    return [driver.feed(text) for text in lines]


def events(steps: list[Step]) -> list[AgentEvent]:
    return [e for step in steps for e in step.events]


def kinds(steps: list[Step], kind: str) -> list[AgentEvent]:
    return [e for e in events(steps) if e.kind == kind]


def driver(**launch: Any) -> ClaudeDriver:
    return ClaudeDriver(DriverLaunch(cwd="/srv/app", **launch))


def written(step: Step) -> dict[str, Any]:
    assert step.stdin.endswith(b"\n")
    return dict(orjson.loads(step.stdin))


# -- usage and cost ------------------------------------------------------------------------------


def test_two_turns_cost_is_the_agents_last_figure_not_a_sum() -> None:
    claude = driver()
    steps = replay(claude, out_lines("two_turns"))
    results = kinds(steps, "result")
    assert [r.data["total_cost_usd"] for r in results] == pytest.approx([0.00495, 0.00705])
    assert claude.usage == Usage(
        input_tokens=100 + 200,
        output_tokens=20 + 40,
        cache_write_tokens=1000,
        cache_read_tokens=2000 + 3000,
        cost_usd=pytest.approx(0.00705),
        turns=2,
        duration_ms=727 + 60,
    )
    assert [s.usage for s in steps if s.usage] == [claude.usage.__class__(**{
        **claude.usage.to_json(),
        "input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 2000,
        "cost_usd": pytest.approx(0.00495), "turns": 1, "duration_ms": 727,
    }), claude.usage]  # fmt: skip


def test_cost_adds_to_the_sessions_earlier_runs_of_other_conversations() -> None:
    before = Usage(input_tokens=7, cost_usd=1.5, turns=3)
    claude = driver(usage=before)
    replay(claude, out_lines("two_turns"))
    assert claude.usage.cost_usd == pytest.approx(1.5 + 0.00705)
    assert (claude.usage.input_tokens, claude.usage.turns) == (7 + 300, 5)


def test_a_resumed_conversation_reports_its_whole_cost_which_is_not_added_again() -> None:
    first = driver()
    replay(first, out_lines("resume", process=0))
    assert first.usage.cost_usd == pytest.approx(0.00495)
    resumed = driver(usage=first.usage, resume_id="72f94530-153d-4d99-a597-89344a475233")
    replay(resumed, out_lines("resume", process=1))
    assert resumed.usage.cost_usd == pytest.approx(0.00705)
    assert resumed.usage.turns == 2


def test_every_result_carries_its_turn_outcome() -> None:
    steps = replay(driver(), out_lines("two_turns"))
    for result in kinds(steps, "result"):
        assert result.data["last_turn"] == {"ok": True, "error": None, "message": None}
        assert (result.state, result.reason) == ("WAITING", "result")
    assert [s.last_turn for s in steps if s.last_turn] == [TurnOutcome(ok=True)] * 2


# -- failed turns --------------------------------------------------------------------------------


def test_an_api_error_is_a_failed_turn_with_the_agents_words() -> None:
    steps = replay(driver(), out_lines("api_error"))
    outcomes = [s.last_turn for s in steps if s.last_turn]
    message = "API Error: 400 standin: this request is refused on purpose"
    assert outcomes == [
        TurnOutcome(ok=False, error="api_error", message=message),
        TurnOutcome(True),
    ]
    failed = kinds(steps, "result")[0]
    assert failed.data["last_turn"] == {"ok": False, "error": "api_error", "message": message}
    # The assistant line that stands for the failed call keeps its error flag.
    api_messages = [e for e in kinds(steps, "message") if e.data.get("is_api_error_message")]
    assert api_messages


def test_an_interrupted_turn_says_so_and_the_next_one_goes_on() -> None:
    claude = driver(prompt="count slowly")  # the turn the recording interrupted
    lines = list(out_lines("interrupt"))
    assert written(claude.interrupt())["request"] == {"subtype": "interrupt"}
    steps = replay(claude, iter(lines))
    outcomes = [s.last_turn for s in steps if s.last_turn]
    assert outcomes == [TurnOutcome(ok=False, error="interrupted"), TurnOutcome(ok=True)]
    assert claude.usage.cost_usd == pytest.approx(0.005055)


def test_an_interrupt_needs_a_turn_and_one_between_turns_is_refused() -> None:
    claude = driver()
    with pytest.raises(DriverRefusal, match="not in a turn") as idle:
        claude.interrupt()
    assert idle.value.code == "conflict"
    lines = list(out_lines("two_turns"))
    first_result = next(i for i, text in enumerate(lines) if orjson.loads(text)["type"] == "result")
    claude.prompt("first")
    replay(claude, iter(lines[: first_result + 1]))
    with pytest.raises(DriverRefusal, match="not in a turn"):
        claude.interrupt()
    claude.prompt("second")
    assert written(claude.interrupt())["request"] == {"subtype": "interrupt"}


def test_a_turn_seen_to_begin_without_a_prompt_of_hiveds_can_be_interrupted() -> None:
    claude, lines = driver(), list(out_lines("two_turns"))
    first_init = next(
        i for i, text in enumerate(lines) if orjson.loads(text).get("subtype") == "init"
    )
    replay(claude, iter(lines[: first_init + 1]))
    assert written(claude.interrupt())["request"] == {"subtype": "interrupt"}


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"subtype": "error_max_turns"}, "max_turns"),
        ({"subtype": "error_max_budget_usd"}, "max_budget"),
        ({"subtype": "error_during_execution"}, "error_during_execution"),
        ({"subtype": "success", "terminal_reason": "prompt_too_long"}, "prompt_too_long"),
        ({"subtype": "success"}, "api_error"),
    ],
)
def test_failed_turn_kinds(fields: dict[str, Any], error: str) -> None:
    step = driver().feed(orjson.dumps({"type": "result", "is_error": True, **fields}).decode())
    assert step.last_turn == TurnOutcome(ok=False, error=error)


# -- permissions ---------------------------------------------------------------------------------


def permission_request(scenario: str) -> tuple[ClaudeDriver, AgentEvent, list[str]]:
    """A driver fed up to the scenario's first request, the request, and the lines after it."""
    claude, lines = driver(), list(out_lines(scenario))
    for index, text in enumerate(lines):
        requests = [e for e in claude.feed(text).events if e.kind == "permission_request"]
        if requests:
            return claude, requests[0], lines[index + 1 :]
    raise AssertionError(f"{scenario} has no request")


def recorded_answer(scenario: str) -> dict[str, Any]:
    return next(line for line in in_lines(scenario) if line["type"] == "control_response")


def test_allow_echoes_the_input_as_the_real_agent_took_it() -> None:
    claude, request, _ = permission_request("permission_allow")
    assert (request.state, request.reason) == ("WAITING", "permission_request")
    assert request.data["request_kind"] == "permission"
    request_id = request.data["request_id"]
    assert set(claude.pending) == {request_id}
    step = claude.answer(request_id, Answer(allow=True))
    assert written(step) == recorded_answer("permission_allow")
    assert (step.state, step.reason) == ("WORKING", "answered")
    assert not claude.pending


def test_deny_carries_the_operators_message() -> None:
    claude, request, _ = permission_request("permission_deny")
    recorded = recorded_answer("permission_deny")
    message = recorded["response"]["response"]["message"]
    step = claude.answer(request.data["request_id"], Answer(allow=False, message=message))
    assert written(step) == recorded


def test_always_allow_sends_the_agents_suggestions_back() -> None:
    claude, request, _ = permission_request("permission_always")
    assert request.data["permission_suggestions"]
    step = claude.answer(request.data["request_id"], Answer(allow=True, always=True))
    assert written(step) == recorded_answer("permission_always")


def test_always_allow_where_none_is_offered_is_a_bad_request() -> None:
    claude, request, _ = permission_request("ask_user_question")
    with pytest.raises(DriverRefusal) as refused:
        claude.answer(request.data["request_id"], Answer(allow=True, always=True))
    assert refused.value.code == "bad_request"


def test_edited_input_replaces_the_agents() -> None:
    claude, request, _ = permission_request("permission_allow")
    step = claude.answer(request.data["request_id"], Answer(allow=True, updated_input={"x": 1}))
    assert written(step)["response"]["response"] == {
        "behavior": "allow",
        "updatedInput": {"x": 1},
    }


# -- questions -----------------------------------------------------------------------------------


def test_ask_user_question_is_a_question_answered_with_its_answers() -> None:
    claude, request, _ = permission_request("ask_user_question")
    assert request.data["request_kind"] == "question"
    assert (request.state, request.reason) == ("WAITING", "question")
    recorded = recorded_answer("ask_user_question")
    answers = recorded["response"]["response"]["updatedInput"]["answers"]
    step = claude.answer(request.data["request_id"], Answer(answers=answers))
    assert written(step) == recorded


def test_a_question_cannot_be_merely_allowed_but_can_be_denied() -> None:
    claude, request, _ = permission_request("ask_user_question")
    request_id = request.data["request_id"]
    with pytest.raises(DriverRefusal, match="is a question: answer it") as refused:
        claude.answer(request_id, Answer(allow=True))
    assert refused.value.code == "bad_request"
    step = claude.answer(request_id, Answer(allow=False, message="not now"))
    assert written(step)["response"]["response"] == {"behavior": "deny", "message": "not now"}


def test_answers_to_a_permission_request_are_a_bad_request() -> None:
    claude, request, _ = permission_request("permission_allow")
    with pytest.raises(DriverRefusal, match="asks for a permission, not answers"):
        claude.answer(request.data["request_id"], Answer(answers={"q": "a"}))


# -- withdrawn and unknown requests --------------------------------------------------------------


def test_a_cancel_request_withdraws_the_pending_request() -> None:
    claude, request, rest = permission_request("interrupt_pending_permission")
    request_id = request.data["request_id"]
    claude.interrupt()
    steps = replay(claude, iter(rest))
    withdrawn = kinds(steps, "request_withdrawn")
    assert [e.data for e in withdrawn] == [
        {"request_id": request_id, "request_kind": "permission", "reason": "cancelled by the agent"}
    ]
    assert not claude.pending
    cancel_step = next(s for s in steps if any(e.kind == "request_withdrawn" for e in s.events))
    assert (cancel_step.state, cancel_step.reason) == ("WORKING", "request withdrawn")
    assert [s.last_turn for s in steps if s.last_turn] == [
        TurnOutcome(ok=False, error="interrupted")
    ]


def test_a_turn_that_ends_with_a_request_open_withdraws_it() -> None:
    claude, request, _ = permission_request("permission_allow")
    step = claude.feed(orjson.dumps({"type": "result", "subtype": "success"}).decode())
    assert [e.kind for e in step.events] == ["result", "request_withdrawn"]
    assert step.events[1].data["request_id"] == request.data["request_id"]
    assert not claude.pending


def test_the_agents_exit_withdraws_what_is_pending() -> None:
    claude, _request, _ = permission_request("permission_allow")
    step = claude.exited()
    assert [e.data["reason"] for e in step.events] == ["the agent exited"]


def test_an_unknown_control_request_gets_an_error_so_the_agent_never_waits() -> None:
    claude = driver()
    line = {"type": "control_request", "request_id": "h-1", "request": {"subtype": "hook_callback"}}
    step = claude.feed(orjson.dumps(line).decode())
    assert [e.kind for e in step.events] == ["agent_event"]
    answer = written(step)
    assert answer["type"] == "control_response"
    assert answer["response"]["subtype"] == "error"
    assert answer["response"]["request_id"] == "h-1"
    assert "hook_callback" in answer["response"]["error"]
    assert not claude.pending


def test_an_elicitation_is_offered_and_answered_with_its_action() -> None:
    claude = driver()
    request = {
        "subtype": "elicitation",
        "mcp_server_name": "github",
        "message": "Which repository?",
        "requested_schema": {"type": "object", "properties": {"repo": {"type": "string"}}},
    }
    line = {"type": "control_request", "request_id": "el-1", "request": request}
    [event] = claude.feed(orjson.dumps(line).decode()).events
    assert event.kind == "permission_request"
    assert (event.data["request_kind"], event.reason) == ("elicitation", "elicitation")
    assert event.data["message"] == "Which repository?"
    step = claude.answer("el-1", Answer(action="accept", content={"repo": "hived"}))
    assert written(step)["response"] == {
        "subtype": "success",
        "request_id": "el-1",
        "response": {"action": "accept", "content": {"repo": "hived"}},
    }
    claude.feed(orjson.dumps(line).decode())
    with pytest.raises(DriverRefusal, match="accept, decline or cancel"):
        claude.answer("el-1", Answer(answers={"q": "a"}))
    declined = claude.answer("el-1", Answer(allow=False))
    assert written(declined)["response"]["response"] == {"action": "decline"}


# -- prompts -------------------------------------------------------------------------------------


def test_the_first_prompt_is_written_at_start_as_the_recording_did() -> None:
    step = driver(prompt="hello").start()
    sent, recorded = written(step), in_lines("two_turns")[0]
    assert {**sent, "uuid": None} == {**recorded, "uuid": None}


def test_a_resumed_run_without_a_prompt_writes_nothing_at_start() -> None:
    assert driver(resume_id="abc").start() == Step()


# -- rebuilding a driver (a run taken up by a later daemon) ----------------------------------------


def test_a_driver_rebuilt_from_the_output_and_the_noted_actions_is_the_same() -> None:
    # The output up to the tool's result: the turn has not ended (which would withdraw an
    # unanswered request anyway), so only the noted answer empties the pending set.
    lines = list(out_lines("permission_allow"))
    asked = next(i for i, text in enumerate(lines) if '"can_use_tool"' in text)
    lines = lines[: asked + 2]
    first = driver()
    noted: list[Action] = []
    for fed, text in enumerate(lines, start=1):
        for event in first.feed(text).events:
            if event.kind == "permission_request":
                action = Action(fed, "answer", (event.data["request_id"], Answer(allow=True)))
                act(first, action)
                noted.append(Action.from_json(orjson.loads(orjson.dumps(action.to_json()))))
    rebuilt = driver()
    for fed, text in enumerate(lines):
        while noted and noted[0].at <= fed:
            act(rebuilt, noted.pop(0))
        rebuilt.feed(text)
    assert rebuilt.pending == first.pending == {}
    assert rebuilt.usage == first.usage
