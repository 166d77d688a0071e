"""Opening one WebSocket to hived on a stream the client owns, and closing it for sure.

trio-websocket's own ``open_websocket_url`` leaves its socket open when the handshake is refused
or the server closes first; here the TCP (or TLS) stream is the client's own, and is always
closed. Failures come out as the client's errors, never as an exception group.

It asks for the best the server offers (docs/protocol.md §3a): the ``hived.v1.msgpack``
subprotocol (then ``hived.v1.json``) and ``permessage-deflate``; a server or proxy that agrees
to neither gets JSON text, uncompressed, as before. :func:`encode` makes a request's frame in
what was agreed.
"""

from __future__ import annotations

import dataclasses
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import orjson
import ormsgpack
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.extensions import PerMessageDeflate

from hived.client.errors import AuthError, ClientError, ConnectError, describe, leaves
from hived.core.wire import SUBPROTOCOL_MSGPACK, SUBPROTOCOLS

CONNECT_TIMEOUT_S: Final = 10.0
CLOSE_TIMEOUT_S: Final = 1.0
"""How long closing waits for the server's answer to our close frame."""
MAX_MESSAGE_CHARS: Final = 64 * 1024 * 1024
"""Largest server frame accepted (a coalesced batch, or an agent's 1 MiB line, fits)."""


@asynccontextmanager
async def open_websocket(
    url: str, token: str | None, ssl_context: ssl.SSLContext | None
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """One WebSocket on a TCP (or TLS) stream that this client opens and always closes.

    trio-websocket's own ``open_websocket_url`` leaves its socket open when the handshake
    is refused or the server closes first, hence the stream of our own.
    """
    parts = urllib.parse.urlsplit(url)
    host, port = (
        parts.hostname or "127.0.0.1",
        parts.port or (443 if parts.scheme == "wss" else 80),
    )
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
    no_answer = f"cannot connect to {url}: no answer within {CONNECT_TIMEOUT_S:g} s"
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise ConnectError(no_answer) from None
    except OSError as exc:
        raise ConnectError(f"cannot connect to {url}: {describe(exc)}") from None
    raised: BaseException | None = None
    try:
        if parts.scheme == "wss":
            context = ssl_context or ssl.create_default_context()
            stream = trio.SSLStream(stream, context, server_hostname=host)
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    ws = await _open(nursery, stream, parts.netloc, parts.path or "/", headers)
            except trio.TooSlowError:
                raise ConnectError(no_answer) from None
            except (trio_websocket.HandshakeError, OSError) as exc:
                raise ConnectError(f"cannot connect to {url}: {describe(exc)}") from None
            try:
                yield ws
            except BaseException as exc:
                # Re-raised outside this nursery, so that it is not wrapped in a group.
                raised = exc
            finally:
                with trio.move_on_after(CLOSE_TIMEOUT_S) as cleanup:
                    cleanup.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _handshake_error(url, group) from None
    except trio.BrokenResourceError as exc:
        raise ConnectError(f"cannot connect to {url}: {describe(exc)}") from None
    finally:
        await trio.aclose_forcefully(stream)
    if raised is not None:
        raise raised


async def _open(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
) -> trio_websocket.WebSocketConnection:
    """What ``trio_websocket.wrap_client_stream`` does, offering hived's subprotocols and
    permessage-deflate (the library passes no extensions to wsproto: the request it is about
    to send gets them before its reader task starts)."""
    connection = trio_websocket.WebSocketConnection(
        stream,
        WSConnection(ConnectionType.CLIENT),
        host=host,
        path=path,
        client_subprotocols=list(SUBPROTOCOLS),
        client_extra_headers=headers,
        message_queue_size=1024,
        max_message_size=MAX_MESSAGE_CHARS,
    )
    request = connection._initial_request
    assert request is not None
    connection._initial_request = dataclasses.replace(request, extensions=[PerMessageDeflate()])
    nursery.start_soon(connection._reader_task)
    await connection._open_handshake.wait()
    return connection


def encode(ws: trio_websocket.WebSocketConnection, message: object) -> str | bytes:
    """A request's frame in the encoding the server agreed to."""
    if ws.subprotocol == SUBPROTOCOL_MSGPACK:
        return ormsgpack.packb(message)
    return orjson.dumps(message).decode()


def _handshake_error(url: str, group: BaseExceptionGroup[BaseException]) -> BaseException:
    """What a failed handshake means for the caller (the library raises it from a task)."""
    found = leaves(group)
    for exc in found:
        if isinstance(exc, trio_websocket.ConnectionRejected):
            body = (exc.body or b"").decode(errors="replace").strip()
            kind = AuthError if exc.status_code in (401, 403) else ConnectError
            return kind(f"{url}: HTTP {exc.status_code}: {body}")
    if len(found) == 1 and isinstance(found[0], ClientError):
        return found[0]
    if all(isinstance(e, OSError | trio.BrokenResourceError) for e in found):
        return ConnectError(f"cannot connect to {url}: {describe(found[0])}")
    return group
