"""permessage-deflate as the server agrees to it (hived/server/ws.py ``_Deflate``), driven
sans-IO: a wsproto client and server back to back, no event loop, and the bytes of the server's
own compressed frames (hived/server/frames.py) read by that client."""

from __future__ import annotations

import zlib

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from hived.server.frames import message_frame, text_frame
from hived.server.ws import _Deflate

MAX_BYTES = 65_536


def handshake(offer: PerMessageDeflate | None) -> tuple[WSConnection, WSConnection, _Deflate]:
    """A client offering ``offer`` and a server allowing deflate, after the opening."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(
        client.send(Request(host="localhost", target="/v1/ws", extensions=[offer] if offer else []))
    )
    assert isinstance(next(server.events()), Request)
    agreed = _Deflate(MAX_BYTES)
    client.receive_data(server.send(AcceptConnection(extensions=[agreed])))
    assert isinstance(next(client.events()), AcceptConnection)
    return client, server, agreed


def test_a_client_offer_is_agreed_without_context_takeover_either_way() -> None:
    offer = PerMessageDeflate(client_max_window_bits=15)
    _, _, agreed = handshake(offer)
    assert agreed.enabled()
    assert offer.server_no_context_takeover
    assert offer.client_no_context_takeover


def test_no_offer_means_no_compression() -> None:
    _, _, agreed = handshake(None)
    assert not agreed.enabled()


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        (["permessage-deflate; server_max_window_bits=8"], None),
        (["permessage-deflate; client_max_window_bits=8"], None),
        (["permessage-deflate; server_max_window_bits=x"], None),
        (
            ["permessage-deflate; server_max_window_bits=8", "permessage-deflate"],
            "server_no_context_takeover; client_no_context_takeover",
        ),
        (
            ["permessage-deflate; server_max_window_bits=10; client_max_window_bits"],
            "server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=10; client_max_window_bits=15",
        ),
    ],
)
def test_the_first_acceptable_offer_is_agreed_and_windows_under_512_bytes_declined(
    offers: list[str], answer: str | None
) -> None:
    agreed = _Deflate(MAX_BYTES)
    answers = [agreed.accept(offer) for offer in offers]
    assert next((a for a in answers if a is not None), None) == answer
    assert sum(a is not None for a in answers) <= 1


def test_the_client_inflates_the_servers_frames_each_on_its_own() -> None:
    client, _, agreed = handshake(PerMessageDeflate())
    text = '{"type":"event","data":{"line":"' + "compressible output " * 40 + '"}}'
    frames = [
        message_frame(text, False, agreed.server_max_window_bits, 256),
        text_frame('{"type":"ping"}'),
        message_frame(text, False, agreed.server_max_window_bits, 256),
    ]
    assert frames[0][0] == 0xC1, "RSV1 marks a compressed text frame"
    assert len(frames[0]) < len(text) // 4
    for frame in frames:
        client.receive_data(frame)
    got = [e.data for e in client.events() if isinstance(e, TextMessage)]
    assert got == [text, '{"type":"ping"}', text]


def test_a_small_compressed_message_inflating_past_the_limit_closes_with_1009() -> None:
    client, server, _ = handshake(PerMessageDeflate())
    bomb = b"\x00" * (MAX_BYTES * 16)
    assert len(zlib.compress(bomb)) < MAX_BYTES // 32, "a small frame on the wire"
    server.receive_data(client.send(TextMessage(data=bomb.decode())))
    events = list(server.events())
    assert isinstance(events[-1], CloseConnection)
    assert events[-1].code == 1009
    assert sum(len(e.data) for e in events if isinstance(e, TextMessage)) <= MAX_BYTES
