"""The listener: one TCP port for plain HTTP and WebSocket, with its own accept loop.

How it works (DESIGN §4, §9): an accept loop per listener (:mod:`hived.server.accepting`,
TLS-wrapped when a certificate is configured) runs :meth:`Server.serve_connection` for each
stream in a task of its own. Each connection reads its request head itself (bounded in size and
time) and is routed: ``/healthz`` and the dashboard's files, ``POST /v1/hooks/claude``, or a
WebSocket upgrade on ``/v1/ws`` or ``/v1/admin`` — Origin and a header token are checked before
the upgrade (:mod:`hived.server.gate`), and the upgraded stream becomes a
:class:`~hived.server.connection.Connection`. Every connection runs in a nursery of its own
whose errors are caught and logged there: nothing a client does, and no library error, reaches
the server or another connection. Once upgraded, a connection keeps nothing of its request
head. One :class:`~hived.server.heartbeat.Heartbeat` task pings them all. A test build
(``echo=True``) also serves :data:`~hived.server.echo.ECHO_PATH` (:mod:`hived.server.echo`).

Stopping (:meth:`Server.drain`): new upgrades are answered 503 and ``/healthz`` says 503, every
open WebSocket is closed with 1001 and awaited; the port itself closes when the daemon cancels
the server, so that until then a monitor can still see the 503.

The server answers some requests itself (:mod:`hived.server.own`): it registers them on the
router it is given.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Final

import attrs
import trio

from hived.core.auth import ADMIN_CHANNEL, CLIENT_CHANNEL, TokenTable
from hived.core.config import Config, TokenConfig, parse_listen
from hived.core.http import HttpError, Request, check_upgrade, error_response, parse_head
from hived.core.protocol import Caller, CloseCode
from hived.hub import Hub, Subscriber
from hived.server import routes
from hived.server.accepting import answer_short, is_loopback, load_tls, peer_name, run_accept
from hived.server.connection import Connection
from hived.server.echo import ECHO_PATH, serve_echo
from hived.server.gate import HookGate, check_upgrade_request
from hived.server.heartbeat import Heartbeat
from hived.server.own import OwnRequests
from hived.server.router import Router
from hived.server.shortage import Shortage
from hived.server.stats import ConnectionStats, ServerStats
from hived.server.ws import WebSocketClosed, accept

log = logging.getLogger(__name__)

HEAD_TIMEOUT_S: Final = 10.0
"""A client must send its whole request head (and finish TLS) within this."""
CHANNELS: Final = (CLIENT_CHANNEL, ADMIN_CHANNEL)
HOOKS_PATH: Final = "/v1/hooks/claude"
METRICS_PATH: Final = "/metrics"


@attrs.define
class _Upgrade:
    """A checked upgrade request, to be served once the frames that parsed it are gone."""

    channel: str
    token: TokenConfig | None
    """The header token's; None when the client is to say ``hello``."""
    received: bytes
    """Every byte read so far (the head and what followed), for the WebSocket library."""


