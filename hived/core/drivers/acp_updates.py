"""ACP ``session/update`` notifications in hived's words: events, coalesced text, tool calls, usage.

How it works: an agent streams a message or a thought as many ``agent_message_chunk`` /
``agent_thought_chunk`` updates (one per token or a few). :class:`Chunks` gathers them and lets
them out as one ``message`` / ``thinking`` event when the next update is of another kind (a tool
call, a thought after a message, a plan, …) or the turn ends, so that the event count follows the
content, not the tokens. Coalescing is by structure, not by time: the driver has no clock.

A tool call is announced by ``tool_call`` and completed by ``tool_call_update`` s, each carrying
only the fields that changed. :class:`ToolCalls` keeps the merged view of each call: the first
``tool_call`` is a ``tool_use`` event, a later update that is not final is a ``tool_use`` with
``update: true`` (real agents fill the input in later: the Claude adapter announces Bash with
``rawInput: {}``), and the update that sets ``status`` to ``completed`` or ``failed`` is the
``tool_result``. The events carry Claude's field names (``name``, ``input``, ``tool_use_id``,
``content``, ``is_error``) beside ACP's own; ACP's list of tool contents stays as
``tool_content``, its diffs as ``diffs``.

Every other update (``plan``, ``available_commands_update``, ``current_mode_update``,
``config_option_update``, ``session_info_update``, ``user_message_chunk`` outside a replay, and
kinds hived does not know) is an ``agent_event`` with the update's own fields: kept, never
dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from hived.core.events import Usage
from hived.core.parsers.jsonl import JsonObject, as_count, as_object, as_str

CHUNK_KINDS: Final = {
    "agent_message_chunk": "message",
    "agent_thought_chunk": "thinking",
    "user_message_chunk": "user",
}
"""Streamed text updates → the kind of the coalesced event (``user``: a ``message`` with
``role: user``, sent when a loaded session replays its history)."""

FINAL_STATUSES: Final = frozenset({"completed", "failed"})

Event = tuple[str, dict[str, Any]]
"""An event before the driver adds its session id and state: (kind, data)."""


@attrs.define
class Chunks:
    """The text of the message or thought being streamed."""

    kind: str | None = None
    message_id: str | None = None
    parts: list[str] = attrs.Factory(list)
    blocks: list[Any] = attrs.Factory(list)
    """Content blocks that are not text (images, resource links), kept in order."""

    def add(self, update: JsonObject) -> list[Event]:
        """One chunk update; the previous message's event when this one starts another."""
        kind = CHUNK_KINDS[str(update.get("sessionUpdate"))]
        message_id = as_str(update.get("messageId"))
        flushed = []
        if self.kind is not None and (
            kind != self.kind or (message_id is not None and message_id != self.message_id)
        ):
            flushed = self.flush()
        self.kind = kind
        self.message_id = message_id or self.message_id
        content = as_object(update.get("content"))
        if content.get("type") == "text":
            self.parts.append(as_str(content.get("text")) or "")
        elif content:
            self.blocks.append(content)
        return flushed

    def flush(self, **notes: Any) -> list[Event]:
        """The gathered message as one event (none when it holds nothing), and a clean slate."""
        kind, text, blocks, message_id = (
            self.kind,
            "".join(self.parts),
            self.blocks,
            self.message_id,
        )
        self.kind, self.message_id, self.parts, self.blocks = None, None, [], []
        if kind is None or (not text and not blocks):
            return []
        data: dict[str, Any] = {**notes}
        if message_id is not None:
            data["messageId"] = message_id
        if blocks:
            data["blocks"] = blocks
        if kind == "thinking":
            return [("thinking", {**data, "thinking": text})]
        role = "user" if kind == "user" else "assistant"
        return [("message", {**data, "role": role, "text": text})]


def _text_of(contents: object) -> str:
    """The text of a tool call's ``content`` list (its ``content`` blocks' text, joined)."""
    texts = []
    for item in contents if isinstance(contents, list) else ():
        block = as_object(as_object(item).get("content"))
        if as_object(item).get("type") == "content" and block.get("type") == "text":
            texts.append(as_str(block.get("text")) or "")
    return "\n".join(texts)


def _diffs(contents: object) -> list[Any]:
    return [
        item
        for item in (contents if isinstance(contents, list) else ())
        if as_object(item).get("type") == "diff"
    ]


def tool_name(call: Mapping[str, Any]) -> str:
    """The tool's name: the Claude adapter's own (``_meta.claudeCode.toolName``), else ACP's
    ``kind`` (``execute``, ``edit``, ``read`` …), else its title."""
    meta_name = as_str(as_object(as_object(call.get("_meta")).get("claudeCode")).get("toolName"))
    return meta_name or as_str(call.get("kind")) or as_str(call.get("title")) or "tool"


@attrs.define
class ToolCalls:
    """The merged state of every tool call of the run, by ``toolCallId``."""

    calls: dict[str, dict[str, Any]] = attrs.Factory(dict)

    def merge(self, update: JsonObject) -> dict[str, Any]:
        """A ``tool_call`` or ``tool_call_update`` folded into its call's state; the state."""
        call_id = as_str(update.get("toolCallId")) or ""
        fields = {k: v for k, v in update.items() if k != "sessionUpdate" and v is not None}
        if update.get("sessionUpdate") == "tool_call":
            call = self.calls[call_id] = fields
        else:
            call = self.calls.setdefault(call_id, {})
            # _meta of later updates adds to the first one's (the Claude adapter sends the tool's
            # name in each, and its output in one).
            meta = {**as_object(call.get("_meta")), **as_object(fields.get("_meta"))}
            call.update(fields)
            if meta:
                call["_meta"] = meta
        return call

    def event(self, update: JsonObject) -> Event:
        """The ``tool_use`` or ``tool_result`` event of one tool call update."""
        first = update.get("sessionUpdate") == "tool_call" and update.get("toolCallId") not in (
            self.calls
        )
        call = dict(self.merge(update))
        call_id = as_str(call.get("toolCallId")) or ""
        contents = call.get("content")
        common = {
            **{k: v for k, v in call.items() if k != "content"},
            "sessionUpdate": update.get("sessionUpdate"),
            "name": tool_name(call),
            "input": as_object(call.get("rawInput")),
            "tool_use_id": call_id,
            "tool_content": contents if isinstance(contents, list) else [],
        }
        diffs = _diffs(contents)
        if diffs:
            common["diffs"] = diffs
        if call.get("status") in FINAL_STATUSES:
            self.calls.pop(call_id, None)
            text = _text_of(contents)
            output = call.get("rawOutput")
            if not text and isinstance(output, str):
                text = output
            return (
                "tool_result",
                {**common, "content": text, "is_error": call.get("status") == "failed"},
            )
        if not first:
            common["update"] = True
        return ("tool_use", common)


def turn_tokens(usage: object) -> Usage:
    """A prompt response's ``usage`` (unstable in ACP v1; the tokens of that turn) in hived's
    words. ``inputTokens`` is taken as the agent gives it: the Claude adapter's excludes the
    cached input, as hived's does."""
    u = as_object(usage)
    return Usage(
        input_tokens=as_count(u.get("inputTokens")),
        output_tokens=as_count(u.get("outputTokens")),
        cache_read_tokens=as_count(u.get("cachedReadTokens")),
        cache_write_tokens=as_count(u.get("cachedWriteTokens")),
        reasoning_tokens=as_count(u.get("thoughtTokens")),
    )
