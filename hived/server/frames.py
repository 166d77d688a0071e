"""The bytes of the frames the server sends: text, binary and ping frames (RFC 6455 §5.2).

A server frame is unmasked, so a text message is a 2-10 byte header and the UTF-8 payload, and
a fan-out sends the same text to every subscriber, so :func:`text_frame` builds it once for all
of them: the last frame built is kept, keyed by the identity of its ``str``, for the next
sender of that same object. :class:`~hived.server.ws.WebSocket` writes these bytes to the
socket; the WebSocket library never sees them (it still frames its own pongs and close frames).

A connection that asked for MessagePack or permessage-deflate (:mod:`hived.core.wire`) gets
:func:`message_frame`: the same text as a binary MessagePack frame, and/or compressed (RSV1
set) when it is at least ``min_deflate_bytes`` long. Each such form keeps its own last frame.
"""

from __future__ import annotations

import struct
from typing import Final

from hived.core.wire import deflate, msgpack_of

FRAME_CACHE_MAX_BYTES: Final = 65_536
"""The last frame built is kept for the next sender of the same text up to this size."""

_FIN_TEXT: Final = 0x81
_FIN_BINARY: Final = 0x82
_FIN_PING: Final = 0x89
_RSV1: Final = 0x40
"""Set on the first frame of a compressed message (RFC 7692 §6)."""
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
_lasts: dict[tuple[bool, int, int], _LastFrame] = {}
"""The last frame of each other form: (binary, window bits or 0, least bytes to compress)."""


def text_frame(text: str) -> bytes:
    """The bytes of an unmasked, unfragmented server text frame carrying ``text``."""
    if text is _last.text:
        return _last.frame
    frame = _frame(_FIN_TEXT, text.encode())
    if len(frame) <= FRAME_CACHE_MAX_BYTES:
        _last.text, _last.frame = text, frame
    return frame


def message_frame(text: str, binary: bool, window_bits: int, min_deflate_bytes: int) -> bytes:
    """The frame of a server message ``text``: as MessagePack in a binary frame if ``binary``,
    and compressed with a window of ``2**window_bits`` (0: never) when its payload is at least
    ``min_deflate_bytes`` long."""
    key = (binary, window_bits, min_deflate_bytes)
    last = _lasts.get(key)
    if last is None:
        last = _lasts[key] = _LastFrame()
    elif text is last.text:
        return last.frame
    frame = payload_frame(
        msgpack_of(text) if binary else text.encode(), binary, window_bits, min_deflate_bytes
    )
    if len(text) <= FRAME_CACHE_MAX_BYTES:
        last.text, last.frame = text, frame
    return frame


def payload_frame(payload: bytes, binary: bool, window_bits: int, min_deflate_bytes: int) -> bytes:
    """The frame of one message's ``payload`` (UTF-8 text, or binary), compressed as
    :func:`message_frame` says."""
    first = _FIN_BINARY if binary else _FIN_TEXT
    if window_bits and len(payload) >= min_deflate_bytes:
        return _frame(first | _RSV1, deflate(payload, window_bits))
    return _frame(first, payload)


def binary_frame(payload: bytes) -> bytes:
    """The bytes of an unmasked, unfragmented server binary frame."""
    return _frame(_FIN_BINARY, payload)


def ping_frame(payload: bytes) -> bytes:
    """The bytes of an unmasked server ping frame carrying ``payload`` (at most 125 bytes)."""
    return _frame(_FIN_PING, payload)
