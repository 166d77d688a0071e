"""The ACP driver, driven by transcripts recorded from real ACP agents.

The transcripts (tests/fixtures/acp/, made by tests/realagents/record_acp.py) come from
``claude-agent-acp`` 0.23.1 (Claude Code 2.1.83), ``codex-acp`` 0.16.0 and ``opencode acp``
1.18.33 against the model stand-ins. Each replay feeds a transcript's ``out`` lines (what the agent printed) into the driver
and turns its ``in`` lines (what the recorder wrote) into operator actions: a ``session/prompt``
is a prompt, a permission's response an answer, a ``session/cancel`` an interrupt. What the driver
writes must match what the recorder wrote, message by message. Every message, recorded or written
by the driver, is checked against the published ACP schema (tests/fixtures/acp/schema/).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from hived.core.drivers import get_format
from hived.core.drivers.acp import CLIENT_CAPABILITIES, AcpDriver
from hived.core.drivers.base import Answer, DriverLaunch, DriverRefusal, Step, TurnOutcome
from hived.core.events import Usage
from tests.driver_steps import Steps, sent

FIXTURES = Path(__file__).parent / "fixtures" / "acp"
SCHEMA = FIXTURES / "schema" / "schema.json"
TRANSCRIPTS = sorted(p.stem for p in FIXTURES.glob("*.jsonl"))


def transcript(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]


def substance(msg: dict[str, Any]) -> dict[str, Any]:
    """What must match between the driver's and the recorder's messages (not clientInfo)."""
    params = msg.get("params") or {}
    kept = ("sessionId", "cwd", "mcpServers", "prompt", "protocolVersion", "clientCapabilities")
    return {
        "id": msg.get("id"),
        "method": msg.get("method"),
        "params": {k: params[k] for k in kept if k in params},
        "result": msg.get("result"),
        "error": (msg.get("error") or {}).get("code"),
    }


# -- the schema ------------------------------------------------------------------------------


@cache
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA.read_text())
    return schema


@cache
def _by_method() -> dict[tuple[str, str, str], str]:
    """(side, method, Request|Response|Notification) → the name of its params/result schema."""
    found = {}
    for name, d in _schema()["$defs"].items():
        if "x-method" in d:
            shape = next(s for s in ("Request", "Response", "Notification") if name.endswith(s))
            found[(d["x-side"], d["x-method"], shape)] = name
    return found


def _check(instance: Any, part: dict[str, Any]) -> None:
    schema = {"$schema": _schema()["$schema"], "$defs": _schema()["$defs"], **part}
    jsonschema.Draft202012Validator(schema).validate(instance)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}"}


def validate(msg: dict[str, Any], sender: str, methods: dict[Any, str]) -> None:
    """``msg`` as ``sender`` (``client`` or ``agent``) may send it: the whole message against the
    schema's ``Client`` or ``Agent`` branch, and its params or result against its method's own
    definition. ``methods``: the sender's peer's open requests, id → method (for responses)."""
    branch = _schema()["anyOf"][0 if sender == "agent" else 1]
    assert branch["title"] == sender.title()
    _check(msg, branch)
    # The side that handles a message: a request goes to the other side, a response comes back.
    receiver = "client" if sender == "agent" else "agent"
    if "method" in msg:
        shape = "Request" if "id" in msg else "Notification"
        name = _by_method().get((receiver, msg["method"], shape))
        assert name is not None, f"{sender} sent {msg['method']!r}, which the schema does not know"
        _check(msg.get("params"), _ref(name))
        if "id" in msg:
            methods[msg["id"]] = msg["method"]
    elif "result" in msg:
        method = methods.pop(msg["id"])
        _check(msg["result"], _ref(_by_method()[(sender, method, "Response")]))


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_every_recorded_message_fits_the_published_schema(name: str) -> None:
    asked: dict[str, dict[Any, str]] = {"agent": {}, "client": {}}
    for entry in transcript(name):
        line = entry["line"]
        if "jsonrpc" not in line:
            asked = {"agent": {}, "client": {}}  # a note: a second process starts
            continue
        sender = "agent" if entry["dir"] == "out" else "client"
        # A request's id goes in the asked table of its sender; a response pops it there.
        receiver = "client" if sender == "agent" else "agent"
        book = asked[sender] if "method" in line else asked[receiver]
        validate(line, sender, book)


def test_the_schema_check_catches_a_malformed_message() -> None:
    bad = {"jsonrpc": "2.0", "id": 1, "method": "session/prompt", "params": {"prompt": "hi"}}
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, "client", {})


# -- replaying ---------------------------------------------------------------------------------


class Replay(Steps):
    """A driver fed one transcript; every step, event and written message kept."""

    def __init__(
        self,
        name: str,
        usage: Usage | None = None,
        initialize: dict[str, Any] | None = None,
    ) -> None:
        self.lines = transcript(name)
        if initialize is not None:
            first_out = next(e for e in self.lines if e["dir"] == "out")
            first_out["line"] = {**first_out["line"], "result": initialize}
        ins = [e["line"] for e in self.lines if e["dir"] == "in" and "jsonrpc" in e["line"]]
        opened = next(m for m in ins if m.get("method", "").startswith("session/"))
        first = next(m for m in ins if m.get("method") == "session/prompt")
        self.launch = DriverLaunch(
            cwd=opened["params"]["cwd"],
            prompt=first["params"]["prompt"][0]["text"],
            resume_id=opened["params"].get("sessionId"),
            usage=usage or Usage(),
        )
        self.driver = AcpDriver(self.launch)
        # The driver answers a pending permission on interrupt itself: the recorder's own
        # "cancelled" answers are expected from that step, not from an action.
        self.expected = ins
        super().__init__()
        self.steps.append(self.driver.start())
        options: dict[Any, dict[str, str]] = {}
        for entry in self.lines:
            line = entry["line"]
            if entry["dir"] == "out":
                if line.get("method") == "session/request_permission":
                    options[line["id"]] = {
                        o["optionId"]: o["kind"] for o in line["params"]["options"]
                    }
                self.steps.append(self.driver.feed(json.dumps(line) + "\n"))
            elif line.get("method") == "session/prompt" and line is not first:
                self.steps.append(self.driver.prompt(line["params"]["prompt"][0]["text"]))
            elif line.get("method") == "session/cancel":
                self.steps.append(self.driver.interrupt())
            elif "optionId" in (line.get("result") or {}).get("outcome", {}):
                kind = options[line["id"]][line["result"]["outcome"]["optionId"]]
                answer = Answer(allow=kind.startswith("allow"), always=kind.endswith("always"))
                self.steps.append(self.driver.answer(f"acp-{line['id']}", answer))


SAME_AS_RECORDED = [n for n in TRANSCRIPTS if not n.endswith("_load")]


@pytest.mark.parametrize("name", SAME_AS_RECORDED)
def test_the_driver_writes_what_the_recorder_wrote(name: str) -> None:
    replay = Replay(name)
    assert [substance(m) for m in replay.written] == [substance(m) for m in replay.expected]
    assert replay.written[0]["params"]["clientInfo"]["name"] == "hived"
    assert replay.written[0]["params"]["clientCapabilities"] == CLIENT_CAPABILITIES
    asked = {
        e["line"]["id"]: e["line"]["method"]
        for e in replay.lines
        if e["dir"] == "out" and "method" in e["line"] and "id" in e["line"]
    }
    for msg in replay.written:
        validate(msg, "client", asked)


@pytest.mark.parametrize("agent", ["claude", "codex", "opencode"])
def test_a_loaded_session_is_asked_for_with_session_load_where_resume_is_not_offered(
    agent: str,
) -> None:
    init = transcript(f"{agent}_load")[2]["line"]["result"]
    caps = {k: v for k, v in init["agentCapabilities"].items() if k != "sessionCapabilities"}
    replay = Replay(f"{agent}_load", initialize={**init, "agentCapabilities": caps})
    assert [substance(m) for m in replay.written] == [substance(m) for m in replay.expected]
    assert replay.written[1]["method"] == "session/load"
    # The history the agent replays is published once, coalesced, marked, with no state change.
    replayed = [e for e in replay.events if e.data.get("replayed")]
    assert replayed
    assert [e.kind for e in replayed][-1] == "message"
    assert all(e.state is None for e in replayed)
    (init_event,) = replay.kinds("init")
    assert replay.events.index(init_event) > replay.events.index(replayed[-1])
    assert init_event.agent_session_id == replay.launch.resume_id
    assert replay.outcomes == [TurnOutcome(ok=True)]


@pytest.mark.parametrize("agent", ["claude", "codex", "opencode"])
def test_both_agents_offer_resume_and_it_is_preferred_to_load(agent: str) -> None:
    replay = Replay(f"{agent}_load")
    assert replay.written[1]["method"] == "session/resume"
    assert replay.written[1]["params"]["sessionId"] == replay.launch.resume_id


def test_an_agent_that_can_neither_load_nor_resume_fails_the_run_clearly() -> None:
    init = transcript("codex_resume")[2]["line"]["result"]
    caps = {"promptCapabilities": {}}
    driver = AcpDriver(DriverLaunch(cwd="/w", prompt="go on", resume_id="s-1"))
    driver.start()
    line = {"jsonrpc": "2.0", "id": 1, "result": {**init, "agentCapabilities": caps}}
    step = driver.feed(json.dumps(line))
    assert step.stdin == b""
    assert step.close_stdin
    assert step.last_turn is not None
    assert step.last_turn.error == "resume_unsupported"
    assert "codex-acp" in (step.last_turn.message or "")
    (event,) = step.events
    assert event.data["is_error"] is True


# -- events ----------------------------------------------------------------------------------


def test_claude_chunks_are_coalesced_into_one_event_per_message() -> None:
    replay = Replay("claude_permission_allow")
    chunks = sum(
        1
        for e in replay.lines
        if e["line"].get("method") == "session/update"
        and e["line"]["params"]["update"]["sessionUpdate"].endswith("_chunk")
    )
    assert chunks == 14
    texts = [e.data["text"] for e in replay.kinds("message")]
    assert texts == ["Hi there", "I will run it.", "The command ran."]
    assert [e.data["thinking"] for e in replay.kinds("thinking")] == [
        "The user wants me to create a file."
    ]
    assert all(e.data["role"] == "assistant" for e in replay.kinds("message"))
    # Order follows the agent's: the thought, the message, then the tool call.
    kinds = [e.kind for e in replay.events if e.kind in ("thinking", "message", "tool_use")]
    assert kinds[1:4] == ["thinking", "message", "tool_use"]


def test_claude_tool_call_is_a_tool_use_filled_in_by_updates_then_a_tool_result() -> None:
    replay = Replay("claude_permission_allow")
    uses = replay.kinds("tool_use")
    assert uses[0].data["name"] == "Bash"
    assert uses[0].data["input"] == {}  # the adapter announces the call before its input
    assert "update" not in uses[0].data
    assert uses[1].data["update"] is True
    assert uses[1].data["input"]["command"] == "touch made-by-claude.txt"
    assert all(u.data["tool_use_id"] == "toolu_standin_0003" for u in uses)
    (result,) = replay.kinds("tool_result")
    assert result.data["tool_use_id"] == "toolu_standin_0003"
    assert result.data["is_error"] is False
    assert result.data["status"] == "completed"
    assert "Bash completed with no output" in result.data["content"]
    assert result.data["tool_content"][0]["type"] == "content"
    assert result.state == "WORKING"


def test_claude_permission_is_pending_with_the_agents_options_and_allow_picks_allow_once() -> None:
    replay = Replay("claude_permission_allow")
    (request,) = replay.kinds("permission_request")
    assert request.state == "WAITING"
    assert request.reason == "permission_request"
    assert request.data["request_id"] == "acp-0"
    assert request.data["request_kind"] == "permission"
    assert request.data["tool_name"] == "Bash"
    assert request.data["input"]["command"] == "touch made-by-claude.txt"
    assert request.data["options"] == ["allow", "allow_always", "deny"]
    assert [(o["kind"], o["optionId"]) for o in request.data["agent_options"]] == [
        ("allow_always", "allow_always"),
        ("allow_once", "allow"),
        ("reject_once", "reject"),
    ]
    answer = next(m for m in replay.written if m.get("id") == 0)
    assert answer["result"] == {"outcome": {"outcome": "selected", "optionId": "allow"}}
    assert replay.driver.pending == {}
    answered = next(s for s in replay.steps if any(m.get("id") == 0 for m in sent(s)))
    assert answered.state == "WORKING"


def test_claude_usage_adds_each_turns_tokens_and_takes_the_agents_cost() -> None:
    before = Usage(input_tokens=5, cost_usd=0.5, turns=2)
    replay = Replay("claude_permission_allow", usage=before)
    assert replay.usage == Usage(
        input_tokens=5 + 100 + 110,
        output_tokens=20 + 40,
        cache_read_tokens=2000,
        cache_write_tokens=1000,
        cost_usd=pytest.approx(0.5 + 0.00588),
        turns=4,
    )
    results = replay.kinds("result")
    assert [r.data["usage"]["input_tokens"] for r in results] == [100, 110]
    assert results[-1].data["context"] == {
        "used": 61,
        "size": 200000,
        "cost": {"amount": 0.00588, "currency": "USD"},
    }
    assert replay.outcomes == [TurnOutcome(ok=True)] * 2


def test_claude_rejected_permission_is_a_failed_tool_result_and_the_turn_goes_on() -> None:
    replay = Replay("claude_permission_deny")
    answer = next(m for m in replay.written if m.get("id") == 0)
    assert answer["result"] == {"outcome": {"outcome": "selected", "optionId": "reject"}}
    (result,) = replay.kinds("tool_result")
    assert result.data["is_error"] is True
    assert "refused permission" in result.data["content"]
    assert replay.outcomes == [TurnOutcome(ok=True)]


def test_codex_rejected_permission_ends_the_turn_cancelled_by_the_agent() -> None:
    replay = Replay("codex_permission_deny")
    answer = next(m for m in replay.written if "result" in m)
    assert answer["result"]["outcome"]["optionId"] == "abort"
    (outcome,) = replay.outcomes
    assert outcome.error == "interrupted"
    assert outcome.message == "the agent cancelled the turn itself"


def test_codex_tool_call_and_permission() -> None:
    replay = Replay("codex_permission_allow")
    (request,) = replay.kinds("permission_request")
    assert request.data["options"] == ["allow", "allow_always", "deny"]
    assert request.data["tool_name"] == "execute"
    assert request.data["input"]["command"] == ["/bin/bash", "-lc", "touch approved.txt"]
    answer = next(m for m in replay.written if m.get("id") == request.data["request_id"][4:])
    assert answer["result"]["outcome"]["optionId"] == "approved"
    (use,) = replay.kinds("tool_use")
    (result,) = replay.kinds("tool_result")
    assert use.data["name"] == "execute"
    assert result.data["tool_use_id"] == use.data["tool_use_id"]
    assert result.data["is_error"] is False
    assert next(e.data["text"] for e in replay.kinds("message")) == "Hello from the stand-in."
    # codex-acp 0.16 reports no tokens over ACP: only turns count.
    assert replay.usage == Usage(turns=2)
    assert replay.kinds("result")[0].data["context"] == {"used": 1240, "size": 258400}


def test_always_picks_the_allow_always_option() -> None:
    replay = Replay("codex_interrupt_pending")
    driver = AcpDriver(replay.launch)
    driver.start()
    for entry in replay.lines:
        if entry["dir"] == "out":
            driver.feed(json.dumps(entry["line"]))
            if entry["line"].get("method") == "session/request_permission":
                break
    (request_id,) = driver.pending
    step = driver.answer(request_id, Answer(allow=True, always=True))
    (reply,) = sent(step)
    assert reply["result"]["outcome"]["optionId"] == "approved-execpolicy-amendment"


def test_an_answer_the_agent_does_not_offer_is_refused() -> None:
    driver = AcpDriver(DriverLaunch(cwd="/w"))
    request = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "session/request_permission",
        "params": {
            "sessionId": "s",
            "toolCall": {"toolCallId": "t"},
            "options": [{"optionId": "ok", "name": "OK", "kind": "allow_once"}],
        },
    }
    driver.feed(json.dumps(request))
    with pytest.raises(DriverRefusal) as refused:
        driver.answer("acp-7", Answer(allow=True, always=True))
    assert refused.value.code == "bad_request"
    with pytest.raises(DriverRefusal):
        driver.answer("acp-7", Answer(allow=False))
    with pytest.raises(DriverRefusal) as refused:
        driver.answer("acp-8", Answer(allow=True))
    assert refused.value.code == "conflict"
    assert "acp-7" in driver.pending


# -- turns -----------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", ["claude", "codex", "opencode"])
def test_an_interrupt_cancels_the_turn_and_the_session_goes_on(agent: str) -> None:
    replay = Replay(f"{agent}_interrupt")
    cancel = next(m for m in replay.written if m.get("method") == "session/cancel")
    assert cancel["params"] == {"sessionId": replay.driver._session_id}
    assert replay.outcomes[0] == TurnOutcome(ok=False, error="interrupted")
    assert replay.outcomes[1] == TurnOutcome(ok=True)
    # The message cut short is published before the turn's result.
    first_result = replay.kinds("result")[0]
    cut = replay.kinds("message")[0]
    assert replay.events.index(cut) < replay.events.index(first_result)
    assert cut.data["text"].startswith("tick")


@pytest.mark.parametrize("agent", ["claude", "codex", "opencode"])
def test_an_interrupt_answers_a_pending_permission_cancelled(agent: str) -> None:
    replay = Replay(f"{agent}_interrupt_pending")
    cancelled = [
        m for m in replay.written if m.get("result") == {"outcome": {"outcome": "cancelled"}}
    ]
    assert len(cancelled) == 1
    (withdrawn,) = replay.kinds("request_withdrawn")
    assert withdrawn.data["reason"] == "turn cancelled"
    assert replay.driver.pending == {}
    assert replay.outcomes == [TurnOutcome(ok=False, error="interrupted")]


def test_a_prompt_during_a_turn_is_refused_and_one_before_the_session_is_queued() -> None:
    replay = Replay("codex_interrupt")
    driver = AcpDriver(DriverLaunch(cwd=replay.launch.cwd))
    driver.start()
    assert driver.prompt("first") == Step()  # queued: no session yet
    outs = [e["line"] for e in replay.lines if e["dir"] == "out"]
    driver.feed(json.dumps(outs[0]))
    step = driver.feed(json.dumps(outs[1]))
    (prompt,) = sent(step)
    assert prompt["method"] == "session/prompt"
    assert prompt["params"]["prompt"] == [{"type": "text", "text": "first"}]
    with pytest.raises(DriverRefusal) as refused:
        driver.prompt("second")
    assert refused.value.code == "conflict"


def test_interrupt_with_no_turn_is_refused() -> None:
    driver = AcpDriver(DriverLaunch(cwd="/w"))
    driver.start()
    with pytest.raises(DriverRefusal) as refused:
        driver.interrupt()
    assert refused.value.code == "conflict"


@pytest.mark.parametrize(
    ("stop_reason", "error"),
    [
        ("max_tokens", "max_tokens"),
        ("max_turn_requests", "max_turn_requests"),
        ("refusal", "refusal"),
    ],
)
def test_stop_reasons_that_are_failed_turns(stop_reason: str, error: str) -> None:
    driver = _in_a_turn()
    step = driver.feed(
        json.dumps({"jsonrpc": "2.0", "id": 3, "result": {"stopReason": stop_reason}})
    )
    assert step.last_turn is not None
    assert step.last_turn.ok is False
    assert step.last_turn.error == error
    (result,) = step.events
    assert result.kind == "result"
    assert result.data["is_error"] is True


def test_a_prompt_that_fails_with_a_json_rpc_error_is_a_failed_turn() -> None:
    driver = _in_a_turn()
    error = {"code": -32603, "message": "Internal error: API Error: 400"}
    step = driver.feed(json.dumps({"jsonrpc": "2.0", "id": 3, "error": error}))
    assert step.last_turn == TurnOutcome(ok=False, error="error", message=error["message"])
    assert step.events[-1].kind == "result"
    assert step.usage is not None
    assert step.usage.turns == 1


def test_the_agent_exiting_in_a_turn_withdraws_and_fails_the_turn() -> None:
    driver = _in_a_turn()
    update = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "par"}}
    driver.feed(json.dumps(_notification(update)))
    step = driver.exited()
    assert [e.kind for e in step.events] == ["message"]
    assert step.last_turn is not None
    assert step.last_turn.message == "the agent exited in a turn"


def test_unknown_requests_get_method_not_found_at_once() -> None:
    driver = _in_a_turn()
    request = {"jsonrpc": "2.0", "id": 9, "method": "fs/read_text_file", "params": {"path": "/x"}}
    step = driver.feed(json.dumps(request))
    (reply,) = sent(step)
    assert reply["id"] == 9
    assert reply["error"]["code"] == -32601
    assert step.events[0].kind == "agent_event"
    assert driver.pending == {}


def test_other_updates_are_kept_as_agent_events() -> None:
    driver = _in_a_turn()
    plan = {
        "sessionUpdate": "plan",
        "entries": [{"content": "a", "priority": "high", "status": "pending"}],
    }
    mode = {"sessionUpdate": "current_mode_update", "currentModeId": "plan"}
    odd = {"sessionUpdate": "something_new", "x": 1}
    events = [
        e for u in (plan, mode, odd) for e in driver.feed(json.dumps(_notification(u))).events
    ]
    assert [e.kind for e in events] == ["agent_event"] * 3
    assert [e.data["sessionUpdate"] for e in events] == [
        "plan",
        "current_mode_update",
        "something_new",
    ]
    assert events[0].data["entries"] == plan["entries"]


def test_a_protocol_version_the_driver_does_not_speak_ends_the_run() -> None:
    driver = AcpDriver(DriverLaunch(cwd="/w", prompt="hi"))
    driver.start()
    step = driver.feed(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": 2}}))
    assert step.close_stdin
    assert step.last_turn is not None
    assert step.last_turn.error == "protocol_version"


def test_lines_that_are_not_json_rpc_are_kept() -> None:
    driver = AcpDriver(DriverLaunch(cwd="/w"))
    (event,) = driver.feed("not json\n").events
    assert event.kind == "text"
    (event,) = driver.feed('{"hello": 1}\n').events
    assert "parse_error" in event.data


def test_acp_is_a_resumable_format_with_a_plain_argv() -> None:
    fmt = get_format("acp")
    assert fmt.resumable
    assert not fmt.prompt_in_argv
    assert fmt.argv(("codex-acp",), ("-c", "x=1"), "hi", "sess-1") == ("codex-acp", "-c", "x=1")


def _notification(update: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": "session/update",
        "params": {"sessionId": "s", "update": update},
    }


def _in_a_turn() -> AcpDriver:
    """A driver whose session ``s`` is open and whose first prompt (JSON-RPC id 3) runs."""
    driver = AcpDriver(DriverLaunch(cwd="/w", prompt="hi"))
    driver.start()
    driver.feed(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": 1}}))
    step = driver.feed(json.dumps({"jsonrpc": "2.0", "id": 2, "result": {"sessionId": "s"}}))
    assert sent(step)[0]["id"] == 3
    return driver


def test_a_session_that_cannot_open_fails_the_run_keeping_the_agents_error() -> None:
    # What claude-agent-acp answered when Claude Code would not start (IS_SANDBOX as root).
    driver = AcpDriver(DriverLaunch(cwd="/w", prompt="hi"))
    driver.start()
    driver.feed(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": 1}}))
    error = {
        "code": -32603,
        "message": "Internal error",
        "data": {"details": "Query closed before response received"},
    }
    step = driver.feed(json.dumps({"jsonrpc": "2.0", "id": 2, "error": error}))
    assert step.close_stdin
    assert step.last_turn == TurnOutcome(
        ok=False, error="error", message="session/new failed: Internal error"
    )
    (event,) = step.events
    assert event.data["error"] == error
    assert event.state == "WAITING"
    with pytest.raises(DriverRefusal):
        driver.interrupt()


def test_opencode_tool_call_permission_and_messages() -> None:
    replay = Replay("opencode_permission_allow")
    assert [e.data["text"] for e in replay.kinds("message")] == [
        "Hi there",
        "I will run it.",
        "The command ran.",
    ]
    assert all("messageId" in e.data for e in replay.kinds("message"))
    (request,) = replay.kinds("permission_request")
    assert request.data["tool_name"] == "execute"
    assert request.data["input"] == {"command": "touch made-by-claude.txt"}
    answer = next(m for m in replay.written if m.get("id") == 0)
    assert answer["result"] == {"outcome": {"outcome": "selected", "optionId": "once"}}
    (result,) = replay.kinds("tool_result")
    assert result.data["is_error"] is False
    assert result.data["content"] == "(no output)"
    assert replay.usage is not None
    assert replay.usage.cost_usd == pytest.approx(0.00588)


def test_opencode_rejected_permission_fails_the_tool_and_the_turn_goes_on() -> None:
    replay = Replay("opencode_permission_deny")
    (result,) = replay.kinds("tool_result")
    assert result.data["is_error"] is True
    assert replay.outcomes == [TurnOutcome(ok=True)]


def test_a_resumed_opencode_sessions_cost_is_the_agents_whole_figure() -> None:
    # opencode's cost after the resume (0.00705) includes the first process's 0.00495.
    before = Usage(cost_usd=0.00495, turns=1)
    replay = Replay("opencode_resume", usage=before)
    assert replay.usage is not None
    assert replay.usage.cost_usd == pytest.approx(0.00705)
    assert replay.usage.turns == 2


def test_a_resumed_claude_adapter_sessions_cost_adds_to_what_it_was() -> None:
    # The Claude adapter's cost starts from 0 in the new process (0.0021 for the turn).
    before = Usage(cost_usd=0.00495, turns=1)
    replay = Replay("claude_resume", usage=before)
    assert replay.usage is not None
    assert replay.usage.cost_usd == pytest.approx(0.00495 + 0.0021)


def test_a_cost_figure_never_takes_the_sessions_cost_down() -> None:
    # opencode reports cost 0 for a turn cancelled at once; the next turn's figure counts.
    replay = Replay("opencode_interrupt", usage=Usage(cost_usd=0.5))
    costs = [s.usage.cost_usd for s in replay.steps if s.usage is not None]
    assert costs == sorted(costs)
    assert costs[-1] == pytest.approx(0.5 + 0.00495)