class Server:
    """The listener service (see docs/internals.md for the service contract)."""

    def __init__(
        self,
        config: Config,
        hub: Hub,
        router: Router,
        *,
        version: str,
        hook_sink: routes.HookSink | None = None,
        store_saturated: Callable[[], bool] | None = None,
        sockets: list[socket.socket] | None = None,
        echo: bool = False,
    ) -> None:
        self._config = config
        self._tokens = TokenTable(config.tokens)
        self._hub = hub
        self._router = router
        self._version = version
        self._hook_sink = hook_sink
        self.metrics: Callable[[], bytes] | None = None
        """Makes the body of ``GET /metrics`` (set by the daemon); None: no such route."""
        self._closes: Counter[int] = Counter()
        self._messages_out_closed = 0
        self._echo = echo
        self._hook_gate = HookGate(store_saturated)
        self._sockets = sockets
        self._ids = itertools.count(1)
        self._heartbeat = Heartbeat()
        self._connections: dict[int, Connection] = {}
        self._websockets_open = 0
        """Upgrades accepted and not yet ended (handshakes under way included)."""
        self._all_closed = trio.Event()
        self._draining = False
        self._addresses: tuple[str, ...] = ()
        self._tls = False
        self._accepted = 0
        self._websockets = 0
        self._shortage = Shortage()
        self._lookup_token = self._lookup
        """Bound once: every connection keeps it (a bound method each would be memory)."""
        self._own = OwnRequests(hub, self._connections, self.connections_after)
        self._own.register(router)

    # -- service -----------------------------------------------------------------------------

    async def serve(
        self,
        *,
        task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept until cancelled; ``started()`` with the bound ``(host, port)`` pairs."""
        tcp = await self._open_tcp_listeners()
        addresses = []
        for listener in tcp:
            name = listener.socket.getsockname()
            if isinstance(name, tuple):  # not for a unix socket passed by systemd
                addresses.append((name[0], name[1]))
        self._addresses = tuple(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in addresses
        )
        server = self._config.server
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp)
        if server.tls_cert is not None and server.tls_key is not None:
            context = await trio.to_thread.run_sync(load_tls, server.tls_cert, server.tls_key)
            listeners = [trio.SSLListener(tl, context, https_compatible=True) for tl in tcp]
            self._tls = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.run_heartbeat)
                for each in listeners:
                    nursery.start_soon(self._accept, each, nursery)
                task_status.started(addresses)
        finally:
            self._shortage.close()

    async def _accept(
        self, listener: trio.abc.Listener[trio.abc.Stream], nursery: trio.Nursery
    ) -> None:
        """Accept on ``listener`` until cancelled; serve each stream in a task of ``nursery``."""
        await run_accept(
            listener, nursery, self._shortage, self.serve_connection, self._serve_short
        )

    async def _serve_short(self, stream: trio.abc.Stream) -> None:
        """Answer one connection 503, saying that the daemon is out of descriptors."""
        self._accepted += 1
        await answer_short(stream, self._shortage, self._version)

    async def run_heartbeat(self) -> None:
        """Ping every WebSocket connection on its schedule until cancelled (:meth:`serve` runs
        it; whoever calls :meth:`serve_connection` alone must run it too)."""
        await self._heartbeat.run()

    async def _open_tcp_listeners(self) -> list[trio.SocketListener]:
        if self._sockets:
            return [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in self._sockets]
        host, port = parse_listen(self._config.server.listen)
        return await trio.open_tcp_listeners(port, host=host)

    def reload(self, config: Config) -> None:
        """Apply tokens, origins, heartbeat, auth and size settings to new and open connections.

        An open connection whose token is gone is closed with 4001; one whose token's role no
        longer opens its channel, with 4003.
        """
        self._config = config
        self._tokens = TokenTable(config.tokens)
        self._hook_gate.clear()
        by_hash = {token.sha256: token for token in config.tokens}
        for connection in list(self._connections.values()):
            connection.config = config.server
            if connection.token is not None:
                connection.update_token(by_hash.get(connection.token.sha256))

    async def drain(self) -> None:
        """Stop: refuse new WebSockets, close every open one with 1001, and wait for them.

        The port stays open until the daemon cancels the server, so that ``/healthz`` can say
        503 meanwhile, and new upgrades are answered 503 rather than left hanging.
        """
        self._draining = True
        for connection in list(self._connections.values()):
            connection.request_close(CloseCode.GOING_AWAY, "daemon stopping")
        if self._websockets_open:
            await self._all_closed.wait()
        log.info("listener: every WebSocket closed")

    @property
    def draining(self) -> bool:
        """True once :meth:`drain` began."""
        return self._draining

    def _open(self) -> list[Connection]:
        """The WebSocket connections open now, by id: not those closing (a client that has seen
        its close frame is not listed, whether or not its closing handshake is over)."""
        return [c for _, c in sorted(self._connections.items()) if not c.closing]

    def _ended(self, connection: Connection) -> None:
        """Count a connection that ended, for ``/metrics``."""
        code = connection.close_code
        if code is not None:
            self._closes[code] += 1
        self._messages_out_closed += connection.stats().messages_out

    def is_open(self, connection: int) -> bool:
        """Whether the WebSocket connection with this id is still open."""
        return connection in self._connections

    def closes_by_code(self) -> dict[int, int]:
        """WebSocket connections ended since the start, by close code."""
        return dict(self._closes)

    def messages_out_total(self) -> int:
        """Messages sent to WebSocket clients since the start."""
        return self._messages_out_closed + sum(c.messages_out for c in self.connections())

    def connections(self) -> list[ConnectionStats]:
        """A snapshot of every open WebSocket connection, by id."""
        return [connection.stats() for connection in self._open()]

    def connections_after(self, after: int | None) -> Iterator[ConnectionStats]:
        """Snapshots of the open connections with an id past ``after`` (None: all), by id, each
        taken as it is read (a page of the ``connections`` request reads only what it shows)."""
        return (c.stats() for c in self._open() if after is None or c.id > after)

    @property
    def accepted_total(self) -> int:
        """Connections accepted since the start (what :func:`hived.memory.run_gc_sweeps`
        watches: a closed connection leaves garbage only a full collection frees)."""
        return self._accepted

    def stats(self) -> ServerStats:
        open_now = self._open()
        roles = Counter("unauthenticated" if c.token is None else c.token.role for c in open_now)
        return ServerStats(
            connections=len(open_now),
            by_role=dict(roles),
            accepted_total=self._accepted,
            websockets_total=self._websockets,
            tls=self._tls,
            listen=self._addresses,
            draining=self._draining,
        )

    # -- one connection ----------------------------------------------------------------------

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted stream to its end; never raises (but ``Cancelled``)."""
        self._accepted += 1
        peer = peer_name(stream)
        try:
            async with trio.open_nursery() as nursery:
                upgrade = await self._serve(stream, peer)
                if upgrade is not None and upgrade.channel == ECHO_PATH:
                    received, upgrade.received = upgrade.received, b""
                    await serve_echo(
                        stream,
                        received,
                        peer,
                        nursery,
                        max_message_bytes=self._config.server.max_message_bytes,
                        timeout_s=HEAD_TIMEOUT_S,
                        compression=self._config.server.compression == "deflate",
                    )
                elif upgrade is not None:
                    self._websockets_open += 1
                    try:
                        connection = await self._open_websocket(stream, upgrade, peer, nursery)
                        del upgrade  # not kept for as long as the connection is open
                        if connection is not None:
                            # Awaited here, not in a helper: an idle connection keeps every
                            # coroutine of this chain.
                            try:
                                await connection.run(nursery)
                            finally:
                                del self._connections[connection.id]
                                self._ended(connection)
                    finally:
                        self._websockets_open -= 1
                        if self._websockets_open == 0 and self.draining:
                            self._all_closed.set()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, routes.PeerGone) as group:
            log.debug("%s: connection lost: %s", peer, group.exceptions[0])
        except* Exception:
            log.exception("%s: connection failed", peer)
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.abc.Stream, peer: str) -> _Upgrade | None:
        """Read and answer a plain HTTP request, or return the checked upgrade it asks for."""
        received = None
        try:
            with trio.move_on_after(HEAD_TIMEOUT_S):
                received = await routes.read_head(stream)
        except HttpError as exc:
            await self._answer(stream, error_response(exc))
            return None
        if received is None:
            log.debug("%s: no complete request head; dropped", peer)
            return None
        head, rest = received
        request: Request | None = None
        try:
            request = parse_head(head)
            if request.path in CHANNELS:
                token = check_upgrade_request(
                    stream,
                    request,
                    peer,
                    config=self._config.server,
                    tokens=self._tokens,
                    draining=self._draining,
                )
                # The channel's constant, not the request's copy of it: a connection keeps it.
                channel = CHANNELS[CHANNELS.index(request.path)]
                return _Upgrade(channel, token, head + rest)
            if request.path == ECHO_PATH and self._echo:
                check_upgrade(request)
                return _Upgrade(ECHO_PATH, None, head + rest)
            answer = await self._route(stream, request, rest, peer)
        except HttpError as exc:
            head_only = request is not None and request.method == "HEAD"
            answer = error_response(exc, head_only=head_only)
        if answer is not None:
            await self._answer(stream, answer)
        return None

    async def _answer(self, stream: trio.abc.Stream, answer: bytes) -> None:
        await stream.send_all(answer)
        await routes.linger_close(stream)

    async def _route(
        self, stream: trio.abc.Stream, request: Request, rest: bytes, peer: str
    ) -> bytes | None:
        if request.path == METRICS_PATH and self.metrics is not None:
            open_ = self._config.server.metrics_open_on_loopback and is_loopback(peer)
            return routes.metrics(request, self._tokens, self.metrics, open_)
        if request.path == "/healthz":
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405, "/healthz answers GET", [("Allow", "GET, HEAD")])
            return routes.healthz(request, serving=not self._draining, version=self._version)
        if request.path == HOOKS_PATH:
            if request.method != "POST":
                raise HttpError(405, f"{HOOKS_PATH} answers POST", [("Allow", "POST")])
            return await routes.post_hook(
                stream,
                request,
                rest,
                tokens=self._tokens,
                max_bytes=self._config.server.max_message_bytes,
                sink=self._hook_sink,
                gate=self._admit_hook,
            )
        return await routes.static_file(request)

    def _admit_hook(self, token: TokenConfig) -> None:
        self._hook_gate.admit(token, self._config.hooks)

    async def _open_websocket(
        self, stream: trio.abc.Stream, upgrade: _Upgrade, peer: str, nursery: trio.Nursery
    ) -> Connection | None:
        """Complete the handshake (in this task, which then reads: :meth:`Connection.run`): the
        connection, registered in ``nursery`` (the connection's); None when the handshake
        failed."""
        server = self._config.server
        received, upgrade.received = upgrade.received, b""
        try:
            ws = await accept(
                None,
                stream,
                received,
                max_message_size=server.max_message_bytes,
                timeout_s=HEAD_TIMEOUT_S,
                compression=server.compression == "deflate",
                min_deflate_bytes=server.compression_min_bytes,
                subprotocols=True,
            )
        except WebSocketClosed as exc:
            log.debug("%s: WebSocket handshake failed: %s", peer, exc)
            return None
        finally:
            del received  # the head is the library's to replay, not this frame's to keep
        connection = Connection(
            next(self._ids),
            peer,
            upgrade.channel,
            ws,
            hub=self._hub,
            router=self._router,
            config=server,
            version=self._version,
            token=upgrade.token,
            lookup=self._lookup_token,
            heartbeat=self._heartbeat,
            node=self._config.cluster.node if self._config.cluster is not None else None,
        )
        self._websockets += 1
        self._connections[connection.id] = connection
        log.debug("connection %d: opened from %s on %s", connection.id, peer, upgrade.channel)
        if self.draining:  # drain() began during the handshake
            connection.request_close(CloseCode.GOING_AWAY, "daemon stopping")
        return connection

    def _lookup(self, secret: str) -> TokenConfig | None:
        return self._tokens.lookup(secret)

    def subscriber_of(self, caller: Caller) -> Subscriber:
        """The hub subscriber of the caller's connection (RequestError once it is closed)."""
        return self._own.connection_of(caller).subscriber
