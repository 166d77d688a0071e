"""The WebSocket transport: every call into trio-websocket lives in this module.

Why one module: the library has sharp edges (DESIGN §9) and may be swapped for another (the
``websockets`` library has a Trio implementation); the rest of the server sees only
:class:`WebSocket`, :class:`Pong`, :func:`accept` and :class:`WebSocketClosed`.

The library does the opening handshake, reads and parses every frame the client sends, answers
its pings and closes. What the server *sends* on the hot path it frames itself
(:mod:`hived.server.frames`), and :meth:`WebSocket.send` writes it straight to the socket when
the socket takes it all (the common case: no await, no trip through the scheduler) and only
falls back to an awaited ``send_all`` for the rest, holding the library's own send lock
meanwhile; and it waits for that lock when another task holds it. So its frames never
interleave with another sender's (the library writing a pong or a close frame).

The edges, and how this module files them down:

- The listener reads the request head itself (to route plain HTTP and check auth first), so the
  library is handed a :class:`~hived.server.stream.PrefixedStream` that replays those bytes
  before the socket's (which it then reads itself, for an idle connection's memory).
- The library hands each received message to a task of the caller's through a memory channel
  (``get_message()``): a task, a channel and their buffers per connection, idle or not.
  :meth:`WebSocket.deliver` puts an :class:`Inbox` in the channel's place, so the library's own
  reader hands each message straight to the server's handler, in its task.
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
- A frame that breaks the protocol (a reserved bit or opcode, a control frame over 125 bytes, a
  stray continuation) or text that is not UTF-8 makes wsproto stop, and the library closes the
  socket without telling the peer why: :class:`_Connection` sends the close frame first (1002,
  1007), as RFC 6455 §7.1.7 asks.
- The library counts a message's size by its fragments' data only: a message of endless empty
  fragments would never end. :class:`_Connection` counts each fragment as at least a byte, so
  that it reaches ``max_message_size`` (1009) like any other.
- The library's reader task keeps, for as long as a connection idles, a dict of nine bound
  methods it builds per connection, the last event it handled and the last bytes it read:
  :meth:`_Connection._reader_task` is the same loop without them.
- After the handshake, wsproto no longer needs its handshake state (an HTTP/1.1 parser, its
  buffers, the parsed request), nor the library two of its events: :func:`accept` drops them,
  which an idle connection would otherwise keep, and puts in place of the closing handshake's
  event one that is made only when awaited.
- The library accepts a handshake without extensions: :class:`_Connection` sends the answer
  itself, with permessage-deflate when the server allows it and the client offers it
  (:class:`_Deflate`: no context takeover either way, so no connection keeps a compressor, and
  what a client sends is inflated at most to ``max_message_size`` — a small compressed frame
  cannot make the server hold a large one) and the subprotocol hived chose
  (:func:`~hived.core.wire.choose_subprotocol`). What the server sends it frames and compresses
  itself (:func:`~hived.server.frames.message_frame`).
- All this takes the library's private parts: its send lock, its table of pings in flight,
  its close reason and event sender (``_close_reason``, ``_send``: a close frame sent without
  waiting for the answer, :meth:`WebSocket.close_now`), its message channel and reader task
  (``_send_channel``, ``_recv_channel``, ``_reader_task`` and what it calls — ``_wsproto``,
  ``_stream``, ``_reader_running``, ``_receive_buffer_size``, ``_abort_web_socket``,
  ``_close_stream`` and the ``_handle_*_event`` handlers —, ``_get_request``: :func:`accept`
  does what ``wrap_server_stream`` does, with the :class:`Inbox` in place before the reader
  starts) and, best effort, its wsproto object and events. Every test that opens a WebSocket
  fails if a new version moves any but the last.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import sys
import zlib
from collections.abc import Awaitable, Iterator, Sequence
from typing import Final, Protocol

import trio
import trio_websocket
import wsproto
import wsproto.events
import wsproto.handshake
import wsproto.utilities
from wsproto.connection import ConnectionState
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol

from hived.core.wire import SUBPROTOCOL_MSGPACK, choose_subprotocol, msgpack_array, msgpack_of
from hived.server.frames import binary_frame, message_frame, payload_frame, ping_frame, text_frame
from hived.server.stream import RECEIVE_BUFFER_BYTES, PrefixedStream, raw_socket

ABNORMAL_CLOSURE: Final = 1006
"""The close code of a connection that ended without a closing handshake (RFC 6455 §7.4.1)."""

log = logging.getLogger(__name__)

_PING_PAYLOAD: Final = struct.Struct("!I")
READER_TASK_NAME: Final = "websocket reader"
"""The library's reader task, named once: a name trio makes up is a string per connection."""


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


