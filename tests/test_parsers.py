"""Agent output lines → events, through each format's driver, on the real-shaped lines of
agent-formats.md. The two-way part of the claude driver is in test_driver_claude.py."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from hived.core.drivers import FORMATS, get_format
from hived.core.drivers.base import Driver, DriverLaunch, DriverRefusal, Step
from hived.core.events import KINDS, AgentEvent, Usage

SID = "9f1c2b4e-0000-4000-8000-000000000001"

CLAUDE_INIT: dict[str, Any] = {
    "type": "system",
    "subtype": "init",
    "cwd": "/srv/app",
    "session_id": SID,
    "tools": ["Bash", "Edit"],
    "mcp_servers": [{"name": "github", "status": "connected"}],
    "model": "claude-opus-4-1",
    "permissionMode": "default",
    "claude_code_version": "2.1.118",
    "uuid": "u0",
}
CLAUDE_TOOL_USE: dict[str, Any] = {
    "type": "assistant",
    "message": {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-opus-4-1",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "Bash",
                "input": {"command": "pytest -q"},
            }
        ],
        "stop_reason": None,
        "usage": {"input_tokens": 4, "output_tokens": 10},
    },
    "parent_tool_use_id": None,
    "session_id": SID,
    "uuid": "u1",
}
CLAUDE_TOOL_RESULT: dict[str, Any] = {
    "type": "user",
    "message": {
        "role": "user",
        "content": [
            {
                "tool_use_id": "toolu_01",
                "type": "tool_result",
                "content": "3 passed",
                "is_error": False,
            }
        ],
    },
    "tool_use_result": {"stdout": "3 passed", "stderr": "", "interrupted": False},
    "parent_tool_use_id": None,
    "session_id": SID,
    "uuid": "u2",
}
CLAUDE_RESULT: dict[str, Any] = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "duration_ms": 74096,
    "duration_api_ms": 71152,
    "num_turns": 15,
    "result": "Done.",
    "session_id": SID,
    "total_cost_usd": 0.2416735,
    "usage": {
        "input_tokens": 18,
        "cache_creation_input_tokens": 14760,
        "cache_read_input_tokens": 169817,
        "output_tokens": 2577,
    },
    "modelUsage": {
        "claude-opus-4-1": {
            "inputTokens": 18,
            "outputTokens": 2577,
            "cacheReadInputTokens": 169817,
            "cacheCreationInputTokens": 14760,
            "costUSD": 0.2416735,
        }
    },
    "permission_denials": [],
}
CLAUDE_PERMISSION: dict[str, Any] = {
    "type": "control_request",
    "request_id": "req-1",
    "request": {
        "subtype": "can_use_tool",
        "tool_name": "Bash",
        "input": {"command": "rm -rf build"},
        "tool_use_id": "toolu_02",
        "permission_suggestions": [{"type": "addRules"}],
    },
}
CLAUDE_RATE_LIMIT: dict[str, Any] = {
    "type": "rate_limit_event",
    "rate_limit_info": {"status": "allowed", "resetsAt": 1767000000, "rateLimitType": "five_hour"},
    "session_id": SID,
}
CLAUDE_STREAM_EVENT: dict[str, Any] = {
    "type": "stream_event",
    "event": {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Hi"},
    },
    "session_id": SID,
}


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    line = copy.deepcopy(CLAUDE_TOOL_USE)
    line["message"]["content"] = list(blocks)
    return line


CODEX_LINES: dict[str, dict[str, Any]] = {
    "thread.started": {
        "type": "thread.started",
        "thread_id": "0199a213-81c0-7800-8aa1-bbab2a035a53",
    },
    "turn.started": {"type": "turn.started"},
    "command.started": {
        "type": "item.started",
        "item": {
            "id": "item_1",
            "type": "command_execution",
            "command": "bash -lc ls",
            "aggregated_output": "",
            "exit_code": None,
            "status": "in_progress",
        },
    },
    "command.completed": {
        "type": "item.completed",
        "item": {
            "id": "item_1",
            "type": "command_execution",
            "command": "bash -lc ls",
            "aggregated_output": "README.md\n",
            "exit_code": 0,
            "status": "completed",
        },
    },
    "agent_message": {
        "type": "item.completed",
        "item": {"id": "item_2", "type": "agent_message", "text": "There is a README.md."},
    },
    "turn.completed": {
        "type": "turn.completed",
        "usage": {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122},
    },
}


def line(obj: object) -> str:
    return orjson.dumps(obj).decode()


def make_driver(format: str) -> Driver:
    return get_format(format).make(DriverLaunch(cwd="/srv/app"))


def feed(format: str, obj_or_line: object) -> Step:
    text = obj_or_line if isinstance(obj_or_line, str) else line(obj_or_line)
    return make_driver(format).feed(text)


def parse(format: str, obj_or_line: object) -> list[AgentEvent]:
    return list(feed(format, obj_or_line).events)


def parse_one(format: str, obj_or_line: object) -> AgentEvent:
    events = parse(format, obj_or_line)
    assert len(events) == 1, events
    return events[0]


def assert_publishable(events: list[AgentEvent]) -> None:
    """What the hub needs of every event: a known kind and data it can serialize."""
    for event in events:
        assert event.kind in KINDS
        orjson.dumps(dict(event.data))
        assert "hived parser bug" not in str(event.data.get("parse_error", ""))


# -- claude ------------------------------------------------------------------------------------


def test_claude_init_starts_working_with_the_agent_session_id() -> None:
    event = parse_one("claude", CLAUDE_INIT)
    assert event.kind == "init"
    assert event.data == CLAUDE_INIT
    assert event.state == "WORKING"
    assert event.agent_session_id == SID


@pytest.mark.parametrize(
    "subtype", ["status", "task_started", "hook_response", "compact_boundary", "brand_new"]
)
def test_claude_other_system_subtypes_are_agent_events(subtype: str) -> None:
    obj = {"type": "system", "subtype": subtype, "session_id": SID, "status": "compacting"}
    event = parse_one("claude", obj)
    assert event.kind == "agent_event"
    assert event.data == obj
    assert event.state is None


def test_claude_tool_use_keeps_block_fields_and_message_context() -> None:
    event = parse_one("claude", CLAUDE_TOOL_USE)
    assert event.kind == "tool_use"
    assert event.state == "WORKING"
    assert event.agent_session_id == SID
    assert event.data["id"] == "toolu_01"
    assert event.data["name"] == "Bash"
    assert event.data["input"] == {"command": "pytest -q"}
    assert event.data["message_id"] == "msg_01"
    assert event.data["model"] == "claude-opus-4-1"
    assert event.data["parent_tool_use_id"] is None
    assert event.data["session_id"] == SID
    assert event.data["uuid"] == "u1"


def test_claude_assistant_text_and_thinking_blocks() -> None:
    events = parse(
        "claude",
        assistant(
            {"type": "thinking", "thinking": "Let me look.", "signature": "sig"},
            {"type": "text", "text": "Running the tests."},
        ),
    )
    assert [e.kind for e in events] == ["thinking", "message"]
    assert events[0].data["thinking"] == "Let me look."
    assert events[1].data["text"] == "Running the tests."
    assert events[1].data["role"] == "assistant"
    assert all(e.state == "WORKING" for e in events)


def test_claude_assistant_with_several_blocks_gives_one_event_per_block_in_order() -> None:
    events = parse(
        "claude",
        assistant(
            {"type": "text", "text": "a"},
            {"type": "tool_use", "id": "t1", "name": "Read", "input": {"path": "x"}},
            {"type": "redacted_thinking", "data": "opaque"},
        ),
    )
    assert [e.kind for e in events] == ["message", "tool_use", "agent_event"]
    assert events[2].data["data"] == "opaque"


def test_claude_assistant_string_content_is_one_message() -> None:
    obj = assistant()
    obj["message"]["content"] = "plain"
    event = parse_one("claude", obj)
    assert event.kind == "message"
    assert event.data["text"] == "plain"


def test_claude_tool_result() -> None:
    event = parse_one("claude", CLAUDE_TOOL_RESULT)
    assert event.kind == "tool_result"
    assert event.state == "WORKING"
    assert event.data["tool_use_id"] == "toolu_01"
    assert event.data["content"] == "3 passed"
    assert event.data["is_error"] is False
    assert event.data["tool_use_result"] == CLAUDE_TOOL_RESULT["tool_use_result"]
    assert event.agent_session_id == SID


def test_claude_tool_result_error_and_list_content() -> None:
    obj = copy.deepcopy(CLAUDE_TOOL_RESULT)
    content = [{"type": "text", "text": "boom"}]
    obj["message"]["content"] = [
        {"type": "tool_result", "tool_use_id": "t9", "content": content, "is_error": True}
    ]
    event = parse_one("claude", obj)
    assert event.data["is_error"] is True
    assert event.data["content"] == content


def test_claude_tool_result_with_missing_content_and_odd_is_error() -> None:
    obj = copy.deepcopy(CLAUDE_TOOL_RESULT)
    obj["message"]["content"] = [{"type": "tool_result", "tool_use_id": "t9", "is_error": "yes"}]
    event = parse_one("claude", obj)
    assert event.kind == "tool_result"
    assert event.data["content"] == ""
    assert event.data["is_error"] is False


@pytest.mark.parametrize(
    "content", ["Run the tests", [{"type": "text", "text": "Run the tests"}]], ids=["str", "blocks"]
)
def test_claude_user_text_is_a_user_message(content: object) -> None:
    obj = {"type": "user", "message": {"role": "user", "content": content}, "session_id": SID}
    event = parse_one("claude", obj)
    assert event.kind == "message"
    assert event.data["role"] == "user"
    assert event.data["text"] == "Run the tests"


def test_claude_stream_event_is_an_agent_event() -> None:
    event = parse_one("claude", CLAUDE_STREAM_EVENT)
    assert event.kind == "agent_event"
    assert event.data == CLAUDE_STREAM_EVENT


def test_claude_rate_limit_event() -> None:
    event = parse_one("claude", CLAUDE_RATE_LIMIT)
    assert event.kind == "rate_limit"
    assert event.data == {**CLAUDE_RATE_LIMIT, **CLAUDE_RATE_LIMIT["rate_limit_info"]}
    assert event.data["resetsAt"] == 1767000000


def test_claude_can_use_tool_is_a_permission_request_that_waits() -> None:
    event = parse_one("claude", CLAUDE_PERMISSION)
    assert event.kind == "permission_request"
    assert event.state == "WAITING"
    assert event.reason == "permission_request"
    assert event.data["request_id"] == "req-1"
    assert event.data["tool_name"] == "Bash"
    assert event.data["input"] == {"command": "rm -rf build"}
    assert event.data["tool_use_id"] == "toolu_02"
    assert event.data["permission_suggestions"] == [{"type": "addRules"}]
    assert event.data["request_kind"] == "permission"


def test_claude_control_responses_are_agent_events() -> None:
    response = {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": "hived-1", "response": {}},
    }
    event = parse_one("claude", response)
    assert event.kind == "agent_event"
    assert event.data == response


def test_claude_result_waits_and_carries_usage() -> None:
    step = feed("claude", CLAUDE_RESULT)
    [event] = step.events
    assert event.kind == "result"
    assert event.data == {
        **CLAUDE_RESULT,
        "last_turn": {"ok": True, "error": None, "message": None},
    }
    assert event.state == "WAITING"
    assert event.agent_session_id == SID
    assert step.usage == Usage(
        input_tokens=18,
        output_tokens=2577,
        cost_usd=0.2416735,
        turns=1,
        duration_ms=74096,
        cache_read_tokens=169817,
        cache_write_tokens=14760,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("usage", None),
        ("usage", "lots"),
        ("usage", [1, 2]),
        ("total_cost_usd", "0.24"),
        ("total_cost_usd", None),
        ("total_cost_usd", -1),
        ("duration_ms", {"ms": 3}),
    ],
)
def test_claude_result_with_a_wrong_typed_figure_counts_it_as_zero(
    field: str, value: object
) -> None:
    obj = copy.deepcopy(CLAUDE_RESULT)
    obj[field] = value
    step = feed("claude", obj)
    [event] = step.events
    assert event.kind == "result"
    assert event.state == "WAITING"
    usage = step.usage
    assert usage is not None
    figures = {
        "usage": (usage.input_tokens, usage.output_tokens),
        "total_cost_usd": usage.cost_usd,
        "duration_ms": usage.duration_ms,
    }
    assert figures[field] in ((0, 0), 0.0, 0)


def test_claude_result_without_any_figures_counts_only_the_turn() -> None:
    step = feed("claude", {"type": "result", "subtype": "error_during_execution"})
    [event] = step.events
    assert event.kind == "result"
    assert step.usage == Usage(turns=1)
    assert event.agent_session_id is None


def test_claude_unknown_type_is_kept_whole() -> None:
    obj = {"type": "brand_new_thing", "x": [1, 2], "session_id": SID}
    event = parse_one("claude", obj)
    assert event.kind == "agent_event"
    assert event.data == obj
    assert "parse_error" not in event.data


def test_claude_unknown_fields_are_ignored_and_kept() -> None:
    obj = copy.deepcopy(CLAUDE_TOOL_USE)
    obj["brand_new_field"] = 1
    obj["message"]["content"][0]["cache_control"] = {"type": "ephemeral"}
    event = parse_one("claude", obj)
    assert event.kind == "tool_use"
    assert event.data["cache_control"] == {"type": "ephemeral"}


# -- broken claude lines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "note"),
    [
        ({"subtype": "init"}, "type: expected a string, got null"),
        ({"type": 7}, "type: expected a string, got 7"),
        ({"type": "assistant", "message": "hi"}, 'message: expected an object, got a string "hi"'),
        ({"type": "assistant", "message": {"content": 5}}, "message.content: expected a list"),
        ({"type": "user"}, "message: expected an object, got null"),
        ({"type": "user", "message": {"content": None}}, "message.content: expected a list"),
        ({"type": "control_request", "request": []}, "request: expected an object, got a list"),
        (
            {"type": "control_request", "request": {"subtype": "can_use_tool"}},
            "request_id: expected a string, got null",
        ),
    ],
)
def test_claude_line_with_wrong_structure_is_an_agent_event_with_a_note(
    obj: dict[str, Any], note: str
) -> None:
    event = parse_one("claude", obj)
    assert event.kind == "agent_event"
    assert str(event.data["parse_error"]).startswith(note)
    assert {k: v for k, v in event.data.items() if k != "parse_error"} == obj


@pytest.mark.parametrize(
    ("block", "note"),
    [
        ("just text", 'message.content[0]: expected an object, got a string "just text"'),
        ({"type": "text", "text": 5}, "message.content[0].text: expected a string, got 5"),
        ({"type": "thinking"}, "message.content[0].thinking: expected a string, got null"),
        ({"type": "tool_use", "id": "t", "name": ["Bash"]}, "message.content[0].name: expected"),
        ({"type": ["text"], "text": "x"}, None),
    ],
)
def test_claude_bad_assistant_block_is_an_agent_event(block: object, note: str | None) -> None:
    event = parse_one("claude", assistant(block))  # type: ignore[arg-type]
    assert event.kind == "agent_event"
    assert event.state == "WORKING"
    if note is None:
        assert "parse_error" not in event.data
    else:
        assert str(event.data["parse_error"]).startswith(note)


def test_claude_tool_use_with_non_object_input_gets_empty_input() -> None:
    event = parse_one("claude", assistant({"type": "tool_use", "id": "t", "name": "X", "input": 3}))
    assert event.kind == "tool_use"
    assert event.data["input"] == {}


def test_claude_tool_result_without_tool_use_id_is_an_agent_event() -> None:
    obj = copy.deepcopy(CLAUDE_TOOL_RESULT)
    obj["message"]["content"] = [{"type": "tool_result", "content": "x"}, 5]
    events = parse("claude", obj)
    assert [e.kind for e in events] == ["agent_event", "agent_event"]
    assert "tool_use_id: expected a string" in events[0].data["parse_error"]
    assert "message.content[1]: expected an object" in events[1].data["parse_error"]


def test_claude_permission_request_with_odd_fields_is_still_answerable() -> None:
    obj = copy.deepcopy(CLAUDE_PERMISSION)
    obj["request"]["tool_name"] = 5
    obj["request"]["input"] = "rm"
    event = parse_one("claude", obj)
    assert event.kind == "permission_request"
    assert event.data["request_id"] == "req-1"
    assert event.data["tool_name"] is None
    assert event.data["input"] == {}


def test_claude_wrong_typed_session_id_gives_no_agent_session_id() -> None:
    event = parse_one("claude", {**CLAUDE_INIT, "session_id": 12})
    assert event.kind == "init"
    assert event.agent_session_id is None


@pytest.mark.parametrize("format", ["claude", "codex", "jsonl"])
@pytest.mark.parametrize(
    ("text", "note"),
    [
        ('{"type":"result","usage":{"input_tok', "invalid JSON"),
        ("{'type': 'result'}", "invalid JSON"),
        ("[1, 2, 3]", "expected a JSON object, got a list"),
        ('"result"', 'expected a JSON object, got a string "result"'),
        ("42", "expected a JSON object, got 42"),
        ("null", "expected a JSON object, got null"),
        ("\ufffd\ufffdbinary\x00\x01garbage\ufffd", "invalid JSON"),
        ("plain words from a wrapper script", "invalid JSON"),
        ("[" * 5000, "invalid JSON"),
        ('{"n": 1e999}', "invalid JSON"),
    ],
    ids=[
        "truncated",
        "python-repr",
        "list",
        "string",
        "number",
        "null",
        "garbage",
        "words",
        "deep",
        "infinite",
    ],
)
def test_json_formats_turn_an_unreadable_line_into_text_with_a_note(
    format: str, text: str, note: str
) -> None:
    event = parse_one(format, text)
    assert event.kind == "text"
    assert event.data["line"] == text
    assert str(event.data["parse_error"]).startswith(note)
    assert_publishable([event])


@pytest.mark.parametrize("format", ["claude", "codex", "jsonl"])
@pytest.mark.parametrize("text", ["", "\n", "   \r\n", "\t"])
def test_json_formats_skip_blank_lines(format: str, text: str) -> None:
    assert parse(format, text) == []


@pytest.mark.parametrize("format", sorted(FORMATS))
def test_lone_surrogates_become_replacement_characters(format: str) -> None:
    # What a reader decoding with "surrogateescape" hands over for the bytes ff fe.
    event = parse_one(format, "bad \udcff\udcfe bytes\n")
    assert event.kind == "text"
    assert event.data["line"] == "bad \ufffd\ufffd bytes"
    assert_publishable([event])


def test_claude_huge_valid_line_is_parsed() -> None:
    big = "x" * (4 * 1024 * 1024)
    obj = copy.deepcopy(CLAUDE_TOOL_RESULT)
    obj["message"]["content"][0]["content"] = big
    event = parse_one("claude", obj)
    assert event.kind == "tool_result"
    assert event.data["content"] == big


def test_claude_huge_truncated_line_is_text_with_the_whole_line() -> None:
    text = line(CLAUDE_TOOL_RESULT)[:-2] + "y" * (2 * 1024 * 1024)
    event = parse_one("claude", text)
    assert event.kind == "text"
    assert event.data["line"] == text
    assert "invalid JSON" in event.data["parse_error"]


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_line_endings_are_accepted(ending: str) -> None:
    assert parse_one("claude", line(CLAUDE_INIT) + ending).kind == "init"
    assert parse_one("text", "hello" + ending).data == {"line": "hello"}


WRONG_VALUES: list[object] = [None, 0, -1, 1.5e300, True, "s", [], [1, "x"], {}, {"a": None}]


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield (*prefix, key)
            yield from _paths(sub, (*prefix, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield (*prefix, index)
            yield from _paths(sub, (*prefix, index))


def _mutations(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``obj`` with each field, at every depth, replaced in turn by each wrong value."""
    for path in _paths(obj):
        for wrong in WRONG_VALUES:
            mutated = copy.deepcopy(obj)
            target: Any = mutated
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = wrong
            yield mutated


