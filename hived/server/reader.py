"""What a client sends on one WebSocket connection: rate-limited, authenticated, dispatched.

How it works (DESIGN §2): a connection's :class:`Reader` runs in the WebSocket library's own
reader task, which hands it each message as it is parsed
(:meth:`~hived.server.ws.WebSocket.deliver`: a task of our own for it would cost memory on
every idle connection). Each message takes a token from the reader's rate-limit bucket first
(:mod:`hived.core.limits`; two floats, no task): a client that sends more than
``rate_limit_burst`` messages at once, or more than ``rate_limit_per_s`` for long, is closed
with 4029 once the requests it sent before are answered. A connection whose upgrade carried no
token is then authenticated by its first message, a ``hello``
(:func:`~hived.core.protocol.check_hello` decides). After that, each text frame goes to the
connection's :class:`~hived.server.requests.Requests`, which parses it, checks the caller's
role and answers it — parse errors and refusals at once, requests through the
:class:`~hived.server.router.Router` in tasks of their own (a bounded number at a time, so a
slow ``session.stop`` does not stop the reading, and a client cannot start without bound).

What belongs to the connection — its token and welcome, the replies the sender writes, its
ending — the reader asks of it (:class:`Owner`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Final, Protocol

import trio

from hived.core.config import ServerConfig, TokenConfig
from hived.core.errors import ProtocolError
from hived.core.limits import FULL, take
from hived.core.protocol import MAX_HELLO_CHARS, Caller, CloseCode, check_hello, error_frame
from hived.core.wire import json_of_msgpack
from hived.server.requests import Requests
from hived.server.router import Router
from hived.server.ws import WebSocketClosed

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S: Final = 5.0
"""How long a close may take (finishing the send under way, the peer's closing handshake)
before the transport is simply closed."""


class Owner(Protocol):
    """The connection, as its reader sees it (a protocol: :mod:`hived.server.connection`
    imports this module)."""

    @property
    def id(self) -> int: ...

    @property
    def channel(self) -> str: ...

    @property
    def config(self) -> ServerConfig:
        """Read live: the server replaces it on reload."""

    @property
    def caller(self) -> Caller | None: ...

    @property
    def binary(self) -> bool:
        """The client asked for MessagePack: its binary messages are requests."""

    def request_close(self, code: int, reason: str) -> None: ...

    def reply(self, frame: str) -> None:
        """Queue a frame for the sender."""

    def authenticate(self, token: TokenConfig) -> None:
        """Serve the connection as ``token``'s; it calls :meth:`Reader.serve`."""

    def task_ended(self, name: str, exc: BaseException | None) -> None:
        """The reader (``name``) ended, with ``exc`` unless None: the connection ends."""


class Reader:
    """What ``connection``'s client sends: its handler, :meth:`receive`, and the state it
    keeps between messages; ``lookup`` finds the token of a secret sent in ``hello``. Every
    idle connection keeps one, hence the slots."""

    __slots__ = (
        "_answered",
        "_bucket",
        "_bucket_at",
        "_connection",
        "_lookup",
        "_reading_done",
        "_requests",
        "_unanswered",
        "bytes_in",
        "frames_in",
    )

    def __init__(self, connection: Owner, lookup: Callable[[str], TokenConfig | None]) -> None:
        self._connection = connection
        self._lookup = lookup
        self._requests: Requests | None = None
        """Its requests, from the moment it is authenticated."""
        self._reading_done = False
        """No more messages are handled: the library reads no more, or the reader failed."""
        self.frames_in = self.bytes_in = 0
        self._bucket = FULL
        """What the client may still send at once (:mod:`hived.core.limits`), at
        ``_bucket_at`` (trio's clock)."""
        self._bucket_at = 0.0
        self._unanswered = 0
        """Requests handed to ``_requests`` and not yet answered (each gets one answer)."""
        self._answered: trio.Event | None = None
        """Set when the last of them is answered, for a reader that waits for that (made only
        then)."""

    def serve(self, router: Router, nursery: trio.Nursery) -> None:
        """The connection is authenticated: from now on, run its requests through ``router``
        in ``nursery``."""
        connection = self._connection
        self._requests = Requests(connection.channel, router, nursery, self._answer)

    async def receive(self, message: str | bytes) -> None:
        """Handle one message (in the WebSocket library's reader task, which reads on once
        this returns; a busy request slot stops the reading). Each message takes its token
        first: a message over the rate limit is not handled at all."""
        if self._reading_done:
            return
        if not self._within_rate_limit():
            await self._rate_limited()
            return
        try:
            text = self._take(message)
            requests = self._requests
            if requests is None:
                self._hello(text)
            elif text is not None:
                caller = self._connection.caller
                assert caller is not None
                self._unanswered += 1
                await requests.dispatch(text, caller)
        except Exception as exc:
            self._reading_done = True
            self._connection.task_ended("reader", exc)

    @property
    def held_until(self) -> float:
        """When the reading last went on after waiting for a free request slot (``-math.inf``:
        it never waited; ``math.inf``: it waits now)."""
        requests = self._requests
        return -math.inf if requests is None else requests.held_until

    def received_all(self, closed: WebSocketClosed) -> None:
        """The library reads no more: the connection closed (by either side, or broke)."""
        self._reading_done = True
        self._connection.task_ended("reader", closed)

    def no_hello(self) -> None:
        """The sender's call: no ``hello`` came within ``auth_timeout_s``. Read no more, and
        ask for the close that says so."""
        connection = self._connection
        timeout_s = connection.config.auth_timeout_s
        log.info("connection %d: no hello within %g s", connection.id, timeout_s)
        self._reading_done = True
        connection.request_close(
            CloseCode.NOT_AUTHENTICATED, f"not authenticated: no hello within {timeout_s:g} s"
        )

    def _within_rate_limit(self) -> bool:
        """Take a token for the message just received; False when none is left (then the
        message is not handled). Every message counts, whatever it holds."""
        config = self._connection.config
        now = trio.current_time()
        left = take(
            self._bucket, self._bucket_at, now, config.rate_limit_per_s, config.rate_limit_burst
        )
        if left is None:
            return False
        self._bucket, self._bucket_at = left, now
        return True

    async def _rate_limited(self) -> None:
        """Read no more, and close with 4029 once the requests taken before are answered (for
        :data:`CLOSE_TIMEOUT_S` at most), so that the client learns which of them ran. The
        library reads nothing meanwhile: a flood waits in the socket."""
        self._reading_done = True
        config = self._connection.config
        reason = (
            f"rate limited: more than {config.rate_limit_burst} messages at once or "
            f"{config.rate_limit_per_s:g}/s; wait, then reconnect"
        )
        if self._unanswered:
            self._answered = trio.Event()
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await self._answered.wait()
        self._connection.request_close(CloseCode.RATE_LIMITED, reason)

    def _take(self, message: str | bytes) -> str | None:
        """A received message as JSON text (a MessagePack one turned into JSON); None (after
        answering) for a binary one that is not. Asks for 1009 and raises
        :class:`WebSocketClosed` on a frame too big."""
        self.frames_in += 1
        if isinstance(message, bytes):
            self.bytes_in += len(message)  # the library bounds it to max_message_bytes
            if self._connection.binary and (
                self._requests is not None or len(message) <= MAX_HELLO_CHARS
            ):
                try:
                    return json_of_msgpack(message)
                except ProtocolError as exc:
                    problem = error_frame(None, exc.code, exc.message)
            else:
                problem = error_frame(
                    None,
                    "bad_request",
                    "binary frames are not accepted: send JSON text, or ask for the "
                    "hived.v1.msgpack subprotocol",
                )
            if self._requests is not None:  # before hello, the caller closes with 4001 instead
                self._connection.reply(problem)
            return None
        size = len(message) if message.isascii() else len(message.encode())
        self.bytes_in += size
        limit = self._connection.config.max_message_bytes
        if size > limit:
            self._connection.request_close(
                CloseCode.TOO_BIG, f"a frame of {size} bytes is over {limit}"
            )
            raise WebSocketClosed(CloseCode.TOO_BIG, "frame too big")
        return message

    def _hello(self, text: str | None) -> None:
        """The first message: authenticate by ``hello``, or ask for the close that says why."""
        connection = self._connection
        outcome = check_hello(text, self._lookup, connection.channel)
        if outcome.token is None:
            log.info("connection %d: %s", connection.id, outcome.reason)
            self._reading_done = True
            connection.request_close(outcome.code, outcome.reason)
            return
        connection.authenticate(outcome.token)

    def _answer(self, frame: str) -> None:
        """Queue the answer to a request (each request handed to ``_requests`` gets one)."""
        self._connection.reply(frame)
        self._unanswered -= 1
        if not self._unanswered and self._answered is not None:
            self._answered.set()
