"""WebSocket connections end to end over in-memory streams: auth, frames, roles, heartbeat,
fan-out, closing. The HTTP side of the listener, TLS and real sockets: tests/test_listener.py."""

from __future__ import annotations

import gc
import itertools
import logging
import random
import socket
from collections.abc import Callable
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, TextMessage
from wsproto.events import Request as Upgrade

from hived.core.auth import hash_secret
from hived.core.config import Config, ServerConfig, TokenConfig
from hived.core.errors import RequestError
from hived.core.messages import Connections
from hived.core.pages import LIST_REPLY_MAX_BYTES
from hived.core.protocol import Caller, Request
from hived.hub import Hub
from hived.server.connection import (
    CLOSE_TIMEOUT_S,
    SENDER_PARK_CHECK_S,
    SENDER_TASK_NAME,
    frame_batches,
)
from hived.server.listener import Server
from hived.server.own import OwnRequests
from hived.server.requests import MAX_CONCURRENT_REQUESTS
from hived.server.router import Router
from hived.server.stats import SUBSCRIPTIONS_SHOWN, ConnectionStats

SECRETS = {
    "admin": "admin-secret",
    "operator": "op-secret",
    "viewer": "viewer-secret",
    "agent": "agent-secret",
}
TOKENS = tuple(
    TokenConfig(name=f"{role}-token", role=role, sha256=hash_secret(secret))  # type: ignore[arg-type]
    for role, secret in SECRETS.items()
)
UPGRADE_HEAD = (
    "GET {path} HTTP/1.1\r\nHost: hived.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
)


def make_config(tokens: tuple[TokenConfig, ...] = TOKENS, **server: Any) -> Config:
    return Config(server=ServerConfig(**server), tokens=tokens)


@attrs.define
class Harness:
    """A server fed by in-memory streams, and clients for it."""

    nursery: trio.Nursery
    config: Config = attrs.Factory(make_config)
    hub: Hub = attrs.Factory(Hub)
    router: Router = attrs.Factory(Router)
    server: Server = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.server = Server(self.config, self.hub, self.router, version="9.9.9")
        self.nursery.start_soon(self.server.run_heartbeat)

    def stream(
        self,
        pair: Callable[
            [], tuple[trio.abc.Stream, trio.abc.Stream]
        ] = trio.testing.memory_stream_pair,
    ) -> trio.abc.Stream:
        client, server_side = pair()
        self.nursery.start_soon(self.server.serve_connection, server_side)
        return client

    async def connect(
        self,
        path: str = "/v1/ws",
        role: str | None = "admin",
        *,
        stream: trio.abc.Stream | None = None,
        queue: int = 32,
    ) -> trio_websocket.WebSocketConnection:
        headers = [] if role is None else [(b"authorization", f"Bearer {SECRETS[role]}".encode())]
        return await trio_websocket.wrap_client_stream(
            self.nursery,
            stream or self.stream(),  # type: ignore[arg-type]  # any stream works
            "hived.test",
            path,
            extra_headers=headers,
            message_queue_size=queue,
        )

    async def welcomed(
        self, path: str = "/v1/ws", role: str = "admin", **kw: Any
    ) -> trio_websocket.WebSocketConnection:
        ws = await self.connect(path, role, **kw)
        [welcome] = await receive(ws)
        assert welcome["type"] == "welcome"
        return ws


@pytest.fixture
def harness(nursery: trio.Nursery) -> Harness:
    return Harness(nursery)


async def receive(ws: trio_websocket.WebSocketConnection) -> list[dict[str, Any]]:
    """The messages of the next frame (a lone object, or an array)."""
    data = orjson.loads(await ws.get_message())
    return data if isinstance(data, list) else [data]


async def send(ws: trio_websocket.WebSocketConnection, **message: Any) -> None:
    await ws.send_message(orjson.dumps(message).decode())


async def ask(ws: trio_websocket.WebSocketConnection, **message: Any) -> dict[str, Any]:
    """Send a request and return its answer, skipping events."""
    await send(ws, **message)
    while True:
        for reply in await receive(ws):
            if reply["type"] in ("result", "error") and reply.get("id") == message.get("id"):
                return reply


async def read_until_closed(
    ws: trio_websocket.WebSocketConnection, seqs: list[int] | None = None
) -> None:
    """Read messages (noting the seq of events in ``seqs``) until the connection closes."""
    while True:
        for message in await receive(ws):
            if seqs is not None and message["type"] == "event":
                seqs.append(message["seq"])


async def close_code(ws: trio_websocket.WebSocketConnection) -> tuple[int, str | None]:
    """Read until the server closes; the close code and reason."""
    with pytest.raises(trio_websocket.ConnectionClosed) as excinfo:
        await read_until_closed(ws)
    reason = excinfo.value.reason
    assert reason is not None
    return reason.code, reason.reason


# -- authentication ---------------------------------------------------------------------------


async def test_a_header_token_is_welcomed_with_its_role(harness: Harness) -> None:
    ws = await harness.connect("/v1/ws", "operator")
    [welcome] = await receive(ws)
    assert welcome == {
        "type": "welcome",
        "server": "hived",
        "version": "9.9.9",
        "role": "operator",
        "token_name": "operator-token",
        "heartbeat_interval_s": 20.0,
        "connection": 1,
    }


async def test_hello_authenticates_a_connection_without_a_header(harness: Harness) -> None:
    ws = await harness.connect("/v1/ws", role=None)
    await send(ws, type="hello", token=SECRETS["viewer"])
    [welcome] = await receive(ws)
    assert welcome["type"] == "welcome"
    assert welcome["role"] == "viewer"
    assert (await ask(ws, type="ping", id=1))["type"] == "result"


