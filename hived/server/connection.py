"""One WebSocket connection: authentication, then reader, writer and heartbeat in one nursery.

How it works (DESIGN §2): :meth:`Connection.run` opens a nursery holding

- the **reader**: authenticates the connection by a first ``hello`` when the upgrade carried
  no token, then parses each frame, checks the caller's role and answers it — parse errors and
  refusals at once, requests through the :class:`~hived.server.router.Router` in tasks of their
  own (at most :data:`MAX_CONCURRENT_REQUESTS` at a time, so a slow ``session.stop`` does not
  stop the reading, and a client cannot start without bound);
- the **writer**: takes every reply waiting and every frame the hub queued for this connection
  and sends them as one text frame (a JSON array when there are several): one await per batch,
  never one per event;
- the **heartbeat**: a ping every ``heartbeat_interval_s``; no pong within
  ``heartbeat_timeout_s`` drops the connection;
- the **closer**: waits until something asks the connection to end (a task ended, the peer
  closed, an overflow, a kick, the daemon stopping), sends the close frame and waits for the
  peer's answer (bounded), closes the transport, and only then cancels the nursery — close
  first, then cancel, so that clients see the close code and not 1006.

Whatever ends first ends all. The transport is always closed on the way out, which also covers
a send cancelled half-way (its framing would be corrupt).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import trio

from hived.core.auth import may_open
from hived.core.config import ServerConfig, TokenConfig
from hived.core.errors import ProtocolError, RequestError
from hived.core.events import utc_timestamp
from hived.core.protocol import (
    ERROR_CODES,
    Caller,
    CloseCode,
    Hello,
    Request,
    close_reason,
    error_frame,
    forbidden_reason,
    parse_frame,
    result_frame,
    welcome_frame,
)
from hived.hub import Hub, Subscriber
from hived.server.router import Router
from hived.server.ws import WebSocket, WebSocketClosed

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S: Final = 5.0
"""How long a close may take (finishing the send under way, the peer's closing handshake)
before the transport is simply closed."""
LINGER_S: Final = 2.0
"""After a close without the peer's handshake (1009), how long what it still sends is drained
before the transport is closed."""
MAX_CONCURRENT_REQUESTS: Final = 16
"""Requests one connection may have running at once; the reader waits for a free slot."""
MAX_PENDING_REPLIES: Final = 1024
"""Replies waiting for the writer; past this the client is not reading: closed with 4008."""


@attrs.frozen
class ConnectionStats:
    """A snapshot of one connection, as the ``connections`` request lists it."""

    id: int
    peer: str
    """The client's address, ``host:port``."""
    channel: str
    """``/v1/ws`` or ``/v1/admin``."""
    token_name: str | None
    """The name of the token it authenticated with; None while it has not yet."""
    role: str | None
    since: str
    """When the WebSocket opened (ISO 8601, UTC)."""
    frames_in: int
    bytes_in: int
    frames_out: int
    """WebSocket frames sent; a frame may carry several messages."""
    messages_out: int
    bytes_out: int
    queue_depth: int
    """Frames the hub has queued for it that the writer has not sent yet."""
    subscriptions: tuple[str, ...]


@attrs.frozen
class _Ending:
    """Why the connection ends, and how: a close frame with ``code``, or an abort."""

    code: int
    reason: str
    abort: bool = False
    closed: bool = False
    """The WebSocket is closed already (by the peer, or by the library): no frame to send."""


class Connection:
    """An accepted WebSocket on ``channel``, authenticated by ``token`` or (when None) by hello.

    ``lookup`` finds the token of a secret sent in ``hello``; ``config`` is read live (the
    server replaces it on reload).
    """

    def __init__(
        self,
        id: int,
        peer: str,
        channel: str,
        ws: WebSocket,
        *,
        hub: Hub,
        router: Router,
        config: ServerConfig,
        version: str,
        token: TokenConfig | None,
        lookup: Callable[[str], TokenConfig | None],
    ) -> None:
        self.id: Final = id
        self.peer: Final = peer
        self.channel: Final = channel
        self.config = config
        self._ws = ws
        self._hub = hub
        self._router = router
        self._version = version
        self._token = token
        self._lookup = lookup
        self._since = utc_timestamp()
        self._sub: Subscriber | None = None
        self._replies: list[str] = []
        self._wake: trio.CancelScope | None = None
        self._slots = trio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._ending: _Ending | None = None
        self._ending_set = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._frames_in = self._bytes_in = 0
        self._frames_out = self._messages_out = self._bytes_out = 0

    @property
    def token(self) -> TokenConfig | None:
        """The token it authenticated with; None until then."""
        return self._token

    @property
    def caller(self) -> Caller | None:
        token = self._token
        return None if token is None else Caller(self.id, token.name, token.role)

    @property
    def subscriber(self) -> Subscriber:
        """Its hub subscriber (requests are only handled once it is authenticated)."""
        if self._sub is None:
            raise RuntimeError(f"connection {self.id} is not authenticated")
        return self._sub

    def stats(self) -> ConnectionStats:
        token, sub = self._token, self._sub
        return ConnectionStats(
            id=self.id,
            peer=self.peer,
            channel=self.channel,
            token_name=None if token is None else token.name,
            role=None if token is None else token.role,
            since=self._since,
            frames_in=self._frames_in,
            bytes_in=self._bytes_in,
            frames_out=self._frames_out,
            messages_out=self._messages_out,
            bytes_out=self._bytes_out,
            queue_depth=0 if sub is None else sub.depth,
            subscriptions=() if sub is None else tuple(sorted(sub.topics)),
        )

    def request_close(self, code: int, reason: str) -> None:
        """Ask the connection to close with ``code``; the first request to end it wins."""
        self._end(_Ending(code, reason))

    def request_abort(self, reason: str) -> None:
        """Ask the connection to drop at once, without a close frame (the peer is gone)."""
        self._end(_Ending(CloseCode.INTERNAL, reason, abort=True))

    def update_token(self, token: TokenConfig | None) -> None:
        """Apply a reload: its token is gone (None), or its role may have changed."""
        if self._token is None:
            return
        if token is None:
            self.request_close(CloseCode.NOT_AUTHENTICATED, "token removed from the config")
        elif not may_open(self.channel, token.role):
            self._token = token
            self.request_close(
                CloseCode.ROLE_TOO_LOW, f"token's role is now {token.role}: too low here"
            )
        else:
            self._token = token

    def _end(self, ending: _Ending) -> None:
        if self._ending is None:
            self._ending = ending
            self._ending_set.set()

    async def run(self) -> None:
        """Serve the connection until it ends; the transport is closed on return."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._run_closer, nursery.cancel_scope)
                nursery.start_soon(self._guard, "reader", self._run_reader)
                nursery.start_soon(self._guard, "writer", self._run_writer)
                nursery.start_soon(self._guard, "heartbeat", self._run_heartbeat)
        finally:
            if self._sub is not None:
                self._hub.remove(self._sub)
            await self._ws.abort()
            ending = self._ending
            if ending is not None and ending.abort:
                log.info("connection %d: dropped: %s", self.id, ending.reason)
            elif ending is not None:
                log.info("connection %d: closed (%d) %s", self.id, ending.code, ending.reason)

    async def _guard(self, name: str, task: Callable[[], Awaitable[None]]) -> None:
        """Run one of the three tasks; however it ends, the connection ends."""
        try:
            await task()
        except WebSocketClosed as exc:
            code = CloseCode.NORMAL if exc.code is None else exc.code
            self._end(_Ending(code, exc.reason or "", closed=True))
        except Exception:
            log.exception("connection %d: the %s failed", self.id, name)
            self.request_close(CloseCode.INTERNAL, "internal error")
        finally:
            self.request_close(CloseCode.NORMAL, f"{name} ended")

    async def _run_closer(self, cancel_scope: trio.CancelScope) -> None:
        await self._ending_set.wait()
        ending = self._ending
        assert ending is not None
        if ending.closed:
            await self._ws.finish(LINGER_S)
        elif not ending.abort:
            reason = close_reason(ending.reason)
            if not await self._ws.close(ending.code, reason, CLOSE_TIMEOUT_S):
                log.info(
                    "connection %d: no closing handshake within %g s", self.id, CLOSE_TIMEOUT_S
                )
        await self._ws.abort()
        cancel_scope.cancel()

    # -- reader ------------------------------------------------------------------------------

    async def _run_reader(self) -> None:
        if self._token is None:
            token = await self._authenticate()
            if token is None:
                return
            self._token = token
        self._start_serving()
        while True:
            text = await self._receive()
            if text is not None:
                await self._dispatch(text)

    async def _receive(self) -> str | None:
        """The next text frame; None (after answering) for a binary one. Raises
        :class:`WebSocketClosed` when the connection closed; asks for 1009 on a frame too big."""
        message = await self._ws.receive()
        self._frames_in += 1
        if isinstance(message, bytes):
            self._bytes_in += len(message)
            self._reply(
                error_frame(None, "bad_request", "binary frames are not accepted: send JSON text")
            )
            return None
        size = len(message) if message.isascii() else len(message.encode())
        self._bytes_in += size
        limit = self.config.max_message_bytes
        if size > limit:
            self.request_close(CloseCode.TOO_BIG, f"a frame of {size} bytes is over {limit}")
            raise WebSocketClosed(CloseCode.TOO_BIG, "frame too big")
        return message

    async def _authenticate(self) -> TokenConfig | None:
        """Wait for ``hello``; its token, or None after asking for the close that says why."""
        timeout_s = self.config.auth_timeout_s
        with trio.move_on_after(timeout_s):
            text = await self._receive()
            code, reason, token = self._check_hello(text)
            if token is not None:
                return token
            log.info("connection %d: %s", self.id, reason)
            self.request_close(code, reason)
            return None
        log.info("connection %d: no hello within %g s", self.id, timeout_s)
        self.request_close(
            CloseCode.NOT_AUTHENTICATED, f"not authenticated: no hello within {timeout_s:g} s"
        )
        return None

    def _check_hello(self, text: str | None) -> tuple[int, str, TokenConfig | None]:
        first = 'authenticate first: send {"type": "hello", "token": "..."}'
        if text is None:
            return CloseCode.NOT_AUTHENTICATED, first, None
        try:
            request = parse_frame(text)
        except ProtocolError:
            return CloseCode.NOT_AUTHENTICATED, first, None
        if not isinstance(request, Hello):
            return CloseCode.NOT_AUTHENTICATED, first, None
        token = self._lookup(request.token)
        if token is None:
            return CloseCode.NOT_AUTHENTICATED, "not authenticated: unknown token", None
        if not may_open(self.channel, token.role):
            return CloseCode.ROLE_TOO_LOW, f"role {token.role} may not open {self.channel}", None
        return CloseCode.NORMAL, "", token

    def _start_serving(self) -> None:
        token = self._token
        assert token is not None
        assert self._nursery is not None
        self._sub = self._hub.subscriber(self.config.subscriber_queue)
        self._nursery.start_soon(self._watch_overflow, self._sub)
        log.info(
            "connection %d: %s authenticated as %s (%s) on %s",
            self.id,
            self.peer,
            token.name,
            token.role,
            self.channel,
        )
        self._reply(
            welcome_frame(token.role, self.config.heartbeat_interval_s, self._version, self.id)
        )

    async def _dispatch(self, text: str) -> None:
        try:
            request = parse_frame(text)
        except ProtocolError as exc:
            # Never log the frame itself: it may hold a secret.
            log.debug("connection %d: bad frame: %s", self.id, exc.code)
            request_id = exc.request_id if isinstance(exc.request_id, int | str) else None
            self._reply(error_frame(request_id, exc.code, exc.message))
            return
        caller = self.caller
        assert caller is not None
        assert self._nursery is not None
        if isinstance(request, Hello):
            message = f"already authenticated as {caller.token_name}"
            self._reply(error_frame(request.id, "conflict", message))
            return
        refused = forbidden_reason(request.type, caller.role, self.channel)
        if refused is not None:
            self._reply(error_frame(request.id, "forbidden", refused))
            return
        await self._slots.acquire()
        self._nursery.start_soon(self._run_request, request, caller)

    async def _run_request(self, request: Request, caller: Caller) -> None:
        try:
            result = await self._router.handle(request, caller)
            frame = result_frame(request.id, result)
        except RequestError as exc:
            code = exc.code if exc.code in ERROR_CODES else "internal"
            frame = error_frame(request.id, code, exc.message)
        except Exception:
            log.exception("connection %d: %s failed", self.id, request.type)
            message = f"{request.type} failed inside hived (the daemon's log has the details)"
            frame = error_frame(request.id, "internal", message)
        finally:
            self._slots.release()
        self._reply(frame)

    # -- writer ------------------------------------------------------------------------------

    def _reply(self, frame: str) -> None:
        """Queue a frame for the writer (which sends replies before queued events)."""
        if len(self._replies) >= MAX_PENDING_REPLIES:
            self.request_close(CloseCode.TOO_SLOW, "too slow: replies are not being read")
            return
        self._replies.append(frame)
        if self._wake is not None:
            self._wake.cancel()

    async def _next_batch(self) -> list[str]:
        """Wait for replies or hub frames, and take everything there is of both."""
        events: list[str] = []
        if not self._replies:
            with trio.CancelScope() as self._wake:
                try:
                    if self._sub is None:
                        await trio.sleep_forever()
                    else:
                        events = await self._sub.receive_batch()
                finally:
                    self._wake = None
        replies, self._replies = self._replies, []
        if not events and self._sub is not None and self._sub.depth:
            events = await self._sub.receive_batch()
        return replies + events if replies else events

    async def _run_writer(self) -> None:
        while True:
            frames = await self._next_batch()
            if not frames:
                continue
            text = frames[0] if len(frames) == 1 else "[" + ",".join(frames) + "]"
            await self._ws.send(text)
            self._frames_out += 1
            self._messages_out += len(frames)
            self._bytes_out += len(text) if text.isascii() else len(text.encode())

    async def _watch_overflow(self, sub: Subscriber) -> None:
        await sub.overflowed.wait()
        self.request_close(
            CloseCode.TOO_SLOW,
            f"too slow: more than {sub.bound} events queued; reconnect and resume with since",
        )

    # -- heartbeat ---------------------------------------------------------------------------

    async def _run_heartbeat(self) -> None:
        while True:
            await trio.sleep(self.config.heartbeat_interval_s)
            timeout_s = self.config.heartbeat_timeout_s
            if not await self._ws.ping(timeout_s):
                self.request_abort(f"no pong within {timeout_s:g} s")
                return
