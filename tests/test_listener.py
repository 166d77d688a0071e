"""The listener over real loopback sockets: plain HTTP routes, hooks, upgrade checks (auth,
roles, Origin), TLS, drain, and an independent client (the ``websockets`` library)."""

from __future__ import annotations

import contextlib
import errno
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing
import trio_websocket
import trustme
import websockets.exceptions
import websockets.trio.client

from hived.agents.observed import HookLimitError
from hived.core.auth import hash_secret
from hived.core.config import (
    Config,
    HooksConfig,
    PerSecond,
    PositiveInt,
    ServerConfig,
    TokenConfig,
)
from hived.core.errors import RequestError
from hived.hub import Hub
from hived.server.accepting import ACCEPT_RETRY_S
from hived.server.listener import Server
from hived.server.router import Router

SECRETS = {"admin": "admin-secret", "viewer": "viewer-secret", "agent": "agent-secret"}
TOKENS = tuple(
    TokenConfig(name=f"{role}-token", role=role, sha256=hash_secret(secret))  # type: ignore[arg-type]
    for role, secret in SECRETS.items()
)


def make_config(**server: Any) -> Config:
    return Config(server=ServerConfig(**{"listen": "127.0.0.1:0", **server}), tokens=TOKENS)


@attrs.define
class Sink:
    """Collects hook payloads; refuses those with ``"refuse": true``."""

    payloads: list[Mapping[str, Any]] = attrs.Factory(list)
    tokens: list[str] = attrs.Factory(list)

    def __call__(self, payload: Mapping[str, Any], token: str) -> None:
        if payload.get("refuse"):
            raise RequestError("bad_request", "hook_event_name: required, but missing")
        self.payloads.append(payload)
        self.tokens.append(token)


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@attrs.define
class Running:
    server: Server
    port: int
    sink: Sink

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def http(self, raw: bytes, ssl_context: ssl.SSLContext | None = None) -> Answer:
        """Send ``raw`` as is and read the answer to the end of the connection."""
        with trio.fail_after(10):
            if ssl_context is None:
                stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            else:
                stream = await trio.open_ssl_over_tcp_stream(
                    "127.0.0.1", self.port, ssl_context=ssl_context, https_compatible=True
                )
            async with stream:
                await stream.send_all(raw)
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        return Answer(int(status_line.split()[1]), headers, body)

    async def get(self, path: str, *headers: str, method: str = "GET") -> Answer:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", *headers]
        return await self.http(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def post_hook(self, body: bytes, *headers: str, token: str | None = "agent") -> Answer:
        auth = [] if token is None else [f"Authorization: Bearer {SECRETS.get(token, token)}"]
        lines = [
            "POST /v1/hooks/claude HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            "Content-Type: application/json",
            *auth,
            *headers,
        ]
        if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
            lines.append(f"Content-Length: {len(body)}")
        return await self.http(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


async def start(nursery: trio.Nursery, config: Config | None = None, **kw: Any) -> Running:
    sink = Sink()
    kw.setdefault("hook_sink", sink)
    server = Server(config or make_config(), Hub(), Router(), version="9.9.9", **kw)
    addresses = await nursery.start(server.serve)
    [(host, port)] = addresses
    assert host == "127.0.0.1"
    return Running(server, port, sink)


@pytest.fixture
async def running(nursery: trio.Nursery) -> Running:
    return await start(nursery)


def bearer(role: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {SECRETS.get(role, role)}".encode())]


async def welcome_of(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(10):
        message: dict[str, Any] = orjson.loads(await ws.get_message())
    assert message["type"] == "welcome"
    return message


async def rejected_status(running: Running, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """The HTTP status of a WebSocket handshake hived refuses.

    Sent by hand: trio-websocket's client leaks its socket when a handshake is refused.
    """
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{running.port}",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        *(f"{name.decode()}: {value.decode()}" for name, value in headers),
    ]
    answer = await running.http(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert answer.status != 101
    return answer.status


# -- plain HTTP -------------------------------------------------------------------------------


async def test_healthz_answers_200_json_with_connection_close(running: Running) -> None:
    answer = await running.get("/healthz")
    assert answer.status == 200
    assert answer.json() == {"status": "serving", "version": "9.9.9"}
    assert answer.headers["Connection"] == "close"
    assert answer.headers["Content-Type"] == "application/json"


async def test_healthz_answers_head_without_a_body(running: Running) -> None:
    answer = await running.get("/healthz", method="HEAD")
    assert answer.status == 200
    assert answer.body == b""
    assert int(answer.headers["Content-Length"]) > 0


async def test_healthz_answers_503_once_draining_and_upgrades_are_refused(running: Running) -> None:
    await running.server.drain()
    answer = await running.get("/healthz")
    assert answer.status == 503
    assert answer.json() == {"status": "stopping", "version": "9.9.9"}
    assert await rejected_status(running, "/v1/ws", bearer("admin")) == 503


async def test_an_unknown_path_is_404(running: Running) -> None:
    answer = await running.get("/nope")
    assert answer.status == 404
    assert answer.headers["Connection"] == "close"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthz", "GET, HEAD"),
        ("GET", "/v1/hooks/claude", "POST"),
        ("POST", "/", "GET, HEAD"),
    ],
)
async def test_a_wrong_method_is_405_with_allow(
    running: Running, method: str, path: str, allow: str
) -> None:
    answer = await running.get(path, "Content-Length: 0", method=method)
    assert answer.status == 405
    assert answer.headers["Allow"] == allow


async def test_a_wrong_method_on_a_websocket_path_is_405(running: Running) -> None:
    answer = await running.get("/v1/ws", "Content-Length: 0", method="POST")
    assert answer.status == 405
    assert answer.headers["Allow"] == "GET"


async def test_garbage_is_400(running: Running) -> None:
    answer = await running.http(b"\x00\x01 hello there\r\n\r\n")
    assert answer.status == 400
    assert answer.headers["Connection"] == "close"


async def test_a_bare_lf_request_is_400_at_once(running: Running) -> None:
    """It used to wait for a CRLF CRLF that never came, and was dropped after 10 s with no
    answer."""
    with trio.fail_after(2):
        answer = await running.http(b"GET /healthz HTTP/1.1\nHost: h\n\n")
    assert answer.status == 400
    assert b"bare LF" in answer.body


async def test_a_head_over_16_kib_is_431(running: Running) -> None:
    answer = await running.http(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
    assert answer.status == 431


async def test_a_plain_get_on_a_websocket_path_is_426(running: Running) -> None:
    answer = await running.get("/v1/ws")
    assert answer.status == 426
    assert answer.headers["Upgrade"] == "websocket"


async def test_the_dashboard_is_served_at_the_root(running: Running) -> None:
    answer = await running.get("/")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"token" in answer.body
    assert (await running.get("/index.html")).body == answer.body


async def test_the_dashboard_files_come_with_their_types_and_a_strict_csp(
    running: Running,
) -> None:
    expected = {
        "/": "text/html; charset=utf-8",
        "/app.js": "text/javascript; charset=utf-8",
        "/app.css": "text/css; charset=utf-8",
    }
    for path, content_type in expected.items():
        answer = await running.get(path)
        assert answer.status == 200, path
        assert answer.headers["Content-Type"] == content_type, path
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy, path
        assert "script-src 'self'" in policy, path
        assert "frame-ancestors 'none'" in policy, path
    page = (await running.get("/")).body
    assert b'src="app.js"' in page
    assert b'href="app.css"' in page


@pytest.mark.parametrize(
    "path",
    ["/../pyproject.toml", "/%2e%2e/core/http.py", "/..%2f__init__.py", "/.hidden", "//etc/passwd"],
)
async def test_static_paths_cannot_step_outside_the_web_folder(running: Running, path: str) -> None:
    answer = await running.get(path)
    assert answer.status == 404


async def test_a_client_that_never_finishes_its_head_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = Server(make_config(), Hub(), Router(), version="9.9.9")
    client, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.serve_connection, server_side)
    await client.send_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n")
    start = trio.current_time()
    assert await client.receive_some() == b""
    assert trio.current_time() - start == pytest.approx(10.0, abs=0.1)


class _ShortOfFiles(trio.abc.Listener[trio.abc.Stream]):
    """Fails its accepts with EMFILE while ``short`` (every one but those in ``spare_takes``,
    which model the spare descriptor hived frees), hands out ``streams`` in order, then waits."""

    def __init__(self, *streams: trio.abc.Stream, failures: int = 1) -> None:
        self.streams = list(streams)
        self.failures = failures
        self.calls = 0

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        if self.streams:
            return self.streams.pop(0)
        await trio.sleep_forever()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_accept_out_of_file_descriptors_pauses_and_goes_on(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection waiting when accept fails is taken on the spare descriptor and told why
    (503); after the pause the next one is served as usual."""
    server = Server(make_config(), Hub(), Router(), version="9.9.9")
    told, told_server = trio.testing.memory_stream_pair()
    served, served_server = trio.testing.memory_stream_pair()
    start = trio.current_time()
    nursery.start_soon(server._accept, _ShortOfFiles(told_server, served_server), nursery)
    await told.send_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
    answer = b""
    while chunk := await told.receive_some():
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2]) == {
        "status": "out of file descriptors (Too many open files); try again later",
        "version": "9.9.9",
    }
    await served.send_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await served.receive_some()).startswith(b"HTTP/1.1 200 ")
    assert trio.current_time() - start == pytest.approx(ACCEPT_RETRY_S)
    assert "accept failed (Too many open files); retrying every 0.1 s" in caplog.text
    assert "accepting works again after 1 failures" in caplog.text


async def test_accept_failing_for_a_minute_logs_a_line_every_10_s_not_10_a_second(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(make_config(), Hub(), Router(), version="9.9.9")
    client, server_side = trio.testing.memory_stream_pair()
    # 600 failures at 0.1 s apart, the spare's accepts among them (they fail too).
    listener = _ShortOfFiles(server_side, failures=1200)
    nursery.start_soon(server._accept, listener, nursery)
    await client.send_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await client.receive_some()).startswith(b"HTTP/1.1 200 ")
    lines = [r for r in caplog.records if r.name.startswith("hived.server")]
    assert 50 < trio.current_time() < 70
    assert 5 <= len(lines) <= 9, [r.getMessage() for r in lines]
    assert "still failing (Too many open files)" in lines[1].getMessage()
    assert "accepting works again after" in lines[-1].getMessage()


# -- hooks ------------------------------------------------------------------------------------


async def test_a_hook_is_taken_with_200_and_an_empty_body(running: Running) -> None:
    answer = await running.post_hook(b'{"hook_event_name": "Stop", "session_id": "abc"}')
    assert answer.status == 200
    assert answer.body == b""
    assert running.sink.payloads == [{"hook_event_name": "Stop", "session_id": "abc"}]


async def test_a_hook_is_taken_from_a_token_of_any_role(running: Running) -> None:
    assert (await running.post_hook(b"{}", token="viewer")).status == 200
    assert (await running.post_hook(b"{}", token="admin")).status == 200


@pytest.mark.parametrize("token", [None, "wrong-secret"])
async def test_a_hook_without_a_valid_token_is_401(running: Running, token: str | None) -> None:
    answer = await running.post_hook(b"{}", token=token)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert running.sink.payloads == []


async def test_a_hook_without_content_length_is_411(running: Running) -> None:
    answer = await running.http(
        f"POST /v1/hooks/claude HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {SECRETS['agent']}"
        "\r\n\r\n".encode()
    )
    assert answer.status == 411


async def test_a_chunked_hook_is_411(running: Running) -> None:
    answer = await running.post_hook(b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked")
    assert answer.status == 411


async def test_a_hook_over_max_message_bytes_is_413(nursery: trio.Nursery) -> None:
    running = await start(nursery, make_config(max_message_bytes=1000))
    answer = await running.post_hook(b"{" + b" " * 5000 + b"}")
    assert answer.status == 413
    assert b"max_message_bytes" in answer.body


async def test_a_large_hook_is_refused_413_before_its_body_is_read(nursery: trio.Nursery) -> None:
    running = await start(nursery, make_config(max_message_bytes=1000))
    answer = await running.post_hook(b"", "Content-Length: 100000000")
    assert answer.status == 413


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"{not json", b"not JSON"), (b"[1, 2]", b"expected a JSON object, got list")],
)
async def test_a_hook_that_is_not_a_json_object_is_400_with_the_reason(
    running: Running, body: bytes, reason: bytes
) -> None:
    answer = await running.post_hook(body)
    assert answer.status == 400
    assert reason in answer.body


async def test_a_hook_the_sink_refuses_is_400_with_its_message(running: Running) -> None:
    answer = await running.post_hook(b'{"refuse": true}')
    assert answer.status == 400
    assert answer.body == b"hook_event_name: required, but missing\n"


async def test_a_hook_without_a_sink_is_503(nursery: trio.Nursery) -> None:
    running = await start(nursery, hook_sink=None)
    assert (await running.post_hook(b"{}")).status == 503


async def test_hooks_past_a_tokens_rate_are_429_and_other_tokens_go_on(
    nursery: trio.Nursery,
) -> None:
    config = attrs.evolve(
        make_config(),
        hooks=HooksConfig(rate_limit_burst=PositiveInt(5), rate_limit_per_s=PerSecond(0.001)),
    )
    running = await start(nursery, config)
    statuses = [(await running.post_hook(b"{}")).status for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    answer = await running.post_hook(b"{}")
    assert answer.headers["Retry-After"] == "1"
    assert b"hooks.rate_limit_burst" in answer.body
    assert (await running.post_hook(b"{}", token="admin")).status == 200
    assert running.sink.tokens == ["agent-token"] * 5 + ["admin-token"]


async def test_a_hook_is_503_while_the_store_is_behind(nursery: trio.Nursery) -> None:
    """Hooks cannot wait as agents' output does: while the store's pending events are at their
    bound, a hook is refused rather than queued past it."""
    saturated = True
    running = await start(nursery, store_saturated=lambda: saturated)
    answer = await running.post_hook(b"{}")
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "5"
    assert b"event store is behind" in answer.body
    assert running.sink.payloads == []
    saturated = False
    assert (await running.post_hook(b"{}")).status == 200


async def test_a_hook_past_the_tokens_live_sessions_is_429(nursery: trio.Nursery) -> None:
    def full(payload: Mapping[str, Any], token: str) -> None:
        raise HookLimitError(f"token {token} already keeps 200 observed sessions live")

    running = await start(nursery, hook_sink=full)
    answer = await running.post_hook(b"{}")
    assert answer.status == 429
    assert answer.body == b"token agent-token already keeps 200 observed sessions live\n"


async def test_a_hook_with_expect_100_continue_gets_continue_first(running: Running) -> None:
    body = b'{"hook_event_name": "Notification"}'
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        async with stream:
            await stream.send_all(
                f"POST /v1/hooks/claude HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "
                f"{SECRETS['agent']}\r\nContent-Length: {len(body)}\r\n"
                "Expect: 100-continue\r\n\r\n".encode()
            )
            assert await stream.receive_some() == b"HTTP/1.1 100 Continue\r\n\r\n"
            await stream.send_all(body)
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert running.sink.payloads == [{"hook_event_name": "Notification"}]


# -- upgrades: auth, roles, Origin --------------------------------------------------------------


async def test_a_header_token_opens_the_client_channel(running: Running) -> None:
    async with trio_websocket.open_websocket_url(
        running.ws_url + "/v1/ws", extra_headers=bearer("viewer")
    ) as ws:
        assert (await welcome_of(ws))["role"] == "viewer"


async def test_a_wrong_header_token_is_401_without_upgrade(running: Running) -> None:
    assert await rejected_status(running, "/v1/ws", bearer("wrong-secret")) == 401
    assert await rejected_status(running, "/v1/ws", [(b"authorization", b"Basic abc")]) == 401


@pytest.mark.parametrize(("path", "role"), [("/v1/admin", "viewer"), ("/v1/ws", "agent")])
async def test_a_header_token_below_the_channel_is_403(
    running: Running, path: str, role: str
) -> None:
    assert await rejected_status(running, path, bearer(role)) == 403


async def test_an_admin_token_opens_the_admin_channel(running: Running) -> None:
    async with trio_websocket.open_websocket_url(
        running.ws_url + "/v1/admin", extra_headers=bearer("admin")
    ) as ws:
        assert (await welcome_of(ws))["role"] == "admin"


async def test_an_origin_not_allowed_is_403(running: Running) -> None:
    headers = [*bearer("admin"), (b"origin", b"https://evil.example")]
    assert await rejected_status(running, "/v1/ws", headers) == 403


async def test_an_allowed_origin_is_let_in(nursery: trio.Nursery) -> None:
    running = await start(nursery, make_config(allowed_origins=("https://dash.example",)))
    headers = [*bearer("admin"), (b"origin", b"https://dash.example")]
    async with trio_websocket.open_websocket_url(
        running.ws_url + "/v1/ws", extra_headers=headers
    ) as ws:
        await welcome_of(ws)


async def test_the_same_origin_is_always_let_in(running: Running) -> None:
    headers = [*bearer("admin"), (b"origin", f"http://127.0.0.1:{running.port}".encode())]
    async with trio_websocket.open_websocket_url(
        running.ws_url + "/v1/ws", extra_headers=headers
    ) as ws:
        await welcome_of(ws)


# -- an independent client --------------------------------------------------------------------


async def send_and_receive(ws: websockets.trio.client.ClientConnection, text: str) -> None:
    """Send, then receive: with a big frame, either may see the close."""
    await ws.send(text)
    await ws.recv()


async def test_the_websockets_library_can_hello_subscribe_and_gets_1009_for_a_big_frame(
    running: Running,
) -> None:
    with trio.fail_after(10):
        async with websockets.trio.client.connect(
            running.ws_url + "/v1/ws", proxy=None, compression=None
        ) as ws:
            await ws.send(orjson.dumps({"type": "hello", "token": SECRETS["viewer"]}).decode())
            assert orjson.loads(await ws.recv())["type"] == "welcome"
            await ws.send('{"type": "subscribe", "id": 1, "topic": "sessions"}')
            assert orjson.loads(await ws.recv())["result"]["topic"] == "sessions"
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as excinfo:
                await send_and_receive(ws, '{"type": "ping", "pad": "' + "x" * (2 << 20) + '"}')
    assert excinfo.value.rcvd is not None
    assert excinfo.value.rcvd.code == 1009


async def test_drain_closes_real_clients_with_1001(nursery: trio.Nursery, running: Running) -> None:
    # Our own socket: trio-websocket's client does not close its own when the server closed.
    async with await trio.open_tcp_stream("127.0.0.1", running.port) as stream:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, "127.0.0.1", "/v1/ws", extra_headers=bearer("admin")
        )
        await welcome_of(ws)
        with trio.fail_after(10):
            await running.server.drain()
        with pytest.raises(trio_websocket.ConnectionClosed) as excinfo:
            await ws.get_message()
    assert excinfo.value.reason is not None
    assert excinfo.value.reason.code == 1001
    assert running.server.stats().connections == 0


async def test_stats_count_connections_by_role(running: Running) -> None:
    async with trio_websocket.open_websocket_url(
        running.ws_url + "/v1/ws", extra_headers=bearer("viewer")
    ) as ws:
        await welcome_of(ws)
        stats = running.server.stats()
    assert stats.connections == 1
    assert stats.by_role == {"viewer": 1}
    assert stats.tls is False
    assert stats.listen == (f"127.0.0.1:{running.port}",)
    assert stats.accepted_total == 1


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_serves_https_and_wss(
    nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA
) -> None:
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    config = make_config(tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem"))
    running = await start(nursery, config)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    answer = await running.http(
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", ssl_context=client_context
    )
    assert answer.status == 200
    url = f"wss://127.0.0.1:{running.port}/v1/ws"
    async with trio_websocket.open_websocket_url(
        url, ssl_context=client_context, extra_headers=bearer("admin")
    ) as ws:
        await welcome_of(ws)
        assert running.server.stats().tls is True
    # Plain HTTP to the TLS port gets nothing, and the server lives on.
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
            assert b"HTTP/1.1 200" not in await stream.receive_some()
    assert (
        await running.http(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n", client_context)
    ).status == 200


async def test_a_websockets_client_with_default_limits_gets_every_big_event(
    nursery: trio.Nursery,
) -> None:
    """Batched frames stay under server.max_frame_bytes: a client of the websockets library
    with its default max_size (1 MiB) is never cut with 1009 by a frame hived chose to make
    big (40 events of 100 kB published at once used to go out as one 4 MB frame)."""
    hub = Hub()
    server = Server(make_config(), hub, Router(), version="9.9.9", hook_sink=Sink())
    [(_, port)] = await nursery.start(server.serve)
    pad = "x" * 100_000
    got: list[int] = []
    with trio.fail_after(20):
        async with websockets.trio.client.connect(
            f"ws://127.0.0.1:{port}/v1/ws", proxy=None, compression=None
        ) as ws:
            await ws.send(orjson.dumps({"type": "hello", "token": SECRETS["viewer"]}).decode())
            assert orjson.loads(await ws.recv())["type"] == "welcome"
            await ws.send('{"type": "subscribe", "id": 1, "topic": "sessions"}')
            assert orjson.loads(await ws.recv())["result"]["topic"] == "sessions"
            for i in range(40):
                hub.publish("sessions", "state", {"i": i, "pad": pad})
            hub.publish("sessions", "state", {"i": 40, "pad": "y" * 400_000})  # alone: over the cap
            while len(got) < 41:
                frame = await ws.recv()
                assert len(frame) <= 400_200
                messages = orjson.loads(frame)
                got.extend(
                    m["seq"] for m in (messages if isinstance(messages, list) else [messages])
                )
    assert got == list(range(1, 42))


# -- WebSocket protocol errors, by hand-made frames ---------------------------------------------


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """One masked client frame (RFC 6455 §5.2), made by hand so that it can be wrong."""
    mask = b"\x01\x02\x03\x04"
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def open_raw_websocket(running: Running) -> trio.SocketStream:
    """A socket past the opening handshake on /v1/ws, authenticated by header, welcome read."""
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    await stream.send_all(
        (
            "GET /v1/ws HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{running.port}\r\n"
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Authorization: Bearer {SECRETS['viewer']}\r\n\r\n"
        ).encode()
    )
    data = b""
    while b"welcome" not in data:
        chunk = await stream.receive_some()
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 101 ")
    return stream


async def close_code_seen(stream: trio.SocketStream) -> int | None:
    """The code of the close frame the server sends before it ends the connection (None when
    it ends it without one)."""
    data = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some():
            data += chunk
    while data:
        opcode, size = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if size == 126:
            size, offset = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, offset = int.from_bytes(data[2:10], "big"), 10
        if opcode == 0x8:
            return int.from_bytes(data[offset : offset + 2], "big")
        data = data[offset + size :]
    return None


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(0x1, b"{}", rsv=0b100), 1002),  # a reserved bit with no extension
        (client_frame(0x3, b""), 1002),  # a reserved opcode
        (client_frame(0x9, b"x" * 200), 1002),  # a control frame over 125 bytes
        (client_frame(0x0, b"{}"), 1002),  # a continuation with nothing to continue
        (client_frame(0x1, b'{"type": "ping", "x": "\xff\xfe"}'), 1007),  # not UTF-8
    ],
    ids=["rsv", "opcode", "big-control", "stray-continuation", "bad-utf8"],
)
async def test_a_websocket_protocol_error_gets_its_close_frame(
    running: Running, frame: bytes, code: int
) -> None:
    async with await open_raw_websocket(running) as stream:
        await stream.send_all(frame)
        assert await close_code_seen(stream) == code


async def test_an_endless_fragmented_message_is_closed_with_1009(nursery: trio.Nursery) -> None:
    """Fragments of a message that never ends are counted against max_message_bytes: empty ones
    too (they used to pile up forever)."""
    running = await start(nursery, make_config(max_message_bytes=4096))
    async with await open_raw_websocket(running) as stream:
        await stream.send_all(client_frame(0x1, b'{"type": "ping", "x": "', fin=False))

        async def fragments() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                for _ in range(100_000):
                    await stream.send_all(client_frame(0x0, b"", fin=False))

        async with trio.open_nursery() as sending:
            sending.start_soon(fragments)
            assert await close_code_seen(stream) == 1009
            sending.cancel_scope.cancel()
