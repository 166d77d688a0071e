"""MessagePack by subprotocol and permessage-deflate, against the real daemon.

The independent client is the ``websockets`` library (its Trio client) with its default limits
(a 1 MiB message), offering ``compression="deflate"`` and ``subprotocols=[...]`` as any client
would; docs/protocol.md, "Encodings and compression", is the contract checked here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import orjson
import ormsgpack
import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as ws_connect
from websockets.trio.server import ServerConnection
from websockets.trio.server import serve as ws_serve
from websockets.typing import Subprotocol

from hived.client import RemoteError, connect
from tests.e2e.harness import DEADLINE_S, SECRETS, Launcher

pytestmark = pytest.mark.e2e

LONG_LINE = " ".join(["the agent reads src/hived/server/ws.py and writes a long line"] * 8)
"""Output long enough to be compressed (``server.compression_min_bytes`` is 256)."""


@attrs.define
class WirePeer:
    """A ``websockets`` connection that reads JSON text or MessagePack binary frames."""

    ws: ClientConnection
    inbox: deque[dict[str, Any]] = attrs.field(factory=deque)
    kinds: list[str] = attrs.field(factory=list)
    """Each frame's kind as received: ``text`` or ``binary``."""
    events: list[dict[str, Any]] = attrs.field(factory=list)
    """Every ``event`` message read so far, in arrival order."""

    @property
    def deflate(self) -> bool:
        return any(isinstance(e, PerMessageDeflate) for e in self.ws.protocol.extensions)

    async def next(self) -> dict[str, Any]:
        while not self.inbox:
            with trio.fail_after(DEADLINE_S):
                frame = await self.ws.recv()
            self.kinds.append("text" if isinstance(frame, str) else "binary")
            parsed = orjson.loads(frame) if isinstance(frame, str) else ormsgpack.unpackb(frame)
            self.inbox.extend(parsed if isinstance(parsed, list) else [parsed])
        message = dict(self.inbox.popleft())
        if message["type"] == "event":
            self.events.append(message)
        return message

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            message = await self.next()
            if predicate(message):
                return message

    async def send(self, message: dict[str, Any]) -> None:
        if self.ws.subprotocol == "hived.v1.msgpack":
            await self.ws.send(ormsgpack.packb(message))
        else:
            await self.ws.send(orjson.dumps(message).decode())

    async def request(self, type_: str, id_: int, **fields: Any) -> dict[str, Any]:
        await self.send({"type": type_, "id": id_, **fields})
        return await self.until(lambda m: m["type"] in ("result", "error") and m.get("id") == id_)


@asynccontextmanager
async def wire_peer(
    url: str, token: str, *, subprotocols: list[str] | None, deflate: bool
) -> AsyncIterator[WirePeer]:
    async with ws_connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        subprotocols=None if subprotocols is None else [Subprotocol(s) for s in subprotocols],
        compression="deflate" if deflate else None,
        proxy=None,
        open_timeout=DEADLINE_S,
        ping_interval=None,
        close_timeout=2,
    ) as ws:
        peer = WirePeer(ws)
        welcome = await peer.next()
        assert welcome["type"] == "welcome", welcome
        yield peer


VARIANTS = [
    (None, False),
    (None, True),
    (["hived.v1.json"], False),
    (["hived.v1.msgpack", "hived.v1.json"], False),
    (["hived.v1.msgpack"], True),
]


