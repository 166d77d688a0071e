"""The ``codex`` format: ``codex exec --json``.

How it works: each line is one JSON object keyed by ``type``. Thread and turn lines give the
session its id, its state (a turn running: WORKING; a turn over: WAITING) and its usage. Item
lines carry what the agent does; they map onto the kinds Claude's lines use, so a client renders
both alike: an ``agent_message`` is a ``message``, ``reasoning`` is ``thinking``, and a command,
MCP tool call, file change or web search is a ``tool_use`` when it starts and a ``tool_result``
when it completes. Tool events add Claude's field names (``name``, ``input``; ``tool_use_id``,
``content``, ``is_error``) beside the item's own fields. The parser keeps no state: a completed
item whose start was never seen still gives its ``tool_result``. Codex exec takes no input on
stdin, so this format has no encoder.
"""

from __future__ import annotations

from typing import Any, Final

from hived.core.events import AgentEvent, Usage
from hived.core.parsers.jsonl import (
    Handler,
    JsonObject,
    as_count,
    as_object,
    as_str,
    expected_note,
    parse_typed,
)

WORKING: Final = "WORKING"
WAITING: Final = "WAITING"

TOOL_ITEMS: Final = frozenset({"command_execution", "mcp_tool_call", "file_change", "web_search"})

_TOOL_INPUT_FIELDS: Final = {
    "command_execution": ("command",),
    "mcp_tool_call": ("server", "tool", "arguments"),
    "file_change": ("changes",),
    "web_search": ("query",),
}
"""The item fields that say what a tool was asked to do: the ``input`` of its ``tool_use``."""

_FAILED_STATUSES: Final = frozenset({"failed", "declined"})


def _raw(obj: JsonObject, note: str | None = None) -> AgentEvent:
    data = obj if note is None else {**obj, "parse_error": note}
    return AgentEvent(kind="agent_event", data=data)


def _tool_output(item: JsonObject) -> Any:
    """What a finished tool gave back, as the ``content`` of its ``tool_result``."""
    match item.get("type"):
        case "command_execution":
            return item.get("aggregated_output", "")
        case "mcp_tool_call":
            for field in ("result", "error"):
                if item.get(field) is not None:
                    return item[field]
            return ""
        case "file_change":
            return item.get("changes", [])
        case _:
            return ""


def _tool_failed(item: JsonObject) -> bool:
    exit_code = item.get("exit_code")
    failed_exit = isinstance(exit_code, int) and not isinstance(exit_code, bool) and exit_code != 0
    return (
        failed_exit
        or as_str(item.get("status")) in _FAILED_STATUSES
        or item.get("error") is not None
    )


def turn_usage(usage: JsonObject) -> Usage:
    """A Codex turn's usage counted Claude's way: ``input_tokens`` without the cached part.

    Codex's ``input_tokens`` includes ``cached_input_tokens``; hived reports those as
    ``cache_read_tokens`` (and the newer ``cache_write_input_tokens``,
    ``reasoning_output_tokens`` under hived's names).
    """
    cached = as_count(usage.get("cached_input_tokens"))
    return Usage(
        input_tokens=max(as_count(usage.get("input_tokens")) - cached, 0),
        output_tokens=as_count(usage.get("output_tokens")),
        cache_read_tokens=cached,
        cache_write_tokens=as_count(usage.get("cache_write_input_tokens")),
        reasoning_tokens=as_count(usage.get("reasoning_output_tokens")),
        turns=1,
    )


class CodexParser:
    """``codex exec --json`` lines into hived events."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {
            "thread.started": self._thread_started,
            "turn.started": self._turn_started,
            "turn.completed": self._turn_completed,
            "turn.failed": self._turn_failed,
            "item.started": self._item,
            "item.updated": self._item,
            "item.completed": self._item,
            "error": self._error,
        }

    def parse_line(self, line: str) -> list[AgentEvent]:
        return parse_typed(line, self._handlers, _raw, "codex")

    def _thread_started(self, obj: JsonObject) -> list[AgentEvent]:
        thread_id = as_str(obj.get("thread_id"))
        return [
            AgentEvent(
                kind="init",
                data=obj,
                state=WORKING,
                reason="thread.started",
                agent_session_id=thread_id,
            )
        ]

    def _turn_started(self, obj: JsonObject) -> list[AgentEvent]:
        return [AgentEvent(kind="agent_event", data=obj, state=WORKING, reason="turn.started")]

    def _turn_completed(self, obj: JsonObject) -> list[AgentEvent]:
        usage = as_object(obj.get("usage"))
        return [
            AgentEvent(
                kind="result",
                data={**obj, "is_error": False},
                state=WAITING,
                reason="turn.completed",
                usage=turn_usage(usage),
            )
        ]

    def _turn_failed(self, obj: JsonObject) -> list[AgentEvent]:
        return [
            AgentEvent(
                kind="result",
                data={**obj, "is_error": True},
                state=WAITING,
                reason="turn.failed",
                usage=Usage(turns=1),
            )
        ]

    def _error(self, obj: JsonObject) -> list[AgentEvent]:
        # Codex reports retries ("Reconnecting... 1/5") this way too: not a state change.
        return [AgentEvent(kind="agent_event", data={**obj, "is_error": True})]

    def _item(self, obj: JsonObject) -> list[AgentEvent]:
        item = obj.get("item")
        if not isinstance(item, dict):
            return [_raw(obj, expected_note("item", "an object", item))]
        item_type = item.get("type")
        if not isinstance(item_type, str):
            return [_raw(obj, expected_note("item.type", "a string", item_type))]
        phase = obj["type"]
        if item_type in TOOL_ITEMS:
            if phase == "item.started":
                return [self._tool_use(item, item_type)]
            if phase == "item.completed":
                return [self._tool_result(item)]
        elif phase == "item.completed" and item_type in ("agent_message", "reasoning"):
            text = item.get("text")
            if not isinstance(text, str):
                return [_raw(obj, expected_note("item.text", "a string", text))]
            if item_type == "agent_message":
                data = {**item, "role": "assistant"}
                return [AgentEvent(kind="message", data=data, state=WORKING)]
            data = {**item, "thinking": text}
            return [AgentEvent(kind="thinking", data=data, state=WORKING)]
        # item.updated, todo_list, error items, and item types newer than this parser.
        return [_raw(obj)]

    def _tool_use(self, item: JsonObject, item_type: str) -> AgentEvent:
        tool_input = {name: item[name] for name in _TOOL_INPUT_FIELDS[item_type] if name in item}
        data = {"name": item_type, "input": tool_input, **item}
        return AgentEvent(kind="tool_use", data=data, state=WORKING)

    def _tool_result(self, item: JsonObject) -> AgentEvent:
        data = {
            "tool_use_id": item.get("id"),
            "content": _tool_output(item),
            **item,
            "is_error": _tool_failed(item),
        }
        return AgentEvent(kind="tool_result", data=data, state=WORKING)