CLAUDE_SAMPLES = [
    CLAUDE_INIT,
    CLAUDE_TOOL_USE,
    CLAUDE_TOOL_RESULT,
    CLAUDE_RESULT,
    CLAUDE_PERMISSION,
    CLAUDE_RATE_LIMIT,
    CLAUDE_STREAM_EVENT,
    assistant({"type": "text", "text": "t"}, {"type": "thinking", "thinking": "th"}),
]


@pytest.mark.parametrize(
    ("format", "samples"),
    [("claude", CLAUDE_SAMPLES), ("codex", list(CODEX_LINES.values()))],
)
def test_every_field_of_every_sample_with_a_wrong_type_never_raises(
    format: str, samples: list[dict[str, Any]]
) -> None:
    driver = make_driver(format)
    count = 0
    for sample in samples:
        for mutated in _mutations(sample):
            assert_publishable(list(driver.feed(line(mutated)).events))
            count += 1
    assert count > 100


@pytest.mark.parametrize(
    ("format", "samples"),
    [("claude", CLAUDE_SAMPLES), ("codex", list(CODEX_LINES.values()))],
)
def test_every_truncation_of_every_sample_never_raises(
    format: str, samples: list[dict[str, Any]]
) -> None:
    driver = make_driver(format)
    for sample in samples:
        text = line(sample)
        for end in range(len(text)):
            events = list(driver.feed(text[:end]).events)
            assert_publishable(events)
            assert all(e.kind == "text" for e in events)


