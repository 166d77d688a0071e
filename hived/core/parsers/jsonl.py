"""The ``jsonl`` format, and reading JSON lines for the formats built on it.

How it works: :func:`decode_object` turns one line into a JSON object, or into the ``text``
event (with a ``parse_error`` note) that stands for a line that is not one. The ``jsonl``
format publishes each object as an ``agent_event`` as it is; ``claude`` and ``codex`` read their
fields with the tolerant accessors here (:func:`as_count`, :func:`as_amount`, :func:`as_str`),
which turn a missing or wrong-typed value into "absent" rather than an error: agents add and
change fields over time, and a figure hived cannot read must not cost the whole line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from hived.core.events import AgentEvent
from hived.core.parsers.text import strip_newline, text_event

JsonObject = dict[str, Any]

log = logging.getLogger(__name__)


def json_type(value: object) -> str:
    """What a JSON value is, for a note: ``an object``, ``a list``, ``a string "x"``, ``5``."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string {orjson.dumps(shown).decode()}"
    if value is None:
        return "null"
    return orjson.dumps(value).decode()


def expected_note(where: str, what: str, value: object) -> str:
    """A ``parse_error`` note: ``message.content: expected a list, got a string "hi"``."""
    return f"{where}: expected {what}, got {json_type(value)}"


def decode_object(line: str) -> JsonObject | AgentEvent | None:
    """One output line as a JSON object; ``None`` for a blank line; else a ``text`` event."""
    line = strip_newline(line)
    if not line.strip():
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return text_event(line, f"invalid JSON: {exc}")
    if not isinstance(value, dict):
        return text_event(line, f"expected a JSON object, got {json_type(value)}")
    return value


def as_str(value: object) -> str | None:
    """A string field, or ``None`` when missing or not a string."""
    return value if isinstance(value, str) else None


def as_object(value: object) -> JsonObject:
    """An object field, or ``{}`` when missing or not an object."""
    return value if isinstance(value, dict) else {}


def as_count(value: object) -> int:
    """A count (tokens, turns, milliseconds): a finite number ≥ 0, else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if not math.isfinite(value) or value < 0:
        return 0
    return int(value)


def as_amount(value: object) -> float:
    """An amount of money: a finite number ≥ 0, else 0.0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    if not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


Handler = Callable[[JsonObject], list[AgentEvent]]


def parse_typed(
    line: str,
    handlers: Mapping[str, Handler],
    raw: Callable[..., AgentEvent],
    fmt: str,
) -> list[AgentEvent]:
    """One line of a format keyed by ``type``: the handler for its type, else ``raw(obj)``.

    A line that is not an object becomes a noted ``text`` event; an object whose ``type`` is
    missing, or one no handler knows, becomes ``raw`` (an ``agent_event``). A handler that
    raises is a bug in hived: the line is kept as a ``text`` event that says so, and the
    session's reader goes on.
    """
    decoded = decode_object(line)
    if decoded is None:
        return []
    if isinstance(decoded, AgentEvent):
        return [decoded]
    kind = decoded.get("type")
    if not isinstance(kind, str):
        return [raw(decoded, expected_note("type", "a string", kind))]
    handler = handlers.get(kind)
    if handler is None:
        return [raw(decoded)]
    try:
        return handler(decoded)
    except Exception as exc:
        log.exception("%s parser: failed on a %s line", fmt, kind)
        return [text_event(line, f"hived parser bug: {exc!r}")]


class JsonlParser:
    """Each JSON object line as an ``agent_event`` with the object as its data."""

    def parse_line(self, line: str) -> list[AgentEvent]:
        decoded = decode_object(line)
        if decoded is None:
            return []
        if isinstance(decoded, AgentEvent):
            return [decoded]
        return [AgentEvent(kind="agent_event", data=decoded)]
