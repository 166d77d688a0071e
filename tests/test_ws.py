"""The WebSocket transport (hived/server/ws.py), read back by an independent peer: the
``websockets`` library, as a client over real sockets and sans-IO for the frames."""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from types import CoroutineType, FrameType, MethodType
from typing import Any

import orjson
import trio
import trio.testing
import trustme
import websockets.trio.client
import wsproto.events
from websockets.frames import Frame, Opcode

from hived.core.events import encode_event
from hived.hub import Hub
from hived.server.frames import text_frame
from hived.server.listener import Server
from hived.server.router import Router
from hived.server.ws import Pong, WebSocketClosed, _Pings, accept
from tests.test_frames import parse
from tests.test_listener import SECRETS, make_config


def test_pong_is_marked_by_set_as_the_library_does() -> None:
    pong = Pong()
    assert not pong.received
    pong.set()
    assert pong.received


async def serve(nursery: trio.Nursery, **server: Any) -> tuple[Hub, int]:
    hub, port, _ = await serve_server(nursery, **server)
    return hub, port


async def serve_server(nursery: trio.Nursery, **server: Any) -> tuple[Hub, int, Server]:
    hub = Hub()
    config = make_config(**{"subscriber_queue": 100_000, **server})
    listener = Server(config, hub, Router(), version="9.9.9")
    [(_, port)] = await nursery.start(listener.serve)
    return hub, port, listener


