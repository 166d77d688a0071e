"""The bytes of the frames the server sends: text and ping frames (RFC 6455 §5.2).

A server frame is unmasked, so a text message is a 2-10 byte header and the UTF-8 payload, and
a fan-out sends the same text to every subscriber, so :func:`text_frame` builds it once for all
of them: the last frame built is kept, keyed by the identity of its ``str``, for the next
sender of that same object. :class:`~hived.server.ws.WebSocket` writes these bytes to the
socket; the WebSocket library never sees them (it still frames its own pongs and close frames).
"""

from __future__ import annotations

import struct
from typing import Final

FRAME_CACHE_MAX_BYTES: Final = 65_536
"""The last frame built is kept for the next sender of the same text up to this size."""

_FIN_TEXT: Final = 0x81
_FIN_BINARY: Final = 0x82
_FIN_PING: Final = 0x89
_SHORT: Final = struct.Struct("!BB")
_MEDIUM: Final = struct.Struct("!BBH")
_LONG: Final = struct.Struct("!BBQ")


def _frame(first: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return _SHORT.pack(first, size) + payload
    if size < 65_536:
        return _MEDIUM.pack(first, 126, size) + payload
    return _LONG.pack(first, 127, size) + payload


class _LastFrame:
    """The frame of the text sent last: a fan-out sends one ``str`` object to every subscriber.

    Keyed by identity, and it holds the text, so the id cannot be reused by another string.
    """

    __slots__ = ("frame", "text")

    def __init__(self) -> None:
        self.text: str | None = None
        self.frame = b""


_last = _LastFrame()


def text_frame(text: str) -> bytes:
    """The bytes of an unmasked, unfragmented server text frame carrying ``text``."""
    if text is _last.text:
        return _last.frame
    frame = _frame(_FIN_TEXT, text.encode())
    if len(frame) <= FRAME_CACHE_MAX_BYTES:
        _last.text, _last.frame = text, frame
    return frame


def binary_frame(payload: bytes) -> bytes:
    """The bytes of an unmasked, unfragmented server binary frame (only the test build's echo
    endpoint sends them)."""
    return _frame(_FIN_BINARY, payload)


def ping_frame(payload: bytes) -> bytes:
    """The bytes of an unmasked server ping frame carrying ``payload`` (at most 125 bytes)."""
    return _frame(_FIN_PING, payload)
