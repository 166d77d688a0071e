"""The Codex app-server driver, driven by transcripts recorded from the real Codex 0.171.

Each replay feeds a transcript's ``out`` lines (what Codex printed) into the driver and turns its
``in`` lines (what the recorder wrote) into operator actions: a ``turn/start`` is a prompt, an
approval's response an answer, a ``turn/interrupt`` an interrupt. What the driver writes must
match what the recorder wrote, message by message: the same methods, ids and params.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hived.core.drivers import get_format
from hived.core.drivers.base import (
    Answer,
    DriverLaunch,
    DriverRefusal,
    Step,
    TurnOutcome,
)
from hived.core.drivers.codex_app import CodexAppDriver
from hived.core.events import Usage
from hived.core.parsers.codex import CodexParser
from tests.driver_steps import Steps, sent

FIXTURES = Path(__file__).parent / "fixtures" / "codex"


def transcript(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]


def substance(msg: dict[str, Any]) -> dict[str, Any]:
    """What must match between the driver's and the recorder's messages."""
    params = msg.get("params") or {}
    kept = {k: params[k] for k in ("threadId", "turnId", "input", "cwd") if k in params}
    return {
        "id": msg.get("id"),
        "method": msg.get("method"),
        "params": kept,
        "result": msg.get("result"),
        "error": (msg.get("error") or {}).get("code"),
    }


class Replay(Steps):
    """A driver fed one transcript; every step, event and written message kept."""

    def __init__(self, name: str, usage: Usage | None = None) -> None:
        self.lines = transcript(name)
        ins = [e["line"] for e in self.lines if e["dir"] == "in" and "jsonrpc" in e["line"]]
        opened = next(m for m in ins if m.get("method") in ("thread/start", "thread/resume"))
        first = next(m for m in ins if m.get("method") == "turn/start")
        self.launch = DriverLaunch(
            cwd=opened["params"]["cwd"],
            prompt=first["params"]["input"][0]["text"],
            resume_id=opened["params"]["threadId"] if opened["method"] == "thread/resume" else None,
            usage=usage or Usage(),
        )
        self.driver = CodexAppDriver(self.launch)
        self.expected = ins
        super().__init__()
        self.steps.append(self.driver.start())
        for entry in self.lines:
            line = entry["line"]
            if entry["dir"] == "out":
                self.steps.append(self.driver.feed(json.dumps(line) + "\n"))
            elif line.get("method") == "turn/start" and line is not first:
                self.steps.append(self.driver.prompt(line["params"]["input"][0]["text"]))
            elif line.get("method") == "turn/interrupt":
                self.steps.append(self.driver.interrupt())
            elif "result" in line and "decision" in line["result"]:
                allow = line["result"]["decision"] == "accept"
                self.steps.append(self.driver.answer(f"codex-{line['id']}", Answer(allow=allow)))

    def durations_ms(self) -> int:
        return sum(
            e["line"]["params"]["turn"]["durationMs"] or 0
            for e in self.lines
            if e["dir"] == "out" and e["line"].get("method") == "turn/completed"
        )


# -- the recorded sessions -------------------------------------------------------------------


def test_three_prompts_with_an_approval_write_what_the_recorder_wrote() -> None:
    replay = Replay("app_three_prompts_with_approval")
    assert [substance(m) for m in replay.written] == [substance(m) for m in replay.expected]
    initialize = replay.written[0]
    assert initialize["params"]["clientInfo"]["name"] == "hived"
    assert replay.written[1] == {"jsonrpc": "2.0", "method": "initialized"}


def test_three_prompts_map_items_to_claude_kinds_and_end_each_turn_with_a_result() -> None:
    replay = Replay("app_three_prompts_with_approval")
    thread_id = replay.expected[3]["params"]["threadId"]
    messages = [e.data["text"] for e in replay.kinds("message")]
    assert messages == [
        "Hello from the stand-in.",
        messages[1],
        "Hello from the stand-in.",
    ]
    assert messages[1].startswith("Done. The command said:")
    assert all(e.data["role"] == "assistant" for e in replay.kinds("message"))
    assert next(e.data["thinking"] for e in replay.kinds("thinking")) == (
        "A plain question; I answer it."
    )
    (use,) = replay.kinds("tool_use")
    assert use.data["name"] == "commandExecution"
    assert use.data["input"]["command"] == "/bin/bash -lc 'touch approved.txt'"
    (result,) = replay.kinds("tool_result")
    assert result.data["tool_use_id"] == use.data["tool_use_id"]
    assert result.data["is_error"] is False
    assert result.data["exitCode"] == 0
    results = replay.kinds("result")
    assert len(results) == 3
    assert all(r.state == "WAITING" and r.reason == "result" for r in results)
    assert replay.outcomes == [TurnOutcome(ok=True)] * 3
    (init,) = replay.kinds("init")
    assert init.agent_session_id == thread_id
    after_init = replay.events[replay.events.index(init) :]
    assert all(e.agent_session_id == thread_id for e in after_init)


def test_a_command_approval_is_a_pending_permission_answered_with_accept() -> None:
    replay = Replay("app_three_prompts_with_approval")
    (request,) = replay.kinds("permission_request")
    assert request.state == "WAITING"
    assert request.reason == "permission_request"
    assert request.data["request_id"] == "codex-0"
    assert request.data["request_kind"] == "permission"
    assert request.data["tool_name"] == "Bash"
    assert request.data["input"]["command"] == "/bin/bash -lc 'touch approved.txt'"
    assert request.data["input"]["cwd"] == replay.launch.cwd
    assert request.data["options"] == ["allow", "allow_always", "deny"]
    answer = next(m for m in replay.written if m.get("id") == 0)
    assert answer == {"jsonrpc": "2.0", "id": 0, "result": {"decision": "accept"}}
    assert replay.driver.pending == {}
    assert replay.kinds("request_withdrawn") == []


def test_usage_is_the_sessions_running_total_with_cached_input_apart() -> None:
    # The thread's last total in the transcript: input 4800 (cached 4096), output 160,
    # reasoning 64, over four model requests in three turns.
    replay = Replay("app_three_prompts_with_approval")
    assert replay.usage == Usage(
        input_tokens=4800 - 4096,
        output_tokens=160,
        cache_read_tokens=4096,
        reasoning_tokens=64,
        turns=3,
        duration_ms=replay.durations_ms(),
    )
    per_turn = [r.data["usage"]["input_tokens"] for r in replay.kinds("result")]
    assert per_turn == [176, 352, 176]


def test_usage_starts_from_the_launchs() -> None:
    before = Usage(input_tokens=5, output_tokens=6, cost_usd=0.5, turns=2, duration_ms=7)
    replay = Replay("app_three_prompts_with_approval", usage=before)
    assert replay.usage is not None
    assert replay.usage.cost_usd == 0.5
    assert replay.usage.turns == 5
    assert replay.usage.input_tokens == 5 + 704


def test_a_declined_command_is_a_failed_tool_result_and_the_turn_goes_on() -> None:
    replay = Replay("app_decline")
    assert [substance(m) for m in replay.written] == [substance(m) for m in replay.expected]
    assert {"jsonrpc": "2.0", "id": 0, "result": {"decision": "decline"}} in replay.written
    (result,) = replay.kinds("tool_result")
    assert result.data["status"] == "declined"
    assert result.data["is_error"] is True
    assert replay.outcomes == [TurnOutcome(ok=True)]


def test_an_interrupt_sends_turn_interrupt_and_the_turn_ends_interrupted() -> None:
    replay = Replay("app_interrupt")
    assert [substance(m) for m in replay.written] == [substance(m) for m in replay.expected]
    interrupt = next(m for m in replay.written if m.get("method") == "turn/interrupt")
    started = next(e["line"] for e in replay.lines if e["line"].get("method") == "turn/started")
    assert interrupt["params"] == {
        "threadId": started["params"]["threadId"],
        "turnId": started["params"]["turn"]["id"],
    }
    assert replay.outcomes == [TurnOutcome(ok=False, error="interrupted"), TurnOutcome(ok=True)]
    first_result = replay.kinds("result")[0]
    assert first_result.data["is_error"] is True
    assert first_result.data["status"] == "interrupted"
    # The streamed text of the message the interrupt cut short is kept, marked incomplete.
    partial = replay.kinds("message")[0]
    assert partial.data["incomplete"] is True
    assert partial.data["text"].startswith("tick 0")
    # The interrupted turn reported no tokens; it still counts as a turn.
    assert replay.usage is not None
    assert replay.usage.turns == 2
    assert replay.usage.output_tokens == 40


def test_api_errors_end_their_turns_as_api_errors_and_the_session_goes_on() -> None:
    replay = Replay("app_api_error")
    assert [substance(m) for m in replay.written] == [substance(m) for m in replay.expected]
    bad_request, server_error, ok = replay.outcomes
    assert bad_request.ok is False
    assert bad_request.error == "api_error"
    assert bad_request.message is not None
    assert "error400" in bad_request.message
    assert server_error.error == "api_error"
    assert ok == TurnOutcome(ok=True)
    errors = [e for e in replay.kinds("agent_event") if e.data.get("method") == "error"]
    assert len(errors) == 2
    assert all(e.data["is_error"] for e in errors)


def test_resume_opens_the_thread_by_id_and_counts_only_this_runs_tokens() -> None:
    # The first run's usage, as hived would have stored it: one turn of 1200 in (1024 cached).
    before = Usage(input_tokens=176, output_tokens=40, cache_read_tokens=1024, reasoning_tokens=16)
    replay = Replay("app_resume", usage=before + Usage(turns=1))
    assert [substance(m) for m in replay.written] == [substance(m) for m in replay.expected]
    resume = next(m for m in replay.written if m.get("method") == "thread/resume")
    assert resume["params"]["threadId"] == replay.launch.resume_id
    (init,) = replay.kinds("init")
    assert init.agent_session_id == replay.launch.resume_id
    assert init.data["thread_turns"] == 1
    assert "turns" not in init.data["thread"]
    # The server replays the old total (1240) first: a baseline, not new usage.
    assert replay.usage == Usage(
        input_tokens=352,
        output_tokens=80,
        cache_read_tokens=2048,
        reasoning_tokens=32,
        turns=2,
        duration_ms=replay.durations_ms(),
    )


def test_exec_json_transcript_parses_with_usage_counted_claudes_way() -> None:
    parser = CodexParser()
    lines = [e["line"] for e in transcript("exec_basic") if e["dir"] == "out"]
    events = [ev for line in lines if "type" in line for ev in parser.parse_line(json.dumps(line))]
    assert [e.kind for e in events] == ["init", "agent_event", "thinking", "message", "result"]
    # input_tokens 1200 include the 1024 cached; hived counts those apart.
    assert events[-1].usage == Usage(
        input_tokens=1200 - 1024,
        cache_read_tokens=1024,
        output_tokens=40,
        reasoning_tokens=16,
        turns=1,
    )
    assert lines[-1] == {"exit_code": 0}


# -- edge cases ------------------------------------------------------------------------------

THREAD = "01a243c9-ebc4-70d2-bb13-3eddc428354a"
TURN = "01a243c9-ec71-7a61-bca9-944b3107548f"


def feed(driver: CodexAppDriver, msg: dict[str, Any]) -> Step:
    return driver.feed(json.dumps(msg))


def running(prompt: str | None = None) -> tuple[CodexAppDriver, list[Step]]:
    """A driver past the handshake with a thread open, and a turn running when ``prompt``."""
    driver = CodexAppDriver(DriverLaunch(cwd="/w", prompt=prompt))
    steps = [driver.start()]
    steps.append(feed(driver, {"id": 1, "result": {"userAgent": "codex"}}))
    steps.append(feed(driver, {"id": 2, "result": {"thread": {"id": THREAD, "turns": []}}}))
    if prompt:
        steps.append(feed(driver, {"id": 3, "result": {"turn": {"id": TURN}}}))
    return driver, steps


def turn_completed(status: str = "completed", error: Any = None) -> dict[str, Any]:
    turn = {"id": TURN, "items": [], "status": status, "error": error, "durationMs": 5}
    return {"method": "turn/completed", "params": {"threadId": THREAD, "turn": turn}}


def approval(request_id: int = 7, **params: Any) -> dict[str, Any]:
    base = {"threadId": THREAD, "turnId": TURN, "itemId": "call_1", "command": "rm -rf x"}
    return {
        "method": "item/commandExecution/requestApproval",
        "id": request_id,
        "params": {**base, **params},
    }


def test_a_line_that_is_not_json_is_a_text_event_with_a_parse_error() -> None:
    driver, _ = running()
    (event,) = driver.feed("WARNING: something odd\n").events
    assert event.kind == "text"
    assert "invalid JSON" in event.data["parse_error"]
    (event,) = driver.feed("[1, 2]").events
    assert event.kind == "text"
    assert driver.feed("   \n") == Step()


def test_an_object_that_is_not_json_rpc_is_kept_with_a_note() -> None:
    driver, _ = running()
    (event,) = feed(driver, {"hello": "there"}).events
    assert event.kind == "agent_event"
    assert "JSON-RPC" in event.data["parse_error"]


def test_unknown_notifications_are_kept_as_agent_events() -> None:
    driver, _ = running()
    msg = {"method": "thread/goal/cleared", "params": {"threadId": THREAD}}
    (event,) = feed(driver, msg).events
    assert event.kind == "agent_event"
    assert event.data == msg
    assert event.agent_session_id == THREAD


def test_deltas_are_coalesced_into_the_completed_message() -> None:
    driver, _ = running("hi")
    delta = {"threadId": THREAD, "turnId": TURN, "itemId": "m1", "delta": "Hel"}
    assert feed(driver, {"method": "item/agentMessage/delta", "params": delta}) == Step()
    item = {"type": "agentMessage", "id": "m1", "text": "Hello"}
    (event,) = feed(driver, {"method": "item/completed", "params": {"item": item}}).events
    assert event.kind == "message"
    assert event.data["text"] == "Hello"
    (result,) = feed(driver, turn_completed()).events
    assert result.kind == "result"


def test_an_unknown_server_request_gets_an_error_response_at_once() -> None:
    driver, _ = running("hi")
    msg = {"method": "item/tool/requestUserInput", "id": 3, "params": {"questions": []}}
    step = feed(driver, msg)
    (reply,) = sent(step)
    assert reply["id"] == 3
    assert reply["error"]["code"] == -32601
    (event,) = step.events
    assert event.kind == "agent_event"
    assert event.data["method"] == "item/tool/requestUserInput"
    assert driver.pending == {}


def test_an_approval_open_at_the_turns_end_is_withdrawn() -> None:
    driver, _ = running("hi")
    feed(driver, approval())
    assert list(driver.pending) == ["codex-7"]
    step = feed(driver, turn_completed("interrupted"))
    withdrawn = [e for e in step.events if e.kind == "request_withdrawn"]
    assert [e.data for e in withdrawn] == [
        {"request_id": "codex-7", "request_kind": "permission", "reason": "turn ended"}
    ]
    assert driver.pending == {}
    with pytest.raises(DriverRefusal) as refused:
        driver.answer("codex-7", Answer(allow=True))
    assert refused.value.code == "conflict"


def test_a_request_the_server_resolves_itself_is_withdrawn() -> None:
    driver, _ = running("hi")
    feed(driver, approval())
    resolved = {"method": "serverRequest/resolved", "params": {"threadId": THREAD, "requestId": 7}}
    (event,) = feed(driver, resolved).events
    assert event.kind == "request_withdrawn"
    assert driver.pending == {}


def test_allow_always_takes_the_offered_session_wide_decision() -> None:
    driver, _ = running("hi")
    amendment = {"acceptWithExecpolicyAmendment": {"execpolicy_amendment": ["rm"]}}
    feed(driver, approval(availableDecisions=["accept", amendment, "cancel"]))
    (reply,) = sent(driver.answer("codex-7", Answer(allow=True, always=True)))
    assert reply["result"] == {"decision": amendment}
    feed(driver, approval(8))
    (reply,) = sent(driver.answer("codex-8", Answer(allow=True, always=True)))
    assert reply["result"] == {"decision": "acceptForSession"}


def test_an_answer_without_allow_or_with_edited_input_is_a_bad_request() -> None:
    driver, _ = running("hi")
    feed(driver, approval())
    for answer in (Answer(), Answer(allow=True, updated_input={"command": "ls"})):
        with pytest.raises(DriverRefusal) as refused:
            driver.answer("codex-7", answer)
        assert refused.value.code == "bad_request"
    assert list(driver.pending) == ["codex-7"]


def test_a_legacy_exec_approval_is_answered_in_its_own_words() -> None:
    driver, _ = running("hi")
    params = {"conversationId": THREAD, "callId": "c1", "command": ["ls"], "cwd": "/w"}
    (event,) = feed(driver, {"method": "execCommandApproval", "id": 2, "params": params}).events
    assert event.data["tool_name"] == "Bash"
    assert event.data["input"]["command"] == ["ls"]
    (reply,) = sent(driver.answer("codex-2", Answer(allow=True, always=True)))
    assert reply == {"jsonrpc": "2.0", "id": 2, "result": {"decision": "approved_for_session"}}


def test_a_file_change_approval_shows_the_items_changes() -> None:
    driver, _ = running("hi")
    changes = [{"path": "/w/a.txt", "kind": {"type": "add"}, "diff": "+hi\n"}]
    item = {"type": "fileChange", "id": "call_9", "changes": changes, "status": "inProgress"}
    (use,) = feed(driver, {"method": "item/started", "params": {"item": item}}).events
    assert use.kind == "tool_use"
    assert use.data["input"] == {"changes": changes}
    request = {
        "method": "item/fileChange/requestApproval",
        "id": 4,
        "params": {"threadId": THREAD, "turnId": TURN, "itemId": "call_9", "startedAtMs": 1},
    }
    (event,) = feed(driver, request).events
    assert event.data["tool_name"] == "Edit"
    assert event.data["input"] == {"changes": changes}
    (reply,) = sent(driver.answer("codex-4", Answer(allow=False, message="no")))
    assert reply["result"] == {"decision": "decline"}


def test_interrupt_is_refused_when_no_turn_runs() -> None:
    driver, _ = running()
    with pytest.raises(DriverRefusal) as refused:
        driver.interrupt()
    assert refused.value.code == "conflict"


def test_an_interrupt_before_the_turn_has_an_id_is_sent_when_it_has_one() -> None:
    driver, _ = running()
    driver.prompt("slow")
    assert driver.interrupt() == Step()
    started = {"method": "turn/started", "params": {"threadId": THREAD, "turn": {"id": TURN}}}
    (msg,) = sent(feed(driver, started))
    assert msg["method"] == "turn/interrupt"
    assert msg["params"] == {"threadId": THREAD, "turnId": TURN}


def test_a_prompt_during_a_turn_is_refused_and_prompts_before_the_thread_are_queued() -> None:
    driver = CodexAppDriver(DriverLaunch(cwd="/w", prompt="one"))
    driver.start()
    assert driver.prompt("two") == Step()
    feed(driver, {"id": 1, "result": {}})
    (turn_start,) = sent(feed(driver, {"id": 2, "result": {"thread": {"id": THREAD}}}))
    assert turn_start["params"]["input"][0]["text"] == "one"
    with pytest.raises(DriverRefusal) as refused:
        driver.prompt("three")
    assert refused.value.code == "conflict"
    feed(driver, {"id": 3, "result": {"turn": {"id": TURN}}})
    (next_turn,) = sent(feed(driver, turn_completed()))
    assert next_turn["method"] == "turn/start"
    assert next_turn["params"]["input"][0]["text"] == "two"


def test_a_json_rpc_error_is_visible_and_a_failed_turn_start_ends_the_turn() -> None:
    driver, _ = running()
    driver.prompt("hi")
    step = feed(driver, {"id": 3, "error": {"code": -32600, "message": "thread busy"}})
    (event,) = step.events
    assert event.kind == "agent_event"
    assert event.data["is_error"] is True
    assert event.data["method"] == "turn/start"
    assert step.last_turn == TurnOutcome(ok=False, error="error", message="thread busy")
    assert sent(driver.prompt("again"))[0]["method"] == "turn/start"


def test_a_failed_resume_is_visible() -> None:
    driver = CodexAppDriver(DriverLaunch(cwd="/w", resume_id="gone"))
    driver.start()
    (resume,) = [m for m in sent(feed(driver, {"id": 1, "result": {}})) if "id" in m]
    assert resume["method"] == "thread/resume"
    assert resume["params"] == {"threadId": "gone", "cwd": "/w"}
    (event,) = feed(driver, {"id": 2, "error": {"code": -32600, "message": "no rollout"}}).events
    assert event.data["is_error"] is True
    assert event.state == "WAITING"


def test_exit_withdraws_pending_requests_and_fails_a_running_turn() -> None:
    driver, _ = running("hi")
    feed(driver, approval())
    step = driver.exited()
    assert [e.data["reason"] for e in step.events] == ["agent exited"]
    assert step.last_turn is not None
    assert step.last_turn.ok is False
    assert driver.pending == {}


def test_a_budget_failure_and_a_sandbox_failure_are_told_apart() -> None:
    driver, _ = running("hi")
    error = {"message": "budget", "codexErrorInfo": "sessionBudgetExceeded"}
    assert feed(driver, turn_completed("failed", error)).last_turn == TurnOutcome(
        ok=False, error="max_budget", message="budget"
    )
    error = {"message": "sandbox", "codexErrorInfo": "sandboxError"}
    outcome = feed(driver, turn_completed("failed", error)).last_turn
    assert outcome == TurnOutcome(ok=False, error="error", message="sandbox")


def test_argv_is_the_command_and_its_args_and_a_resume_is_the_drivers() -> None:
    codex_app = get_format("codex-app")
    assert codex_app.resumable
    assert codex_app.argv(["codex", "app-server"], ["-c", "model=x"], "hi", "thread-1") == (
        "codex",
        "app-server",
        "-c",
        "model=x",
    )
