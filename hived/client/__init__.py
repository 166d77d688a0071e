"""The trio client library: requests with awaitable replies, subscriptions, and reconnect.

How it works: :func:`connect` opens a nursery that keeps one WebSocket to hived alive. A reader
task routes each incoming message: a ``result``/``error`` to the request waiting on its ``id``;
an ``event`` to the subscriptions of its topic. When the connection drops (network, daemon
restart, close 1001 or 4008) the client reconnects with exponential backoff and jitter, and
restores what it had told hived: the session it watches (:meth:`Client.watch`, which hived
forgets with the connection) and every subscription, with ``since`` set to the last ``seq``
handed to the caller, so the caller sees every event once, in order: replay covers the gap,
and anything at or below the last seq seen (a replay overlapping what already arrived) is
dropped. Events of a topic that arrive while a subscribe to it is in flight are held until its
result, which says where the topic stands: a ``last_seq`` below what a subscription saw means
the daemon lost events it had sent live (a SIGKILL inside its sync window) and numbers new ones
from there, so the subscription resumes from that ``last_seq``, with ``recovered`` false.

Requests in flight when the connection drops fail with :class:`ConnectionLost` (they may or
may not have run). Some ends are final: an authentication refusal (HTTP 401/403, close
4001/4003) raises :class:`AuthError`, and a close with 1000 (hived closed the connection on
purpose, e.g. ``connection.kick``) raises :class:`Closed`, instead of reconnecting. A final
error is raised by every waiting and later request, and by every subscription once its
buffered events are read. Delivery never waits for the caller: a subscription whose buffer is
full ends with :class:`FellBehind`, and the rest of the connection goes on.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final

import attrs
import trio
import trio_websocket

from hived.client.errors import (
    AuthError,
    ClientError,
    Closed,
    ConnectError,
    ConnectionLost,
    FellBehind,
    RemoteError,
    describe,
    raise_for_close,
)
from hived.client.pages import request_all
from hived.client.subscription import SUBSCRIPTION_BUFFER, Subscription
from hived.client.transport import CLOSE_TIMEOUT_S, CONNECT_TIMEOUT_S, encode, open_websocket
from hived.core.errors import ProtocolError
from hived.core.protocol import parse_server_frame

__all__ = [
    "AuthError",
    "Client",
    "ClientError",
    "Closed",
    "ConnectError",
    "ConnectionLost",
    "FellBehind",
    "RemoteError",
    "Subscription",
    "backoff_s",
    "connect",
]

log = logging.getLogger(__name__)

BACKOFF_FIRST_S: Final = 0.2
BACKOFF_MAX_S: Final = 10.0
STABLE_S: Final = 10.0
"""A connection that lived this long starts the backoff afresh; one that ended sooner (a
server closing it again and again, say with 4029) goes on where the backoff was."""


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): exponential, capped, with jitter."""
    base = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * math.pow(2, attempt))
    return base * (0.5 + (rng or random).random() / 2)


@attrs.define(eq=False)
class _Hold:
    """Events of a topic kept back while subscribes to it are in flight."""

    depth: int = 0
    events: list[dict[str, Any]] | None = attrs.field(factory=list)
    """None once released early (a long replay ahead of its result: see ``_route``)."""


@attrs.define(eq=False)
class _Pending:
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: dict[str, Any] | None = None
    error: BaseException | None = None


