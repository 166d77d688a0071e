"""The encodings and compression of hived/core/wire.py: subprotocol choice, MessagePack made
once per text, client MessagePack turned into JSON (or refused), and deflate that an
independent inflater reads back."""

from __future__ import annotations

import zlib

import orjson
import ormsgpack
import pytest

from hived.core.errors import ProtocolError
from hived.core.wire import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    choose_subprotocol,
    deflate,
    json_of_msgpack,
    msgpack_array,
    msgpack_of,
)

EVENT = orjson.dumps(
    {"type": "event", "topic": "session/1", "seq": 3, "data": {"line": "é" * 40, "n": 1.5}}
).decode()


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([], None),
        (["chat", "superchat"], None),
        ([SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON], SUBPROTOCOL_MSGPACK),
        ([SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK], SUBPROTOCOL_JSON),
        (["hived.v2.msgpack", SUBPROTOCOL_MSGPACK], SUBPROTOCOL_MSGPACK),
    ],
)
def test_the_clients_first_known_subprotocol_is_chosen(
    offered: list[str], chosen: str | None
) -> None:
    assert choose_subprotocol(offered) == chosen


def test_msgpack_of_a_text_is_its_json_value_and_is_made_once_per_text_object() -> None:
    packed = msgpack_of(EVENT)
    assert ormsgpack.unpackb(packed) == orjson.loads(EVENT)
    assert msgpack_of(EVENT) is packed, "the same str object is packed once"
    copy = "".join(list(EVENT))
    assert copy is not EVENT
    assert msgpack_of(copy) == packed


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65_535, 65_536])
def test_a_msgpack_array_of_packed_members_reads_back_as_the_list(count: int) -> None:
    member = ormsgpack.packb({"type": "ping"})
    assert ormsgpack.unpackb(msgpack_array([member] * count)) == [{"type": "ping"}] * count


def test_a_clients_msgpack_becomes_the_same_json() -> None:
    request = {"type": "subscribe", "id": 7, "topic": "sessions", "since": 41}
    assert orjson.loads(json_of_msgpack(ormsgpack.packb(request))) == request


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\xc1", "not valid MessagePack"),
        (b"", "not valid MessagePack"),
        (ormsgpack.packb({"type": "ping", "id": b"raw"}), "no bin or ext"),
        (ormsgpack.packb({1: "ping"}, option=ormsgpack.OPT_NON_STR_KEYS), ""),
    ],
)
def test_bad_msgpack_is_a_bad_json_protocol_error(data: bytes, says: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        json_of_msgpack(data)
    assert raised.value.code == "bad_json"
    assert says in raised.value.message


@pytest.mark.parametrize("bits", [9, 12, 15])
def test_each_deflated_message_inflates_on_its_own(bits: int) -> None:
    messages = [EVENT.encode(), b"", b"x" * 100_000, EVENT.encode()]
    deflated = [deflate(m, bits) for m in messages]
    for message, data in zip(messages, deflated, strict=True):
        # A fresh inflater per message: what a client without the server's context reads.
        inflater = zlib.decompressobj(-bits)
        assert inflater.decompress(data + b"\x00\x00\xff\xff") == message
    assert deflated[0] == deflated[3], "no message refers to an earlier one"
    assert len(deflated[2]) < 1_000