class Pong:
    """The answer to one ping: ``received`` turns True when the client's pong arrives.

    The library's reader calls :meth:`set` (it takes any object with one, where it would keep
    the ``trio.Event`` of its own ``ping()``); a pong also answers every earlier ping.
    ``sent_at`` is when the ping was written (trio's clock), None until then.
    """

    __slots__ = ("received", "sent_at")

    def __init__(self) -> None:
        self.received = False
        self.sent_at: float | None = None

    def set(self) -> None:
        self.received = True


class Handler(Protocol):
    """What :meth:`WebSocket.deliver` hands the messages to (one object rather than two bound
    methods, which every idle connection would keep)."""

    async def receive(self, message: str | bytes) -> None:
        """Handle one received message, in the library's reader (which reads on once this
        returns); must not raise."""

    def received_all(self, closed: WebSocketClosed) -> None:
        """Told once that no more messages will come, and why."""


class Inbox:
    """Stands in for both ends of the library's message channel (private: ``_send_channel``,
    ``_recv_channel``).

    The library's reader calls :meth:`send` for each message, which awaits the handler (so a
    busy handler stops the reading, as a full channel would), and :meth:`aclose` when the
    connection closes (by either side; a frame too big; the reader's end). Until
    :meth:`WebSocket.deliver` gives it handlers (just after the handshake) a message waits.
    """

    __slots__ = ("_closed", "_connection", "_handler", "_ready")

    def __init__(self, connection: trio_websocket.WebSocketConnection) -> None:
        self._connection = connection
        self._handler: Handler | None = None
        self._ready: trio.Event | None = None
        self._closed = False

    def deliver(self, handler: Handler) -> None:
        self._handler = handler
        if self._ready is not None:
            self._ready.set()
            self._ready = None
        if self._closed:
            handler.received_all(self._why())

    async def send(self, message: str | bytes) -> None:
        if self._handler is None:
            if self._ready is None:
                self._ready = trio.Event()
            await self._ready.wait()
        if self._closed or self._handler is None:
            raise trio.ClosedResourceError
        await self._handler.receive(message)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._handler is not None:
            self._handler.received_all(self._why())

    def _why(self) -> WebSocketClosed:
        reason = self._connection.closed
        return WebSocketClosed(
            None if reason is None else reason.code, None if reason is None else reason.reason
        )

    async def __aenter__(self) -> Inbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class WebSocket:
    """An accepted server-side WebSocket; ``transport`` is the stream under it (for abort)."""

    __slots__ = (
        "_binary",
        "_broken",
        "_connection",
        "_inbox",
        "_lock",
        "_min_deflate_bytes",
        "_pings",
        "_pings_sent",
        "_plain",
        "_socket",
        "_stream",
        "_transport",
        "_window_bits",
    )

    def __init__(
        self,
        connection: trio_websocket.WebSocketConnection,
        stream: PrefixedStream,
        transport: trio.abc.Stream,
        inbox: Inbox,
        *,
        binary: bool = False,
        window_bits: int = 0,
        min_deflate_bytes: int = 0,
    ) -> None:
        self._connection = connection
        self._binary = binary
        """The client asked for MessagePack: messages go as binary frames."""
        self._window_bits = window_bits
        """permessage-deflate's window, when negotiated (0: not)."""
        self._min_deflate_bytes = min_deflate_bytes
        self._plain = not binary and not window_bits
        self._inbox = inbox
        self._stream = stream
        self._transport = transport
        self._socket = raw_socket(transport)
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

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the handshake (None: none, JSON)."""
        return self._connection.subprotocol

    @property
    def binary(self) -> bool:
        """Whether the client asked for MessagePack (``hived.v1.msgpack``)."""
        return self._binary

    @property
    def compressed(self) -> bool:
        """Whether permessage-deflate was agreed."""
        return self._window_bits != 0

    def _frame_of(self, text: str) -> bytes:
        if self._plain:
            return text_frame(text)
        return message_frame(text, self._binary, self._window_bits, self._min_deflate_bytes)

    def read(self) -> Awaitable[None]:
        """The library's reader, to await in the caller's task when :func:`accept` had no
        nursery: it hands every message to the handlers given to :meth:`deliver` (call that
        first) and returns once no more will come. (The coroutine itself, not a wrapper: an
        idle connection keeps every coroutine of the chain it waits in.)"""
        return self._connection._reader_task()

    def deliver(self, handler: Handler) -> None:
        """Hand every message received to ``handler.receive``, in the library's reader (which
        reads on when it returns; it must not raise), then tell ``handler.received_all`` once,
        when no more will come. Call it once, before the first checkpoint after :func:`accept`
        (and before :meth:`read`)."""
        self._inbox.deliver(handler)

    async def send(self, text: str) -> None:
        """Send one server message, JSON ``text``, in the connection's encoding (as it is, or
        as MessagePack) and compression. If this is cancelled mid-way, the framing is corrupt:
        abort.

        Returns without a checkpoint when the socket took the whole frame at once.
        """
        await self._send_frame(self._frame_of(text))

    async def send_batch(self, texts: Sequence[str], max_bytes: int) -> int:
        """Send several server messages (JSON ``texts``, already cut to ``max_bytes`` as JSON)
        as one array — a JSON array, or a MessagePack array cut again by its own size, so
        that no frame is larger than ``max_bytes`` (but a lone larger message). Returns the
        payload bytes sent (before compression)."""
        if len(texts) == 1:
            text = texts[0]
            await self._send_frame(self._frame_of(text))
            return self._size(text)
        if not self._binary:
            text = "[" + ",".join(texts) + "]"
            await self._send_frame(self._frame_of(text))
            return self._size(text)
        sent = 0
        for run in _runs([msgpack_of(text) for text in texts], max_bytes):
            payload = run[0] if len(run) == 1 else msgpack_array(run)
            await self._send_frame(
                payload_frame(payload, True, self._window_bits, self._min_deflate_bytes)
            )
            sent += len(payload)
        return sent

    def _size(self, text: str) -> int:
        """The payload bytes of ``text`` in this connection's encoding."""
        if self._binary:
            return len(msgpack_of(text))
        return len(text) if text.isascii() else len(text.encode())

    async def send_binary(self, data: bytes) -> None:
        """Send one binary message as it is (only the test build's echo endpoint does)."""
        if self._window_bits:
            await self._send_frame(
                payload_frame(data, True, self._window_bits, self._min_deflate_bytes)
            )
        else:
            await self._send_frame(binary_frame(data))

    async def send_text(self, text: str) -> None:
        """Send one text message as it is (only the test build's echo endpoint does)."""
        if self._window_bits:
            await self._send_frame(
                payload_frame(text.encode(), False, self._window_bits, self._min_deflate_bytes)
            )
        else:
            await self._send_frame(text_frame(text))

    def send_nowait(self, text: str) -> bool:
        """Write one server message (JSON ``text``, framed as :meth:`send` does) at once if the
        socket takes some of it; never waits.

        True when it is written: whole, or in part with the rest kept to go out before any
        other frame (the next send, a ping, the library's pong or close frame); then call
        :meth:`flush` soon. False when nothing was written: another task is sending, the
        socket's buffer is full, the connection is closing or broken (the next :meth:`send`
        says so), or the transport is not a plain socket (TLS).
        """
        sock = self._socket
        stream = self._stream
        if (
            sock is None
            or stream.tail is not None
            or self._lock.locked()
            or self._broken
            or self._connection.closed is not None
        ):
            return False
        frame = text_frame(text) if self._plain else self._frame_of(text)
        try:
            sent = sock.send(frame)
        except BlockingIOError:
            return False
        except OSError:
            self._broken = True
            return False
        if sent < len(frame):
            stream.tail = memoryview(frame)[sent:]
        return True

    @property
    def unflushed(self) -> bool:
        """A frame :meth:`send_nowait` began is not all written yet."""
        return self._stream.tail is not None

    async def flush(self) -> None:
        """Write the rest of the frame :meth:`send_nowait` began, if any."""
        async with self._lock:
            tail = self._stream.tail
            if tail is not None:
                self._stream.tail = None
                self._check_open()
                await self._send_all(tail)

    async def send_ping(self, pong: Pong) -> None:
        """Send a ping; ``pong`` is marked when its answer (or a later one) arrives."""
        self._pings_sent += 1
        payload = _PING_PAYLOAD.pack(self._pings_sent & 0xFFFF_FFFF)
        self._pings[payload] = pong
        await self._send_frame(ping_frame(payload))
        pong.sent_at = trio.current_time()

    async def _send_frame(self, frame: bytes) -> None:
        """Write ``frame`` whole, never into the middle of another task's frame.

        When nobody holds the send lock, the socket gets the frame at once; if it takes it all,
        no other task ran in between, so the lock is not even needed. Whatever is left is
        written with the lock held, as is the whole frame when another task holds it or part
        of a frame is still to be written (:meth:`send_nowait`; it goes first).
        """
        lock = self._lock
        if lock.locked() or self._stream.tail is not None:
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
            await self._stream.send_all(data)
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

    async def close_now(self, code: int, reason: str | None, timeout_s: float) -> None:
        """Send a close frame with ``code`` and not wait for the peer's (it is presumed gone);
        the caller then calls :meth:`abort`. The frame may take ``timeout_s`` to go out."""
        connection = self._connection
        if self._broken or connection._wsproto.state is not ConnectionState.OPEN:
            return
        # What the library's own aclose() does first (its reason, then the frame), without
        # waiting for the answer.
        connection._close_reason = trio_websocket.CloseReason(code, reason)
        with trio.move_on_after(timeout_s), contextlib.suppress(trio_websocket.ConnectionClosed):
            await connection._send(wsproto.events.CloseConnection(code=code, reason=reason))

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


