"""What goes on the wire besides JSON text: the MessagePack encoding and permessage-deflate.

How it works (DESIGN §15, docs/protocol.md "Encodings and compression"): a client asks for an
encoding by WebSocket subprotocol (:func:`choose_subprotocol`): ``hived.v1.msgpack`` gets the
same messages as MessagePack in binary frames, ``hived.v1.json`` (or no subprotocol) JSON text.
Every message is made as JSON text once (the hub shares that ``str`` with every subscriber), and
a MessagePack connection sends :func:`msgpack_of` it: decoded and packed once per text, kept
(by the identity of the ``str``, which the cache holds) for the next subscriber of that same
event. A batch is a MessagePack array: a header and the members' bytes, nothing re-encoded.
What a MessagePack client sends is turned into JSON text (:func:`json_of_msgpack`), so that
one parser checks every request.

permessage-deflate (RFC 7692) is negotiated with ``server_no_context_takeover``: each message
hived sends is compressed on its own, so the compressed bytes of one event are the same for
every subscriber and are made once (:func:`deflate`, one compressor per process and window
size, flushed with ``Z_FULL_FLUSH`` so that no message refers to an earlier one), and no
connection keeps a compressor. ``client_no_context_takeover`` too: an idle connection keeps no
inflater either.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Final

import orjson
import ormsgpack

from hived.core.errors import ProtocolError

SUBPROTOCOL_JSON: Final = "hived.v1.json"
SUBPROTOCOL_MSGPACK: Final = "hived.v1.msgpack"
SUBPROTOCOLS: Final = (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)
"""The subprotocols hived speaks."""

MSGPACK_CACHE_ENTRIES: Final = 4096
"""Texts whose MessagePack form is kept for the next subscriber (a subscriber's queue holds at
most ``server.subscriber_queue`` = 4096 events by default)."""
MSGPACK_CACHE_MAX_TEXT: Final = 65_536
"""Only texts up to this length are kept in the cache (a larger one is packed per sender)."""
DEFLATE_LEVEL: Final = 1
"""zlib's fastest level: on agent transcripts it makes frames within 4 % of level 6's, 2-3x
faster (bench/RESULTS.md, "Bytes on the wire")."""
DEFLATE_MEM_LEVEL: Final = 4
"""A smaller hash table than zlib's default (8): each message's full flush clears it."""
_SYNC_TAIL: Final = b"\x00\x00\xff\xff"


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """The first subprotocol of the client's offer (its preference first) that hived speaks;
    None when it offered none of them (the connection speaks JSON, as without an offer)."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    return None


class _MsgpackCache:
    """The MessagePack bytes of the last texts packed, by the identity of the ``str``; each
    entry holds its text, so that an id cannot be reused while it is kept."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[int, tuple[str, bytes]] = {}

    def get(self, text: str) -> bytes:
        entries = self._entries
        entry = entries.get(id(text))
        if entry is not None and entry[0] is text:
            return entry[1]
        packed = ormsgpack.packb(orjson.loads(text))
        if len(text) <= MSGPACK_CACHE_MAX_TEXT:
            if len(entries) >= MSGPACK_CACHE_ENTRIES:
                del entries[next(iter(entries))]
            entries[id(text)] = (text, packed)
        return packed


_cache = _MsgpackCache()


def msgpack_of(text: str) -> bytes:
    """The MessagePack form of a server message's JSON ``text`` (made once per text object)."""
    return _cache.get(text)


def msgpack_array(members: Sequence[bytes]) -> bytes:
    """A MessagePack array of already packed ``members``."""
    count = len(members)
    if count < 16:
        head = bytes((0x90 | count,))
    elif count < 65_536:
        head = b"\xdc" + count.to_bytes(2, "big")
    else:
        head = b"\xdd" + count.to_bytes(4, "big")
    return head + b"".join(members)


def json_of_msgpack(data: bytes) -> str:
    """A client's MessagePack message as JSON text, for the request parser.

    Raises :class:`ProtocolError` (``bad_json``: the frame does not decode) for bytes that are
    not one MessagePack value, or a value JSON cannot carry (``bin``, ``ext``, a map key that is
    not a string).
    """
    try:
        value = ormsgpack.unpackb(data)
    except ormsgpack.MsgpackDecodeError as exc:
        raise ProtocolError("bad_json", f"not valid MessagePack: {exc}") from None
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise ProtocolError(
            "bad_json",
            "MessagePack value not allowed: use only nil, bool, int, float, str, array and "
            "map with string keys (no bin or ext)",
        ) from None


_compressors: dict[int, zlib._Compress] = {}


def deflate(payload: bytes, window_bits: int) -> bytes:
    """``payload`` compressed as one permessage-deflate message on its own (RFC 7692 §7.2.1,
    without context takeover): raw DEFLATE with a window of ``2**window_bits`` bytes, flushed,
    without the final ``00 00 ff ff``."""
    compressor = _compressors.get(window_bits)
    if compressor is None:
        compressor = _compressors[window_bits] = zlib.compressobj(
            DEFLATE_LEVEL, zlib.DEFLATED, -window_bits, DEFLATE_MEM_LEVEL
        )
    data = compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert data.endswith(_SYNC_TAIL)
    return data[:-4]


def inflate(data: bytes, window_bits: int = 15) -> bytes:
    """The payload of one permessage-deflate message compressed on its own (for tests and the
    benchmark; the WebSocket library inflates what clients send)."""
    return zlib.decompressobj(-window_bits).decompress(data + _SYNC_TAIL)
