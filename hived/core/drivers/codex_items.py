"""Codex app-server thread items as hived events (the item half of the ``codex`` driver).

How it works: ``item/started`` and ``item/completed`` notifications carry a ``ThreadItem`` keyed by
a camelCase ``type``. They map onto the kinds Claude's lines use, as ``codex exec --json`` items
do in :mod:`hived.core.parsers.codex`: an ``agentMessage`` is a ``message`` (``role:
"assistant"``), ``reasoning`` is ``thinking``, and a command, file change, MCP or dynamic tool
call, or web search is a ``tool_use`` when it starts and a ``tool_result`` when it completes, with
Claude's field names (``name``, ``input``; ``tool_use_id``, ``content``, ``is_error``) beside the
item's own fields. A message or reasoning item is published once, complete: its start is dropped
and its streamed deltas are coalesced by the driver. Anything else is the caller's to keep as an
``agent_event``.
"""

from __future__ import annotations

from typing import Any, Final

from hived.core.parsers.jsonl import JsonObject, as_str

TOOL_ITEMS: Final = frozenset(
    {"commandExecution", "fileChange", "mcpToolCall", "dynamicToolCall", "webSearch"}
)

TOOL_INPUT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "commandExecution": ("command", "cwd"),
    "fileChange": ("changes",),
    "mcpToolCall": ("server", "tool", "arguments"),
    "dynamicToolCall": ("tool", "arguments"),
    "webSearch": ("query",),
}
"""The item fields that say what a tool was asked to do: the ``input`` of its ``tool_use``."""

TEXT_ITEMS: Final = frozenset({"agentMessage", "reasoning"})
"""Items published only when complete (their start carries nothing yet)."""

_FAILED_STATUSES: Final = frozenset({"failed", "declined"})


def tool_use_data(item: JsonObject) -> dict[str, Any]:
    """The ``tool_use`` event's data for a started tool item."""
    item_type = str(item.get("type"))
    fields = TOOL_INPUT_FIELDS.get(item_type, ())
    tool_input = {name: item[name] for name in fields if name in item}
    return {"name": item_type, "input": tool_input, "tool_use_id": item.get("id"), **item}


def tool_output(item: JsonObject) -> Any:
    """What a finished tool gave back, as the ``content`` of its ``tool_result``."""
    match item.get("type"):
        case "commandExecution":
            return item.get("aggregatedOutput") or ""
        case "mcpToolCall":
            for field in ("result", "error"):
                if item.get(field) is not None:
                    return item[field]
            return ""
        case "dynamicToolCall":
            return item.get("contentItems") or ""
        case "fileChange":
            return item.get("changes", [])
        case "webSearch":
            return item.get("results") or ""
        case _:
            return ""


def tool_failed(item: JsonObject) -> bool:
    """A non-zero exit, a failed or declined status, an error, or ``success: false``."""
    exit_code = item.get("exitCode")
    failed_exit = isinstance(exit_code, int) and not isinstance(exit_code, bool) and exit_code != 0
    return (
        failed_exit
        or as_str(item.get("status")) in _FAILED_STATUSES
        or item.get("error") is not None
        or item.get("success") is False
    )


def tool_result_data(item: JsonObject) -> dict[str, Any]:
    """The ``tool_result`` event's data for a completed tool item."""
    return {
        "tool_use_id": item.get("id"),
        "content": tool_output(item),
        **item,
        "is_error": tool_failed(item),
    }


def reasoning_text(item: JsonObject) -> str:
    """A reasoning item's words: its summary parts, else its raw content parts."""
    for field in ("summary", "content"):
        parts = item.get(field)
        if isinstance(parts, list):
            texts = [p for p in parts if isinstance(p, str) and p]
            if texts:
                return "\n\n".join(texts)
    return ""