PROTOCOL_ERROR_CLOSE_S: Final = 1.0
"""How long the close frame after a protocol error may take to go out (a sender may hold the
socket, writing to a client that stopped reading) before the socket is closed anyway."""


def _runs(members: list[bytes], max_bytes: int) -> Iterator[list[bytes]]:
    """``members`` in order, cut into runs whose MessagePack array is at most ``max_bytes``
    (a 5-byte header counted); a member that alone is larger is a run of its own."""
    start, size = 0, 5
    for index, member in enumerate(members):
        if index > start and size + len(member) > max_bytes:
            yield members[start:index]
            start, size = index, 5
        size += len(member)
    yield members[start:]


class _Deflate(PerMessageDeflate):
    """permessage-deflate as hived agrees to it: the first acceptable offer, always without
    context takeover either way; and what the client sends is inflated at most to
    ``max_bytes`` per message (more closes with 1009)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(client_no_context_takeover=True, server_no_context_takeover=True)
        self._max_bytes = max_bytes
        self._inflated = 0

    def accept(self, offer: str) -> str | None:
        if self._enabled:
            return None  # one agreement; wsproto asks about every offer
        try:
            client_bits, server_bits = self._parse_params(offer)
        except ValueError:
            return None
        self.client_no_context_takeover = self.server_no_context_takeover = True
        parameters = ["server_no_context_takeover", "client_no_context_takeover"]
        for name, bits in (("server", server_bits), ("client", client_bits)):
            if bits is None:
                continue
            if not 9 <= bits <= 15:  # zlib cannot make a 256-byte window
                return None
            parameters.append(f"{name}_max_window_bits={bits}")
        if server_bits is not None:
            self.server_max_window_bits = server_bits
        if client_bits is not None:
            self.client_max_window_bits = client_bits
        self._enabled = True
        return "; ".join(parameters)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        room = self._max_bytes - self._inflated
        try:
            out = self._decompressor.decompress(bytes(data), room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self._max_bytes or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if fin:
            self._inflated = 0
        return super().frame_inbound_complete(proto, fin)


_EVENT_HANDLERS: Final = {
    wsproto.events.AcceptConnection: "_handle_accept_connection_event",
    wsproto.events.BytesMessage: "_handle_message_event",
    wsproto.events.CloseConnection: "_handle_close_connection_event",
    wsproto.events.Ping: "_handle_ping_event",
    wsproto.events.Pong: "_handle_pong_event",
    wsproto.events.RejectConnection: "_handle_reject_connection_event",
    wsproto.events.RejectData: "_handle_reject_data_event",
    wsproto.events.Request: "_handle_request_event",
    wsproto.events.TextMessage: "_handle_message_event",
}
"""The library's handler of each wsproto event, by name (:meth:`_Connection._reader_task`)."""


