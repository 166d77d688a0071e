"""What the history keeps beside the events: the text people search, and usage per turn.

How it works: the store follows its events table in the background (``hived.store.indexer``)
and, for each event, asks this module two questions. :func:`search_text` says which text of the
event is worth finding again (a message, a command, a file path, a tool's output, a prompt,
stderr), or None for an event nobody searches (a state change, a rate limit). :func:`usage_delta`
turns the session's running usage total announced by two successive ``state`` events into what
was spent between them: usage is reported as a running total (DESIGN §10), so the ledger keeps
differences, each stamped with the time of the state change that announced it (a turn's end),
and a sum over any period is exact.

Both are pure functions of an event's kind and data: no I/O, no trio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

MAX_TEXT_CHARS: Final = 8192
"""Most characters of one event that are indexed: a tool's whole output is not searched past
this (its start says what it was), and the index stays a fraction of the store."""
KEY_INPUT_FIELDS: Final = (
    "command",
    "cmd",
    "file_path",
    "path",
    "notebook_path",
    "pattern",
    "url",
    "query",
    "description",
    "prompt",
    "old_string",
    "new_string",
)
"""The fields of a tool's input that say what it did (Claude, Codex and ACP names)."""
MARKERS: Final = ("\x02", "\x03")
"""The characters that mark a match in a snippet; removed from the text that is indexed."""
USAGE_TOKENS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
"""The token counts of the usage ledger, in the order the ``usage`` request lists them."""
USAGE_FIELDS: Final = (*USAGE_TOKENS, "cost_usd", "turns")
"""Every figure of a ledger entry."""


def _text_of(value: Any) -> str:
    """Plain text out of an agent's content: a string, or a list of ``{"text": ...}`` blocks."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_text_of(item) for item in value if item is not None)
    if isinstance(value, Mapping):
        for key in ("text", "content", "output", "stdout", "stderr"):
            if key in value:
                return _text_of(value[key])
    return ""


def _tool_text(name: Any, tool_input: Any) -> str:
    parts = [name] if isinstance(name, str) else []
    if isinstance(tool_input, Mapping):
        for key in KEY_INPUT_FIELDS:
            value = tool_input.get(key)
            if isinstance(value, str):
                parts.append(value)
            elif isinstance(value, list):
                parts.extend(v for v in value if isinstance(v, str))
    elif isinstance(tool_input, str):
        parts.append(tool_input)
    return "\n".join(parts)


def event_text(kind: str, data: Mapping[str, Any]) -> str:
    """The whole text of an event that people read and search ("" when it has none)."""
    if kind in ("message", "thinking"):
        return _text_of(data.get("text") or data.get("thinking") or data.get("content"))
    if kind == "tool_use":
        return _tool_text(data.get("name"), data.get("input"))
    if kind == "permission_request":
        return _tool_text(data.get("tool_name"), data.get("input"))
    if kind == "tool_result":
        return _text_of(data.get("content") or data.get("output"))
    if kind in ("text", "stderr"):
        line = data.get("line")
        return line if isinstance(line, str) else ""
    if kind == "input":
        text = data.get("text")
        return text if isinstance(text, str) else ""
    if kind == "hook":
        prompt = data.get("prompt")
        if isinstance(prompt, str):
            return prompt
        return _tool_text(data.get("tool_name"), data.get("tool_input"))
    return ""


def search_text(kind: str, data: Mapping[str, Any]) -> str | None:
    """The text of an event that search finds it by, at most :data:`MAX_TEXT_CHARS`; None when
    the event has none (its kind is not searched, or it is empty)."""
    text = event_text(kind, data)[:MAX_TEXT_CHARS]
    for marker in MARKERS:
        text = text.replace(marker, " ")
    return text if text.strip() else None


SEARCHED_KINDS: Final = frozenset(
    {
        "message",
        "thinking",
        "tool_use",
        "tool_result",
        "permission_request",
        "text",
        "stderr",
        "input",
        "hook",
    }
)
"""The kinds :func:`search_text` finds text in (it returns None for any other)."""
SPACES: Final = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Every character ``str.strip()`` removes (those whose ``isspace()`` is true): a text made
only of these is not searchable."""


def search_text_json(kind: str, data: str) -> str | None:
    """:func:`search_text` of an event as the store keeps it (``data`` as JSON text); None
    when ``data`` is not a JSON object."""
    if kind not in SEARCHED_KINDS:
        return None
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return search_text(kind, parsed) if isinstance(parsed, dict) else None


def _figure(usage: Mapping[str, Any], key: str) -> float:
    value = usage.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return value


def usage_delta(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, float]:
    """What was spent between two running totals of one session (``before`` None: the first).

    A figure that went down means its total started again (a driver that does not carry the
    session's earlier usage into a new run): the new total is then what was spent.
    """
    delta: dict[str, float] = {}
    for key in USAGE_FIELDS:
        new = _figure(after, key)
        old = 0 if before is None else _figure(before, key)
        delta[key] = new - old if new >= old else new
    return delta
