"""Accepting connections: the accept loop, TLS, peer names, and the answer when out of descriptors.

How it works (DESIGN §9): an accept loop per listener (TLS-wrapped when a certificate is
configured) hands each stream to the listener in a task of its own (as ``trio.serve_listeners``
does, without the wrapper coroutine every connection would keep). Running out of file
descriptors or memory is logged (rate-limited, :mod:`hived.server.shortage`) and retried after
:data:`ACCEPT_RETRY_S`; the connection waiting meanwhile is accepted on the spare descriptor and
answered 503 with the reason.
"""

from __future__ import annotations

import errno
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from hived.core.errors import ConfigError
from hived.core.http import HttpError, error_response, parse_head
from hived.server import routes
from hived.server.shortage import Shortage

SHORT_ANSWER_S: Final = 2.0
"""How long the one connection accepted on the spare descriptor has to send its head and read
its 503 (:mod:`hived.server.shortage`)."""
ACCEPT_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""Accept errors that mean "out of a resource for now": retried after :data:`ACCEPT_RETRY_S`."""
ACCEPT_RETRY_S: Final = 0.1
CONNECTION_TASK_NAME: Final = "connection"
"""The task of each accepted connection, named once (see ``ws.READER_TASK_NAME``)."""

ServeStream = Callable[[trio.abc.Stream], Awaitable[None]]


def is_loopback(peer: str) -> bool:
    """Whether a peer (``host:port``, ``[v6]:port``) is on this machine's loopback."""
    host = peer.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def peer_name(stream: trio.abc.Stream) -> str:
    """The peer of ``stream`` as ``host:port`` (``[v6]:port``), for logs and statistics."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return type(stream).__name__
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "unknown"
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address) or "unix"


def load_tls(cert: str, key: str) -> ssl.SSLContext:
    """The server's TLS context; a certificate or key that does not load is a ConfigError."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [f"server.tls_cert/tls_key: cannot load {cert} and {key}: {exc}"]
        ) from None
    return context


async def run_accept(
    listener: trio.abc.Listener[trio.abc.Stream],
    nursery: trio.Nursery,
    shortage: Shortage,
    serve: ServeStream,
    serve_short: ServeStream,
) -> None:
    """Accept on ``listener`` until cancelled; ``serve`` each stream in a task of ``nursery``.

    Running out of file descriptors or memory is logged (rate-limited) and retried after a
    pause (as ``trio.serve_listeners`` does): the connections open go on, and the one
    waiting is handed to ``serve_short`` on a spare descriptor (:mod:`hived.server.shortage`).
    """
    shortage.reserve()
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                shortage.failed(exc.errno, ACCEPT_RETRY_S)
                if shortage.release(exc.errno):
                    await _accept_short(listener, nursery, shortage, serve_short)
                await trio.sleep(ACCEPT_RETRY_S)
            else:
                shortage.recovered()
                nursery.start_soon(serve, stream, name=CONNECTION_TASK_NAME)


async def _accept_short(
    listener: trio.abc.Listener[trio.abc.Stream],
    nursery: trio.Nursery,
    shortage: Shortage,
    serve_short: ServeStream,
) -> None:
    """With the spare descriptor freed, accept the connection that waits and hand it to
    ``serve_short`` in a task; the spare is taken again once it is closed."""
    stream = None
    with trio.move_on_after(ACCEPT_RETRY_S):
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                raise
    if stream is None:
        shortage.reserve()
    else:
        nursery.start_soon(serve_short, stream, name=CONNECTION_TASK_NAME)


async def answer_short(stream: trio.abc.Stream, shortage: Shortage, version: str) -> None:
    """Answer one connection 503, saying that the daemon is out of descriptors; then close it
    and take the spare descriptor again."""
    reason = f"out of file descriptors ({shortage.reason}); try again later"
    try:
        with trio.move_on_after(SHORT_ANSWER_S):
            received = await routes.read_head(stream)
            if received is not None:
                request = parse_head(received[0])
                if request.path == "/healthz":
                    answer = routes.healthz(request, serving=False, version=version, state=reason)
                else:
                    answer = error_response(HttpError(503, reason))
                await stream.send_all(answer)
    except (HttpError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)
        shortage.reserve()
