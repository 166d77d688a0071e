"""One WebSocket connection: authentication, then a reader and a sender in one nursery.

How it works (DESIGN §2): :meth:`Connection.run` serves the connection in its nursery with

- the **reader** (:class:`~hived.server.reader.Reader`, in :mod:`hived.server.reader`), which
  runs in the WebSocket library's reader, itself run in :meth:`run`'s own task: it
  rate-limits what the client sends, authenticates the connection by a first ``hello`` when
  the upgrade carried no token, then hands each frame to the connection's requests;
- the **sender** (:meth:`_run_sender`), a task of the nursery: it waits in the hub
  (:meth:`~hived.hub.Subscriber.receive_batch`) and sends every frame queued for this
  connection as one text frame (a JSON array when there are several): one await per batch,
  never one per event. Replies and pings wake it too (:meth:`~hived.hub.Subscriber.wake`), and
  go first. When it has nothing to send it *parks* — its task ends, and the hub starts it
  again with the next publish, reply, ping or ending (:meth:`~hived.hub.Subscriber.park`) —
  at once if the hub has not fed it since it started, else once the heartbeat finds the
  connection quiet for :data:`SENDER_PARK_CHECK_S`, so that a steady flow of events keeps
  it. It runs until something asks the connection to end (the peer closed, no ``hello`` in
  time, the hub overflowed the queue, the rate limit, a kick, a missed pong, the daemon
  stopping, the reader failed); then it sends the close frame and waits for the peer's answer
  (bounded), closes the transport, and only then cancels the nursery — close first, then
  cancel, so that clients see the close code and not 1006.

Why one task sends everything, and parks: a writer apart from the task that closes, or a
sender waiting on every idle connection, would cost each a task's memory (issue 18: an idle
connection is one task, ~2 KiB less). Each frame is written whole under the transport's send
lock (:class:`~hived.server.ws.WebSocket`), which the library's own pongs and close frames
take too.

The **heartbeat** is the server's (:mod:`hived.server.heartbeat`, one task for every
connection): it calls :meth:`Connection.beat`, which asks the sender for a ping every
``heartbeat_interval_s``, drops the connection when no pong came within
``heartbeat_timeout_s`` — of the ping being written, and of the reader reading on, never
counting the time hived itself did not read (:mod:`hived.core.pongs`) —, and parks a sender
that sent nothing for a parking check. A dropped client gets a close frame (1011, the reason)
when nothing is being sent to it, but no wait for its answer.

Whatever ends first ends all. The transport is always closed on the way out, which also covers
a send cancelled half-way (its framing would be corrupt). An idle connection is one task: the
listener's, which runs :meth:`run`, reading.
Its statistics are :class:`~hived.server.stats.ConnectionStats`.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from itertools import accumulate, repeat
from operator import add
from typing import Final

import attrs
import trio

from hived.core.auth import may_open
from hived.core.config import ServerConfig, TokenConfig
from hived.core.events import utc_timestamp
from hived.core.pongs import Missed, check_pong
from hived.core.protocol import Caller, CloseCode, close_reason, welcome_frame
from hived.hub import Hub, Subscriber
from hived.server.heartbeat import Heartbeat
from hived.server.reader import CLOSE_TIMEOUT_S, Reader
from hived.server.router import Router
from hived.server.stats import SUBSCRIPTIONS_SHOWN, ConnectionStats
from hived.server.ws import Pong, WebSocket, WebSocketClosed

log = logging.getLogger(__name__)

LINGER_S: Final = 2.0
"""After a close without the peer's handshake (1009), how long what it still sends is drained
before the transport is closed."""
SENDER_PARK_CHECK_S: Final = 2.0
"""How often the heartbeat looks whether a connection sent anything: a sender that waited
through a whole period with nothing sent parks (its task ends until the hub needs it)."""
SENDER_TASK_NAME: Final = "websocket sender"
"""Named once: a name trio makes up is a string per task."""
CLOSE_NOW_S: Final = 1.0
"""How long the close frame to a client that stopped answering pings may take to go out (the
peer is not waited for)."""
MAX_PENDING_REPLIES: Final = 1024
"""Replies waiting for the sender; past this the client is not reading: closed with 4008. They
are bounded in bytes too, by ``server.subscriber_queue_bytes`` (a page of events is up to
256 KiB)."""


def frame_batches(frames: list[str], max_bytes: int) -> Iterator[list[str]]:
    """``frames`` in order, cut into runs whose JSON array (brackets and commas counted) is at
    most ``max_bytes`` bytes of UTF-8; a frame that alone is larger is a run of its own.

    Sizes are summed and the cuts found in C (``accumulate``, ``bisect``): a burst's batch is
    thousands of frames, and a Python loop over them was a tenth of a fan-out's time.
    """
    if all(map(str.isascii, frames)):
        if sum(map(len, frames)) + len(frames) + 1 <= max_bytes:
            yield frames
            return
        sizes = map(len, frames)
    else:
        sizes = map(len, map(str.encode, frames))
    ends = list(accumulate(map(add, sizes, repeat(1))))
    # ends[i]: the bytes of frames[:i + 1] with a comma each; a run frames[a:b] as an array
    # is ends[b - 1] - ends[a - 1] + 1 bytes.
    start = 0
    while start < len(frames):
        base = ends[start - 1] if start else 0
        stop = max(bisect_right(ends, base + max_bytes - 1, start), start + 1)
        yield frames[start:stop]
        start = stop


SIZE_CACHE_MAX_CHARS: Final = 65_536
"""Longer texts are batches of one connection's own: never counted twice."""