# -- codex -------------------------------------------------------------------------------------


def test_codex_thread_started_is_init_with_the_thread_id() -> None:
    event = parse_one("codex", CODEX_LINES["thread.started"])
    assert event.kind == "init"
    assert event.state == "WORKING"
    assert event.agent_session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert event.data == CODEX_LINES["thread.started"]


def test_codex_turn_started_means_working() -> None:
    event = parse_one("codex", CODEX_LINES["turn.started"])
    assert event.kind == "agent_event"
    assert event.state == "WORKING"


def test_codex_turn_completed_is_a_result_with_usage_counted_claudes_way() -> None:
    step = feed("codex", CODEX_LINES["turn.completed"])
    [event] = step.events
    assert event.kind == "result"
    assert event.state == "WAITING"
    assert event.data["is_error"] is False
    assert event.data["usage"] == CODEX_LINES["turn.completed"]["usage"]
    # Codex's input_tokens include the cached ones; hived counts those apart.
    assert step.usage == Usage(
        input_tokens=24763 - 24448, cache_read_tokens=24448, output_tokens=122, turns=1
    )
    assert step.last_turn is not None
    assert step.last_turn.ok


def test_codex_turn_failed_is_an_error_result() -> None:
    obj = {"type": "turn.failed", "error": {"message": "stream disconnected"}}
    event = parse_one("codex", obj)
    assert event.kind == "result"
    assert event.state == "WAITING"
    assert event.data["is_error"] is True
    assert event.data["error"] == {"message": "stream disconnected"}
    step = feed("codex", obj)
    assert step.usage == Usage(turns=1)
    assert step.last_turn is not None
    assert (step.last_turn.ok, step.last_turn.message) == (False, "stream disconnected")


