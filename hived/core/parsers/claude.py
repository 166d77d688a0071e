"""The ``claude`` format: Claude Code's ``--output-format stream-json`` (and its stdin side).

How it works: each stdout line is one JSON object keyed by ``type``. A handler per type turns it
into hived events: ``assistant`` and ``user`` lines into one event per content block (text,
thinking, tool use, tool result), ``control_request`` ``can_use_tool`` into a
``permission_request`` (the agent waits: state WAITING), ``result`` into a ``result`` with the
turn's usage (the agent waits for the next prompt: state WAITING). Anything hived does not map
(other ``system`` subtypes, ``stream_event``, new types) is kept whole as an ``agent_event``. A
field of the wrong type costs only what needs it: the line becomes an ``agent_event`` with a
``parse_error`` note, and usage figures hived cannot read count as 0.

The encoders write what Claude reads on stdin with ``--input-format stream-json``: a user message
per prompt, and ``control_response`` / ``control_request`` lines for approvals and interrupts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson

from hived.core.events import AgentEvent, Usage
from hived.core.parsers.jsonl import (
    Handler,
    JsonObject,
    as_amount,
    as_count,
    as_object,
    as_str,
    expected_note,
    parse_typed,
)
from hived.core.parsers.text import clean_text

WORKING: Final = "WORKING"
WAITING: Final = "WAITING"

DEFAULT_DENY_MESSAGE: Final = "Denied by the operator through hived."

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
            "result": self._result,
            "control_request": self._control_request,
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

    def _control_request(self, obj: JsonObject) -> list[AgentEvent]:
        request = obj.get("request")
        if not isinstance(request, dict):
            return [_raw(obj, expected_note("request", "an object", request))]
        if request.get("subtype") != "can_use_tool":
            return [_raw(obj)]
        request_id = obj.get("request_id")
        if not isinstance(request_id, str):
            # Without its id the request cannot be answered; show it, do not offer it.
            return [_raw(obj, expected_note("request_id", "a string", request_id))]
        data = {
            **request,
            "request_id": request_id,
            "tool_name": as_str(request.get("tool_name")),
            "input": as_object(request.get("input")),
            "tool_use_id": as_str(request.get("tool_use_id")),
        }
        return [
            AgentEvent(
                kind="permission_request",
                data=data,
                state=WAITING,
                reason="permission_request",
                agent_session_id=_sid(obj),
            )
        ]

    def _rate_limit(self, obj: JsonObject) -> list[AgentEvent]:
        # The limit's own fields (status, resetsAt, rateLimitType) also at the top, as for the
        # other kinds; the line's fields win a clash.
        data = {**as_object(obj.get("rate_limit_info")), **obj}
        return [AgentEvent(kind="rate_limit", data=data, agent_session_id=_sid(obj))]

    def _result(self, obj: JsonObject) -> list[AgentEvent]:
        usage = as_object(obj.get("usage"))
        return [
            AgentEvent(
                kind="result",
                data=obj,
                state=WAITING,
                reason="result",
                usage=Usage(
                    input_tokens=as_count(usage.get("input_tokens")),
                    output_tokens=as_count(usage.get("output_tokens")),
                    cost_usd=as_amount(obj.get("total_cost_usd")),
                    turns=as_count(obj.get("num_turns")),
                    duration_ms=as_count(obj.get("duration_ms")),
                ),
                agent_session_id=_sid(obj),
            )
        ]


def _line(obj: JsonObject) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def encode_user_message(text: str) -> bytes:
    """A prompt as the stream-json user message Claude reads on stdin."""
    return _line(
        {
            "type": "user",
            "session_id": "",
            "uuid": str(uuid.uuid4()),
            "message": {"role": "user", "content": [{"type": "text", "text": clean_text(text)}]},
            "parent_tool_use_id": None,
        }
    )


def encode_permission_response(
    request_id: str, allow: bool, message: str | None, tool_input: Mapping[str, Any]
) -> bytes:
    """The answer to a ``can_use_tool`` control request: allow (with the input) or deny."""
    response: JsonObject = (
        {"behavior": "allow", "updatedInput": dict(tool_input)}
        if allow
        else {"behavior": "deny", "message": clean_text(message or DEFAULT_DENY_MESSAGE)}
    )
    return _line(
        {
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": response},
        }
    )


def encode_interrupt_request(request_id: str) -> bytes:
    """A control request that makes Claude stop the current turn (it ends with a ``result``)."""
    return _line(
        {"type": "control_request", "request_id": request_id, "request": {"subtype": "interrupt"}}
    )
