"""The WebSocket transport: every call into trio-websocket lives in this module.

Why one module: the library has sharp edges (DESIGN §9) and may be swapped for another (the
``websockets`` library has a Trio implementation); the rest of the server sees only
:class:`WebSocket`, :func:`accept` and :class:`WebSocketClosed`.

The edges, and how this module files them down:

- The listener reads the request head itself (to route plain HTTP and check auth first), so the
  library is handed a :class:`PrefixedStream` that replays those bytes before the socket's.
- ``ping()`` waits for its pong forever: :meth:`WebSocket.ping` takes a timeout.
- ``aclose()`` waits for the peer's closing handshake forever, and a send to a peer that stopped
  reading blocks forever: :meth:`WebSocket.close` takes a timeout, and :meth:`WebSocket.abort`
  closes the transport under every pending call, which then fail.
- A cancelled send leaves the framing corrupt; callers abort after one (the connection does).
- After a close for a frame too big (1009), the rest of that frame is still arriving: closing
  the socket on unread bytes would reset the connection and could destroy the close frame in
  flight, so :meth:`WebSocket.finish` half-closes and drains first.
"""

from __future__ import annotations

from typing import Final

import trio
import trio_websocket

MESSAGE_QUEUE_SIZE: Final = 4
"""Messages the library buffers before it stops reading the socket (backpressure)."""
RECEIVE_BUFFER_BYTES: Final = 65_536
"""Bytes asked of the socket per read."""


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


class WebSocket:
    """An accepted server-side WebSocket; ``transport`` is the stream under it (for abort)."""

    def __init__(
        self,
        connection: trio_websocket.WebSocketConnection,
        stream: PrefixedStream,
        transport: trio.abc.Stream,
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._transport = transport

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
        """Send one text message. If this is cancelled mid-way, the framing is corrupt: abort."""
        try:
            await self._connection.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def ping(self, timeout_s: float) -> bool:
        """Ping and wait for the pong; False when none came within ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            try:
                await self._connection.ping()
            except trio_websocket.ConnectionClosed as exc:
                raise _closed(exc) from None
            return True
        return False

    async def close(self, code: int, reason: str | None, timeout_s: float) -> bool:
        """Close with ``code`` and wait for the peer's closing handshake.

        True when the handshake completed (or the connection was already closed) within
        ``timeout_s``; False when it did not, and the caller should :meth:`abort`.
        """
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
        return WebSocket(connection, prefixed, stream)
    raise WebSocketClosed(None, "the WebSocket handshake did not complete in time")