def test_codex_error_is_an_agent_event_without_a_state() -> None:
    event = parse_one("codex", {"type": "error", "message": "Reconnecting... 1/5"})
    assert event.kind == "agent_event"
    assert event.state is None
    assert event.data["is_error"] is True
    assert event.data["message"] == "Reconnecting... 1/5"


def test_codex_command_started_is_a_tool_use() -> None:
    event = parse_one("codex", CODEX_LINES["command.started"])
    assert event.kind == "tool_use"
    assert event.state == "WORKING"
    assert event.data["id"] == "item_1"
    assert event.data["name"] == "command_execution"
    assert event.data["input"] == {"command": "bash -lc ls"}
    assert event.data["status"] == "in_progress"


def test_codex_command_completed_is_a_tool_result_with_exit_code() -> None:
    event = parse_one("codex", CODEX_LINES["command.completed"])
    assert event.kind == "tool_result"
    assert event.data["tool_use_id"] == "item_1"
    assert event.data["content"] == "README.md\n"
    assert event.data["exit_code"] == 0
    assert event.data["status"] == "completed"
    assert event.data["is_error"] is False


def test_codex_completed_item_without_a_started_one_still_gives_a_tool_result() -> None:
    assert [e.kind for e in parse("codex", CODEX_LINES["command.completed"])] == ["tool_result"]