class _LastSize:
    """The UTF-8 size of the text counted last: a fan-out counts one ``str`` object for every
    subscriber, and text that is not ASCII would be encoded again for each."""

    __slots__ = ("size", "text")

    def __init__(self) -> None:
        self.text: str | None = None
        self.size = 0


_last_size = _LastSize()


def _utf8_size(text: str) -> int:
    last = _last_size
    if text is last.text:
        return last.size
    size = len(text.encode())
    if len(text) <= SIZE_CACHE_MAX_CHARS:
        last.text, last.size = text, size
    return size


@attrs.frozen
class _Ending:
    """Why the connection ends, and how: a close frame with ``code``, or an abort."""

    code: int
    reason: str
    abort: bool = False
    closed: bool = False
    """The WebSocket is closed already (by the peer, or by the library): no frame to send."""
    answer: bool = True
    """Wait for the peer's closing handshake (not for a peer that stopped answering pings)."""


class Connection:
    """An accepted WebSocket on ``channel``, authenticated by ``token`` or (when None) by hello.

    ``lookup`` finds the token of a secret sent in ``hello``; ``config`` is read live (the
    server replaces it on reload).
    """

    __slots__ = (
        "__weakref__",
        "_beat_at",
        "_bytes_out",
        "_ending",
        "_fed",
        "_frames_out",
        "_heartbeat",
        "_hub",
        "_idle",
        "_messages_out",
        "_node",
        "_nursery",
        "_park_asked",
        "_park_at",
        "_ping_due",
        "_pinged_at",
        "_pong",
        "_quiet_mark",
        "_reader",
        "_replies",
        "_replies_bytes",
        "_router",
        "_serving",
        "_since",
        "_sub",
        "_token",
        "_version",
        "_waiting",
        "_ws",
        "channel",
        "config",
        "id",
        "peer",
    )

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
        heartbeat: Heartbeat,
        node: str | None = None,
    ) -> None:
        self.id: Final = id
        self.peer: Final = peer
        self.channel: Final = channel
        self.config = config
        self._ws = ws
        self._hub = hub
        self._router = router
        self._version = version
        self._node = node
        """The cluster node's name (``[cluster] node``), told in ``welcome``; None outside one."""
        self._token = token
        self._heartbeat = heartbeat
        self._since = time.time()
        """When it opened (a float: the timestamp's text is made only for ``stats()``)."""
        self._sub: Subscriber | None = None
        self._replies: list[str] = []
        self._replies_bytes = 0
        self._reader = Reader(self, lookup)
        self._ending: _Ending | None = None
        self._serving = False
        """The sender's task runs (it is started, and not parked: see :meth:`_run_sender`)."""
        self._waiting = False
        """The sender waits for the hub, or has yet to start (else it is sending, or not yet
        authenticated)."""
        self._idle: trio.CancelScope | None = None
        """The sender's wait for a ``hello``; cancelled to wake it."""
        self._pong: Pong | None = None
        """The answer awaited to the last ping; None between pings."""
        self._ping_due = False
        self._pinged_at = 0.0
        self._beat_at = self._park_at = 0.0
        """When the heartbeat's ping (or pong check) is due, and the next parking check."""
        self._quiet_mark = 0
        """``_frames_out`` at the last parking check."""
        self._park_asked = False
        self._fed = False
        """The hub fed it since its sender last parked: the sender waits on, until a parking
        check finds it quiet (else it parks as soon as it has nothing to send)."""
        self._nursery: trio.Nursery | None = None
        self._frames_out = self._messages_out = self._bytes_out = 0

    @property
    def token(self) -> TokenConfig | None:
        """The token it authenticated with; None until then."""
        return self._token

    @property
    def binary(self) -> bool:
        """The client asked for MessagePack (``hived.v1.msgpack``)."""
        return self._ws.binary

    @property
    def closing(self) -> bool:
        """True once something asked the connection to end (its close frame may be on its way)."""
        return self._ending is not None

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

    @property
    def close_code(self) -> int | None:
        """The code it ended (or is ending) with; None while it goes on."""
        return None if self._ending is None else self._ending.code

    def stats(self) -> ConnectionStats:
        token, sub, reader = self._token, self._sub, self._reader
        topics = () if sub is None else sub.topics
        return ConnectionStats(
            id=self.id,
            peer=self.peer,
            channel=self.channel,
            token_name=None if token is None else token.name,
            role=None if token is None else token.role,
            since=utc_timestamp(self._since),
            frames_in=reader.frames_in,
            bytes_in=reader.bytes_in,
            frames_out=self._frames_out,
            messages_out=self._messages_out,
            bytes_out=self._bytes_out,
            queue_depth=0 if sub is None else sub.depth,
            subscriptions=tuple(heapq.nsmallest(SUBSCRIPTIONS_SHOWN, topics)),
            subscriptions_total=len(topics),
        )

    def request_close(self, code: int, reason: str) -> None:
        """Ask the connection to close with ``code``; the first request to end it wins."""
        self._end(_Ending(code, reason))

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
        """Record the first ending and stop the sender's loop: at once when it waits or the
        peer is gone; a send under way (of a batch the client reads) gets
        :data:`CLOSE_TIMEOUT_S` to finish, so that the close frame does not follow a torn one.

        A sender that waits is woken (it then sees the ending), a parked one started. A send is
        cut short through the connection's nursery — cancelled at once for an abort, else given
        a deadline that the sender lifts once the send is over — rather than through a cancel
        scope of the sender's own (with its cancel status, ~0.6 KiB).
        """
        if self._ending is not None:
            return
        self._ending = ending
        if self._idle is not None:
            self._idle.cancel()
            return
        if not self._serving or self._waiting:
            if self._sub is not None:
                self._sub.wake()
            return
        assert self._nursery is not None
        scope = self._nursery.cancel_scope
        if ending.abort:
            scope.cancel()
        else:
            scope.deadline = min(scope.deadline, trio.current_time() + CLOSE_TIMEOUT_S)

    async def run(self, nursery: trio.Nursery) -> None:
        """Serve the connection until it ends; the transport is closed on return.

        Call it from the body of ``nursery``, the connection's own, with a WebSocket accepted
        without a nursery: the sender and the requests run in it, and it is cancelled once the
        connection is closed.

        Meanwhile this task is the reader: it runs the WebSocket library's reader
        (:meth:`~hived.server.ws.WebSocket.read`, which hands each message to our
        :class:`~hived.server.reader.Reader`) until no more messages come, and then waits for
        the sender to close the connection and cancel the nursery.
        """
        self._nursery = nursery
        now = trio.current_time()
        self._beat_at = now + self.config.heartbeat_interval_s
        self._park_at = now + SENDER_PARK_CHECK_S
        self._heartbeat.add(self, min(self._beat_at, self._park_at))
        self._ws.deliver(self._reader)
        try:
            if self._token is not None:
                self.authenticate(self._token)
            self._start_sender()
            # Awaited here, not in a helper: an idle connection keeps every coroutine of this
            # chain. Reading ends the connection (the reader's received_all): the sender closes
            # it, then cancels the nursery, which ends this wait.
            await self._ws.read()
            await trio.sleep_forever()
        finally:
            self._nursery = None
            if self._sub is not None:
                self._hub.remove(self._sub)
            ending = self._ending
            if ending is not None and (
                ending.code == CloseCode.TOO_SLOW if ending.abort else not ending.answer
            ):
                log.info("connection %d: dropped (%d): %s", self.id, ending.code, ending.reason)
            elif ending is not None and ending.abort:
                log.info("connection %d: dropped: %s", self.id, ending.reason)
            elif ending is not None:
                log.info("connection %d: closed (%d) %s", self.id, ending.code, ending.reason)
            # Last: the nursery is cancelled by now, and this await raises Cancelled.
            await self._ws.abort()

    def _start_sender(self) -> None:
        """Start the sender's task: when the connection opens, and when something wakes a
        parked one (the hub calls it: a publish to it, a reply, a ping, the ending)."""
        nursery = self._nursery
        if nursery is None:
            return
        self._serving = self._waiting = True
        nursery.start_soon(self._run_sender, nursery, name=SENDER_TASK_NAME)

    async def _run_sender(self, nursery: trio.Nursery) -> None:
        """The sender: replies and a ping first, then every frame the hub queued, as one text
        frame (one await per batch, never one per event), until the connection is asked to end;
        then it closes, and cancels the nursery. It waits in the hub alone, woken by a publish
        or by :meth:`_wake_sender`, while the hub feeds it; with nothing to send, it *parks*
        instead — its task ends, and the hub starts it again when needed — at once when the hub
        has not fed it since it started (it came for replies or a ping), else once
        :meth:`beat` finds the connection quiet (so that a steady flow of events keeps it and
        pays no start per event)."""
        self._waiting = False
        try:
            auth_deadline = trio.current_time() + self.config.auth_timeout_s
            while self._ending is None:
                if self._replies or self._ping_due:
                    await self._send_replies_and_ping()
                    continue
                sub = self._sub
                if sub is None:
                    with trio.CancelScope() as self._idle:
                        await trio.sleep_until(auth_deadline)
                        self._reader.no_hello()
                    self._idle = None
                elif sub.overflowed:
                    self._overflowed()
                else:
                    if self._park_asked or not self._fed:
                        # Nothing from the hub since it started (it sent replies or a ping,
                        # say), or nothing sent at all for a while: it parks.
                        self._park_asked = False
                        if not self._ws.unflushed and sub.park(self._start_sender):
                            self._serving = self._fed = False
                            return
                    self._waiting = True
                    frames = await sub.receive_batch()
                    self._waiting = False
                    if frames:
                        self._fed = True
                    if self.closing:
                        # Woken with frames, then asked to end while waiting: a send begun now
                        # would only have the close timeout to finish, and could be cut
                        # mid-frame; the client resumes with since instead.
                        break
                    if frames:
                        await self._send(frames)
                    elif self._ws.unflushed:
                        await self._ws.flush()
        except Exception as exc:
            self.task_ended("sender", exc)
        self._serving = self._waiting = False
        # The close has a deadline of its own: lift the one _end() gave the send, if any.
        nursery.cancel_scope.deadline = math.inf
        assert self._ending is not None
        await self._close(self._ending)
        nursery.cancel_scope.cancel()

    def _overflowed(self) -> None:
        """The hub's call when this connection's queue overflowed (or the sender's, finding it
        so): it ends with 4008."""
        bound = self.config.subscriber_queue if self._sub is None else self._sub.bound
        self._too_slow(
            f"too slow: more than {bound} events queued; reconnect and resume with since"
        )

    def _too_slow(self, reason: str) -> None:
        """End with 4008. A send under way is to a client that reads too slowly, or not at all,
        and may never end: the connection is dropped at once rather than after
        :data:`CLOSE_TIMEOUT_S` (the close frame could not follow a torn frame anyway); a sender
        that waits sends the close frame."""
        sending = self._serving and not self._waiting and self._sub is not None
        self._end(_Ending(CloseCode.TOO_SLOW, reason, abort=sending))

    def _missed_pong(self, reason: str) -> None:
        """End a connection whose pong did not come: with a close frame (1011, ``reason``) and
        no wait for the peer's answer; dropped at once when a send to it is under way (it does
        not read: a close frame could not follow)."""
        sending = self._serving and not self._waiting and self._sub is not None
        self._end(_Ending(CloseCode.INTERNAL, reason, abort=sending, answer=False))

    def task_ended(self, name: str, exc: BaseException | None) -> None:
        """The reader or the sender ended (with ``exc``, unless None): the connection ends.

        They catch their errors themselves rather than through a wrapper coroutine: every
        coroutine an idle connection keeps suspended costs memory.
        """
        if isinstance(exc, WebSocketClosed):
            code = CloseCode.NORMAL if exc.code is None else exc.code
            self._end(_Ending(code, exc.reason or "", closed=True))
        elif exc is not None:
            log.error("connection %d: the %s failed", self.id, name, exc_info=exc)
            self.request_close(CloseCode.INTERNAL, "internal error")
        self.request_close(CloseCode.NORMAL, f"{name} ended")

    async def _close(self, ending: _Ending) -> None:
        """Close as ``ending`` says: the replies still waiting (the answer to the request that
        asked for the ending, say), a close frame and the peer's answer, all within
        :data:`CLOSE_TIMEOUT_S`; then the transport."""
        if ending.closed:
            await self._ws.finish(LINGER_S)
        elif not ending.answer:
            if not ending.abort:
                await self._ws.close_now(ending.code, close_reason(ending.reason), CLOSE_NOW_S)
        elif not ending.abort:
            deadline = trio.current_time() + CLOSE_TIMEOUT_S
            replies, self._replies, self._replies_bytes = self._replies, [], 0
            if replies:
                with trio.move_on_at(deadline), contextlib.suppress(WebSocketClosed):
                    await self._send(replies)
            reason = close_reason(ending.reason)
            left_s = max(0.0, deadline - trio.current_time())
            if not await self._ws.close(ending.code, reason, left_s):
                log.info(
                    "connection %d: no closing handshake within %g s", self.id, CLOSE_TIMEOUT_S
                )
        await self._ws.abort()

    def authenticate(self, token: TokenConfig) -> None:
        """Serve the connection as ``token``'s (the upgrade's, or the reader's on a good
        ``hello``): its requests run, the sender waits in the hub, a welcome is sent."""
        assert self._nursery is not None
        self._token = token
        self._reader.serve(self._router, self._nursery)
        self._sub = self._hub.subscriber(
            self.config.subscriber_queue,
            self._send_now,
            self._overflowed,
            self.config.subscriber_queue_bytes,
        )
        self._wake_sender()  # it now waits in the hub
        log.info(
            "connection %d: %s authenticated as %s (%s) on %s",
            self.id,
            self.peer,
            token.name,
            token.role,
            self.channel,
        )
        self.reply(
            welcome_frame(
                token.role,
                token.name,
                self.config.heartbeat_interval_s,
                self._version,
                self.id,
                self._node,
            )
        )

    # -- sending -----------------------------------------------------------------------------

    def reply(self, frame: str) -> None:
        """Queue a reply for the sender."""
        size = len(frame)
        if len(self._replies) >= MAX_PENDING_REPLIES or (
            self._replies and self._replies_bytes + size > self.config.subscriber_queue_bytes
        ):
            self._too_slow("too slow: replies are not being read")
            return
        self._replies.append(frame)
        self._replies_bytes += size
        self._wake_sender()

    def _wake_sender(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        elif self._sub is not None:
            self._sub.wake()

    async def _send_replies_and_ping(self) -> None:
        """The ping asked for, then every reply waiting, as one frame."""
        if self._ping_due and self._pong is not None:
            self._ping_due = False
            await self._ws.send_ping(self._pong)
        replies, self._replies, self._replies_bytes = self._replies, [], 0
        if replies:
            await self._send(replies)

    async def _send(self, frames: list[str]) -> None:
        """Send ``frames`` as few text frames as ``server.max_frame_bytes`` allows: a lone one
        as it is, several as a JSON array (a message larger than the cap goes alone)."""
        if len(frames) == 1:
            batches = [frames]
        else:
            batches = list(frame_batches(frames, self.config.max_frame_bytes))
        for batch in batches:
            sent = await self._ws.send_batch(batch, self.config.max_frame_bytes)
            self._count(sent, len(batch))

    def _send_now(self, frame: str) -> bool:
        """The hub's way to deliver a frame while the sender waits: written to the socket at
        once, without a trip through the scheduler (False when it cannot be: then queued)."""
        if self._ending is not None or not self._ws.send_nowait(frame):
            return False
        self._fed = True
        self._count(len(frame) if frame.isascii() else _utf8_size(frame), 1)
        if self._ws.unflushed:
            self._wake_sender()  # to write the rest: the hub leaves a quiet sender asleep
        return True

    def _count(self, size: int, messages: int) -> None:
        self._frames_out += 1
        self._messages_out += messages
        self._bytes_out += size

    # -- heartbeat ---------------------------------------------------------------------------

    def beat(self, now: float, late: bool) -> float | None:
        """The heartbeat's call: ask for a ping, or check the pong of the last one (``late``:
        this call comes long after it was due, the event loop was held up); and every
        :data:`SENDER_PARK_CHECK_S`, park the sender if nothing was sent since the last time.

        Returns when to be called next: the earlier of the next parking check and
        ``heartbeat_timeout_s`` after a ping (to check its pong), when
        :func:`~hived.core.pongs.check_pong` says while it may still come,
        ``heartbeat_interval_s`` after the last ping once its pong came; None once the
        connection is ending (a missed pong ends it).
        """
        if self._ending is not None:
            return None
        if now >= self._beat_at:
            config = self.config
            pong = self._pong
            if pong is None:
                self._pong = Pong()
                self._ping_due = True
                self._pinged_at = now
                self._wake_sender()
                self._beat_at = now + config.heartbeat_timeout_s
            elif not pong.received:
                verdict = check_pong(
                    now,
                    late=late,
                    asked_at=self._pinged_at,
                    sent_at=pong.sent_at,
                    held_until=self._reader.held_until,
                    timeout_s=config.heartbeat_timeout_s,
                )
                if isinstance(verdict, Missed):
                    self._missed_pong(verdict.reason)
                    return None
                self._beat_at = verdict
            else:
                self._pong = None
                self._beat_at = max(now, self._pinged_at + config.heartbeat_interval_s)
        if now >= self._park_at:
            self._park_at = now + SENDER_PARK_CHECK_S
            sub = self._sub
            if (
                self._frames_out == self._quiet_mark
                and sub is not None
                and sub.waiting
                and not self._replies
                and not self._ping_due
            ):
                # Quiet since the last check, and the sender waits in the hub: it parks.
                self._park_asked = True
                sub.wake()
            self._quiet_mark = self._frames_out
        return min(self._beat_at, self._park_at)
