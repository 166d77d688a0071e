"""The ``text`` format: every line of output is one ``text`` event.

How it works: the line (without its line ending) becomes ``{"line": ...}``. The other parsers
fall back to :func:`text_event` for a line they cannot read, adding a ``parse_error`` note, so
nothing an agent prints is ever lost.
"""

from __future__ import annotations

import re
from typing import Final

from hived.core.events import AgentEvent

_SURROGATES: Final = re.compile("[\ud800-\udfff]")


def strip_newline(line: str) -> str:
    """The line without its trailing ``\\n`` / ``\\r\\n``."""
    return line.rstrip("\r\n")


def clean_text(text: str) -> str:
    """``text`` made safe to serialize: lone surrogates (from ``surrogateescape``) become U+FFFD.

    orjson refuses to encode them; one bad byte must not make a whole event unpublishable.
    """
    try:
        text.encode()
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return text


def text_event(line: str, parse_error: str | None = None) -> AgentEvent:
    """A ``text`` event for one line, with hived's note when the line was meant to be JSON."""
    data: dict[str, str] = {"line": clean_text(line)}
    if parse_error is not None:
        data["parse_error"] = parse_error
    return AgentEvent(kind="text", data=data)


class TextParser:
    """Each line, empty ones included, as a ``text`` event."""

    def parse_line(self, line: str) -> list[AgentEvent]:
        return [text_event(strip_newline(line))]