@pytest.mark.parametrize(
    "changes", [{"exit_code": 2, "status": "failed"}, {"exit_code": None, "status": "declined"}]
)
def test_codex_failed_command_is_an_error_tool_result(changes: dict[str, Any]) -> None:
    obj = copy.deepcopy(CODEX_LINES["command.completed"])
    obj["item"].update(changes)
    event = parse_one("codex", obj)
    assert event.kind == "tool_result"
    assert event.data["is_error"] is True


@pytest.mark.parametrize(
    ("item", "tool_input", "content", "is_error"),
    [
        (
            {
                "type": "mcp_tool_call",
                "server": "gh",
                "tool": "list_prs",
                "arguments": {"repo": "x"},
                "result": {"content": [{"type": "text", "text": "2 PRs"}]},
                "error": None,
                "status": "completed",
            },
            {"server": "gh", "tool": "list_prs", "arguments": {"repo": "x"}},
            {"content": [{"type": "text", "text": "2 PRs"}]},
            False,
        ),
        (
            {
                "type": "mcp_tool_call",
                "server": "gh",
                "tool": "t",
                "arguments": {},
                "error": {"message": "no token"},
                "status": "failed",
            },
            {"server": "gh", "tool": "t", "arguments": {}},
            {"message": "no token"},
            True,
        ),
        (
            {
                "type": "file_change",
                "changes": [{"path": "a.py", "kind": "update"}],
                "status": "completed",
            },
            {"changes": [{"path": "a.py", "kind": "update"}]},
            [{"path": "a.py", "kind": "update"}],
            False,
        ),
        ({"type": "web_search", "query": "trio nursery"}, {"query": "trio nursery"}, "", False),
    ],
    ids=["mcp", "mcp-failed", "file_change", "web_search"],
)
def test_codex_other_tools_start_and_complete(
    item: dict[str, Any], tool_input: dict[str, Any], content: object, is_error: bool
) -> None:
    item = {"id": "item_5", **item}
    started = parse_one("codex", {"type": "item.started", "item": item})
    assert started.kind == "tool_use"
    assert started.data["name"] == item["type"]
    assert started.data["input"] == tool_input
    done = parse_one("codex", {"type": "item.completed", "item": item})
    assert done.kind == "tool_result"
    assert done.data["tool_use_id"] == "item_5"
    assert done.data["content"] == content
    assert done.data["is_error"] is is_error