async def test_every_encoding_and_compression_carries_the_same_messages(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    async with wire_peer(
        daemon.ws_url, SECRETS["operator"], subprotocols=None, deflate=False
    ) as operator:
        started = await operator.request("session.start", 1, agent="text", name="wire")
        session = started["result"]["session"]
        await operator.request("subscribe", 2, topic=f"session/{session}", since=0)
        for n in range(20):
            await operator.request(
                "session.input", 10 + n, session=session, text=f"{n} {LONG_LINE}"
            )
        await operator.until(
            lambda m: m["type"] == "event" and m["data"].get("line", "").startswith("you said: 19 ")
        )
        await operator.request("session.stop", 99, session=session)

    seen: dict[tuple[str | None, bool], list[dict[str, Any]]] = {}
    for subprotocols, deflate in VARIANTS:
        async with wire_peer(
            daemon.ws_url, SECRETS["viewer"], subprotocols=subprotocols, deflate=deflate
        ) as peer:
            expected = None if subprotocols is None else subprotocols[0]
            assert peer.ws.subprotocol == expected
            assert peer.deflate == deflate
            subscribed = await peer.request("subscribe", 1, topic=f"session/{session}", since=0)
            assert subscribed["type"] == "result", subscribed
            events = peer.events
            while not any(e["data"].get("state") in ("EXITED", "FAILED") for e in events):
                await peer.next()
            kinds = set(peer.kinds)
            assert kinds == ({"binary"} if expected == "hived.v1.msgpack" else {"text"})
            seen[(expected, deflate)] = events
    first, *others = seen.values()
    assert sum(1 for e in first if e["kind"] == "text" and LONG_LINE in e["data"]["line"]) == 20
    for events in others:
        assert events == first


async def test_msgpack_requests_errors_and_the_admin_channel(hived: Launcher) -> None:
    daemon = await hived.start()
    async with wire_peer(
        daemon.admin_url, SECRETS["admin"], subprotocols=["hived.v1.msgpack"], deflate=True
    ) as admin:
        status = await admin.request("status", 1)
        assert status["type"] == "result"
        assert status["result"]["pid"] > 0
        await admin.ws.send(b"\xc1 not msgpack")
        error = await admin.until(lambda m: m["type"] == "error")
        assert error["code"] == "bad_json"
        assert "MessagePack" in error["message"]
        await admin.ws.send(ormsgpack.packb({"type": "ping", "id": b"bytes"}))
        error = await admin.until(lambda m: m["type"] == "error")
        assert error["code"] == "bad_json"
        assert "bin" in error["message"]
        await admin.ws.send(ormsgpack.packb({"type": "sesions", "id": 2}))
        error = await admin.until(lambda m: m["type"] == "error")
        assert (error["id"], error["code"]) == (2, "unknown_type")
        pong = await admin.request("ping", 3)
        assert pong["type"] == "result"
    async with wire_peer(daemon.ws_url, SECRETS["viewer"], subprotocols=None, deflate=True) as peer:
        await peer.ws.send(ormsgpack.packb({"type": "ping", "id": 1}))
        error = await peer.until(lambda m: m["type"] == "error")
        assert error["code"] == "bad_request"
        assert "hived.v1.msgpack" in error["message"]


async def test_a_msgpack_client_may_say_hello_in_msgpack(hived: Launcher) -> None:
    daemon = await hived.start()
    async with ws_connect(
        daemon.ws_url,
        subprotocols=[Subprotocol("hived.v1.msgpack")],
        proxy=None,
        open_timeout=DEADLINE_S,
    ) as ws:
        await ws.send(ormsgpack.packb({"type": "hello", "token": SECRETS["viewer"]}))
        with trio.fail_after(DEADLINE_S):
            welcome = ormsgpack.unpackb(await ws.recv())
        assert welcome["type"] == "welcome"
    async with ws_connect(
        daemon.ws_url,
        subprotocols=[Subprotocol("hived.v1.msgpack")],
        proxy=None,
        open_timeout=DEADLINE_S,
    ) as ws:
        await ws.send(ormsgpack.packb({"type": "hello", "token": "x" * 10_000}))
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(DEADLINE_S):
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4001


async def test_compression_off_declines_deflate(hived: Launcher) -> None:
    port, config = hived.config(server='compression = "off"\n')
    daemon = await hived.start(config, port=port)
    async with wire_peer(
        daemon.ws_url, SECRETS["viewer"], subprotocols=["hived.v1.msgpack"], deflate=True
    ) as peer:
        assert not peer.deflate
        assert peer.ws.subprotocol == "hived.v1.msgpack"
        assert (await peer.request("ping", 1))["type"] == "result"


async def test_hived_client_uses_msgpack_and_deflate_when_the_server_agrees(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as client:
        ws = client._ws
        assert ws is not None
        assert ws.subprotocol == "hived.v1.msgpack"
        assert ws._wsproto.connection is not None
        assert [type(e).__name__ for e in ws._wsproto.connection._proto.extensions] == [
            "PerMessageDeflate"
        ]
        status = await client.request("status")
        assert status["pid"] == daemon.proc.pid
        with pytest.raises(RemoteError) as unknown:
            await client.request("sesions")
        assert unknown.value.code == "unknown_type"


async def test_hived_client_falls_back_to_json_when_the_server_declines_both() -> None:
    """A server (the ``websockets`` library's, standing in for an older hived or a proxy) that
    agrees to no subprotocol and no compression gets JSON text from the client."""
    received: list[str | bytes] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send(orjson.dumps({"type": "welcome", "role": "viewer"}).decode())
        async for frame in ws:
            received.append(frame)
            request = orjson.loads(frame)
            await ws.send(
                orjson.dumps({"type": "result", "id": request["id"], "result": {}}).decode()
            )

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(ws_serve, handler, 0, host="127.0.0.1", compression=None)
            )
            port = server.listeners[0].socket.getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}/v1/ws", "t", reconnect=False) as client:
                assert client._ws is not None
                assert client._ws.subprotocol is None
                assert await client.request("ping") == {}
            nursery.cancel_scope.cancel()
    assert len(received) == 1
    assert isinstance(received[0], str)
    assert orjson.loads(received[0])["type"] == "ping"


async def test_the_sessions_list_comes_in_pages_with_a_next_cursor(hived: Launcher) -> None:
    daemon = await hived.start()
    async with wire_peer(
        daemon.ws_url, SECRETS["operator"], subprotocols=None, deflate=False
    ) as client:
        started = []
        for n in range(5):
            reply = await client.request("session.start", 1 + n, agent="text", name=f"s{n}")
            started.append(reply["result"]["session"])
        whole = await client.request("sessions", 10, all=True)
        assert whole["result"]["next"] is None
        assert [s["id"] for s in whole["result"]["sessions"]] == sorted(started, reverse=True)
        paged: list[str] = []
        before = None
        for n in range(10):
            fields = {"all": True, "limit": 2} | ({} if before is None else {"before": before})
            page = (await client.request("sessions", 20 + n, **fields))["result"]
            paged += [s["id"] for s in page["sessions"]]
            before = page["next"]
            if before is None:
                break
        assert paged == sorted(started, reverse=True)