@contextlib.asynccontextmanager
async def subscribed(
    url: str, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[websockets.trio.client.ClientConnection]:
    async with websockets.trio.client.connect(
        url,
        proxy=None,
        compression=None,
        ssl=ssl_context,
        additional_headers={"Authorization": f"Bearer {SECRETS['viewer']}"},
    ) as ws:
        with trio.fail_after(10):
            assert orjson.loads(await ws.recv())["type"] == "welcome"
            await ws.send(
                orjson.dumps({"type": "subscribe", "id": 1, "topic": "sessions"}).decode()
            )
            assert orjson.loads(await ws.recv())["type"] == "result"
        yield ws


async def read_events(ws: websockets.trio.client.ClientConnection, count: int) -> list[Any]:
    """The next ``count`` events, whether they came one per frame or as arrays."""
    events: list[Any] = []
    with trio.fail_after(30):
        while len(events) < count:
            message = orjson.loads(await ws.recv())
            events.extend(message if isinstance(message, list) else [message])
    return events


TEXTS = ["a", "b" * 200, "c" * 70_000, "é€😀 " * 5_000]


async def test_events_of_every_size_reach_a_websockets_client_over_a_socket(
    nursery: trio.Nursery,
) -> None:
    hub, port = await serve(nursery)
    async with subscribed(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        for text in TEXTS:
            hub.publish("sessions", "output", {"text": text})
            [event] = await read_events(ws, 1)
            assert event["data"] == {"text": text}


async def test_events_written_by_the_publisher_count_in_the_connection_figures(
    nursery: trio.Nursery,
) -> None:
    hub, port, server = await serve_server(nursery)
    async with subscribed(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        for i in range(3):
            await trio.testing.wait_all_tasks_blocked()  # the sender waits: a direct write
            hub.publish("sessions", "output", {"i": i})
            [event] = await read_events(ws, 1)
            assert event["data"] == {"i": i}
        [figures] = server.connections()
    # The welcome, the subscribe result and the three events, each a frame of its own.
    assert (figures.frames_out, figures.messages_out) == (5, 5)
    assert figures.bytes_out > 3 * len('{"type":"event"}')


async def test_a_fan_out_counts_the_utf8_bytes_of_text_that_is_not_ascii(
    nursery: trio.Nursery,
) -> None:
    """Every connection counts the bytes it was sent, the frame's UTF-8 (measured once for
    all of them), not its characters."""
    hub, port, server = await serve_server(nursery)
    url = f"ws://127.0.0.1:{port}/v1/ws"
    async with subscribed(url) as first, subscribed(url) as second:
        await trio.testing.wait_all_tasks_blocked()
        before = {f.id: f.bytes_out for f in server.connections()}
        frame = encode_event(hub.publish("sessions", "output", {"text": "héllo ✓ 🐝"}))
        for ws in (first, second):
            [event] = await read_events(ws, 1)
            assert event["data"] == {"text": "héllo ✓ 🐝"}
        after = {f.id: f.bytes_out for f in server.connections()}
    assert len(frame.encode()) > len(frame)
    assert {i: after[i] - before[i] for i in before} == dict.fromkeys(before, len(frame.encode()))


async def test_events_of_every_size_reach_a_websockets_client_over_tls(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    hub, port = await serve(
        nursery, tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem")
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with subscribed(f"wss://127.0.0.1:{port}/v1/ws", context) as ws:
        for text in TEXTS:
            hub.publish("sessions", "output", {"text": text})
            [event] = await read_events(ws, 1)
            assert event["data"] == {"text": text}


async def test_a_burst_to_a_client_that_is_not_reading_arrives_whole_and_in_order(
    nursery: trio.Nursery,
) -> None:
    hub, port = await serve(nursery)
    async with subscribed(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        for i in range(300):
            hub.publish("sessions", "output", {"text": f"{i} " + "z" * 20_000})
            if i % 30 == 0:
                await trio.testing.wait_all_tasks_blocked()  # the writer fills the socket
        events = await read_events(ws, 300)
        assert [e["seq"] for e in events] == list(range(1, 301))
        assert all(e["data"]["text"] == f"{i} " + "z" * 20_000 for i, e in enumerate(events))


class PingSeen(logging.Handler):
    """Sets ``seen`` when the ``websockets`` client logs a ping it received (it answers it)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "< PING" in record.getMessage():
            self.seen.set()


async def test_pings_and_pongs_never_interleave_with_data_frames(nursery: trio.Nursery) -> None:
    # The server pings every 10 ms and the client pings too (the library answers), while large
    # frames are written: any frame written into the middle of another breaks the stream.
    pings = PingSeen()
    client_log = logging.getLogger("websockets.client")
    client_log.addHandler(pings)
    client_log.setLevel(logging.DEBUG)
    try:
        hub, port = await serve(nursery, heartbeat_interval_s=0.01, heartbeat_timeout_s=10.0)
        async with subscribed(f"ws://127.0.0.1:{port}/v1/ws") as ws:
            pongs = []
            for i in range(200):
                hub.publish("sessions", "output", {"text": f"{i} " + "p" * 30_000})
                if i % 10 == 0:
                    pongs.append(await ws.ping())
                    await trio.testing.wait_all_tasks_blocked()
            events = await read_events(ws, 200)
            assert [e["seq"] for e in events] == list(range(1, 201))
            with trio.fail_after(10):
                for pong in pongs:
                    await pong.wait()
                await pings.seen.wait()
                hub.publish("sessions", "output", {"text": "after the pings"})
                [event] = await read_events(ws, 1)
            assert event["data"] == {"text": "after the pings"}
    finally:
        client_log.removeHandler(pings)
        client_log.setLevel(logging.NOTSET)


# -- send_nowait: a frame written from the publisher's task ------------------------------------

UPGRADE = (
    b"GET /v1/ws HTTP/1.1\r\nHost: hived.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


class Kept:
    """A WebSocket's handler that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []

    async def receive(self, message: str | bytes) -> None:
        self.messages.append(message)

    def received_all(self, closed: WebSocketClosed) -> None:
        pass


async def read_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    with trio.fail_after(10):
        while len(data) < size:
            data += await stream.receive_some()
    return data


async def test_the_rest_of_a_frame_begun_at_once_goes_out_before_any_other_frame(
    nursery: trio.Nursery,
) -> None:
    a, b = trio.socket.socketpair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client, server = trio.SocketStream(a), trio.SocketStream(b)
    ws = await accept(nursery, server, UPGRADE, max_message_size=1 << 20, timeout_s=10)
    ws.deliver(Kept())
    response = await read_exactly(client, 1)
    while b"\r\n\r\n" not in response:
        response += await client.receive_some()
    assert response.startswith(b"HTTP/1.1 101 ")
    assert response.endswith(b"\r\n\r\n")

    text = "t" * 300_000
    assert ws.send_nowait(text)
    assert ws.unflushed, "the socket took only part of the frame"
    assert not ws.send_nowait("not now"), "nothing may start before the rest is written"
    await client.send_all(Frame(Opcode.PING, b"hi").serialize(mask=True))  # answered with a pong
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(ws.send, "after")
    await trio.testing.wait_all_tasks_blocked()
    frames = parse(await read_exactly(client, len(text_frame(text)) + 4 + 7))
    assert (frames[0].opcode, frames[0].data) == (Opcode.TEXT, text.encode())
    assert sorted((f.opcode.name, f.data) for f in frames[1:]) == [
        ("PONG", b"hi"),
        ("TEXT", b"after"),
    ]
    assert not ws.unflushed
    await ws.abort()
    await client.aclose()


async def test_an_idle_websocket_keeps_neither_its_last_message_nor_a_socket_error(
    nursery: trio.Nursery,
) -> None:
    """What an idle connection keeps while the library's reader waits: not the last message's
    event, not the BlockingIOError of the read that found nothing (nor the frame object it
    would give the read's coroutine), not a table of the connection's bound methods, and no
    ``trio.Event`` nobody waits for yet (each would be memory on every idle connection)."""
    a, b = trio.socket.socketpair()
    client, server = trio.SocketStream(a), trio.SocketStream(b)
    ws = await accept(nursery, server, UPGRADE, max_message_size=1 << 20, timeout_s=10)
    kept = Kept()
    received = kept.messages
    ws.deliver(kept)
    response = await read_exactly(client, 1)
    while b"\r\n\r\n" not in response:
        response += await client.receive_some()
    await client.send_all(Frame(Opcode.TEXT, b"one message").serialize(mask=True))
    with trio.fail_after(10):
        while not received:
            await trio.testing.wait_all_tasks_blocked()
    await trio.testing.wait_all_tasks_blocked()
    assert received == ["one message"]

    gc.collect()
    alive = gc.get_objects()
    assert not [o for o in alive if isinstance(o, wsproto.events.Event)]
    assert not [o for o in alive if isinstance(o, BlockingIOError)]
    connection = ws._connection
    assert not [o for o in alive if isinstance(o, MethodType) and o.__self__ is connection]
    held = gc.get_referents(vars(connection))
    assert not [o for o in held if isinstance(o, trio.Event)], "events made before they are awaited"
    reads = [o for o in alive if isinstance(o, CoroutineType) and o.__name__ == "receive_some"]
    assert reads, "the reader waits in the stream's receive_some"
    # An exception through a coroutine's frame gives it a frame object for good.
    assert not [r for o in reads for r in gc.get_referents(o) if isinstance(r, FrameType)]
    await ws.abort()
    await client.aclose()


def test_the_pings_in_flight_pop_in_the_order_they_were_sent_as_the_library_asks() -> None:
    """The dict that stands in for the library's ``OrderedDict`` of pings: its pong handler
    pops the oldest first (``popitem(False)``) until the pong's own ping."""
    pings = _Pings()
    for payload in (b"1", b"2", b"3"):
        pings[payload] = Pong()
    assert pings.popitem(False)[0] == b"1"
    assert pings.popitem()[0] == b"3"
    assert list(pings) == [b"2"]
