"""A benchmark subscriber process: many raw WebSocket connections that count flood events.

    python -m bench.load_client --port P --connections K --mode burst|latency|idle ...

How it works: each connection does the WebSocket handshake itself (a plain socket, no
compression offered unless ``--deflate``), sends one ``subscribe`` request when asked, and waits
for the answer; then
one epoll loop reads every connection. It never parses a frame: server frames are unmasked, so
an event's JSON appears verbatim in the byte stream, and counting the flood marker (``"flood ``,
the start of every flood line inside an event's ``data``) counts events, whether the server
sends one event per frame (the peer) or a JSON array of them (hived). In ``latency`` mode the
agent's send time that follows the marker is read too, and ``monotonic_ns()`` at the read minus
that time goes into a histogram. This keeps the clients cheap, so that the servers, not the
clients, are what is measured; each process still reports its own CPU time to show it.

With ``--deflate`` each connection offers permessage-deflate (as a browser does), for the idle
memory figure with compression agreed; the events are then not counted (they may come
compressed), so it is for ``idle`` mode only.

Protocol with the orchestrator (one JSON object per stdout line): ``{"ready": K, "deflate": D}``
once every connection is subscribed (D of them with permessage-deflate agreed); then, in
``burst``/``latency`` mode, a result once every connection has counted ``--expect`` events (or
``--timeout`` passed); in ``idle`` mode the process holds its connections until a line arrives
on stdin (or ``--timeout``), then reports and exits. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import select
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, Final

import attrs

MARKER: Final = b'"flood '
"""What every flood event carries once: its ``data.line`` begins with ``flood ``."""
READ_BYTES: Final = 256 * 1024
BUCKET_NS: Final = 10_000
"""Latency histogram resolution: 10 µs."""
BATCH_BYTES: Final = 16 * 1024
BATCH_WAIT_S: Final = 0.02
"""Burst mode: when a round of reads averaged under BATCH_BYTES, wait this long before the next."""
DEFLATE_OFFER: Final = "permessage-deflate; client_max_window_bits"
"""What a browser offers (``--deflate``)."""
WARMUP_FRACTION: Final = 0.05
"""Latency samples of the first lines of a paced run are left out (connections still warming)."""


class HandshakeError(Exception):
    """The server did not accept the WebSocket upgrade."""


def masked_text_frame(payload: bytes) -> bytes:
    """A client-to-server text frame (clients must mask; RFC 6455 §5.3)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")
    return head + mask + body


def close_frame() -> bytes:
    """A masked close frame with code 1000."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(struct.pack("!H", 1000)))
    return bytes([0x88, 0x80 | 2]) + mask + body


@attrs.define
class Tally:
    """What one connection saw."""

    expect: int
    latency: bool
    warmup: int = 0
    count: int = 0
    first_sent_ns: int = 0
    """When the agent wrote the first event this connection saw (its embedded time)."""
    last_ns: int = 0
    """When the read that brought the last event returned."""
    hist: Counter[int] = attrs.Factory(Counter)
    _carry: bytes = b""
    _head: bytes = b""

    @property
    def done(self) -> bool:
        return self.count >= self.expect

    def feed(self, chunk: bytes, now_ns: int) -> None:
        """Count the markers in ``chunk`` (and one split across the previous read)."""
        before = self.count
        if not self.first_sent_ns:
            self._head += chunk
            found = next(marked_lines(self._head), None)
            if found is not None:
                self.first_sent_ns = found[1]
                self._head = b""
        if self.latency:
            self._feed_latency(chunk, now_ns)
        else:
            edge = len(MARKER) - 1
            self.count += chunk.count(MARKER) + (self._carry + chunk[:edge]).count(MARKER)
            self._carry = (self._carry + chunk)[-edge:] if len(chunk) < edge else chunk[-edge:]
        if self.count > before:
            self.last_ns = now_ns

    def _feed_latency(self, chunk: bytes, now_ns: int) -> None:
        data = self._carry + chunk
        parsed_to = 0
        for index, sent_ns, end in marked_lines(data):
            self.count += 1
            if index >= self.warmup:
                self.hist[(now_ns - sent_ns) // BUCKET_NS] += 1
            parsed_to = end
        rest = data.find(MARKER, parsed_to)
        tail = max(parsed_to, len(data) - len(MARKER) + 1)
        self._carry = data[rest:] if rest != -1 else data[tail:]


def marked_lines(data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(index, sent_ns, end)`` of each complete ``"flood <index> <sent_ns> `` in ``data``."""
    pos = 0
    while (at := data.find(MARKER, pos)) != -1:
        start = at + len(MARKER)
        space = data.find(b" ", start)
        end = data.find(b" ", space + 1) if space != -1 else -1
        if end == -1:
            return
        yield int(data[start:space]), int(data[space + 1 : end]), end
        pos = end


