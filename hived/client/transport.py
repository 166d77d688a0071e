"""Opening one WebSocket to hived on a stream the client owns, and closing it for sure.

trio-websocket's own ``open_websocket_url`` leaves its socket open when the handshake is refused
or the server closes first; here the TCP (or TLS) stream is the client's own, and is always
closed. Failures come out as the client's errors, never as an exception group.
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio
import trio_websocket

from hived.client.errors import AuthError, ClientError, ConnectError, describe, leaves

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
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,  # type: ignore[arg-type]  # any trio Stream works
                        parts.netloc,
                        parts.path or "/",
                        extra_headers=headers,
                        message_queue_size=1024,
                        max_message_size=MAX_MESSAGE_CHARS,
                    )
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
