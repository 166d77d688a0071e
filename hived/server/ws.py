"""The WebSocket transport: every call into trio-websocket lives in this module.

Why one module: the library has sharp edges (DESIGN §9) and may be swapped for another (the
``websockets`` library has a Trio implementation); the rest of the server sees only
:class:`WebSocket`, :class:`Pong`, :func:`accept` and :class:`WebSocketClosed`.

The library does the opening handshake, reads and parses every frame the client sends, answers
its pings and closes. What the server *sends* on the hot path it frames itself: a server frame
is unmasked, so a text message is a 2-10 byte header and the UTF-8 payload (RFC 6455 §5.2), and
a fan-out sends the same text to every subscriber, so :func:`text_frame` builds it once for all
of them. :meth:`WebSocket.send` then writes it straight to the socket when the socket takes it
all (the common case: no await, no trip through the scheduler) and only falls back to an
awaited ``send_all`` for the rest, holding the library's own send lock meanwhile; and it waits
for that lock when another task holds it. So its frames never interleave with another sender's
(the connection's other task, or the library writing a pong or a close frame).

The edges, and how this module files them down:

- The listener reads the request head itself (to route plain HTTP and check auth first), so the
  library is handed a :class:`PrefixedStream` that replays those bytes before the socket's.
- ``ping()`` waits for its pong in the caller's task: :meth:`WebSocket.send_ping` only sends
  and registers a :class:`Pong` that the library's reader marks, so that one task can watch the
  pongs of every connection.
- ``aclose()`` waits for the peer's closing handshake forever, and a send to a peer that stopped
  reading blocks forever: :meth:`WebSocket.close` takes a timeout, and :meth:`WebSocket.abort`
  closes the transport under every pending call, which then fail.
- A send cancelled half-way leaves the framing corrupt: the WebSocket then counts as broken, and
  :meth:`WebSocket.close` does not try to send a close frame after the torn one.
- After a close for a frame too big (1009), the rest of that frame is still arriving: closing
  the socket on unread bytes would reset the connection and could destroy the close frame in
  flight, so :meth:`WebSocket.finish` half-closes and drains first.
- After the handshake, wsproto no longer needs its handshake state (an HTTP/1.1 parser, its
  buffers, the parsed request): :func:`accept` drops it, which an idle connection would
  otherwise keep.
- Sending frames beside the library takes three of its private attributes: its send lock, its
  table of pings in flight, and (to drop the handshake state) its wsproto object. Every test
  that opens a WebSocket fails if a new version moves the first two; the third is best effort.
"""

from __future__ import annotations

import socket
import struct
from typing import Final

import trio
import trio_websocket
import wsproto
import wsproto.handshake

MESSAGE_QUEUE_SIZE: Final = 4
"""Messages the library buffers before it stops reading the socket (backpressure)."""
RECEIVE_BUFFER_BYTES: Final = 65_536
"""Bytes asked of the socket per read."""
ABNORMAL_CLOSURE: Final = 1006
"""The close code of a connection that ended without a closing handshake (RFC 6455 §7.4.1)."""

_FIN_TEXT: Final = 0x81
_FIN_PING: Final = 0x89
_SHORT: Final = struct.Struct("!BB")
_MEDIUM: Final = struct.Struct("!BBH")
_LONG: Final = struct.Struct("!BBQ")
_PING_PAYLOAD: Final = struct.Struct("!I")
FRAME_CACHE_MAX_BYTES: Final = 65_536
"""The last frame built is kept for the next sender of the same text up to this size."""