class Connection:
    """One WebSocket connection on a blocking socket for the handshake, non-blocking after."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        token: str | None,
        timeout_s: float,
        deflate: bool = False,
    ):
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        offer = f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n" if deflate else ""
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{auth}{offer}\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(READ_BYTES)
            if not chunk:
                raise HandshakeError("closed during the handshake")
            head += chunk
        head, self.rest = head.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            self.sock.close()
            raise HandshakeError(status.decode(errors="replace"))
        self.deflate = b"\r\nsec-websocket-extensions: permessage-deflate" in head.lower()
        """The server agreed to permessage-deflate."""

    def subscribe(self, topic: str) -> None:
        """Send ``subscribe`` and wait for its ``result``; keep what came after it."""
        request = json.dumps({"type": "subscribe", "id": 1, "topic": topic}).encode()
        self.sock.sendall(masked_text_frame(request))
        seen = self.rest
        while (at := seen.find(b'"type":"result"')) == -1:
            if b'"type":"error"' in seen:
                raise HandshakeError(f"subscribe refused: {seen[-300:]!r}")
            chunk = self.sock.recv(READ_BYTES)
            if not chunk:
                raise HandshakeError("closed before the subscribe result")
            seen = seen[-64:] + chunk
        self.rest = seen[at + len(b'"type":"result"') :]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.setblocking(False)
            self.sock.send(close_frame())
        self.sock.close()


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def open_all(args: argparse.Namespace, deadline: float) -> list[Connection]:
    conns: list[Connection] = []
    try:
        for _ in range(args.connections):
            conn = Connection(
                args.host,
                args.port,
                args.path,
                args.token,
                max(deadline - time.monotonic(), 0.1),
                args.deflate,
            )
            conns.append(conn)
            for topic in args.topic:
                conn.subscribe(topic)
    except BaseException:
        for conn in conns:
            conn.close()
        raise
    return conns


def serve_events(
    conns: list[Connection], tallies: list[Tally], deadline: float, batch: bool
) -> bool:
    """Read every connection until each has its events, closes, or the deadline; True if done.

    One epoll loop, one ``recv`` per readable socket. With ``batch`` (burst mode), a round of
    small reads is followed by a short wait so that the next reads take many events each: on a
    loopback benchmark the kernel's per-``recv`` work, billed to the client, would otherwise
    rival the server's, and the clients would compete with the server they measure. In latency
    mode every read happens at once.
    """
    poll = select.epoll()
    by_fd: dict[int, tuple[socket.socket, Tally]] = {}
    try:
        for conn, tally in zip(conns, tallies, strict=True):
            conn.sock.setblocking(False)
            if conn.rest:
                tally.feed(conn.rest, time.monotonic_ns())
            if not tally.done:
                by_fd[conn.sock.fileno()] = (conn.sock, tally)
                poll.register(conn.sock.fileno(), select.EPOLLIN)
        while by_fd:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            reads = read_bytes = 0
            for fd, _ in poll.poll(left):
                sock, tally = by_fd[fd]
                try:
                    chunk = sock.recv(READ_BYTES)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                reads += 1
                read_bytes += len(chunk)
                if chunk:
                    tally.feed(chunk, time.monotonic_ns())
                if not chunk or tally.done:
                    poll.unregister(fd)
                    del by_fd[fd]
            if batch and reads and read_bytes < BATCH_BYTES * reads:
                time.sleep(BATCH_WAIT_S)
        return True
    finally:
        poll.close()


def hold_idle(conns: list[Connection], deadline: float) -> bool:
    """Keep the connections open (reading what comes) until a line on stdin; True if it came."""
    poll = select.epoll()
    socks = {c.sock.fileno(): c.sock for c in conns}
    try:
        stdin = sys.stdin.fileno()
        poll.register(stdin, select.EPOLLIN)
        for fd, sock in socks.items():
            sock.setblocking(False)
            poll.register(fd, select.EPOLLIN)
        while (left := deadline - time.monotonic()) > 0:
            for fd, _ in poll.poll(left):
                if fd == stdin:
                    return True
                try:
                    if not socks[fd].recv(READ_BYTES):
                        poll.unregister(fd)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    poll.unregister(fd)
        return False
    finally:
        poll.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    cpu0 = time.process_time()
    conns = open_all(args, deadline)
    try:
        emit({"ready": len(conns), "deflate": sum(c.deflate for c in conns)})
        # The warm-up is by line index, counted per agent: with several topics (one agent's
        # each), each agent's share of the events.
        warmup = int(args.expect / max(len(args.topic), 1) * WARMUP_FRACTION)
        tallies = [Tally(args.expect, args.mode == "latency", warmup) for _ in conns]
        cpu1 = time.process_time()
        if args.mode == "idle":
            finished = hold_idle(conns, deadline)
        else:
            finished = serve_events(conns, tallies, deadline, batch=args.mode == "burst")
        cpu2 = time.process_time()
    finally:
        for conn in conns:
            conn.close()
    hist: Counter[int] = Counter()
    for tally in tallies:
        hist.update(tally.hist)
    counted = [t for t in tallies if t.count and t.first_sent_ns]
    return {
        "connections": len(conns),
        "events": sum(t.count for t in tallies),
        "complete": sum(t.done for t in tallies),
        "timed_out": not finished,
        "first_sent_ns": min((t.first_sent_ns for t in counted), default=0),
        "last_ns": max((t.last_ns for t in counted), default=0),
        "cpu_setup_s": cpu1 - cpu0,
        "cpu_s": cpu2 - cpu1,
        "hist": {str(k): v for k, v in hist.items()},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/ws")
    parser.add_argument("--token", default=None)
    parser.add_argument(
        "--topic", action="append", default=[], help="subscribe to this topic first (repeatable)"
    )
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--mode", choices=("burst", "latency", "idle"), default="burst")
    parser.add_argument("--expect", type=int, default=0, help="events per connection")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds, for everything")
    parser.add_argument(
        "--deflate", action="store_true", help="offer permessage-deflate (idle mode only)"
    )
    args = parser.parse_args(argv)
    if args.deflate and args.mode != "idle":
        parser.error("--deflate is for --mode idle (compressed events are not counted)")
    return args


def main() -> None:
    args = parse_args()
    try:
        result = run(args)
    except (OSError, HandshakeError) as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)
    emit(result)


if __name__ == "__main__":
    main()
