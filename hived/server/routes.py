"""The plain-HTTP side of the listener: reading heads and bodies, and the plain routes.

Heads and bodies are read here with size bounds (time bounds: the caller's, or
:data:`BODY_TIMEOUT_S`); parsing is :mod:`hived.core.http`. ``/healthz``, the dashboard's
static files and hook posts are answered here with what the listener hands over (its state,
tokens, the hook sink); the listener routes, and serves WebSocket upgrades itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson
import trio

from hived.core.auth import TokenTable, may_post_hooks, parse_bearer, role_at_least
from hived.core.config import TokenConfig
from hived.core.errors import RequestError
from hived.core.http import (
    HttpError,
    Request,
    content_length,
    head_length,
    json_response,
    response,
)

log = logging.getLogger(__name__)

RECEIVE_BYTES: Final = 16_384
WEB_ROOT: Final = Path(__file__).resolve().parent.parent / "web"
"""The dashboard's files, served at ``/``."""
LINGER_S: Final = 2.0
"""After an answer, how long unread request bytes are drained before the socket is closed;
closing with unread bytes would reset the connection and could destroy the answer in flight."""

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The dashboard runs only its own files: no inline script or style, nothing from elsewhere,
so that agent output that slipped into the page as markup could still run nothing."""
STATIC_HEADERS: Final = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


BODY_TIMEOUT_S: Final = 10.0
"""A hook body must arrive within this once its head has."""
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
BEARER_CHALLENGE: Final = (("WWW-Authenticate", 'Bearer realm="hived"'),)

HookSink = Callable[[Mapping[str, Any], str], None]
"""Takes one hook payload and the name of the token it came with; raises ``RequestError`` for
one it refuses (``conflict``: a limit of the token's, answered 429)."""
HookGate = Callable[[TokenConfig], None]
"""Checks, before the body is read, that a hook of this token may be taken now; raises
``HttpError`` (429 rate limited, 503 the store is behind) when not."""


class PeerGone(Exception):
    """The client closed the connection before sending all it announced."""


async def read_head(stream: trio.abc.ReceiveStream) -> tuple[bytes, bytes] | None:
    """Read a request head: ``(head, what came after it)``, or None if the peer closed first.

    Raises :class:`~hived.core.http.HttpError` 431 once the head outgrows its limit.
    """
    buffer = b""
    while (length := head_length(buffer)) is None:
        data = await stream.receive_some(RECEIVE_BYTES)
        if not data:
            return None
        buffer += data
    return buffer[:length], buffer[length:]


async def read_body(stream: trio.abc.ReceiveStream, received: bytes, length: int) -> bytes:
    """The ``length`` bytes of a body, of which ``received`` came with the head."""
    body = bytearray(received[:length])
    while len(body) < length:
        data = await stream.receive_some(min(RECEIVE_BYTES, length - len(body)))
        if not data:
            raise PeerGone(f"the body ended after {len(body)} of {length} bytes")
        body += data
    return bytes(body)


async def linger_close(stream: trio.abc.Stream) -> None:
    """Close after an answer: end our side, drain what the client still sends (bounded), close."""
    try:
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
            with trio.move_on_after(LINGER_S):
                while await stream.receive_some(RECEIVE_BYTES):
                    pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


def healthz(request: Request, *, serving: bool, version: str, state: str | None = None) -> bytes:
    """``GET /healthz``: 200 while serving, 503 once the daemon is stopping (or with the
    ``state`` that keeps it from serving: out of file descriptors)."""
    status = 200 if serving else 503
    state = state or ("serving" if serving else "stopping")
    return json_response(
        status,
        {"status": state, "version": version},
        [("Cache-Control", "no-store")],
        head_only=request.method == "HEAD",
    )


def _static_path(path: str) -> Path | None:
    """The file under :data:`WEB_ROOT` for a request path; None for anything that could step
    outside it (``..``, hidden names, backslashes) or that has no known content type."""
    parts = path.split("/")[1:]
    if parts in ([], [""]):
        parts = ["index.html"]
    for part in parts:
        if not part or part.startswith(".") or "\\" in part:
            return None
    candidate = WEB_ROOT.joinpath(*parts)
    return candidate if candidate.suffix in CONTENT_TYPES else None


async def static_file(request: Request) -> bytes:
    """A file of the dashboard (``GET /`` is ``index.html``); 404 for anything else."""
    candidate = _static_path(request.path)
    if candidate is not None:
        resolved = await trio.Path(candidate).resolve()
        if resolved.is_relative_to(WEB_ROOT) and await resolved.is_file():
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405, f"{request.path} answers GET", [("Allow", "GET, HEAD")])
            body = await resolved.read_bytes()
            return response(
                200,
                body,
                CONTENT_TYPES[candidate.suffix],
                STATIC_HEADERS,
                head_only=request.method == "HEAD",
            )
    raise HttpError(404, f"nothing at {request.path}")


METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def metrics(
    request: Request, tokens: TokenTable, render: Callable[[], bytes], open_: bool
) -> bytes:
    """``GET /metrics``: the Prometheus text format, for a token of role viewer or higher (or
    anyone, when ``open_``: ``server.metrics_open_on_loopback`` and a loopback peer)."""
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, "/metrics answers GET", [("Allow", "GET, HEAD")])
    if not open_:
        secret = parse_bearer(request.header("authorization"))
        token = None if secret is None else tokens.lookup(secret)
        if token is None or not role_at_least(token.role, "viewer"):
            raise HttpError(
                401, "send a viewer token: Authorization: Bearer <token>", BEARER_CHALLENGE
            )
    return response(
        200,
        render(),
        METRICS_CONTENT_TYPE,
        [("Cache-Control", "no-store")],
        head_only=request.method == "HEAD",
    )


async def post_hook(
    stream: trio.abc.Stream,
    request: Request,
    rest: bytes,
    *,
    tokens: TokenTable,
    max_bytes: int,
    sink: HookSink | None,
    gate: HookGate | None = None,
) -> bytes | None:
    """``POST /v1/hooks/claude``: check, read and hand one payload to the sink; 200 at once."""
    secret = parse_bearer(request.header("authorization"))
    token = None if secret is None else tokens.lookup(secret)
    if token is None or not may_post_hooks(token.role):
        raise HttpError(401, "send a valid token: Authorization: Bearer <token>", BEARER_CHALLENGE)
    if gate is not None:
        gate(token)
    length = content_length(request)
    if length is None:
        raise HttpError(411, "send the body with a Content-Length header")
    if length > max_bytes:
        raise HttpError(
            413, f"a body of {length} bytes is over server.max_message_bytes={max_bytes}"
        )
    if len(rest) < length and request.header("expect") == "100-continue":
        await stream.send_all(CONTINUE)
    body: bytes | None = None
    with trio.move_on_after(BODY_TIMEOUT_S):
        body = await read_body(stream, rest, length)
    if body is None:
        log.debug("hook: body not received within %g s; dropped", BODY_TIMEOUT_S)
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"the body is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(payload, dict):
        raise HttpError(400, f"expected a JSON object, got {type(payload).__name__}")
    if sink is None:
        raise HttpError(503, "this daemon does not take hooks now")
    try:
        sink(payload, token.name)
    except RequestError as exc:
        raise HttpError(429 if exc.code == "conflict" else 400, exc.message) from None
    return response(200)