class _Connection(trio_websocket.WebSocketConnection):
    """The library's connection, with three of its handlers filed down and its reader made
    lighter (see the module doc)."""

    async def _reader_task(self, until_open: bool = False) -> None:
        """The library's reader, step for step, for a server connection (it sends no opening
        request), keeping less while it waits: the library's builds a dict of nine bound
        methods per connection, and keeps the last event and the last bytes read in its frame,
        all of which an idle connection would hold for as long as it is open.

        ``until_open``: return once the handshake is done (:func:`accept` without a nursery,
        whose caller then runs the rest), leaving the message channel open."""
        try:
            while self._reader_running:
                await self._handle_events(until_open)
                if until_open and self._wsproto.state is ConnectionState.OPEN:
                    return
                try:
                    data = await self._stream.receive_some(self._receive_buffer_size)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._abort_web_socket()
                    break
                if not data:
                    # TCP closed before the WebSocket: an abnormal closure.
                    if self._wsproto.state != ConnectionState.CLOSED:
                        await self._abort_web_socket()
                    break
                if self._wsproto.state != ConnectionState.CLOSED:
                    try:
                        # wsproto takes a bytearray as well (it appends it to its buffer).
                        self._wsproto.receive_data(data)  # type: ignore[arg-type]
                    except wsproto.utilities.RemoteProtocolError as err:
                        if err.event_hint:
                            await self._send(err.event_hint)
                        await self._close_stream()
                del data
        finally:
            if not until_open:
                await self._send_channel.aclose()

    async def _handle_events(self, until_open: bool) -> None:
        """Hand each event wsproto has to the library's handler of its type, until one finds
        the connection closed, or (``until_open``) the handshake is done: the events after it
        wait for the caller's reader, which has the handlers (a coroutine of its own, so that
        the last event is not kept once they are handled)."""
        for event in self._wsproto.events():
            name = _EVENT_HANDLERS.get(type(event))
            if name is None:
                log.warning("%s: unknown event type %s", self, type(event).__name__)
                continue
            try:
                await getattr(self, name)(event)
            except trio_websocket.ConnectionClosed:
                self._reader_running = False
                return
            if until_open and self._wsproto.state is ConnectionState.OPEN:
                return

    async def _handle_request_event(self, event: wsproto.events.Request) -> None:
        """The library's, or, for :func:`accept` without a nursery, the accept at once in the
        reader's task (there is no other task to ask ``_get_request``)."""
        plan = self.__dict__.pop("_hived_accept", None)
        if plan is None:
            await super()._handle_request_event(event)
            return
        deflate, subprotocols = plan
        if deflate is not None:
            self._hived_extensions = [deflate]
        self._connection_proposal = None  # nobody will ask for it
        subprotocol = choose_subprotocol(event.subprotocols) if subprotocols else None
        await self._accept(event, subprotocol, [])

    async def _accept(
        self,
        request: wsproto.events.Request,
        subprotocol: str | None,
        extra_headers: list[tuple[bytes, bytes]],
    ) -> None:
        # The library's, with the extensions it does not pass on (set by accept(), then gone).
        extensions = self.__dict__.pop("_hived_extensions", [])
        self._subprotocol = subprotocol
        self._path = sys.intern(request.target)  # one string for every connection to a path
        await self._send(
            wsproto.events.AcceptConnection(
                subprotocol=subprotocol, extra_headers=extra_headers, extensions=extensions
            )
        )
        self._open_handshake.set()

    async def _handle_message_event(
        self, event: wsproto.events.BytesMessage | wsproto.events.TextMessage
    ) -> None:
        if event.frame_finished and not event.message_finished:
            self._message_size += 1
        await super()._handle_message_event(event)

    async def _handle_close_connection_event(self, event: wsproto.events.CloseConnection) -> None:
        if self._wsproto.state is ConnectionState.OPEN:
            # Made up by wsproto when a frame broke the protocol (the peer sent no close frame,
            # or the state would say so): tell the peer why before the socket is closed.
            self._close_reason = trio_websocket.CloseReason(event.code, event.reason or None)
            with trio.move_on_after(PROTOCOL_ERROR_CLOSE_S):
                with contextlib.suppress(trio_websocket.ConnectionClosed):
                    await self._send(
                        wsproto.events.CloseConnection(code=event.code, reason=event.reason)
                    )
        await super()._handle_close_connection_event(event)