def test_codex_agent_message_and_reasoning() -> None:
    message = parse_one("codex", CODEX_LINES["agent_message"])
    assert message.kind == "message"
    assert message.data["text"] == "There is a README.md."
    assert message.data["role"] == "assistant"
    reasoning = {"type": "item.completed", "item": {"id": "i", "type": "reasoning", "text": "hm"}}
    thinking = parse_one("codex", reasoning)
    assert thinking.kind == "thinking"
    assert thinking.data["thinking"] == "hm"
    assert thinking.data["text"] == "hm"


@pytest.mark.parametrize(
    "obj",
    [
        {
            "type": "item.updated",
            "item": {"id": "t", "type": "todo_list", "items": [{"text": "a", "completed": False}]},
        },
        {"type": "item.completed", "item": {"id": "t", "type": "todo_list", "items": []}},
        {"type": "item.updated", "item": {"id": "c", "type": "command_execution", "command": "ls"}},
        {"type": "item.started", "item": {"id": "m", "type": "agent_message", "text": ""}},
        {"type": "item.completed", "item": {"id": "e", "type": "error", "message": "warn"}},
        {"type": "item.completed", "item": {"id": "n", "type": "brand_new_item"}},
        {"type": "thread.renamed", "name": "x"},
    ],
    ids=[
        "todo-updated",
        "todo-done",
        "cmd-updated",
        "msg-started",
        "error-item",
        "new-item",
        "new",
    ],
)
def test_codex_lines_hived_does_not_map_are_agent_events(obj: dict[str, Any]) -> None:
    event = parse_one("codex", obj)
    assert event.kind == "agent_event"
    assert event.data == obj