@attrs.define(eq=False)
class Client:
    """One logical connection to hived; use :func:`connect` to make one."""

    url: str
    token: str | None
    reconnect: bool
    ssl_context: ssl.SSLContext | None
    on_resume: Callable[[str, int], None] | None = None
    """Called with a topic and the seq it resumed from, after each resubscribe on a
    reconnect (hivectl tells its user); it must not block."""
    welcome: dict[str, Any] = attrs.field(factory=dict)
    _ws: trio_websocket.WebSocketConnection | None = None
    _connected: trio.Event = attrs.field(factory=trio.Event)
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))
    _pending: dict[int, _Pending] = attrs.field(factory=dict)
    _subscriptions: dict[str, list[Subscription]] = attrs.field(factory=dict)
    _holds: dict[str, _Hold] = attrs.field(factory=dict)
    _fatal: BaseException | None = None
    _nursery: trio.Nursery | None = None
    _reading: trio.CancelScope | None = None
    """The read loop's scope while a connection is up: cancelled to close it gracefully."""
    _closing: bool = False
    _watching: tuple[str, bool] | None = None
    """The session id this client watches and whether with focus (restored on reconnect)."""

    async def request(self, type_: str, **fields: Any) -> Any:
        """Send one request and wait for its ``result`` (raise :class:`RemoteError` on error)."""
        ws = await self._connection()
        request_id = next(self._ids)
        pending = self._pending[request_id] = _Pending()
        message = {"type": type_, "id": request_id}
        message.update({k: v for k, v in fields.items() if v is not None})
        try:
            await ws.send_message(encode(ws, message))
        except trio_websocket.ConnectionClosed:
            self._pending.pop(request_id, None)
            raise ConnectionLost(
                f"connection to {self.url} closed before {type_} was sent"
            ) from None
        try:
            await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if pending.error is not None:
            raise pending.error
        assert pending.reply is not None
        if pending.reply["type"] == "error":
            raise RemoteError(str(pending.reply.get("code")), str(pending.reply.get("message")))
        return pending.reply.get("result")

    async def request_all(
        self, type_: str, key: str, *, most: int | None = None, **fields: Any
    ) -> list[dict[str, Any]]:
        """Every ``key`` item of a paged list request (``sessions``, ``connections``,
        ``notifications``, ``search``), following each reply's ``next``: at most ``most``."""
        return await request_all(self.request, type_, key, most=most, **fields)

    async def subscribe(self, topic: str, since: int | None = None) -> Subscription:
        """Subscribe to ``topic``; with ``since``, every stored event after it comes first."""
        subscription = Subscription(topic, since)
        self._subscriptions.setdefault(topic, []).append(subscription)
        try:
            with self._holding(topic):
                result = await self.request("subscribe", topic=topic, since=since)
                subscription.epoch = _epoch(result)
                if subscription.last_seq is None:
                    subscription.last_seq = int(result.get("last_seq", 0))
                self._took_effect(topic, result, [subscription])
        except BaseException:
            self._forget(subscription)
            raise
        return subscription

    async def watch(self, session: str | None, *, focused: bool = True) -> Any:
        """Tell hived which session the person behind this client looks at (None: none).

        Kept across reconnects: hived ends a watch with its connection, so each new connection
        says it again (for the session the first answer resolved ``session`` to).
        """
        result = await self.request("watch", session=session, focused=focused)
        watched = result.get("session") if isinstance(result, dict) else None
        self._watching = (watched, focused) if isinstance(watched, str) else None
        return result

    async def unsubscribe(self, subscription: Subscription) -> None:
        """Stop a subscription (and tell hived once the topic has no other one here)."""
        self._forget(subscription)
        if not self._subscriptions.get(subscription.topic):
            await self.request("unsubscribe", topic=subscription.topic)

    def _forget(self, subscription: Subscription, error: BaseException | None = None) -> None:
        subscriptions = self._subscriptions.get(subscription.topic, [])
        if subscription in subscriptions:
            subscriptions.remove(subscription)
        if not subscriptions:
            self._subscriptions.pop(subscription.topic, None)
        subscription._end(error)

    @contextmanager
    def _holding(self, topic: str) -> Iterator[None]:
        """Hold the topic's events while a subscribe to it is in flight; deliver them after.

        Its result may lower a subscription's ``last_seq`` (see ``_took_effect``); an event
        delivered before that would be taken for one already seen.
        """
        hold = self._holds.setdefault(topic, _Hold())
        hold.depth += 1
        try:
            yield
        finally:
            hold.depth -= 1
            if hold.depth == 0:
                del self._holds[topic]
                for event in hold.events or ():
                    self._dispatch(topic, event)

    def _took_effect(self, topic: str, result: Any, resumed: Sequence[Subscription]) -> None:
        """Apply a subscribe result: ``recovered`` to the subscriptions it resumed, and the
        topic's ``last_seq`` to every subscription that saw more than the daemon now has."""
        recovered = bool(result.get("recovered", True))
        for subscription in resumed:
            subscription.recovered &= recovered
            subscription.epoch = _epoch(result)
        last_seq = result.get("last_seq")
        if not isinstance(last_seq, int):
            return
        if result.get("reset") is True:
            # What we saw after the daemon's last kept event was lost in a crash and its seqs
            # handed out again: go on from where the daemon is.
            for subscription in resumed:
                if subscription.last_seq is not None and subscription.last_seq != last_seq:
                    log.warning(
                        "%s: the events after the last kept one were lost in a crash of hived;"
                        " going on from %d",
                        topic,
                        last_seq,
                    )
                subscription.last_seq = last_seq
                subscription.recovered = False
            return
        for subscription in self._subscriptions.get(topic, ()):
            if subscription.last_seq is not None and subscription.last_seq > last_seq:
                log.warning(
                    "%s: hived is at seq %d, below the %d seen: it lost events; going on from %d",
                    topic,
                    last_seq,
                    subscription.last_seq,
                    last_seq,
                )
                subscription.last_seq = last_seq
                subscription.recovered = False

    async def _connection(self) -> trio_websocket.WebSocketConnection:
        while True:
            if self._fatal is not None:
                raise self._fatal
            if self._closing:
                raise ConnectionLost(f"the client of {self.url} is closing")
            if self._ws is not None and not self._ws.closed:
                return self._ws
            await self._connected.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connection alive until cancelled; ``started`` after the first welcome.

        A failure before the first welcome is raised; after it, a final failure (auth refused,
        a close with 1000, or a drop with ``reconnect`` off) is handed to every waiting and
        later request, and to every subscription, instead.
        """
        attempt = 0
        first = True
        while True:
            welcomed_at: float | None = None
            try:
                async with open_websocket(self.url, self.token, self.ssl_context) as ws:
                    self.welcome = await self._read_welcome(ws)
                    welcomed_at = trio.current_time()
                    self._ws = ws
                    self._connected.set()
                    if first:
                        first = False
                        task_status.started()
                    elif self._nursery is not None:
                        self._nursery.start_soon(self._restore)
                    with trio.CancelScope() as self._reading:
                        await self._read_loop(ws)
                    if self._closing:
                        return  # leaving _open closes the WebSocket, its reader still running
            except (ClientError, trio_websocket.ConnectionClosed, OSError) as exc:
                reason = describe(exc)
                if first or not self.reconnect or isinstance(exc, AuthError | Closed):
                    error = exc if isinstance(exc, ClientError) else ConnectionLost(reason)
                    self._give_up(error)
                    if first:
                        raise error from None
                    return
                log.info("connection to %s lost (%s); reconnecting", self.url, reason)
            finally:
                self._ws = None
                self._reading = None
                self._connected = trio.Event()
                if self._fatal is None:
                    self._fail_pending(ConnectionLost(f"connection to {self.url} lost"))
            if welcomed_at is not None and trio.current_time() - welcomed_at >= STABLE_S:
                attempt = 0
            await trio.sleep(backoff_s(attempt))
            attempt += 1

    async def _read_welcome(self, ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                text = await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise_for_close(exc)
            raise
        except trio.TooSlowError:
            raise ConnectError(f"{self.url}: no welcome from the server") from None
        messages = parse_server_frame(text)
        if messages[0]["type"] != "welcome":
            raise ConnectError(f"{self.url}: expected a welcome, got {messages[0]['type']!r}")
        return messages[0]

    async def _restore(self) -> None:
        """Watch and subscribe again after a reconnect; runs in the client's nursery, so
        never raises."""
        await self._rewatch()
        await self._resubscribe()

    async def _rewatch(self) -> None:
        if self._watching is None:
            return
        session, focused = self._watching
        try:
            await self.request("watch", session=session, focused=focused)
        except RemoteError as exc:
            log.warning("watching %s again failed: %s", session, exc)
            self._watching = None
        except ClientError as exc:
            log.info("watching %s again failed: %s", session, exc)

    async def _resubscribe(self) -> None:
        for topic, subscriptions in list(self._subscriptions.items()):
            resumed = [s for s in subscriptions if s.last_seq is not None]
            if not resumed:
                continue  # its subscribe() is still waiting, and fails with ConnectionLost
            oldest = min(resumed, key=lambda s: s.last_seq or 0)
            fields: dict[str, Any] = {"topic": topic, "since": oldest.last_seq}
            if oldest.epoch is not None:
                fields["epoch"] = oldest.epoch
            try:
                with self._holding(topic):
                    result = await self.request("subscribe", **fields)
                    self._took_effect(topic, result, resumed)
                if self.on_resume is not None:
                    # Where it goes on from: lowered, or reset, by the result.
                    self.on_resume(topic, oldest.last_seq if oldest.last_seq is not None else 0)
            except RemoteError as exc:
                log.warning("resubscribing to %s failed: %s", topic, exc)
                for subscription in resumed:
                    self._forget(subscription, exc)
            except ClientError as exc:
                # Lost again (the next connection resubscribes), or a final error that
                # run() hands to every subscription.
                log.info("resubscribing to %s failed: %s", topic, exc)

    async def _read_loop(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            try:
                text = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise_for_close(exc)
                raise
            try:
                messages = parse_server_frame(text)
            except ProtocolError as exc:
                log.warning("ignoring a bad frame from %s: %s", self.url, exc)
                continue
            for message in messages:
                self._route(message)

    def _route(self, message: dict[str, Any]) -> None:
        """Hand one message on; never waits, so that no caller can stall the connection."""
        kind = message["type"]
        if kind == "event":
            topic = str(message.get("topic"))
            hold = self._holds.get(topic)
            if hold is None or hold.events is None:
                self._dispatch(topic, message)
                return
            hold.events.append(message)
            if len(hold.events) >= SUBSCRIPTION_BUFFER:
                # A replay this long is no seq reset (that replays nothing): deliver it now
                # rather than keep it all in memory until its result.
                held, hold.events = hold.events, None
                for event in held:
                    self._dispatch(topic, event)
        elif kind in ("result", "error"):
            request_id = message.get("id")
            pending = self._pending.get(request_id) if isinstance(request_id, int) else None
            if pending is not None:
                pending.reply = message
                pending.done.set()
            elif kind == "error":
                log.warning("hived: %s: %r", message.get("code"), message.get("message"))

    def _dispatch(self, topic: str, event: dict[str, Any]) -> None:
        for subscription in list(self._subscriptions.get(topic, ())):
            if not subscription._deliver(event):
                log.info("%s", subscription.error)
                self._forget(subscription)

    def _stop(self) -> bool:
        """Start closing; True if the connection is up and now closes gracefully (with 1000)."""
        self._closing = True
        if self._reading is None:
            return False
        self._reading.cancel()
        return True

    def _fail_pending(self, error: BaseException) -> None:
        """Fail the requests still waiting; one whose reply arrived keeps it."""
        for pending in self._pending.values():
            if not pending.done.is_set():
                pending.error = error
                pending.done.set()

    def _give_up(self, error: BaseException | None) -> None:
        """End the client: ``error`` to every request and subscription (None: end quietly)."""
        if error is not None:
            self._fatal = error
            self._fail_pending(error)
            self._connected.set()
        for subscriptions in list(self._subscriptions.values()):
            for subscription in list(subscriptions):
                self._forget(subscription, error)


@asynccontextmanager
async def connect(
    url: str,
    token: str | None,
    *,
    reconnect: bool = True,
    ssl_context: ssl.SSLContext | None = None,
    on_resume: Callable[[str, int], None] | None = None,
) -> AsyncIterator[Client]:
    """Connect to hived (``ws://host:port/v1/ws`` or ``/v1/admin``) and keep the connection.

    Raises :class:`ConnectError` or :class:`AuthError` when the first connection fails; after
    that, drops are repaired in the background when ``reconnect`` is true. Leaving the block
    ends every subscription still open (quietly). ``on_resume(topic, seq)`` is told of each
    subscription taken up again after a reconnect.
    """
    client = Client(url, token, reconnect, ssl_context, on_resume)
    # Errors are re-raised outside the nursery, so that callers catch AuthError, RemoteError
    # and friends themselves rather than an ExceptionGroup around them.
    raised: BaseException | None = None
    async with trio.open_nursery() as nursery:
        client._nursery = nursery
        try:
            await nursery.start(client.run)
        except BaseException as exc:
            raised = exc
        else:
            try:
                yield client
            except BaseException as exc:
                raised = exc
            finally:
                if client._stop():
                    # Let run() close the connection with 1000 (an abrupt end would cost the
                    # close timeout: the WebSocket's reader would be cancelled with it).
                    nursery.cancel_scope.deadline = trio.current_time() + CLOSE_TIMEOUT_S
                else:
                    nursery.cancel_scope.cancel()
    client._give_up(None)
    if raised is not None:
        raise raised


def _epoch(result: Any) -> int | None:
    """The daemon run a subscribe result came from (None from a daemon that does not say)."""
    epoch = result.get("epoch") if isinstance(result, dict) else None
    return epoch if isinstance(epoch, int) else None
