"""Text from outside (session names, hook session ids, paths) made safe for one log line.

How it works: :func:`printable` replaces every control character — newline, carriage return,
escape, the other C0 and C1 codes, DEL, and the Unicode line and paragraph separators — by a
visible escape (``\\n``, ``\\x1b``, ``\\u2028``), so a name cannot forge a log line or drive the
terminal that shows the log, and cuts what is very long. Call sites use it for what a client
or an agent chose; the daemon's log formatters (:mod:`hived.logs`) apply it to every message as
well, for the call sites that do not.
"""

from __future__ import annotations

from typing import Final

MAX_LOGGED_CHARS: Final = 200
"""A logged outside string longer than this is cut (with ``...``)."""

_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES: Final[dict[int, str]] = {
    code: _NAMED.get(chr(code), f"\\x{code:02x}")
    for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))
}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def printable(text: str, max_chars: int | None = MAX_LOGGED_CHARS) -> str:
    """``text`` with its control characters escaped, cut to ``max_chars`` (None: not cut)."""
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 3] + "..."
    if text.isprintable():
        return text
    return text.translate(_ESCAPES)