_SPENT_HANDSHAKE: Final = wsproto.handshake.H11Handshake(wsproto.ConnectionType.SERVER)
"""Stands in for the handshake of every open connection: once open, wsproto only asks it for
events, and it has none."""


class _Unwatched:
    """Stands in for a ``trio.Event`` that the library only ever sets on a server connection
    once it is open: nobody waits for it."""

    __slots__ = ()

    def set(self) -> None:
        pass


_UNWATCHED: Final = _Unwatched()


class _LazyEvent:
    """Stands in for the library's ``_close_handshake`` (a ``trio.Event``, set when the closing
    handshake is over and awaited by ``aclose()``): the ``trio.Event`` is made only once a task
    waits, so that an open connection keeps a small object rather than an event and its set."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._event: trio.Event | None = None
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._set:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()


class _EventQueue(list[object]):
    """Stands in for the ``deque`` wsproto keeps for the events it makes up itself (only an
    abnormal close, on a server): an empty ``deque`` takes a 64-slot block, an empty list none."""

    __slots__ = ()

    def popleft(self) -> object:
        return self.pop(0)


class _Pings(dict[bytes, object]):
    """Stands in for the library's ``OrderedDict`` of pings in flight (twice the memory of a
    dict when empty, as it is on an idle connection): a dict keeps its order too, and the
    library only asks it for ``popitem(False)`` beyond a dict's methods."""

    __slots__ = ()

    def popitem(self, last: bool = True) -> tuple[bytes, object]:
        key = next(reversed(self)) if last else next(iter(self))
        return key, self.pop(key)