@pytest.mark.parametrize(
    ("obj", "note"),
    [
        ({"type": "item.completed"}, "item: expected an object, got null"),
        ({"type": "item.started", "item": [1]}, "item: expected an object, got a list"),
        ({"type": "item.completed", "item": {"id": "x"}}, "item.type: expected a string"),
        (
            {"type": "item.completed", "item": {"type": "agent_message", "text": 3}},
            "item.text: expected a string, got 3",
        ),
        ({"type": None}, "type: expected a string, got null"),
    ],
)
def test_codex_wrong_structure_is_an_agent_event_with_a_note(
    obj: dict[str, Any], note: str
) -> None:
    event = parse_one("codex", obj)
    assert event.kind == "agent_event"
    assert str(event.data["parse_error"]).startswith(note)


def test_codex_wrong_typed_usage_and_thread_id_count_as_absent() -> None:
    done = feed("codex", {"type": "turn.completed", "usage": {"input_tokens": "many"}})
    assert done.usage == Usage(turns=1)
    init = parse_one("codex", {"type": "thread.started", "thread_id": 5})
    assert init.kind == "init"
    assert init.agent_session_id is None


# -- text and jsonl ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["hello", "", '{"type":"result"}', "\x1b[31mred\x1b[0m"])
def test_text_makes_every_line_a_text_event(text: str) -> None:
    event = parse_one("text", text + "\n")
    assert event.kind == "text"
    assert event.data == {"line": text}
    assert event.state is None


