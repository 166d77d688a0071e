"""The wire protocol against the real daemon, with our client and with the ``websockets`` library.

Each test starts ``hived`` as a subprocess (tests/e2e/harness.py) and talks to it the way a
client in another language would: the ``websockets`` library (its Trio implementation) is the
independent client, ``hived.client`` ours, and a hand-rolled WebSocket over a raw TCP stream
plays a client that stops answering. Close codes and HTTP statuses are those of
docs/protocol.md. Every wait polls under a deadline.
"""

from __future__ import annotations

import base64
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import orjson
import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.trio.client import ClientConnection

from hived.client import (
    AuthError,
    Client,
    Closed,
    ConnectionLost,
    RemoteError,
    Subscription,
    connect,
)
from tests.e2e.harness import (
    DEADLINE_S,
    SECRETS,
    Launcher,
    RunningDaemon,
    http_get,
    http_request,
    websockets_client,
)

pytestmark = pytest.mark.e2e

AUTH_TIMEOUT_S: Final = 1.0
ALLOWED_ORIGIN: Final = "http://dash.example:5173"
MAX_MESSAGE_BYTES: Final = 1024


# -- the websockets library as an independent client ----------------------------------------


@attrs.define
class Peer:
    """A ``websockets`` connection, read message by message (a frame may hold an array)."""

    ws: ClientConnection
    inbox: deque[dict[str, Any]] = attrs.field(factory=deque)
    events: list[dict[str, Any]] = attrs.field(factory=list)
    """Every ``event`` message read so far, in arrival order."""

    async def next(self) -> dict[str, Any]:
        """The next server message (raises ``ConnectionClosed`` once the server closed)."""
        while not self.inbox:
            with trio.fail_after(DEADLINE_S):
                frame = await self.ws.recv()
            assert isinstance(frame, str), f"the server sent a binary frame: {frame!r}"
            parsed = orjson.loads(frame)
            self.inbox.extend(parsed if isinstance(parsed, list) else [parsed])
        message = self.inbox.popleft()
        if message["type"] == "event":
            self.events.append(message)
        return dict(message)

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Read messages until one matches ``predicate``; that one."""
        while True:
            message = await self.next()
            if predicate(message):
                return message

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(
            message if isinstance(message, str | bytes) else orjson.dumps(message).decode()
        )

    async def request(self, type_: str, id_: int | str, **fields: Any) -> dict[str, Any]:
        """Send a request; its ``result`` or ``error`` (events read meanwhile go to ``events``)."""
        await self.send({"type": type_, "id": id_, **fields})
        return await self.until(lambda m: m["type"] in ("result", "error") and m.get("id") == id_)

    async def close_code(self) -> int | None:
        """Read until the server closes; the code of its close frame (None: no close frame)."""
        try:
            with trio.fail_after(DEADLINE_S):
                while True:
                    await self.ws.recv()
        except ConnectionClosed as exc:
            return None if exc.rcvd is None else exc.rcvd.code


@asynccontextmanager
async def open_peer(
    url: str, token: str | None = None, *, origin: str | None = None
) -> AsyncIterator[Peer]:
    """Open a WebSocket with the ``websockets`` library; a header token when ``token`` is set."""
    async with websockets_client(url, token, origin=origin) as ws:
        yield Peer(ws)


async def refused_status(url: str, token: str | None = None, *, origin: str | None = None) -> int:
    """The HTTP status of an upgrade the server refuses."""
    with pytest.raises(InvalidStatus) as refused:
        async with open_peer(url, token, origin=origin):
            pass
    return refused.value.response.status_code


def is_welcome(message: dict[str, Any]) -> bool:
    return bool(message["type"] == "welcome")


def is_result(message: dict[str, Any]) -> bool:
    return bool(message["type"] == "result")


# -- a hand-rolled WebSocket over raw TCP -----------------------------------------------------


@attrs.define
class RawWebSocket:
    """The client side of a WebSocket done by hand, so that a test can stop answering pings."""

    stream: trio.SocketStream
    buffer: bytes = b""

    @classmethod
    async def open(cls, port: int, path: str, token: str) -> RawWebSocket:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        raw = cls(stream)
        head = await raw._take_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return raw

    async def _fill(self, size: int) -> None:
        with trio.fail_after(DEADLINE_S):
            while len(self.buffer) < size:
                data = await self.stream.receive_some(65536)
                assert data, "the server closed the connection"
                self.buffer += data

    async def _take_until(self, marker: bytes) -> bytes:
        with trio.fail_after(DEADLINE_S):
            while marker not in self.buffer:
                data = await self.stream.receive_some(65536)
                assert data, "the server closed the connection"
                self.buffer += data
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    async def read_frame(self) -> tuple[int, bytes]:
        """The next frame's opcode and payload (server frames are not masked)."""
        await self._fill(2)
        opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
        start = 2
        if length == 126:
            await self._fill(4)
            length, start = int.from_bytes(self.buffer[2:4], "big"), 4
        elif length == 127:
            await self._fill(10)
            length, start = int.from_bytes(self.buffer[2:10], "big"), 10
        await self._fill(start + length)
        payload = self.buffer[start : start + length]
        self.buffer = self.buffer[start + length :]
        return opcode, payload