async def test_hello_with_a_wrong_token_closes_4001(harness: Harness) -> None:
    ws = await harness.connect("/v1/ws", role=None)
    await send(ws, type="hello", token="not-a-token")
    code, reason = await close_code(ws)
    assert code == 4001
    assert reason == "not authenticated: unknown token"


async def test_a_binary_first_frame_closes_4001_without_an_error_frame(harness: Harness) -> None:
    ws = await harness.connect("/v1/ws", role=None)
    await ws.send_message(b'{"type": "hello"}')
    with pytest.raises(trio_websocket.ConnectionClosed) as excinfo:
        await ws.get_message()  # the close comes first: no error frame before it
    assert excinfo.value.reason is not None
    assert excinfo.value.reason.code == 4001


async def test_a_first_frame_that_is_not_hello_closes_4001(harness: Harness) -> None:
    ws = await harness.connect("/v1/ws", role=None)
    await send(ws, type="ping", id=1)
    code, reason = await close_code(ws)
    assert code == 4001
    assert reason is not None
    assert "hello" in reason


async def test_no_hello_within_auth_timeout_closes_4001(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(nursery, make_config(auth_timeout_s=3.0))
    ws = await harness.connect("/v1/ws", role=None)
    start = trio.current_time()
    code, reason = await close_code(ws)
    assert code == 4001
    assert reason == "not authenticated: no hello within 3 s"
    assert trio.current_time() - start == pytest.approx(3.0, abs=0.1)


async def test_hello_with_a_role_too_low_for_admin_closes_4003(harness: Harness) -> None:
    ws = await harness.connect("/v1/admin", role=None)
    await send(ws, type="hello", token=SECRETS["operator"])
    code, reason = await close_code(ws)
    assert code == 4003
    assert reason == "role operator may not open /v1/admin"


async def test_hello_with_an_agent_token_closes_4003_on_the_client_channel(
    harness: Harness,
) -> None:
    ws = await harness.connect("/v1/ws", role=None)
    await send(ws, type="hello", token=SECRETS["agent"])
    code, _ = await close_code(ws)
    assert code == 4003


HUGE_START = (
    '{"type": "session.start", "id": 1, "agent": "x", "args": [' + ",".join(["0"] * 500_000) + "]}"
)
"""About 1 MB, under max_message_bytes: issue #19's amplification frame."""


async def test_a_huge_first_frame_closes_4001_with_a_short_reason(harness: Harness) -> None:
    ws = await harness.connect("/v1/ws", role=None)
    await ws.send_message(HUGE_START)
    with trio.fail_after(3):  # the full validation took 14 s (issue #19)
        code, reason = await close_code(ws)
    assert code == 4001
    assert reason is not None
    assert "hello" in reason


async def test_a_huge_bad_request_gets_a_small_error_reply(harness: Harness) -> None:
    ws = await harness.welcomed(role="viewer")
    await ws.send_message(HUGE_START)
    with trio.fail_after(3):
        frame = await ws.get_message()
    assert len(frame) < 1000
    [reply] = orjson.loads(f"[{frame}]")
    assert (reply["code"], reply["id"]) == ("bad_request", 1)
    assert reply["message"].startswith(
        "session.start.args[0]: expected a string without NUL characters, got 0"
    )


async def test_hello_once_authenticated_is_a_conflict(harness: Harness) -> None:
    ws = await harness.welcomed()
    reply = await ask(ws, type="hello", id=3, token=SECRETS["admin"])
    assert reply["code"] == "conflict"


# -- frames -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code", "request_id"),
    [
        ("{not json", "bad_json", None),
        ("[1, 2]", "bad_request", None),
        ('{"id": 4}', "bad_request", 4),
        ('{"type": "sesions", "id": 5}', "unknown_type", 5),
        ('{"type": "subscribe", "id": 6, "topic": "sessions", "since": "five"}', "bad_request", 6),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_connection_lives(
    harness: Harness, frame: str, code: str, request_id: int | None
) -> None:
    ws = await harness.welcomed()
    await ws.send_message(frame)
    [error] = await receive(ws)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["id"] == request_id
    assert error["message"]
    assert (await ask(ws, type="ping", id=99))["type"] == "result"


async def test_a_binary_frame_gets_an_error_and_the_connection_lives(harness: Harness) -> None:
    ws = await harness.welcomed()
    await ws.send_message(b'{"type": "ping"}')
    [error] = await receive(ws)
    assert error["code"] == "bad_request"
    assert (await ask(ws, type="ping", id=1))["type"] == "result"


async def test_a_frame_over_max_message_bytes_closes_1009(nursery: trio.Nursery) -> None:
    harness = Harness(nursery, make_config(max_message_bytes=1024))
    ws = await harness.welcomed()
    await ws.send_message('{"type": "ping", "pad": "' + "x" * 2000 + '"}')
    code, _ = await close_code(ws)
    assert code == 1009


async def test_a_frame_over_the_limit_in_bytes_but_not_characters_closes_1009(
    nursery: trio.Nursery,
) -> None:
    harness = Harness(nursery, make_config(max_message_bytes=1024))
    ws = await harness.welcomed()
    await ws.send_message('{"type": "ping", "pad": "' + "€" * 400 + '"}')  # 400 chars, 1200 bytes
    code, _ = await close_code(ws)
    assert code == 1009


# -- roles and routing ------------------------------------------------------------------------


async def test_a_request_beyond_the_role_is_forbidden(harness: Harness) -> None:
    ws = await harness.welcomed("/v1/ws", "viewer")
    reply = await ask(ws, type="session.stop", id=1, session="x")
    assert reply["code"] == "forbidden"
    assert "operator" in reply["message"]


async def test_an_admin_request_on_the_client_channel_is_forbidden_naming_the_admin_channel(
    harness: Harness,
) -> None:
    ws = await harness.welcomed("/v1/ws", "admin")
    reply = await ask(ws, type="status", id=1)
    assert reply["code"] == "forbidden"
    assert "/v1/admin" in reply["message"]


async def test_a_handler_request_error_becomes_its_error_code(harness: Harness) -> None:
    async def stop(request: Request, caller: Caller) -> None:
        raise RequestError("not_found", "no session x")

    harness.router.add("session.stop", stop)
    ws = await harness.welcomed()
    reply = await ask(ws, type="session.stop", id=1, session="x")
    assert reply == {"type": "error", "id": 1, "code": "not_found", "message": "no session x"}


async def test_a_failing_handler_is_an_internal_error_and_the_connection_lives(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    async def stop(request: Request, caller: Caller) -> None:
        raise RuntimeError("bug")

    harness.router.add("session.stop", stop)
    ws = await harness.welcomed()
    reply = await ask(ws, type="session.stop", id=1, session="x")
    assert reply["code"] == "internal"
    assert any(record.exc_info for record in caplog.records)
    assert (await ask(ws, type="ping", id=2))["type"] == "result"


async def test_a_handler_learns_who_called(harness: Harness) -> None:
    callers: list[Caller] = []

    async def sessions(request: Request, caller: Caller) -> list[str]:
        callers.append(caller)
        return []

    harness.router.add("sessions", sessions)
    ws = await harness.welcomed("/v1/ws", "viewer")
    assert await ask(ws, type="sessions", id=1) == {"type": "result", "id": 1, "result": []}
    assert callers == [Caller(connection=1, token_name="viewer-token", role="viewer")]


async def slow_stop(request: Request, caller: Caller) -> dict[str, bool]:
    """A handler that takes 5 s, as a session.stop waiting out an agent's grace may."""
    await trio.sleep(5)
    return {"stopped": True}


async def test_a_slow_handler_does_not_block_other_requests(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    harness.router.add("session.stop", slow_stop)
    ws = await harness.welcomed()
    await send(ws, type="session.stop", id=1, session="x")
    await send(ws, type="ping", id=2)
    answers = [m["id"] for _ in range(2) for m in await receive(ws)]
    assert answers == [2, 1]


async def test_requests_past_the_concurrency_cap_wait_for_a_free_slot(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    harness.router.add("session.stop", slow_stop)
    ws = await harness.welcomed()
    start = trio.current_time()
    for i in range(MAX_CONCURRENT_REQUESTS + 1):
        await send(ws, type="session.stop", id=i, session="x")
    done: dict[int, float] = {}
    while len(done) < MAX_CONCURRENT_REQUESTS + 1:
        for message in await receive(ws):
            done[message["id"]] = trio.current_time() - start
    assert [done[i] for i in range(MAX_CONCURRENT_REQUESTS)] == [pytest.approx(5.0)] * 16
    assert done[MAX_CONCURRENT_REQUESTS] == pytest.approx(10.0)


async def test_a_frame_breaking_the_protocol_ends_the_connection(harness: Harness) -> None:
    stream = harness.stream()
    extra = f"Authorization: Bearer {SECRETS['viewer']}\r\n"
    await stream.send_all(UPGRADE_HEAD.format(path="/v1/ws", extra=extra).encode())
    received = b""
    while b'"welcome"' not in received:
        received += await stream.receive_some()
    await stream.send_all(b"\x81\x02{}")  # a client frame must be masked
    with trio.fail_after(1):
        while await stream.receive_some():
            pass
    await trio.testing.wait_all_tasks_blocked()
    assert harness.server.connections() == []
    assert harness.hub.stats().subscribers == 0


async def test_an_unserved_request_type_is_not_found(harness: Harness) -> None:
    ws = await harness.welcomed()
    reply = await ask(ws, type="session.start", id=1, agent="claude")
    assert reply["code"] == "not_found"


# -- heartbeat --------------------------------------------------------------------------------


async def test_a_client_that_never_answers_pings_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    harness = Harness(nursery, make_config(heartbeat_interval_s=20.0, heartbeat_timeout_s=10.0))
    stream = harness.stream()
    extra = f"Authorization: Bearer {SECRETS['viewer']}\r\n"
    await stream.send_all(UPGRADE_HEAD.format(path="/v1/ws", extra=extra).encode())
    start = trio.current_time()
    received = b""
    while chunk := await stream.receive_some():  # reads pings, never answers them
        received += chunk
    assert received.startswith(b"HTTP/1.1 101 ")
    assert trio.current_time() - start == pytest.approx(30.0, abs=0.1)
    # Told why in a close frame (1011, as the websockets library's keepalive does), not waited
    # for: the transport was closed right after it.
    reason = b"no pong within 10 s of the ping"
    assert received.endswith(bytes([0x88, 2 + len(reason)]) + (1011).to_bytes(2, "big") + reason)
    await trio.testing.wait_all_tasks_blocked()
    assert harness.server.connections() == []
    assert "connection 1: dropped (1011): no pong within 10 s of the ping" in caplog.text
    assert caplog.text.count("no pong") == 1, "logged once"
    assert harness.hub.stats().subscribers == 0


async def test_a_client_that_answers_pings_stays(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    ws = await harness.welcomed()
    await trio.sleep(300)
    assert await ask(ws, type="ping", id=1) == {"type": "result", "id": 1, "result": {}}
    assert [c.id for c in harness.server.connections()] == [1]


# -- fan-out ----------------------------------------------------------------------------------


async def test_events_queued_together_arrive_as_one_array(harness: Harness) -> None:
    ws = await harness.welcomed()
    reply = await ask(ws, type="subscribe", id=1, topic="sessions")
    assert reply["result"] == {
        "topic": "sessions",
        "recovered": True,
        "last_seq": 0,
        "epoch": 0,
        "reset": False,
    }
    for i in range(5):
        harness.hub.publish("sessions", "state", {"i": i})
    frame = orjson.loads(await ws.get_message())
    assert [event["seq"] for event in frame] == [1, 2, 3, 4, 5]
    assert {event["type"] for event in frame} == {"event"}


async def test_an_event_the_socket_takes_only_in_part_is_finished_by_the_sender(
    harness: Harness,
) -> None:
    # Written at once by the publish (the sender waits), but the socket takes only part of it:
    # the sender, left asleep for a frame written whole, must be woken to write the rest.
    def pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        client, server_side = trio.socket.socketpair()
        server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return trio.SocketStream(client), trio.SocketStream(server_side)

    ws = await harness.welcomed(stream=harness.stream(pair))
    await ask(ws, type="subscribe", id=1, topic="sessions")
    await trio.testing.wait_all_tasks_blocked()
    text = "t" * 300_000
    harness.hub.publish("sessions", "state", {"text": text})
    with trio.fail_after(10):
        [event] = await receive(ws)
    assert event["data"]["text"] == text
    await ws.aclose()


async def test_unsubscribe_stops_the_events(harness: Harness) -> None:
    ws = await harness.welcomed()
    await ask(ws, type="subscribe", id=1, topic="sessions")
    reply = await ask(ws, type="unsubscribe", id=2, topic="sessions")
    assert reply["result"] == {"topic": "sessions"}
    harness.hub.publish("sessions", "state", {})
    harness.hub.publish("session/x", "text", {})
    await send(ws, type="subscribe", id=3, topic="session/x", since=0)
    messages: list[dict[str, Any]] = []
    while len(messages) < 2:
        messages.extend(await receive(ws))
    # The result may come before or after the replayed events (docs/protocol.md).
    assert sorted((m["type"], m.get("topic") or "") for m in messages) == [
        ("event", "session/x"),
        ("result", ""),
    ]


async def test_resume_with_since_under_concurrent_publishing_has_no_gap_and_no_duplicate(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(nursery, make_config(subscriber_queue=16))
    for i in range(50):
        harness.hub.publish("sessions", "state", {"i": i})

    async def publish() -> None:
        for i in range(50, 200):
            harness.hub.publish("sessions", "state", {"i": i})
            await trio.sleep(0.001)

    ws = await harness.welcomed()
    nursery.start_soon(publish)
    await send(ws, type="subscribe", id=1, topic="sessions", since=10)
    seqs: list[int] = []
    while len(seqs) < 190:
        seqs.extend(m["seq"] for m in await receive(ws) if m["type"] == "event")
    assert seqs == list(range(11, 201))


async def test_a_slow_consumer_is_closed_4008_while_a_fast_one_gets_everything(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(nursery, make_config(subscriber_queue=8))
    fast = await harness.welcomed()
    # Lockstep: a send completes only as the client reads; a client queue of 1 stops reading.
    slow = await harness.welcomed(stream=harness.stream(trio.testing.lockstep_stream_pair), queue=1)
    for ws in (fast, slow):
        await ask(ws, type="subscribe", id=1, topic="sessions")
    got: list[int] = []

    async def read_fast() -> None:
        while len(got) < 100:
            got.extend(m["seq"] for m in await receive(fast))

    async with trio.open_nursery() as inner:
        inner.start_soon(read_fast)
        for i in range(100):
            harness.hub.publish("sessions", "state", {"i": i})
            await trio.sleep(0.01)
    assert got == list(range(1, 101))
    slow_seqs: list[int] = []
    with pytest.raises(trio_websocket.ConnectionClosed) as excinfo:
        await read_until_closed(slow, slow_seqs)
    # It overflowed in the middle of a send it did not read: dropped at once, no close frame.
    assert excinfo.value.reason is not None
    assert excinfo.value.reason.code == 1006
    assert harness.hub.stats().subscribers_closed_slow == 1
    assert slow_seqs == list(range(1, len(slow_seqs) + 1))
    assert len(slow_seqs) < 100
    await trio.testing.wait_all_tasks_blocked()
    assert [c.id for c in harness.server.connections()] == [1]


async def test_a_burst_past_the_queue_closes_a_waiting_subscriber_with_4008(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(nursery, make_config(subscriber_queue=8))
    ws = await harness.welcomed()
    await ask(ws, type="subscribe", id=1, topic="sessions")
    for i in range(20):  # in one tick: its sender has no chance to take them
        harness.hub.publish("sessions", "state", {"i": i})
    code, reason = await close_code(ws)
    assert code == 4008
    assert reason == "too slow: more than 8 events queued; reconnect and resume with since"


async def stalled_subscriber(harness: Harness) -> trio_websocket.WebSocketConnection:
    """Connection 1, subscribed to ``sessions``, that has stopped reading: the server's send of
    the third event published waits for it (lockstep stream; its client holds two messages)."""
    ws = await harness.welcomed(stream=harness.stream(trio.testing.lockstep_stream_pair), queue=1)
    await ask(ws, type="subscribe", id=1, topic="sessions")
    for i in range(3):
        harness.hub.publish("sessions", "state", {"i": i, "pad": "x" * 10_000})
        await trio.testing.wait_all_tasks_blocked()
    return ws


async def test_a_close_asked_during_a_send_follows_the_whole_frame(harness: Harness) -> None:
    stalled = await stalled_subscriber(harness)
    admin = await harness.welcomed("/v1/admin")
    reply = await ask(admin, type="connection.kick", id=1, connection=1, reason="bye")
    assert reply["result"] == {"connection": 1}
    seqs: list[int] = []
    with pytest.raises(trio_websocket.ConnectionClosed) as excinfo:
        await read_until_closed(stalled, seqs)
    assert seqs == [1, 2, 3]
    assert excinfo.value.reason is not None
    assert (excinfo.value.reason.code, excinfo.value.reason.reason) == (1000, "bye")


async def test_a_close_asked_during_a_send_that_never_ends_drops_it_after_the_close_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(nursery, make_config(heartbeat_interval_s=3600.0))
    await stalled_subscriber(harness)
    admin = await harness.welcomed("/v1/admin")
    await ask(admin, type="connection.kick", id=1, connection=1, reason="bye")
    await trio.sleep(CLOSE_TIMEOUT_S - 0.1)
    await trio.testing.wait_all_tasks_blocked()
    assert harness.hub.stats().subscribers == 2, "it waits for the send for a while"
    await trio.sleep(0.2)
    await trio.testing.wait_all_tasks_blocked()
    assert harness.hub.stats().subscribers == 1, "then it is gone"


async def test_a_client_that_stops_reading_is_dropped_by_the_heartbeat_during_a_send(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    harness = Harness(nursery, make_config(heartbeat_interval_s=20.0, heartbeat_timeout_s=10.0))
    await stalled_subscriber(harness)
    await trio.sleep(30.0 - 0.1)  # the first ping is due at 20 s, its pong at 30 s
    await trio.testing.wait_all_tasks_blocked()
    assert harness.hub.stats().subscribers == 1
    await trio.sleep(0.2)
    await trio.testing.wait_all_tasks_blocked()
    assert harness.hub.stats().subscribers == 0
    assert harness.server.connections() == []
    assert "connection 1: dropped: no pong within 10 s" in caplog.text


async def test_a_client_that_stops_reading_is_dropped_at_once_as_4008_when_its_queue_overflows(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    harness = Harness(nursery, make_config(subscriber_queue=8, heartbeat_interval_s=3600.0))
    await stalled_subscriber(harness)
    start = trio.current_time()
    for i in range(9):  # the send of event 3 never ends; 4 to 11 fill the queue, 12 overflows
        harness.hub.publish("sessions", "state", {"i": i})
    await trio.testing.wait_all_tasks_blocked()
    assert trio.current_time() == start, "no timeout was waited for"
    assert harness.server.connections() == []
    assert harness.hub.stats().subscribers == 0
    assert "connection 1: dropped (4008): too slow: more than 8 events queued" in caplog.text


async def test_a_client_that_asks_for_big_replies_and_never_reads_them_is_4008_by_their_bytes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Replies were bounded by count only (1024): 1024 pages of 256 KiB held for one client."""
    caplog.set_level(logging.INFO)
    harness = Harness(
        nursery, make_config(subscriber_queue_bytes=1 << 20, heartbeat_interval_s=3600.0)
    )

    async def big(request: Request, caller: Caller) -> dict[str, str]:
        await trio.lowlevel.checkpoint()
        return {"pad": "x" * 100_000}

    harness.router.add("sessions", big)
    stalled = await stalled_subscriber(harness)
    sent = 0

    async def ask_many() -> None:
        nonlocal sent
        for i in range(30):
            await send(stalled, type="sessions", id=100 + i)
            sent += 1
            await trio.testing.wait_all_tasks_blocked()

    with pytest.raises(trio_websocket.ConnectionClosed):  # dropped: a next send fails
        await ask_many()
    assert sent < 15, "dropped once about 1 MiB of replies waited"
    assert harness.server.connections() == []
    assert "connection 1: dropped (4008): too slow: replies are not being read" in caplog.text


# -- admin: connections, kick, reload, drain ---------------------------------------------------


async def test_connections_lists_each_connection_with_its_figures(harness: Harness) -> None:
    viewer = await harness.welcomed("/v1/ws", "viewer")
    await ask(viewer, type="subscribe", id=1, topic="sessions")
    admin = await harness.welcomed("/v1/admin", "admin")
    reply = await ask(admin, type="connections", id=1)
    first, second = reply["result"]["connections"]
    assert first["id"] == 1
    assert first["channel"] == "/v1/ws"
    assert first["token_name"] == "viewer-token"
    assert first["role"] == "viewer"
    assert first["subscriptions"] == ["sessions"]
    assert first["frames_in"] == 1
    assert first["frames_out"] == 2
    assert first["queue_depth"] == 0
    assert first["since"].endswith("Z")
    assert second["channel"] == "/v1/admin"
    assert "secret" not in orjson.dumps(reply).decode()


async def test_connections_pages_stop_at_the_byte_cap_and_next_lists_each_once(
    nursery: trio.Nursery,
) -> None:
    long_name = TokenConfig(name="v" * 100_000, role="viewer", sha256=hash_secret("viewer-secret"))  # type: ignore[arg-type]
    tokens = (long_name, *(t for t in TOKENS if t.role != "viewer"))
    harness = Harness(nursery, make_config(tokens))
    for _ in range(5):
        await harness.welcomed("/v1/ws", "viewer")
    admin = await harness.welcomed("/v1/admin", "admin")
    listed: list[int] = []
    sizes: list[int] = []
    cursor = None
    for request_id in range(1, 10):
        fields = {} if cursor is None else {"cursor": cursor}
        result = (await ask(admin, type="connections", id=request_id, **fields))["result"]
        listed += [c["id"] for c in result["connections"]]
        sizes.append(len(orjson.dumps(result["connections"])))
        cursor = result["next"]
        if cursor is None:
            break
    # 500 kB of connections unbounded: pages of two 100 kB ones, then the rest.
    assert listed == [1, 2, 3, 4, 5, 6]
    assert len(sizes) == 3
    assert max(sizes) <= LIST_REPLY_MAX_BYTES
    reply = await ask(admin, type="connections", id=20, limit=1, cursor="2")
    assert [c["id"] for c in reply["result"]["connections"]] == [3]
    assert reply["result"]["next"] == "3"
    reply = await ask(admin, type="connections", id=21, cursor="two")
    assert reply["code"] == "bad_request"
    assert reply["message"] == 'connections.cursor: expected a cursor from a page, got "two"'


async def test_a_connection_on_many_topics_lists_the_first_of_them_and_counts_all(
    harness: Harness,
) -> None:
    viewer = await harness.welcomed("/v1/ws", "viewer")
    topics = [f"session/01J{n:04d}" + "X" * 50 for n in range(100)]
    for request_id, topic in enumerate(topics, 1):
        assert (await ask(viewer, type="subscribe", id=request_id, topic=topic))["type"] == "result"
    admin = await harness.welcomed("/v1/admin", "admin")
    listed = (await ask(admin, type="connections", id=1))["result"]["connections"][0]
    assert listed["subscriptions"] == sorted(topics)[:SUBSCRIPTIONS_SHOWN]
    assert listed["subscriptions_total"] == 100


async def test_ten_thousand_connections_come_in_pages_under_the_cap() -> None:
    every = [
        ConnectionStats(
            id=n,
            peer="127.0.0.1:40000",
            channel="/v1/ws",
            token_name="viewer-token",
            role="viewer",
            since="2026-12-05T09:00:00.000Z",
            frames_in=1,
            bytes_in=50,
            frames_out=2,
            messages_out=2,
            bytes_out=300,
            queue_depth=0,
            subscriptions=("sessions", "session/01JDX4V9N2ABCDEFGHJKMNPQRS"),
            subscriptions_total=2,
        )
        for n in range(1, 10_001)
    ]
    assert len(orjson.dumps(every, default=attrs.asdict)) > 2**21  # unbounded: over 2 MiB
    router = Router()
    own = OwnRequests(Hub(), {}, lambda after: (c for c in every if after is None or c.id > after))
    own.register(router)
    admin = Caller(connection=1, token_name="admin-token", role="admin")
    listed: list[int] = []
    pages = 0
    cursor = None
    while pages < 100:
        result = await router.handle(Connections(cursor=cursor), admin)
        assert len(orjson.dumps(result)) <= LIST_REPLY_MAX_BYTES + 100
        listed += [c["id"] for c in result["connections"]]
        pages += 1
        cursor = result["next"]
        if cursor is None:
            break
    assert listed == list(range(1, 10_001))
    assert pages > 8


async def test_kick_closes_the_connection_with_1000_and_the_reason(harness: Harness) -> None:
    viewer = await harness.welcomed("/v1/ws", "viewer")
    admin = await harness.welcomed("/v1/admin", "admin")
    reply = await ask(admin, type="connection.kick", id=1, connection=1, reason="go away")
    assert reply["result"] == {"connection": 1}
    assert [c.id for c in harness.server.connections()] == [2]  # closing: no longer listed
    assert harness.server.stats().connections == 1
    assert await close_code(viewer) == (1000, "go away")


async def test_the_answer_to_a_request_that_closes_its_own_connection_comes_before_the_close(
    harness: Harness,
) -> None:
    admin = await harness.welcomed("/v1/admin", "admin")
    reply = await ask(admin, type="connection.kick", id=1, connection=1, reason="bye")
    assert reply["result"] == {"connection": 1}
    assert await close_code(admin) == (1000, "bye")


async def test_kick_of_an_unknown_connection_is_not_found(harness: Harness) -> None:
    admin = await harness.welcomed("/v1/admin", "admin")
    reply = await ask(admin, type="connection.kick", id=1, connection=42)
    assert reply["code"] == "not_found"


async def test_reload_closes_connections_whose_token_was_removed_with_4001(
    harness: Harness,
) -> None:
    viewer = await harness.welcomed("/v1/ws", "viewer")
    admin = await harness.welcomed("/v1/ws", "admin")
    kept = tuple(token for token in TOKENS if token.role != "viewer")
    harness.server.reload(make_config(kept))
    assert await close_code(viewer) == (4001, "token removed from the config")
    assert (await ask(admin, type="ping", id=1))["type"] == "result"


async def test_reload_applies_a_new_auth_timeout_to_new_connections(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(nursery, make_config(auth_timeout_s=30.0))
    harness.server.reload(make_config(auth_timeout_s=2.0))
    ws = await harness.connect("/v1/ws", role=None)
    start = trio.current_time()
    assert (await close_code(ws))[0] == 4001
    assert trio.current_time() - start == pytest.approx(2.0, abs=0.1)


async def test_drain_closes_every_connection_with_1001_and_waits_for_them(harness: Harness) -> None:
    clients = [await harness.welcomed(), await harness.welcomed("/v1/admin")]
    pending = await harness.connect("/v1/ws", role=None)  # not yet authenticated
    await harness.server.drain()
    assert harness.server.connections() == []
    for ws in [*clients, pending]:
        assert await close_code(ws) == (1001, "daemon stopping")


async def test_a_library_error_in_one_connection_leaves_the_others_alone(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    @attrs.define
    class Exploding(trio.abc.Stream):
        inner: trio.abc.Stream
        armed: bool = False

        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            data = await self.inner.receive_some(max_bytes)
            if self.armed:
                raise RuntimeError("boom inside the transport")
            return data

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            await self.inner.send_all(data)

        async def wait_send_all_might_not_block(self) -> None:
            await self.inner.wait_send_all_might_not_block()

        async def aclose(self) -> None:
            await self.inner.aclose()

    client, server_side = trio.testing.memory_stream_pair()
    exploding = Exploding(server_side)
    harness.nursery.start_soon(harness.server.serve_connection, exploding)
    victim = await harness.connect(stream=client)
    await receive(victim)
    other = await harness.welcomed()
    exploding.armed = True
    await send(victim, type="ping", id=1)
    with pytest.raises(trio_websocket.ConnectionClosed):
        await victim.get_message()
    assert (await ask(other, type="ping", id=2))["type"] == "result"
    assert [c.id for c in harness.server.connections()] == [2]
    assert any("boom inside the transport" in str(r.exc_info) for r in caplog.records if r.exc_info)


async def test_secrets_never_reach_the_log(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ws = await harness.connect("/v1/ws", role=None)
    await send(ws, type="hello", token=SECRETS["viewer"])
    await receive(ws)
    await ws.send_message('{"type": "hello", "token": 5, "extra": "' + SECRETS["admin"] + '"}')
    await receive(ws)
    wrong = await harness.connect("/v1/ws", role=None)
    await send(wrong, type="hello", token="guess-" + SECRETS["admin"])
    await close_code(wrong)
    text = caplog.text
    assert all(secret not in text for secret in SECRETS.values())


# -- rate limit -------------------------------------------------------------------------------


async def flood(harness: Harness, count: int) -> tuple[list[int], CloseConnection]:
    """A client (wsproto over an in-memory stream) that sends ``count`` pings in one write, so
    that the server reads them all at once; the ids it answered, and its close."""
    client = WSConnection(ConnectionType.CLIENT)
    stream = harness.stream()
    auth = [(b"authorization", f"Bearer {SECRETS['viewer']}".encode())]
    await stream.send_all(
        client.send(Upgrade(host="hived.test", target="/v1/ws", extra_headers=auth))
    )
    answered: list[int] = []
    text = ""
    while True:
        client.receive_data(bytes(await stream.receive_some()) or None)
        for event in client.events():
            if isinstance(event, AcceptConnection):
                pings = [orjson.dumps({"type": "ping", "id": i}).decode() for i in range(count)]
                await stream.send_all(b"".join(client.send(Message(data=p)) for p in pings))
            elif isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    frame = orjson.loads(text)
                    text = ""
                    for message in frame if isinstance(frame, list) else [frame]:
                        if message["type"] == "result":
                            answered.append(message["id"])
            elif isinstance(event, CloseConnection):
                return answered, event


async def test_a_client_over_the_burst_is_closed_4029_after_the_answers_to_the_burst(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    burst = harness.config.server.rate_limit_burst
    answered, close = await flood(harness, burst + 1)
    assert (close.code, close.reason) == (
        4029,
        "rate limited: more than 200 messages at once or 50/s; wait, then reconnect",
    )
    assert sorted(answered) == list(range(burst))


async def test_every_frame_counts_against_the_rate_limit_hello_and_bad_ones_too(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(nursery, make_config(rate_limit_burst=3))
    ws = await harness.connect("/v1/ws", role=None)
    await send(ws, type="hello", token=SECRETS["viewer"])
    await ws.send_message(b"binary")
    await ws.send_message("{not json")
    await send(ws, type="ping", id=1)
    replies: list[str] = []

    async def read_replies() -> None:
        while True:
            replies.extend(m.get("code", m["type"]) for m in await receive(ws))

    with pytest.raises(trio_websocket.ConnectionClosed) as excinfo:
        await read_replies()
    assert replies == ["welcome", "bad_request", "bad_json"]
    assert excinfo.value.reason is not None
    assert excinfo.value.reason.code == 4029


async def test_a_client_sending_steadily_below_the_rate_stays_open(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(nursery, make_config(rate_limit_per_s=2.0, rate_limit_burst=1))
    ws = await harness.welcomed()
    for i in range(600):  # 1.8 a second for 330 s
        assert (await ask(ws, type="ping", id=i))["type"] == "result"
        await trio.sleep(0.55)
    assert [c.id for c in harness.server.connections()] == [1]
    await send(ws, type="ping", id=600)
    await send(ws, type="ping", id=601)  # two at once: one more than the burst
    assert (await close_code(ws))[0] == 4029


async def test_a_reload_with_a_higher_burst_lets_an_open_connection_send_more(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(nursery, make_config(rate_limit_per_s=1.0, rate_limit_burst=5))
    ws = await harness.welcomed(queue=64)
    assert (await ask(ws, type="ping", id=0))["type"] == "result"
    harness.server.reload(make_config(rate_limit_per_s=1.0, rate_limit_burst=20))
    await trio.sleep(30)
    for i in range(1, 21):
        await send(ws, type="ping", id=i)
    answered: list[int] = []
    while len(answered) < 20:
        answered.extend(m["id"] for m in await receive(ws) if m["type"] == "result")
    assert sorted(answered) == list(range(1, 21))
    await send(ws, type="ping", id=21)
    assert await close_code(ws) == (
        4029,
        "rate limited: more than 20 messages at once or 1/s; wait, then reconnect",
    )


@pytest.mark.parametrize(
    ("sizes", "max_bytes", "runs"),
    [
        ([10, 10, 10], 100, [3]),
        ([10, 10, 10], 23, [2, 1]),  # [a,b] is 23 bytes
        ([10, 10, 10], 22, [1, 1, 1]),
        ([50, 10, 10], 20, [1, 1, 1]),  # one over the cap goes alone
        ([10, 50, 10, 10], 30, [1, 1, 2]),
    ],
)
def test_frame_batches_cut_a_batch_into_arrays_within_the_byte_cap(
    sizes: list[int], max_bytes: int, runs: list[int]
) -> None:
    frames = ["x" * size for size in sizes]
    batches = list(frame_batches(frames, max_bytes))
    assert [len(b) for b in batches] == runs
    assert [f for b in batches for f in b] == frames
    for batch in batches:
        assert len(batch) == 1 or len("[" + ",".join(batch) + "]") <= max_bytes


@pytest.mark.parametrize("seed", range(20))
def test_frame_batches_make_the_longest_runs_within_the_cap(seed: int) -> None:
    """Each run is as long as the cap allows: adding the next frame would pass it."""
    rng = random.Random(seed)
    frames = [rng.choice("xé") * rng.randint(1, 40) for _ in range(rng.randint(1, 60))]
    max_bytes = rng.randint(5, 300)
    batches = list(frame_batches(frames, max_bytes))
    assert [f for b in batches for f in b] == frames

    def array_bytes(run: list[str]) -> int:
        return len(("[" + ",".join(run) + "]").encode())

    for batch in batches:
        assert len(batch) == 1 or array_bytes(batch) <= max_bytes
    for batch, after in itertools.pairwise(batches):
        assert array_bytes([*batch, after[0]]) > max_bytes


def test_frame_batches_count_bytes_not_characters() -> None:
    assert [len(b) for b in frame_batches(["é" * 10, "é" * 10], 30)] == [1, 1]


def connection_tasks() -> list[trio.lowlevel.Task]:
    """The tasks serving connections: each ``serve_connection`` task and every task under it."""

    def under(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
        return [task] + [t for n in task.child_nurseries for c in n.child_tasks for t in under(c)]

    def walk(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
        if task.coro.cr_code.co_name == "serve_connection":
            return under(task)
        return [t for n in task.child_nurseries for c in n.child_tasks for t in walk(c)]

    return walk(trio.lowlevel.current_root_task())


async def test_an_idle_subscriber_is_one_task_with_one_cancel_scope_on_the_server(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Once it has sent nothing for a while, a connection is the task that reads it, in its
    nursery (the sender's task parks): a task, a cancel scope and its cancel status are
    memory that every idle connection would keep."""
    harness = Harness(nursery, make_config(heartbeat_interval_s=3600.0))

    def scopes() -> int:
        gc.collect()
        return sum(isinstance(o, trio.CancelScope) for o in gc.get_objects())

    async def idle_subscriber() -> trio_websocket.WebSocketConnection:
        ws = await harness.welcomed()
        await ask(ws, type="subscribe", id=1, topic="sessions")
        # Past the head's and handshake's timeouts too (trio keeps their scopes until then).
        await trio.sleep(2 * SENDER_PARK_CHECK_S + 10.0)
        await trio.testing.wait_all_tasks_blocked()
        return ws

    await idle_subscriber()
    tasks, before = len(connection_tasks()), scopes()
    await idle_subscriber()
    assert len(connection_tasks()) - tasks == 1
    assert scopes() - before == 1


def senders() -> int:
    return sum(t.name == SENDER_TASK_NAME for t in connection_tasks())


async def test_a_parked_connection_gets_events_answers_and_its_close(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A quiet connection's sender parks; a publish, a request, a ping and a kick each start
    it again, and a steady flow of events keeps it (one start, not one per event)."""
    harness = Harness(nursery, make_config(heartbeat_interval_s=20.0, heartbeat_timeout_s=5.0))
    ws = await harness.welcomed()
    await ask(ws, type="subscribe", id=1, topic="sessions")
    await trio.testing.wait_all_tasks_blocked()
    assert senders() == 0, "it came for replies only: parked at once"

    harness.hub.publish("sessions", "state", {"i": 0})
    [event] = await receive(ws)
    assert (event["type"], event["seq"]) == ("event", 1)
    for i in range(1, 5):  # a steady flow: the sender waits on between events
        await trio.sleep(SENDER_PARK_CHECK_S / 4)
        assert senders() == 1
        harness.hub.publish("sessions", "state", {"i": i})
        [event] = await receive(ws)
        assert event["seq"] == i + 1
    await trio.sleep(2 * SENDER_PARK_CHECK_S + 0.1)
    await trio.testing.wait_all_tasks_blocked()
    assert senders() == 0, "quiet for a parking check: parked"

    assert await ask(ws, type="ping", id=2) == {"type": "result", "id": 2, "result": {}}
    await trio.sleep(60)  # three pings, answered while parked in between
    assert [c.id for c in harness.server.connections()] == [1]
    assert senders() == 0

    admin = await harness.welcomed("/v1/admin")
    await ask(admin, type="connection.kick", id=1, connection=1, reason="bye")
    assert await close_code(ws) == (1000, "bye")


async def test_a_burst_to_a_parked_connection_past_its_queue_closes_it_with_4008(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(nursery, make_config(subscriber_queue=8, heartbeat_interval_s=3600.0))
    ws = await harness.welcomed()
    await ask(ws, type="subscribe", id=1, topic="sessions")
    await trio.testing.wait_all_tasks_blocked()
    assert senders() == 0
    for i in range(20):  # in one tick: the sender, started by the first, takes none
        harness.hub.publish("sessions", "state", {"i": i})
    assert (await close_code(ws))[0] == 4008


async def test_a_parked_connection_whose_client_leaves_ends(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(nursery, make_config(heartbeat_interval_s=3600.0))
    ws = await harness.welcomed()
    await ask(ws, type="subscribe", id=1, topic="sessions")
    await trio.sleep(10)
    assert senders() == 0
    await ws.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert harness.server.connections() == []
    assert connection_tasks() == []
    assert harness.hub.stats().subscribers == 0