def _forget_handshake(connection: trio_websocket.WebSocketConnection) -> None:
    """Drop what only the opening needed: wsproto's handshake (its HTTP/1.1 parser and buffers,
    the parsed request, an event queue) — once open, wsproto reads and writes frames without
    it —, the empty ``deque`` of wsproto's own events (for a list) and two of the library's
    events that nobody waits for on an open server connection (the opening's, set already, and
    one for the library's own tests), the event of the closing handshake for one made when
    awaited (:class:`_LazyEvent`), and its ``OrderedDict`` of pings for a dict
    (:class:`_Pings`). Best effort: these are private attributes, and keeping them only costs
    memory."""
    proto = getattr(connection, "_wsproto", None)
    if isinstance(proto, wsproto.WSConnection) and proto.connection is not None:
        proto.handshake = _SPENT_HANDSHAKE
        events = getattr(proto.connection, "_events", None)
        if events is not None and not events:
            proto.connection._events = _EventQueue()  # type: ignore[assignment]
    for name in ("_open_handshake", "_for_testing_peer_closed_connection"):
        if hasattr(connection, name):
            setattr(connection, name, _UNWATCHED)
    pings = getattr(connection, "_pings", None)
    if pings is not None and not pings:
        connection._pings = _Pings()  # type: ignore[assignment]
    closed = getattr(connection, "_close_handshake", None)
    if isinstance(closed, trio.Event) and not closed.is_set():
        connection._close_handshake = _LazyEvent()  # type: ignore[assignment]