def test_text_huge_line_is_kept_whole() -> None:
    big = "z" * (1024 * 1024)
    assert parse_one("text", big).data == {"line": big}


def test_jsonl_object_is_an_agent_event_with_the_object() -> None:
    obj = {"level": "info", "msg": "compiling", "n": [1, 2]}
    event = parse_one("jsonl", obj)
    assert event.kind == "agent_event"
    assert event.data == obj


# -- the registry ------------------------------------------------------------------------------


def test_the_formats_are_the_config_formats_and_others_are_refused() -> None:
    assert {"text", "jsonl", "claude", "codex", "codex-app", "acp"} == set(FORMATS)
    with pytest.raises(ValueError, match="unknown agent format 'yaml'"):
        get_format("yaml")


def test_each_run_gets_a_fresh_driver() -> None:
    assert make_driver("claude") is not make_driver("claude")


@pytest.mark.parametrize(("format", "takes_input"), [("text", True), ("jsonl", True), ("claude", True), ("codex", False)])  # fmt: skip
def test_which_formats_take_prompts(format: str, takes_input: bool) -> None:
    assert make_driver(format).takes_input is takes_input
    assert get_format(format).takes_input is takes_input


def test_argv_of_each_format() -> None:
    command, args = ("agent", "--json"), ("-m", "x")
    assert get_format("text").argv(command, args, "hi", None) == ("agent", "--json", "-m", "x")
    assert get_format("codex").argv(command, args, "hi", None) == (*command, *args, "hi")
    assert get_format("claude").argv(command, args, "hi", "abc") == (
        *command, *args, "--resume", "abc"
    )  # fmt: skip


# -- what text and jsonl agents read -----------------------------------------------------------


@pytest.mark.parametrize("format", ["text", "jsonl"])
def test_text_and_jsonl_input_is_the_text_and_a_newline(format: str) -> None:
    assert make_driver(format).prompt("héllo").stdin == "héllo\n".encode()


@pytest.mark.parametrize("format", ["text", "jsonl", "codex"])
def test_agents_without_a_protocol_are_interrupted_by_sigint(format: str) -> None:
    assert make_driver(format).interrupt().signal == "SIGINT"


def test_codex_exec_closes_stdin_at_start_and_refuses_prompts() -> None:
    driver = make_driver("codex")
    assert driver.start().close_stdin
    with pytest.raises(DriverRefusal, match="takes its one prompt at start") as refused:
        driver.prompt("more")
    assert refused.value.code == "conflict"
