"""Claude Code's ``--output-format stream-json`` lines, mapped to hived events.

How it works: each stdout line is one JSON object keyed by ``type``. A handler per type turns it
into hived events: ``assistant`` and ``user`` lines into one event per content block (text,
thinking, tool use, tool result), ``system``/``init`` into ``init``, ``rate_limit_event`` into
``rate_limit``. Anything hived does not map (other ``system`` subtypes, ``stream_event``, new
types) is kept whole as an ``agent_event``. A field of the wrong type costs only what needs it:
the line becomes an ``agent_event`` with a ``parse_error`` note. The two-way part (control
requests, results, usage, prompts) is the driver's: :mod:`hived.core.drivers.claude`.
"""

from __future__ import annotations

from typing import Any, Final

from hived.core.events import AgentEvent
from hived.core.parsers.jsonl import (
    Handler,
    JsonObject,
    as_object,
    as_str,
    expected_note,
    parse_typed,
)

WORKING: Final = "WORKING"

_BLOCK_FIELDS: Final = {"text": "text", "thinking": "thinking", "tool_use": "name"}
"""Assistant content blocks hived maps, each with the string field it cannot do without."""


def _raw(obj: JsonObject, note: str | None = None, state: str | None = None) -> AgentEvent:
    """The whole line as an ``agent_event``, with hived's note when something did not fit."""
    data = obj if note is None else {**obj, "parse_error": note}
    return AgentEvent(kind="agent_event", data=data, state=state, agent_session_id=_sid(obj))


def _sid(obj: JsonObject) -> str | None:
    return as_str(obj.get("session_id"))


def _content_blocks(message: JsonObject, where: str) -> list[Any] | str:
    """The message's content as a list of blocks (a bare string is one text block), or a note."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    return expected_note(f"{where}.content", "a list or a string", content)


class ClaudeParser:
    """Claude Code stream-json lines into hived events. Stateless: one per session for symmetry."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {
            "system": self._system,
            "assistant": self._assistant,
            "user": self._user,
            "rate_limit_event": self._rate_limit,
        }

    def parse_line(self, line: str) -> list[AgentEvent]:
        return parse_typed(line, self._handlers, _raw, "claude")

    def _system(self, obj: JsonObject) -> list[AgentEvent]:
        if obj.get("subtype") == "init":
            return [
                AgentEvent(
                    kind="init", data=obj, state=WORKING, reason="init", agent_session_id=_sid(obj)
                )
            ]
        return [_raw(obj)]

    def _assistant(self, obj: JsonObject) -> list[AgentEvent]:
        message = obj.get("message")
        if not isinstance(message, dict):
            return [_raw(obj, expected_note("message", "an object", message), WORKING)]
        blocks = _content_blocks(message, "message")
        if isinstance(blocks, str):
            return [_raw(obj, blocks, WORKING)]
        if not blocks:
            return [_raw(obj, state=WORKING)]
        context = {
            "message_id": message.get("id"),
            "model": message.get("model"),
            "parent_tool_use_id": obj.get("parent_tool_use_id"),
            "session_id": obj.get("session_id"),
            "uuid": obj.get("uuid"),
        }
        # The message that stands for a failed API call says so (``error``,
        # ``is_api_error_message``); keep it beside the text.
        for field in ("error", "is_api_error_message"):
            if field in obj:
                context[field] = obj[field]
        return [self._assistant_block(block, i, context, obj) for i, block in enumerate(blocks)]

    def _assistant_block(
        self, block: object, index: int, context: JsonObject, obj: JsonObject
    ) -> AgentEvent:
        sid = _sid(obj)
        where = f"message.content[{index}]"
        if not isinstance(block, dict):
            note = expected_note(where, "an object", block)
            data = {**context, "block": block, "parse_error": note}
            return AgentEvent(kind="agent_event", data=data, state=WORKING, agent_session_id=sid)
        data = {**context, **block}
        block_type = block.get("type")
        field = _BLOCK_FIELDS.get(block_type) if isinstance(block_type, str) else None
        if field is None:
            # redacted_thinking, server tool blocks, and block types newer than this parser.
            return AgentEvent(kind="agent_event", data=data, state=WORKING, agent_session_id=sid)
        if not isinstance(block.get(field), str):
            data["parse_error"] = expected_note(f"{where}.{field}", "a string", block.get(field))
            return AgentEvent(kind="agent_event", data=data, state=WORKING, agent_session_id=sid)
        if block_type == "text":
            data["role"] = "assistant"
            return AgentEvent(kind="message", data=data, state=WORKING, agent_session_id=sid)
        if block_type == "thinking":
            return AgentEvent(kind="thinking", data=data, state=WORKING, agent_session_id=sid)
        data["input"] = as_object(block.get("input"))
        return AgentEvent(kind="tool_use", data=data, state=WORKING, agent_session_id=sid)

    def _user(self, obj: JsonObject) -> list[AgentEvent]:
        message = obj.get("message")
        if not isinstance(message, dict):
            return [_raw(obj, expected_note("message", "an object", message))]
        blocks = _content_blocks(message, "message")
        if isinstance(blocks, str):
            return [_raw(obj, blocks)]
        if not blocks:
            return [_raw(obj)]
        context = {
            "parent_tool_use_id": obj.get("parent_tool_use_id"),
            "session_id": obj.get("session_id"),
            "uuid": obj.get("uuid"),
        }
        return [self._user_block(block, i, context, obj) for i, block in enumerate(blocks)]

    def _user_block(
        self, block: object, index: int, context: JsonObject, obj: JsonObject
    ) -> AgentEvent:
        sid = _sid(obj)
        where = f"message.content[{index}]"
        if not isinstance(block, dict):
            note = expected_note(where, "an object", block)
            data = {**context, "block": block, "parse_error": note}
            return AgentEvent(kind="agent_event", data=data, agent_session_id=sid)
        data = {**context, **block}
        block_type = block.get("type")
        if block_type == "tool_result":
            tool_use_id = block.get("tool_use_id")
            if not isinstance(tool_use_id, str):
                data["parse_error"] = expected_note(f"{where}.tool_use_id", "a string", tool_use_id)
                return AgentEvent(kind="agent_event", data=data, agent_session_id=sid)
            data["content"] = block.get("content", "")
            data["is_error"] = block.get("is_error") is True
            if "tool_use_result" in obj:
                data["tool_use_result"] = obj["tool_use_result"]
            return AgentEvent(kind="tool_result", data=data, state=WORKING, agent_session_id=sid)
        if block_type == "text" and isinstance(block.get("text"), str):
            data["role"] = "user"
            return AgentEvent(kind="message", data=data, state=WORKING, agent_session_id=sid)
        return AgentEvent(kind="agent_event", data=data, agent_session_id=sid)

    def _rate_limit(self, obj: JsonObject) -> list[AgentEvent]:
        # The limit's own fields (status, resetsAt, rateLimitType) also at the top, as for the
        # other kinds; the line's fields win a clash.
        data = {**as_object(obj.get("rate_limit_info")), **obj}
        return [AgentEvent(kind="rate_limit", data=data, agent_session_id=_sid(obj))]
