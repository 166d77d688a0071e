"""Agent output formats: a parser per format, and what each format accepts on stdin.

How it works: the supervisor makes one parser per session (:func:`make_parser`) and hands it
every stdout line; the parser returns the hived events that line stands for (often one, none for
a blank JSON line, one per content block for a Claude message). A parser never raises on what an
agent prints: a line it cannot read becomes a ``text`` event with a ``parse_error`` note.
Going the other way, :func:`encode_input`, :func:`encode_approval` and :func:`encode_interrupt`
give the bytes to write to an agent's stdin, each a whole line. docs/formats.md maps every
format's lines to event kinds.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from hived.core.events import AgentEvent
from hived.core.parsers.claude import (
    ClaudeParser,
    encode_interrupt_request,
    encode_permission_response,
    encode_user_message,
)
from hived.core.parsers.codex import CodexParser
from hived.core.parsers.jsonl import JsonlParser
from hived.core.parsers.text import TextParser

__all__ = [
    "FORMATS",
    "FORMATS_WITH_CONTROL",
    "FORMATS_WITH_INPUT",
    "Parser",
    "encode_approval",
    "encode_input",
    "encode_interrupt",
    "make_parser",
    "new_request_id",
]


class Parser(Protocol):
    """Turns one line of an agent's stdout into hived events."""

    def parse_line(self, line: str) -> list[AgentEvent]:
        """The events of one line (with or without its line ending). Never raises."""
        ...


_PARSERS: Final[dict[str, Callable[[], Parser]]] = {
    "text": TextParser,
    "jsonl": JsonlParser,
    "claude": ClaudeParser,
    "codex": CodexParser,
}

FORMATS: Final = frozenset(_PARSERS)
"""Every output format hived reads (the config's ``format`` values)."""

FORMATS_WITH_INPUT: Final = frozenset({"text", "jsonl", "claude"})
"""Formats whose agents read prompts on stdin (``session.input``)."""

FORMATS_WITH_CONTROL: Final = frozenset({"claude"})
"""Formats whose agents understand approvals and interrupts (``session.approve``/``interrupt``)."""


def make_parser(format: str) -> Parser:
    """A fresh parser for one session's output; ``ValueError`` for a format hived does not know."""
    try:
        return _PARSERS[format]()
    except KeyError:
        raise ValueError(f"unknown agent format {format!r}; known: {sorted(FORMATS)}") from None


def encode_input(format: str, text: str) -> bytes | None:
    """``text`` as the line an agent of ``format`` reads on stdin; ``None`` when it reads none.

    ``claude``: a stream-json user message; ``text`` and ``jsonl``: the text itself plus a newline.
    """
    if format == "claude":
        return encode_user_message(text)
    if format in ("text", "jsonl"):
        return (text + "\n").encode("utf-8", "replace")
    if format in FORMATS:
        return None
    raise ValueError(f"unknown agent format {format!r}; known: {sorted(FORMATS)}")


def encode_approval(
    request_id: str, allow: bool, message: str | None, tool_input: Mapping[str, Any]
) -> bytes:
    """The answer to a ``permission_request`` (claude): allow with ``tool_input``, or deny.

    A denial carries ``message`` (shown to the model), or a default one.
    """
    return encode_permission_response(request_id, allow, message, tool_input)


def encode_interrupt(request_id: str) -> bytes:
    """The line that interrupts a claude agent's current turn; ``request_id`` should be fresh."""
    return encode_interrupt_request(request_id)


def new_request_id() -> str:
    """A fresh id for a control request hived sends (e.g. an interrupt)."""
    return f"hived-{uuid.uuid4().hex}"