# -- our client -------------------------------------------------------------------------------


async def next_event(sub: Subscription) -> dict[str, Any]:
    with trio.fail_after(DEADLINE_S):
        return await sub.receive()


async def list_connections(admin: Client) -> list[dict[str, Any]]:
    """The admin ``connections`` list (the documented ``{"connections": [...]}``, or a bare list:
    test_connections_lists_every_connection_as_documented checks the shape)."""
    result = await admin.request("connections")
    return list(result["connections"] if isinstance(result, dict) else result)


async def connection_ids(admin: Client) -> set[int]:
    """The ids of the open connections."""
    return {int(c["id"]) for c in await list_connections(admin)}


async def start_text_session(daemon: RunningDaemon) -> str:
    """Start a session of the plain-text echo agent; its id."""
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator:
        started = await operator.request("session.start", agent="text", name="echo")
    return str(started["session"])


def said(text: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the text agent's echo of ``text``."""
    return lambda e: e.get("kind") == "text" and e["data"].get("line") == f"you said: {text}"


def summary(event: dict[str, Any]) -> tuple[int, str, Any]:
    return event["seq"], event["kind"], event["data"]


# -- plain HTTP -------------------------------------------------------------------------------


async def test_plain_http_answers_healthz_404_405_431_and_400_with_connection_close(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    port = daemon.port

    status, headers, body = await http_get(port, "/healthz")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert orjson.loads(body)["status"] == "serving"

    answers = {
        "404 unknown path": (404, await http_get(port, "/no/such/path")),
        "405 wrong method": (
            405,
            await http_request(
                port,
                f"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n".encode(),
            ),
        ),
        "405 wrong method on a channel": (
            405,
            await http_request(
                port,
                f"DELETE /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode(),
            ),
        ),
        "431 huge head": (
            431,
            await http_get(port, "/healthz", headers=f"X-Padding: {'a' * 20_000}\r\n"),
        ),
        "400 garbage": (400, await http_request(port, b"\x16\x03\x01 hello there\r\n\r\n")),
        "400 no request line": (400, await http_request(port, b"GARBAGE\r\n\r\n")),
    }
    for what, (expected, (status, headers, body)) in answers.items():
        assert status == expected, f"{what}: got {status} {body!r}"
        assert headers.get("connection") == "close", what
        assert body, f"{what}: an error answer has a body saying what was wrong"
    assert "GET" in answers["405 wrong method"][1][1].get("allow", "")


# -- authentication -------------------------------------------------------------------------


def auth_config(hived: Launcher) -> tuple[int, str]:
    return hived.config(
        server=f'auth_timeout_s = {AUTH_TIMEOUT_S}\nallowed_origins = ["{ALLOWED_ORIGIN}"]\n'
    )


async def test_every_auth_path_with_the_websockets_library(hived: Launcher) -> None:
    port, config = auth_config(hived)
    daemon = await hived.start(config, port=port)
    ws_url, admin_url = daemon.ws_url, daemon.admin_url

    # A header token: welcome at once, with the token's role.
    async with open_peer(ws_url, SECRETS["operator"]) as peer:
        welcome = await peer.next()
        assert welcome["type"] == "welcome"
        assert (welcome["server"], welcome["role"]) == ("hived", "operator")
        assert isinstance(welcome["connection"], int)
        assert welcome["heartbeat_interval_s"] == 2.0
    async with open_peer(admin_url, SECRETS["admin"]) as peer:
        assert (await peer.next())["role"] == "admin"

    # Refused before the upgrade.
    assert await refused_status(ws_url, "not-a-configured-token") == 401
    assert await refused_status(admin_url, "not-a-configured-token") == 401
    assert await refused_status(admin_url, SECRETS["viewer"]) == 403
    assert await refused_status(admin_url, SECRETS["operator"]) == 403
    assert await refused_status(ws_url, SECRETS["agent"]) == 403

    # No token and no hello: closed with 4001 once auth_timeout_s has passed.
    async with open_peer(ws_url) as peer:
        opened = trio.current_time()
        assert await peer.close_code() == 4001
        waited = trio.current_time() - opened
    assert AUTH_TIMEOUT_S * 0.8 <= waited <= AUTH_TIMEOUT_S + 3.0

    # hello with a good token: welcome; a second hello: conflict, and the connection lives on.
    async with open_peer(ws_url) as peer:
        await peer.send({"type": "hello", "token": SECRETS["viewer"]})
        welcome = await peer.next()
        assert (welcome["type"], welcome["role"]) == ("welcome", "viewer")
        again = await peer.request("hello", 1, token=SECRETS["viewer"])
        assert (again["type"], again["code"]) == ("error", "conflict")
        assert (await peer.request("ping", 2))["type"] == "result"
    async with open_peer(admin_url) as peer:
        await peer.send({"type": "hello", "token": SECRETS["admin"]})
        assert (await peer.next())["role"] == "admin"

    # hello with a wrong token: 4001; a role too low for the channel: 4003.
    async with open_peer(ws_url) as peer:
        await peer.send({"type": "hello", "token": "not-a-configured-token"})
        assert await peer.close_code() == 4001
    async with open_peer(admin_url) as peer:
        await peer.send({"type": "hello", "token": SECRETS["viewer"]})
        assert await peer.close_code() == 4003
    async with open_peer(ws_url) as peer:
        await peer.send({"type": "hello", "token": SECRETS["agent"]})
        assert await peer.close_code() == 4003

    # Any other frame before hello: 4001.
    async with open_peer(ws_url) as peer:
        await peer.send({"type": "ping", "id": 1})
        assert await peer.close_code() == 4001

    assert "not-a-configured-token" not in daemon.log()
    for secret in SECRETS.values():
        assert secret not in daemon.log()


async def test_origin_is_checked_before_the_upgrade(hived: Launcher) -> None:
    port, config = auth_config(hived)
    daemon = await hived.start(config, port=port)
    token = SECRETS["operator"]

    assert await refused_status(daemon.ws_url, token, origin="http://evil.example") == 403
    assert await refused_status(daemon.ws_url, token, origin=f"http://127.0.0.1:{port + 1}") == 403
    # Refused whatever the token, and before a hello could be tried.
    assert await refused_status(daemon.ws_url, origin="http://evil.example") == 403

    for origin in (ALLOWED_ORIGIN, f"http://127.0.0.1:{port}"):
        async with open_peer(daemon.ws_url, token, origin=origin) as peer:
            assert is_welcome(await peer.next()), origin
    # Same origin with hello (a dashboard served by hived itself).
    async with open_peer(daemon.ws_url, origin=f"http://127.0.0.1:{port}") as peer:
        await peer.send({"type": "hello", "token": SECRETS["viewer"]})
        assert is_welcome(await peer.next())


async def test_every_auth_path_with_our_client(hived: Launcher) -> None:
    port, config = auth_config(hived)
    daemon = await hived.start(config, port=port)

    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        assert client.welcome["role"] == "operator"
        assert await client.request("ping") is not None
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as client:
        assert client.welcome["role"] == "admin"

    with pytest.raises(AuthError, match="401"):
        async with connect(daemon.ws_url, "not-a-configured-token", reconnect=False):
            pass
    with pytest.raises(AuthError, match="403"):
        async with connect(daemon.admin_url, SECRETS["viewer"], reconnect=False):
            pass
    with pytest.raises(AuthError, match="4001"):
        async with connect(daemon.ws_url, None, reconnect=False):
            pass


# -- frames ---------------------------------------------------------------------------------


async def test_bad_frames_get_error_frames_and_the_connection_lives_on(hived: Launcher) -> None:
    daemon = await hived.start()
    async with open_peer(daemon.ws_url, SECRETS["operator"]) as peer:
        assert is_welcome(await peer.next())
        cases: list[tuple[str | bytes, object, str, str]] = [
            ("this is not json", None, "bad_json", "not valid JSON"),
            ('{"type": "sesions", "id": 1}', 1, "unknown_type", "sesions"),
            (
                '{"type": "subscribe", "id": 2, "topic": "sessions", "since": "five"}',
                2,
                "bad_request",
                "subscribe.since",
            ),
            (
                '{"type": "subscribe", "id": "s3", "topic": "sessions", "sinse": 1}',
                "s3",
                "bad_request",
                "subscribe.sinse",
            ),
            ('{"type": "session.start", "id": 4}', 4, "bad_request", "session.start.agent"),
            (
                '{"type": "subscribe", "id": 5, "topic": "no such topic"}',
                5,
                "bad_request",
                "subscribe.topic",
            ),
            ('[{"type": "ping", "id": 6}]', None, "bad_request", ""),
            ('{"id": 7}', 7, "bad_request", ""),
            ('{"type": "ping", "id": true}', None, "bad_request", "ping.id"),
            (b"\x00\x01binary", None, "bad_request", "binary"),
            ('{"type": "status", "id": 8}', 8, "forbidden", "/v1/admin"),
        ]
        for frame, request_id, code, where in cases:
            await peer.send(frame)
            error = await peer.until(lambda m: m["type"] in ("error", "result"))
            assert error["type"] == "error", (frame, error)
            assert (error["id"], error["code"]) == (request_id, code), (frame, error)
            assert where in error["message"], (frame, error)
        pong = await peer.request("ping", 9)
        assert pong["type"] == "result"

    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        with pytest.raises(RemoteError) as unknown:
            await client.request("sesions")
        assert unknown.value.code == "unknown_type"
        with pytest.raises(RemoteError) as bad:
            await client.request("subscribe", topic="sessions", since="five")
        assert bad.value.code == "bad_request"
        assert "subscribe.since" in bad.value.message
        assert await client.request("ping") is not None


async def test_a_frame_over_max_message_bytes_closes_with_1009(hived: Launcher) -> None:
    port, config = hived.config(server=f"max_message_bytes = {MAX_MESSAGE_BYTES}\n")
    daemon = await hived.start(config, port=port)
    under = orjson.dumps({"type": "ping", "id": 1, "pad": "x" * (MAX_MESSAGE_BYTES - 100)})
    over = orjson.dumps({"type": "ping", "id": 2, "pad": "x" * (MAX_MESSAGE_BYTES + 1)})

    async with open_peer(daemon.ws_url, SECRETS["operator"]) as peer:
        assert is_welcome(await peer.next())
        await peer.send(under.decode())
        answer = await peer.until(lambda m: m.get("id") == 1)
        assert (answer["type"], answer["code"]) == ("error", "bad_request")  # unknown field pad
        await peer.send(over.decode())
        assert await peer.close_code() == 1009


async def test_our_client_reports_1009_after_a_frame_over_max_message_bytes(
    hived: Launcher,
) -> None:
    port, config = hived.config(server=f"max_message_bytes = {MAX_MESSAGE_BYTES}\n")
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        with pytest.raises(ConnectionLost):
            await client.request("ping", pad="x" * (MAX_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionLost, match="1009"):
            await client.request("ping")


async def test_pings_past_the_rate_limit_burst_close_with_4029(hived: Launcher) -> None:
    # A refill of one message per 10 s: the 21 pings count as sent at once, however slowly a
    # busy machine lets the daemon read them.
    port, config = hived.config(server="rate_limit_burst = 20\nrate_limit_per_s = 0.1\n")
    daemon = await hived.start(config, port=port)
    async with open_peer(daemon.ws_url, SECRETS["viewer"]) as peer:
        assert is_welcome(await peer.next())
        for i in range(21):
            await peer.send({"type": "ping", "id": i})
        answered = [(await peer.until(is_result))["id"] for _ in range(20)]
        with pytest.raises(ConnectionClosed) as closed:
            await peer.next()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4029
    assert closed.value.rcvd.reason == (
        "rate limited: more than 20 messages at once or 0.1/s; wait, then reconnect"
    )
    assert sorted(answered) == list(range(20))


# -- subscribe and resume -------------------------------------------------------------------


async def test_subscribe_resumes_after_a_dropped_connection_with_every_event_once(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    session = await start_text_session(daemon)
    topic = f"session/{session}"

    async with open_peer(daemon.ws_url, SECRETS["viewer"]) as first:
        assert is_welcome(await first.next())
        subscribed = await first.request("subscribe", 1, topic=topic, since=0)
        assert subscribed["result"]["topic"] == topic
        assert subscribed["result"]["recovered"] is True
        await first.until(lambda m: m.get("kind") == "text")  # the agent's greeting
        seen = first.events[:]
        await first.ws.close_stream()  # drop the TCP connection: no close frame

    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as operator:
        watch = await operator.subscribe(topic, since=seen[-1]["seq"])
        for text in ("one", "two", "three"):
            await operator.request("session.input", session=session, text=text)
        published: list[dict[str, Any]] = []
        while not published or not said("three")(published[-1]):
            published.append(await next_event(watch))

    last = published[-1]["seq"]
    async with open_peer(daemon.ws_url, SECRETS["viewer"]) as second:
        assert is_welcome(await second.next())
        resumed = await second.request("subscribe", 2, topic=topic, since=seen[-1]["seq"])
        assert resumed["result"]["recovered"] is True
        assert resumed["result"]["last_seq"] >= last
        while not second.events or second.events[-1]["seq"] < last:
            await second.next()
        await second.request("ping", 3)  # anything doubled would have arrived by now
        replayed = second.events

    assert [summary(e) for e in replayed] == [summary(e) for e in published]
    assert [e["seq"] for e in seen + replayed] == list(range(1, last + 1))
    texts = [e["data"].get("text") for e in replayed if e["kind"] == "input"]
    assert texts == ["one", "two", "three"]


async def test_our_client_does_not_reconnect_after_a_kick(hived: Launcher) -> None:
    daemon = await hived.start()
    async with (
        connect(daemon.ws_url, SECRETS["viewer"]) as client,
        connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin,
    ):
        sub = await client.subscribe("sessions")
        kicked_id = client.welcome["connection"]
        await admin.request("connection.kick", connection=kicked_id, reason="rotating tokens")
        with trio.fail_after(DEADLINE_S), pytest.raises(Closed, match="rotating tokens"):
            await sub.receive()
        with pytest.raises(Closed):
            await client.request("ping")
        assert client.welcome["connection"] == kicked_id  # no second connection
        assert kicked_id not in await connection_ids(admin)
    # The connection's task logs its end last, after the close frame and the table (CI read the
    # log a moment too soon).
    closed = f"connection {kicked_id}: closed (1000"
    await daemon.wait_for(lambda: closed in daemon.log(), "the kick in the log")


async def test_our_client_reconnects_and_resumes_across_a_daemon_restart(
    hived: Launcher,
) -> None:
    port, config = hived.config()
    daemon = await hived.start(config, port=port)
    received: list[dict[str, Any]] = []

    async def until_running(sub: Subscription, session: str) -> None:
        while not (
            received and received[-1]["session"] == session and state(received[-1]) == "RUNNING"
        ):
            received.append(await next_event(sub))

    def state(event: dict[str, Any]) -> str | None:
        return event["data"].get("state") if event["kind"] == "state" else None

    async with connect(daemon.ws_url, SECRETS["viewer"]) as client:
        sub = await client.subscribe("sessions", since=0)
        await until_running(sub, await start_text_session(daemon))
        daemon.send_signal(signal.SIGTERM)  # every client gets 1001: reconnect later
        assert await daemon.wait_exit() == 0
        daemon = await hived.start(config, port=port)
        await until_running(sub, await start_text_session(daemon))
        assert sub.recovered is True

    async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as fresh:
        everything = await fresh.subscribe("sessions", since=0)
        expected = [await next_event(everything) for _ in received]
    assert [e["seq"] for e in received] == list(range(1, len(received) + 1))
    assert [summary(e) for e in received] == [summary(e) for e in expected]


async def test_connections_lists_every_connection_as_documented(hived: Launcher) -> None:
    daemon = await hived.start()
    async with (
        connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin,
        connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as viewer,
    ):
        await viewer.subscribe("sessions")
        result = await admin.request("connections")
        assert isinstance(result, dict), f"expected {{'connections': [...]}}, got {result!r}"
        listed = {c["id"]: c for c in result["connections"]}
        mine = listed[viewer.welcome["connection"]]
        documented = {
            "id", "peer", "token_name", "role", "channel", "since", "subscriptions",
            "queue_depth", "frames_in", "frames_out", "bytes_in", "bytes_out",
        }  # fmt: skip
        assert documented <= set(mine), sorted(documented - set(mine))
        assert (mine["token_name"], mine["role"], mine["channel"]) == (
            "viewer-token",
            "viewer",
            "/v1/ws",
        )
        assert mine["subscriptions"] == ["sessions"]
        assert mine["peer"].startswith("127.0.0.1:")
        assert listed[admin.welcome["connection"]]["channel"] == "/v1/admin"
        for secret in SECRETS.values():
            assert secret not in repr(result)


# -- stopping and vanishing -----------------------------------------------------------------


async def test_sigterm_closes_every_client_with_1001_and_exits_0(hived: Launcher) -> None:
    daemon = await hived.start()
    async with (
        open_peer(daemon.ws_url, SECRETS["operator"]) as header_client,
        open_peer(daemon.ws_url) as hello_client,
        open_peer(daemon.admin_url, SECRETS["admin"]) as admin_client,
    ):
        assert is_welcome(await header_client.next())
        await hello_client.send({"type": "hello", "token": SECRETS["viewer"]})
        assert is_welcome(await hello_client.next())
        assert is_welcome(await admin_client.next())
        await header_client.request("subscribe", 1, topic="sessions", since=0)

        daemon.send_signal(signal.SIGTERM)
        codes = [await peer.close_code() for peer in (header_client, hello_client, admin_client)]
        assert codes == [1001, 1001, 1001]
    assert await daemon.wait_exit() == 0


async def test_sigterm_ends_our_clients_connection_with_1001(hived: Launcher) -> None:
    daemon = await hived.start()
    async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as ours:
        sub = await ours.subscribe("sessions")
        daemon.send_signal(signal.SIGTERM)
        with trio.fail_after(DEADLINE_S), pytest.raises(ConnectionLost, match="1001"):
            await sub.receive()  # the end of the connection, raised once it ends for good
        with pytest.raises(ConnectionLost, match="1001"):
            await ours.request("ping")
    assert await daemon.wait_exit() == 0


async def test_a_client_that_stops_answering_pings_is_dropped_by_the_heartbeat(
    hived: Launcher,
) -> None:
    daemon = await hived.start()  # heartbeat_interval_s = 2, heartbeat_timeout_s = 2
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
        raw = await RawWebSocket.open(daemon.port, "/v1/ws", SECRETS["viewer"])
        async with raw.stream:
            opcode, payload = await raw.read_frame()
            assert opcode == 0x1
            welcome = orjson.loads(payload)
            assert welcome["type"] == "welcome"
            silent_id = welcome["connection"]
            silent_since = trio.current_time()
            assert silent_id in await connection_ids(admin)
            # From here on the client reads nothing and answers no ping.
            with trio.fail_after(DEADLINE_S):
                while True:
                    if silent_id not in await connection_ids(admin):
                        break
                    await trio.sleep(0.1)
            gone_after = trio.current_time() - silent_since
            assert admin.welcome["connection"] in await connection_ids(admin)
            # What waited unread: the ping, then a close frame that says why.
            with trio.fail_after(DEADLINE_S):
                frames = [await raw.read_frame(), await raw.read_frame()]
            assert [opcode for opcode, _ in frames] == [0x9, 0x8]
            close = frames[1][1]
            assert int.from_bytes(close[:2], "big") == 1011
            assert close[2:] == b"no pong within 2 s of the ping"
    assert 2.0 <= gone_after <= 2.0 + 2.0 + 2.5, gone_after
    dropped = f"connection {silent_id}: dropped (1011): no pong within 2 s of the ping"
    await daemon.wait_for(lambda: dropped in daemon.log(), "the drop in the log")
    assert daemon.log().count("no pong") == 1