class WebSocketClosed(Exception):
    """The connection is closed (by either side, or aborted); ``code`` is the close code seen."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"closed ({code}{': ' + reason if reason else ''})")


def _closed(exc: trio_websocket.ConnectionClosed) -> WebSocketClosed:
    reason = exc.reason
    return WebSocketClosed(
        None if reason is None else reason.code, None if reason is None else reason.reason
    )


def _frame(first: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return _SHORT.pack(first, size) + payload
    if size < 65_536:
        return _MEDIUM.pack(first, 126, size) + payload
    return _LONG.pack(first, 127, size) + payload


class _LastFrame:
    """The frame of the text sent last: a fan-out sends one ``str`` object to every subscriber.

    Keyed by identity, and it holds the text, so the id cannot be reused by another string.
    """

    __slots__ = ("frame", "text")

    def __init__(self) -> None:
        self.text: str | None = None
        self.frame = b""


_last = _LastFrame()


def text_frame(text: str) -> bytes:
    """The bytes of an unmasked, unfragmented server text frame carrying ``text``."""
    if text is _last.text:
        return _last.frame
    frame = _frame(_FIN_TEXT, text.encode())
    if len(frame) <= FRAME_CACHE_MAX_BYTES:
        _last.text, _last.frame = text, frame
    return frame


class Pong:
    """The answer to one ping: ``received`` turns True when the client's pong arrives.

    The library's reader calls :meth:`set` (it takes any object with one, where it would keep
    the ``trio.Event`` of its own ``ping()``); a pong also answers every earlier ping.
    """

    __slots__ = ("received",)

    def __init__(self) -> None:
        self.received = False

    def set(self) -> None:
        self.received = True


class PrefixedStream(trio.abc.Stream):
    """A stream that first yields ``prefix`` (bytes already read from ``stream``), then reads on.

    Reads take turns (the library's reader, then :meth:`WebSocket.finish`); everything else
    goes straight to ``stream``.
    """

    def __init__(self, prefix: bytes, stream: trio.abc.Stream) -> None:
        self._prefix = prefix
        self._stream = stream
        self._receiving = trio.Lock()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        async with self._receiving:
            if not self._prefix:
                return await self._stream.receive_some(max_bytes)
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


def _raw_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a plain ``trio.SocketStream`` (None for TLS and anything else).

    Writing to it directly is what trio does itself in a nonblocking ``send``; reaching it takes
    trio's private ``_sock``, so its absence only costs the fast path.
    """
    if not isinstance(stream, trio.SocketStream):
        return None
    raw = getattr(stream.socket, "_sock", None)
    return raw if isinstance(raw, socket.socket) else None


class WebSocket:
    """An accepted server-side WebSocket; ``transport`` is the stream under it (for abort)."""

    __slots__ = (
        "_broken",
        "_connection",
        "_lock",
        "_pings",
        "_pings_sent",
        "_socket",
        "_stream",
        "_transport",
    )

    def __init__(
        self,
        connection: trio_websocket.WebSocketConnection,
        stream: PrefixedStream,
        transport: trio.abc.Stream,
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._transport = transport
        self._socket = _raw_socket(transport)
        # The library's own send lock and in-flight pings (private; checked by the tests).
        self._lock: trio.StrictFIFOLock = connection._stream_lock
        self._pings: dict[bytes, Pong] = connection._pings  # type: ignore[assignment]
        self._pings_sent = 0
        self._broken = False

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closing or closed, else None."""
        reason = self._connection.closed
        return None if reason is None else reason.code

    async def receive(self) -> str | bytes:
        """The next message; :class:`WebSocketClosed` once the connection is closed."""
        try:
            return await self._connection.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def send(self, text: str) -> None:
        """Send one text message. If this is cancelled mid-way, the framing is corrupt: abort.

        Returns without a checkpoint when the socket took the whole frame at once.
        """
        await self._send_frame(text_frame(text))

    async def send_ping(self, pong: Pong) -> None:
        """Send a ping; ``pong`` is marked when its answer (or a later one) arrives."""
        self._pings_sent += 1
        payload = _PING_PAYLOAD.pack(self._pings_sent & 0xFFFF_FFFF)
        self._pings[payload] = pong
        await self._send_frame(_frame(_FIN_PING, payload))

    async def _send_frame(self, frame: bytes) -> None:
        """Write ``frame`` whole, never into the middle of another task's frame.

        When nobody holds the send lock, the socket gets the frame at once; if it takes it all,
        no other task ran in between, so the lock is not even needed. Whatever is left is
        written with the lock held, as is the whole frame when another task holds it.
        """
        lock = self._lock
        if lock.locked():
            async with lock:
                self._check_open()
                await self._send_all(frame)
            return
        self._check_open()
        sent = 0
        if self._socket is not None:
            try:
                sent = self._socket.send(frame)
            except BlockingIOError:
                pass
            except OSError as exc:
                self._broken = True
                raise WebSocketClosed(ABNORMAL_CLOSURE, f"send failed: {exc}") from None
            if sent == len(frame):
                return
        lock.acquire_nowait()  # still free: nothing ran since it was checked
        try:
            await self._send_all(memoryview(frame)[sent:] if sent else frame)
        finally:
            lock.release()

    async def _send_all(self, data: bytes | memoryview) -> None:
        """Write ``data`` (the lock held); a write cut short leaves the WebSocket broken."""
        try:
            await self._transport.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._broken = True
            raise WebSocketClosed(ABNORMAL_CLOSURE, f"send failed: {exc}") from None
        except BaseException:
            self._broken = True
            raise

    def _check_open(self) -> None:
        """Raise unless frames may still be sent (the library sets a reason before it sends a
        close frame, so a data frame never follows one)."""
        reason = self._connection.closed
        if reason is not None:
            raise WebSocketClosed(reason.code, reason.reason)
        if self._broken:
            raise WebSocketClosed(ABNORMAL_CLOSURE, "a send was cut short")

    async def close(self, code: int, reason: str | None, timeout_s: float) -> bool:
        """Close with ``code`` and wait for the peer's closing handshake.

        True when the handshake completed (or the connection was already closed) within
        ``timeout_s``; False when it did not, or when a send was cut short (no frame can follow
        a torn one), and the caller should :meth:`abort`.
        """
        if self._broken:
            return False
        with trio.move_on_after(timeout_s):
            await self._connection.aclose(code, reason)
            return True
        return False

    async def finish(self, linger_s: float) -> None:
        """End the transport of a closed WebSocket: half-close, drain what the peer still sends
        (for at most ``linger_s``, until its end), then close."""
        try:
            if isinstance(self._transport, trio.abc.HalfCloseableStream):
                await self._transport.send_eof()
            with trio.move_on_after(linger_s):
                while await self._stream.receive_some(RECEIVE_BUFFER_BYTES):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
        finally:
            await self.abort()

    async def abort(self) -> None:
        """Close the transport at once, failing every pending send, receive and ping."""
        await trio.aclose_forcefully(self._transport)


_SPENT_HANDSHAKE: Final = wsproto.handshake.H11Handshake(wsproto.ConnectionType.SERVER)
"""Stands in for the handshake of every open connection: once open, wsproto only asks it for
events, and it has none."""


def _forget_handshake(connection: trio_websocket.WebSocketConnection) -> None:
    """Drop wsproto's handshake (its HTTP/1.1 parser and buffers, the parsed request, an event
    queue), which only the opening needed; once open, wsproto reads and writes frames without
    it. Best effort: these are private attributes, and keeping them only costs memory."""
    proto = getattr(connection, "_wsproto", None)
    if isinstance(proto, wsproto.WSConnection) and proto.connection is not None:
        proto.handshake = _SPENT_HANDSHAKE


async def accept(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    head: bytes,
    *,
    max_message_size: int,
    timeout_s: float,
) -> WebSocket:
    """Complete the opening handshake of an upgrade request whose bytes ``head`` were read.

    ``head`` is everything already read from ``stream`` (the request head, and whatever came
    after it). The library's reader task runs in ``nursery``. ``max_message_size`` is in
    characters: a larger message closes the connection with 1009. Raises
    :class:`WebSocketClosed` when the handshake does not complete within ``timeout_s``.
    """
    prefixed = PrefixedStream(head, stream)
    del head
    with trio.move_on_after(timeout_s):
        request = await trio_websocket.wrap_server_stream(
            nursery,
            prefixed,
            message_queue_size=MESSAGE_QUEUE_SIZE,
            max_message_size=max_message_size,
            receive_buffer_size=RECEIVE_BUFFER_BYTES,
        )
        try:
            connection = await request.accept()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None
        _forget_handshake(connection)
        return WebSocket(connection, prefixed, stream)
    raise WebSocketClosed(None, "the WebSocket handshake did not complete in time")