def _install_inbox(connection: trio_websocket.WebSocketConnection) -> Inbox:
    """Put an :class:`Inbox` in place of the library's message channel (before the handshake
    completes, so that no message can reach the channel)."""
    inbox = Inbox(connection)
    connection._send_channel = connection._recv_channel = inbox  # type: ignore[assignment]
    return inbox


async def accept(
    nursery: trio.Nursery | None,
    stream: trio.abc.Stream,
    head: bytes,
    *,
    max_message_size: int,
    timeout_s: float,
    compression: bool = False,
    min_deflate_bytes: int = 0,
    subprotocols: bool = False,
) -> WebSocket:
    """Complete the opening handshake of an upgrade request whose bytes ``head`` were read.

    ``head`` is everything already read from ``stream`` (the request head, and whatever came
    after it). The library's reader task runs in ``nursery``; without one, the caller's task
    does the handshake, and must then run the reader itself (:meth:`WebSocket.read`), which
    spares the connection a task. ``max_message_size`` is in
    characters: a larger message closes the connection with 1009. With ``compression``,
    permessage-deflate is agreed when the client offers it (messages shorter than
    ``min_deflate_bytes`` then go uncompressed); with ``subprotocols``, hived's subprotocol
    (the encoding) when the client asks for one. Raises :class:`WebSocketClosed` when the
    handshake does not complete within ``timeout_s``.
    """
    prefixed = PrefixedStream(head, stream)
    del head
    with trio.move_on_after(timeout_s):
        # What ``trio_websocket.wrap_server_stream`` does, with the inbox put in place of the
        # message channel before the library's reader starts (and holds on to the channel).
        connection = _Connection(
            prefixed,
            wsproto.WSConnection(wsproto.ConnectionType.SERVER),
            message_queue_size=0,
            max_message_size=max_message_size,
            receive_buffer_size=RECEIVE_BUFFER_BYTES,
        )
        inbox = prefixed.inbox = _install_inbox(connection)
        deflate = _Deflate(max_message_size) if compression else None
        if nursery is None:
            connection._hived_accept = (deflate, subprotocols)  # type: ignore[attr-defined]
            await connection._reader_task(until_open=True)
            if connection._wsproto.state is not ConnectionState.OPEN:
                reason = connection.closed
                raise WebSocketClosed(
                    None if reason is None else reason.code, "closed during the handshake"
                )
            subprotocol = connection.subprotocol
        else:
            nursery.start_soon(connection._reader_task, name=READER_TASK_NAME)
            request = await connection._get_request()
            if deflate is not None:
                connection._hived_extensions = [deflate]
            subprotocol = (
                choose_subprotocol(request.proposed_subprotocols) if subprotocols else None
            )
            try:
                await request.accept(subprotocol=subprotocol)
            except trio_websocket.ConnectionClosed as exc:
                raise _closed(exc) from None
        _forget_handshake(connection)
        agreed = deflate is not None and deflate.enabled()
        return WebSocket(
            connection,
            prefixed,
            stream,
            inbox,
            binary=subprotocol == SUBPROTOCOL_MSGPACK,
            window_bits=deflate.server_max_window_bits if agreed and deflate else 0,
            min_deflate_bytes=min_deflate_bytes,
        )
    raise WebSocketClosed(None, "the WebSocket handshake did not complete in time")
