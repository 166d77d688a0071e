"""The stream the WebSocket library reads and writes, over the connection's own stream.

The listener reads the request head itself (to route plain HTTP and check auth first), so the
library is handed a :class:`PrefixedStream` that gives those bytes back before the socket's.
The stream also reads the socket itself, lets two readers take turns, and writes first the rest
of a frame the socket took only part of (:meth:`~hived.server.ws.WebSocket.send_nowait`).
"""

from __future__ import annotations

import socket
from typing import Final, Protocol

import trio

RECEIVE_BUFFER_BYTES: Final = 65_536
"""Bytes asked of the socket per read."""


class Closable(Protocol):
    """What the stream closes along with itself (the :class:`~hived.server.ws.Inbox`)."""

    def close(self) -> None:
        """Say that no more will come; called once or more."""


def raw_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a plain ``trio.SocketStream`` (None for TLS and anything else).

    Writing to it directly is what trio does itself in a nonblocking ``send``; reaching it takes
    trio's private ``_sock``, so its absence only costs the fast path.
    """
    if not isinstance(stream, trio.SocketStream):
        return None
    raw = getattr(stream.socket, "_sock", None)
    return raw if isinstance(raw, socket.socket) else None


def _recv_nowait(sock: socket.socket, max_bytes: int) -> bytes | None:
    """What the socket has (``b""`` at its end), or None when it has nothing yet.

    A function of its own: an exception that passes through a coroutine's frame gives that
    frame a frame object (~0.2 KiB) for as long as the coroutine lives, and the reader's waits
    for the next message on an idle connection, so the BlockingIOError of every such wait is
    caught here.
    """
    try:
        return sock.recv(max_bytes)
    except BlockingIOError:
        return None


class PrefixedStream(trio.abc.Stream):
    """A stream that first yields ``prefix`` (bytes already read from ``stream``), then reads on.

    Reads take turns (the library's reader, then :meth:`~hived.server.ws.WebSocket.finish`);
    everything else goes straight to ``stream``. Under a plain socket stream it reads the socket
    itself, as trio's own ``recv`` does, so that the library's reader waits on an idle
    connection with three coroutines fewer suspended (each one costs that connection memory).
    """

    __slots__ = ("_prefix", "_receiving", "_socket", "_stream", "_turn", "inbox", "tail")

    def __init__(self, prefix: bytes, stream: trio.abc.Stream) -> None:
        self._prefix = prefix
        self._stream = stream
        self._socket = raw_socket(stream)
        self._receiving = False
        self._turn: trio.Event | None = None
        """Set when a read ends, for a second reader waiting its turn (made only then)."""
        self.inbox: Closable | None = None
        """Closed with the stream (the library closes it on a protocol error, and reads no more)."""
        self.tail: memoryview | None = None
        """The rest of a frame the socket took only part of
        (:meth:`~hived.server.ws.WebSocket.send_nowait`): written before anything else is."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while self._receiving:
            if self._turn is None:
                self._turn = trio.Event()
            await self._turn.wait()
        self._receiving = True
        try:
            if self._prefix:
                await trio.lowlevel.checkpoint()
                size = len(self._prefix) if max_bytes is None else max_bytes
                data, self._prefix = self._prefix[:size], self._prefix[size:]
                return data
            sock = self._socket
            if sock is None:
                return await self._stream.receive_some(max_bytes)
            await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                try:
                    got = _recv_nowait(sock, max_bytes or RECEIVE_BUFFER_BYTES)
                except OSError as exc:
                    if sock.fileno() == -1:
                        raise trio.ClosedResourceError("the socket was closed") from None
                    raise trio.BrokenResourceError(f"receive failed: {exc}") from exc
                if got is None:
                    await trio.lowlevel.wait_readable(sock)
                    continue
                await trio.lowlevel.cancel_shielded_checkpoint()
                return got
        finally:
            self._receiving = False
            if self._turn is not None:
                self._turn.set()
                self._turn = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` after the :attr:`tail` (callers hold the library's send lock)."""
        tail = self.tail
        if tail is not None:
            self.tail = None
            await self._stream.send_all(tail)
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        if self.inbox is not None:
            self.inbox.close()
        await self._stream.aclose()
