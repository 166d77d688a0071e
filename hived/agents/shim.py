"""The shim: one small process per agent run that holds the agent, so that it outlives hived.

How it works (containerd-shim and conmon are the models): hived starts ``python -m hived.agents.shim
--dir DIR -- ARGV...`` in a session of its own; the shim starts ARGV in another new session with
pipes for stdin, stdout and stderr, and from then on owns them. Everything the agent prints is
appended to ``DIR/stdout`` and ``DIR/stderr`` (the *spools*; offsets are byte offsets in them),
stdin stays open for writes, and ``DIR/ctl.sock`` answers newline-delimited JSON requests
(``status``, ``write``, ``close_stdin``, ``signal``, ``watch``, ``tail``, ``collect``); a
``tail`` connection then carries the raw bytes of one spool from an offset, so that a line the
agent prints reaches hived in one hop, from the pipe, with no notice and no read of the file
(the file is read only for a tail that is behind). When the agent
exits, the shim drains its pipes, records ``DIR/exit.json`` and waits for hived to ``collect``,
which deletes DIR; with no collect within ``--orphan-exit-s`` it exits and leaves the files for a
later hived to read. The protocol is written down in docs/internals.md ("The shim protocol").

One thread, one ``selectors`` loop, and a timeout only while a deadline is pending: idle, the
shim sleeps in ``epoll_wait``. Nothing here imports trio, the rest of hived or anything outside
the stdlib, so the shim runs from any interpreter and is not touched by an upgrade of hived.
"""

from __future__ import annotations

import binascii
import contextlib
import errno
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

TYPE_CHECKING = False  # typing itself would cost the shim 0.4 MB of memory for good
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import IO, Any, Final, TypeAlias

    Message: TypeAlias = dict[str, Any]

SHIM_PROTOCOL_VERSION: Final = 2
"""``version`` in shim.json; raised when a request or a file changes incompatibly."""
SOCKET_NAME: Final = "ctl.sock"
META_NAME: Final = "shim.json"
EXIT_NAME: Final = "exit.json"
STDOUT_NAME: Final = "stdout"
STDERR_NAME: Final = "stderr"

SPOOL_MAX_BYTES: Final = 1 << 30
"""Default cap of each spool file; past it one note is appended and the rest is dropped."""
ORPHAN_EXIT_S: Final = 86400.0
"""Default time the shim waits, once its agent has ended, for a ``collect`` before exiting."""
DRAIN_GRACE_S: Final = 2.0
"""After the agent exits, how long its pipes are still read (grandchildren may hold them)."""
READ_CHUNK_BYTES: Final = 64 * 1024
STDIN_QUEUE_MAX_BYTES: Final = 16 << 20
"""Bytes written to the agent's stdin and not yet taken by it; past this, writes are refused."""
REQUEST_MAX_BYTES: Final = 64 << 20
"""The longest request line; a client sending a longer one is disconnected."""
REPLY_BACKLOG_BYTES: Final = 1 << 20
"""A client's unsent replies past which its further requests wait until it reads them."""
MAX_CLIENTS: Final = 256
SPAWN_FAILED_EXIT: Final = 127
TAIL_BUFFER_BYTES: Final = 256 * 1024
"""A tail's unsent bytes past which new output waits in the spool file, not in memory."""
CAP_NOTE: Final = "\n[hived-shim: spool cap of {cap} bytes reached; further output dropped]\n"
OPS: Final = ("status", "write", "close_stdin", "signal", "watch", "tail", "collect")
STREAM_NAMES: Final = ("stdout", "stderr")
PR_SET_CHILD_SUBREAPER: Final = 36
"""prctl(2): orphans among the shim's descendants are reparented to the shim, not to init."""
LONGEST_WAIT_S: Final = 1e6
"""The longest single wait in the loop (epoll takes milliseconds in an int)."""
USAGE: Final = (
    "usage: python -m hived.agents.shim --dir DIR [--cwd CWD] [--spool-max-bytes N]"
    " [--orphan-exit-s S] -- ARGV..."
)


def _log(message: str) -> None:
    """A line to stderr (hived's log or /dev/null); the shim has nowhere else to say it."""
    with contextlib.suppress(OSError):
        os.write(2, f"hived-shim[{os.getpid()}]: {message}\n".encode(errors="replace"))


def _ignore_signal(signum: int, frame: object) -> None:
    """A handler that does nothing: unlike SIG_IGN it is not inherited by the agent on exec."""


def encode(message: Message) -> bytes:
    """One line of the protocol: compact JSON and ``\\n``."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _error(text: str) -> Message:
    return {"ok": False, "error": text}


def _write_all(fd: int, data: bytes) -> int:
    """Write all of ``data`` to a blocking fd; returns how many bytes got there before an error."""
    done = 0
    view = memoryview(data)
    while done < len(data):
        done += os.write(fd, view[done:])
    return done


def write_json_atomic(path: str, message: Message) -> None:
    """Write ``path`` so that a reader sees the old file or the whole new one, never a part."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, encode(message))
    finally:
        os.close(fd)
    os.replace(tmp, path)


class Spool:
    """One stream's spool file, appended as read and capped at ``cap`` bytes plus one note."""

    def __init__(self, path: str, cap: int) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        self.cap = cap
        self.size = 0
        """Bytes in the file: the shim is its only writer, so this is its size."""
        self.capped = False
        self.lost_bytes = 0
        """Bytes that could not be written (a full disk): counted, never retried."""
        self.lost_since: float | None = None
        """When bytes were first lost (Unix time); None while none were."""
        self.losing = False
        """The last write failed (logged once per run of failures)."""

    def append(self, data: bytes) -> bytes:
        """Append what fits under the cap (and the note, once); return what the file gained
        (empty once output is dropped)."""
        if self.capped:
            return b""
        room = self.cap - self.size
        if len(data) > room:
            data = data[:room] + CAP_NOTE.format(cap=self.cap).encode()
            self.capped = True
        try:
            _write_all(self.fd, data)
        except OSError as exc:  # a full disk: what did not fit is lost, the offsets stay true
            before, self.size = self.size, os.fstat(self.fd).st_size
            self._lost(len(data) - (self.size - before), exc)
            return os.pread(self.fd, self.size - before, before)
        self.size += len(data)
        if self.losing:
            self.losing = False
            _log(f"{self.path}: writes work again; {self.lost_bytes} bytes lost so far")
        return data

    def _lost(self, count: int, exc: OSError) -> None:
        """Count output that did not reach the file; the agent goes on, never blocked."""
        self.lost_bytes += count
        if self.lost_since is None:
            self.lost_since = time.time()
        if not self.losing:
            self.losing = True
            _log(f"{self.path}: {exc.strerror}; output lost (counted in lost_bytes)")


class Client:
    """One connection to the control socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.scanned = 0
        """How far ``inbuf`` is known to hold no newline."""
        self.out = bytearray()
        self.interest = 0
        """What the selector watches for on this socket (0: not registered)."""
        self.watching = False
        self.data_pending = False
        """A ``data`` event is due; made from the sizes of the moment it is sent."""
        self.told: tuple[int, int] | None = None
        """The sizes in the last ``data`` event it was given."""
        self.notices = True
        """A watcher gets ``data`` events (not when it asked ``watch`` with ``data: false``)."""
        self.tail: int | None = None
        """After ``tail``: the spool (0 stdout, 1 stderr) whose bytes this connection carries."""
        self.tail_offset = 0
        """With ``tail``: the spool offset up to which bytes are in ``out`` or sent."""
        self.paused = False
        """Its requests wait until it has read enough of its replies."""
        self.eof = False
        self.closed = False


class Shim:
    """The running shim: the agent, its pipes and spools, the control socket, the loop."""

    def __init__(
        self,
        directory: str,
        popen: subprocess.Popen[bytes],
        spools: tuple[Spool, Spool],
        listener: socket.socket,
        orphan_exit_s: float,
    ) -> None:
        self.dir = directory
        self.popen = popen
        self.agent_pid = popen.pid
        self.spools = spools
        self.pipes: list[IO[bytes] | None] = [popen.stdout, popen.stderr]
        self.stdin: IO[bytes] | None = popen.stdin
        self.stdin_queue = bytearray()
        self.stdin_watched = False
        self.stdin_closing = False
        self.stdin_refusal = ""
        """Why a write is refused; empty while stdin takes writes."""
        self.listener = listener
        self.orphan_exit_s = orphan_exit_s
        self.selector = selectors.DefaultSelector()
        self.clients: set[Client] = set()
        self.dirty: set[Client] = set()
        """Clients with replies or events to send at the end of this turn of the loop."""
        self.exit_fd: int | None = None
        """The agent's pidfd (None: its exit is noticed through SIGCHLD)."""
        self.wake_fd: int | None = None
        """The read end of the SIGCHLD wakeup pipe."""
        self.returncode: int | None = None
        self.ended_at = 0.0
        self.exit_code: int | None = None
        """Set once the agent has exited and its pipes are drained (exit.json is written)."""
        self.drain_deadline = 0.0
        self.orphan_deadline = 0.0
        self.exit_status: int | None = None
        """The shim's own exit status, once it is to exit."""

        for index, pipe in enumerate(self.pipes):
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)
            self.selector.register(pipe, selectors.EVENT_READ, self._reader(index))
        assert self.stdin is not None
        os.set_blocking(self.stdin.fileno(), False)
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, self._on_accept)

    # The agent's exit.

    def watch_exit(self, use_pidfd: bool) -> None:
        """Be woken when the agent exits (a pidfd, or SIGCHLD through a wakeup fd), and when
        an adopted orphan does (SIGCHLD), to reap it."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self.selector.register(wake_r, selectors.EVENT_READ, self._on_wakeup)
        self.wake_fd = wake_r
        pidfd_open = getattr(os, "pidfd_open", None)
        if use_pidfd and pidfd_open is not None:
            try:
                pidfd: int = pidfd_open(self.agent_pid)
            except OSError:
                pass
            else:
                self.exit_fd = pidfd
                self.selector.register(pidfd, selectors.EVENT_READ, self._on_pidfd)
                return
        self._poll_agent()  # it may have exited before the handler was in place

    def _on_pidfd(self, mask: int) -> None:
        assert self.exit_fd is not None
        self.selector.unregister(self.exit_fd)
        os.close(self.exit_fd)
        self.exit_fd = None
        self._on_agent_exit(self.popen.wait())  # it has exited: this does not block

    def _on_wakeup(self, mask: int) -> None:
        assert self.wake_fd is not None
        try:
            while os.read(self.wake_fd, 512):
                pass
        except BlockingIOError:
            pass
        self._reap_adopted()
        if self.exit_fd is None:
            self._poll_agent()

    def _reap_adopted(self) -> None:
        """Reap the orphans the shim adopted that have exited (never the agent: its status is
        Popen's to collect)."""
        for pid in _children(os.getpid()):
            if pid != self.agent_pid:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    def _signal_escaped(self, signum: int) -> int:
        """Signal the agent's descendants that left its process group (``setsid()``, then
        orphaned: the shim adopted them); how many there were."""
        count = 0
        for pid in _descendants(os.getpid()):
            try:
                if os.getpgid(pid) != self.agent_pid:
                    os.kill(pid, signum)
                    count += 1
            except OSError:
                pass  # gone meanwhile
        return count

    def _poll_agent(self) -> None:
        if self.returncode is None and (code := self.popen.poll()) is not None:
            self._on_agent_exit(code)

    def _on_agent_exit(self, code: int) -> None:
        self.returncode = code
        self.ended_at = time.time()
        self.drain_deadline = time.monotonic() + DRAIN_GRACE_S
        self._close_stdin("the agent has exited")
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        """Once the agent has exited and its pipes are drained (or the grace is over): record
        the exit and tell the watchers."""
        if self.returncode is None or self.exit_code is not None:
            return
        if any(self.pipes) and time.monotonic() < self.drain_deadline:
            return
        for index in range(len(self.pipes)):
            self._close_pipe(index)
        # Whatever the agent left behind, in its group or escaped from it, ends with it.
        with contextlib.suppress(OSError):
            os.killpg(self.agent_pid, signal.SIGKILL)
        self._signal_escaped(signal.SIGKILL)
        path = os.path.join(self.dir, EXIT_NAME)
        try:
            write_json_atomic(
                path, {"exit_code": self.returncode, "ended_at": self.ended_at, **self._losses()}
            )
        except OSError as exc:
            _log(f"{path}: {exc.strerror}")
        self.exit_code = self.returncode
        self.orphan_deadline = time.monotonic() + self.orphan_exit_s
        for client in self.clients:
            if client.watching:
                self._push_exit(client)

    def _push_exit(self, client: Client) -> None:
        sizes = self._sizes()
        if client.notices and client.told != sizes:  # the final sizes come before the exit
            self._push_data(client)
        client.out += encode(
            {
                "event": "exit",
                "exit_code": self.exit_code,
                "stdout_bytes": sizes[0],
                "stderr_bytes": sizes[1],
                **self._losses(),
            }
        )
        client.data_pending = False
        self.dirty.add(client)

    # The agent's output.

    def _reader(self, index: int) -> Callable[[int], None]:
        def on_readable(mask: int) -> None:
            pipe = self.pipes[index]
            assert pipe is not None
            try:
                data = os.read(pipe.fileno(), READ_CHUNK_BYTES)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_pipe(index)
                self._maybe_finish()
                return
            spool = self.spools[index]
            before = spool.size
            appended = spool.append(data)
            if not appended:
                return
            for client in self.clients:
                if client.tail == index:
                    # A tail that is up to date takes the bytes as they are; one behind
                    # reads them from the file when it has room (_refill).
                    if client.tail_offset == before and len(client.out) < TAIL_BUFFER_BYTES:
                        client.out += appended
                        client.tail_offset = spool.size
                    self.dirty.add(client)
                elif client.watching and client.notices:
                    client.data_pending = True
                    self.dirty.add(client)

        return on_readable

    def _close_pipe(self, index: int) -> None:
        pipe = self.pipes[index]
        if pipe is not None:
            self.selector.unregister(pipe)
            pipe.close()
            self.pipes[index] = None
            # Its tails end once they have sent the rest.
            self.dirty.update(client for client in self.clients if client.tail == index)

    def _losses(self) -> Message:
        """The output lost to write errors, for ``status``, ``exit`` and exit.json."""
        since = [spool.lost_since for spool in self.spools if spool.lost_since is not None]
        return {
            "stdout_lost_bytes": self.spools[0].lost_bytes,
            "stderr_lost_bytes": self.spools[1].lost_bytes,
            "lost_since": min(since) if since else None,
        }

    def _sizes(self) -> tuple[int, int]:
        return self.spools[0].size, self.spools[1].size

    def _push_data(self, client: Client) -> None:
        client.told = self._sizes()
        client.out += encode(
            {"event": "data", "stdout_bytes": client.told[0], "stderr_bytes": client.told[1]}
        )
        client.data_pending = False

    # The agent's input.

    def _queue_stdin(self, data: bytes) -> Message:
        if self.stdin_refusal:
            return _error(self.stdin_refusal)
        if len(self.stdin_queue) + len(data) > STDIN_QUEUE_MAX_BYTES:
            return _error(
                f"stdin queue full: {len(self.stdin_queue)} bytes wait for the agent to read "
                f"them, and at most {STDIN_QUEUE_MAX_BYTES} may"
            )
        self.stdin_queue += data
        self._flush_stdin()
        return _error(self.stdin_refusal) if self.stdin_refusal else {"ok": True}

    def _flush_stdin(self, mask: int = 0) -> None:
        if self.stdin is None:
            return
        while self.stdin_queue:
            try:
                written = os.write(self.stdin.fileno(), self.stdin_queue)
            except BlockingIOError:
                break
            except OSError as exc:
                gone = exc.errno == errno.EPIPE
                self._close_stdin("stdin closed by the agent" if gone else f"stdin: {exc}")
                return
            del self.stdin_queue[:written]
        if self.stdin_queue and not self.stdin_watched:
            self.selector.register(self.stdin, selectors.EVENT_WRITE, self._flush_stdin)
            self.stdin_watched = True
        elif not self.stdin_queue:
            if self.stdin_watched:
                self.selector.unregister(self.stdin)
                self.stdin_watched = False
            if self.stdin_closing:
                self._close_stdin("stdin is closed (close_stdin)")

    def _close_stdin(self, reason: str) -> None:
        self.stdin_refusal = self.stdin_refusal or reason
        self.stdin_queue.clear()
        if self.stdin is not None:
            if self.stdin_watched:
                self.selector.unregister(self.stdin)
                self.stdin_watched = False
            self.stdin.close()
            self.stdin = None

    # The control socket.

    def _on_accept(self, mask: int) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                _log(f"accept: {exc.strerror}")
                return
            if len(self.clients) >= MAX_CLIENTS:
                sock.close()
                continue
            sock.setblocking(False)
            client = Client(sock)
            self.clients.add(client)
            self._set_interest(client, selectors.EVENT_READ)

    def _set_interest(self, client: Client, events: int) -> None:
        if events == client.interest:
            return
        callback = self._on_client(client)
        if not client.interest:
            self.selector.register(client.sock, events, callback)
        elif not events:
            self.selector.unregister(client.sock)
        else:
            self.selector.modify(client.sock, events, callback)
        client.interest = events

    def _on_client(self, client: Client) -> Callable[[int], None]:
        return lambda mask: self._on_client_ready(client, mask)

    def _on_client_ready(self, client: Client, mask: int) -> None:
        if client.closed:
            return
        if mask & selectors.EVENT_READ:
            try:
                data = client.sock.recv(READ_CHUNK_BYTES)
            except BlockingIOError:
                data = None
            except OSError:
                self._drop(client)
                return
            if data == b"":
                client.eof = True  # half-closed: its replies are still sent
            elif client.tail is not None:
                pass  # a tail carries bytes one way: what its reader sends is ignored
            elif data:
                client.inbuf += data
                self._handle_lines(client)
        self.dirty.add(client)

    def _drop(self, client: Client) -> None:
        if not client.closed:
            self._set_interest(client, 0)
            client.sock.close()
            client.closed = True
            self.clients.discard(client)
            self.dirty.discard(client)

    def _handle_lines(self, client: Client) -> None:
        while not client.closed and self.exit_status is None:
            if len(client.out) >= REPLY_BACKLOG_BYTES:
                client.paused = True
                return
            end = client.inbuf.find(b"\n", client.scanned)
            if end < 0:
                client.scanned = len(client.inbuf)
                if client.scanned > REQUEST_MAX_BYTES:
                    self._drop(client)
                return
            if end > REQUEST_MAX_BYTES:
                self._drop(client)
                return
            line = client.inbuf[:end]
            del client.inbuf[: end + 1]
            client.scanned = 0
            try:
                reply = self._request(client, line)
            except Exception as exc:  # a bug must cost one connection, not the agent's shim
                _log(f"request {bytes(line[:200])!r} failed: {exc!r}")
                self._drop(client)
                return
            if reply is not None:
                client.out += encode(reply)

    def _flush(self, client: Client) -> None:
        """Send what the socket takes; resume a paused client's requests once it has read."""
        self._send(client)
        if client.paused and not client.closed and len(client.out) < REPLY_BACKLOG_BYTES:
            client.paused = False
            self._handle_lines(client)
            self._send(client)
        if client.closed or self.exit_status is not None:
            return
        if client.eof and not client.out and not client.paused:
            self._drop(client)
            return
        reading = 0 if client.paused or client.eof else selectors.EVENT_READ
        self._set_interest(client, reading | (selectors.EVENT_WRITE if client.out else 0))

    def _send(self, client: Client) -> None:
        while not client.closed:
            if client.tail is not None:
                if self._refill(client):
                    return
            elif not client.out and client.data_pending:
                if client.told != self._sizes():
                    self._push_data(client)
                client.data_pending = False
            if not client.out:
                return
            try:
                sent = client.sock.send(client.out)
            except BlockingIOError:
                return
            except OSError:
                self._drop(client)
                return
            del client.out[:sent]

    def _refill(self, client: Client) -> bool:
        """Top up a tail that is behind from the spool file; True once it is done and closed
        (its stream ended and every byte was sent)."""
        assert client.tail is not None
        spool = self.spools[client.tail]
        behind = spool.size - client.tail_offset
        if behind and len(client.out) < TAIL_BUFFER_BYTES:
            chunk = os.pread(spool.fd, min(behind, READ_CHUNK_BYTES), client.tail_offset)
            client.out += chunk
            client.tail_offset += len(chunk)
        elif not behind and not client.out and self.pipes[client.tail] is None:
            self._drop(client)
            return True
        return False

    # Requests.

    def _request(self, client: Client, line: bytearray) -> Message | None:
        """The reply to one request line, or None when it was already queued."""
        try:
            request = json.loads(line)
        except (ValueError, RecursionError) as exc:
            return _error(f"bad JSON: {exc}")
        op = request.get("op") if isinstance(request, dict) else None
        if not isinstance(op, str):
            return _error('a request is a JSON object with a string "op"')
        if op == "status":
            return {
                "ok": True,
                "agent_pid": self.agent_pid,
                "shim_pid": os.getpid(),
                "exit_code": self.exit_code,
                "stdout_bytes": self.spools[0].size,
                "stderr_bytes": self.spools[1].size,
                "stdin_open": not self.stdin_refusal and not self.stdin_closing,
                **self._losses(),
            }
        if op == "write":
            data = request.get("data")
            if not isinstance(data, str):
                return _error('write: "data" must be a base64 string')
            try:
                raw = binascii.a2b_base64(data, strict_mode=True)
            except ValueError:  # binascii.Error, or a str that is not ASCII
                return _error('write: "data" is not valid base64')
            if self.stdin_closing and not self.stdin_refusal:
                return _error("stdin is closed (close_stdin)")
            return self._queue_stdin(raw)
        if op == "close_stdin":
            self.stdin_closing = True
            self._flush_stdin()
            return {"ok": True}
        if op == "signal":
            return self._signal(request.get("signal"))
        if op == "watch":
            client.watching = True
            client.notices = request.get("data", True) is not False
            client.out += encode({"ok": True})
            if self.exit_code is None:
                client.data_pending = client.notices  # the current sizes at once
            else:
                self._push_exit(client)
            return None
        if op == "tail":
            return self._tail(client, request.get("stream"), request.get("offset"))
        if op == "collect":
            return self._collect(client)
        return _error(f"unknown op {op!r}: expected one of {', '.join(OPS)}")

    def _tail(self, client: Client, stream: object, offset: object) -> Message | None:
        if stream not in STREAM_NAMES:
            return _error('tail: "stream" must be "stdout" or "stderr"')
        index = STREAM_NAMES.index(stream)
        size = self.spools[index].size
        if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= size:
            return _error(f'tail: "offset" must be an integer from 0 to {size}')
        client.out += encode({"ok": True})
        client.tail, client.tail_offset = index, offset
        client.inbuf.clear()
        return None

    def _signal(self, signum: object) -> Message:
        if not isinstance(signum, int) or isinstance(signum, bool) or not 0 <= signum < signal.NSIG:
            return _error('signal: "signal" must be a signal number')
        try:
            os.killpg(self.agent_pid, signum)
        except ProcessLookupError:
            group_gone = True
        except OSError as exc:
            return _error(f"signal: {exc.strerror}")
        else:
            group_gone = False
        if not self._signal_escaped(signum) and group_gone:
            return {"ok": True, "gone": True}
        return {"ok": True}

    def _collect(self, client: Client) -> Message | None:
        if self.exit_code is None:
            return _error("agent still running")
        import shutil  # only now: it is not worth its memory for the rest of the shim's life

        try:
            shutil.rmtree(self.dir)
        except OSError as exc:
            return _error(f"collect: cannot delete {exc.filename}: {exc.strerror}")
        client.out += encode({"ok": True, "exit_code": self.exit_code})
        try:  # the last thing this shim does: it may wait a little for the reader
            client.sock.settimeout(1.0)
            client.sock.sendall(client.out)
        except OSError:
            pass
        self.exit_status = 0
        return None

    # The loop.

    def run(self) -> int:
        """Serve until collected (0) or orphaned (0); return the shim's exit status."""
        while not self._exiting():
            deadline = self._deadline()
            timeout = None
            if deadline is not None:
                timeout = min(max(0.0, deadline - time.monotonic()), LONGEST_WAIT_S)
            for key, mask in self.selector.select(timeout):
                key.data(mask)
                if self._exiting():
                    break
            else:
                self._check_deadlines()
                for client in list(self.dirty):
                    self._flush(client)
                self.dirty.clear()
        assert self.exit_status is not None
        return self.exit_status

    def _exiting(self) -> bool:
        return self.exit_status is not None

    def _deadline(self) -> float | None:
        if self.exit_code is not None:
            return self.orphan_deadline
        if self.returncode is not None:
            return self.drain_deadline
        return None

    def _check_deadlines(self) -> None:
        if self.returncode is not None and self.exit_code is None:
            self._maybe_finish()
        if self.exit_code is not None and time.monotonic() >= self.orphan_deadline:
            _log(f"no collect within {self.orphan_exit_s:g} s; exiting, {self.dir} left for hived")
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.dir, SOCKET_NAME))
            self.exit_status = 0


# Starting.


def _children(pid: int) -> list[int]:
    """The children of ``pid``, from /proc (every thread's list)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                found += [int(word) for word in f.read().split()]
        except OSError:
            pass
    return found


def _descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``, parents before their children."""
    found: list[int] = []
    todo = _children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += _children(child)
    return found


def _become_subreaper() -> None:
    """Adopt the agent's orphans: a child that calls ``setsid()`` and loses its parent comes to
    the shim instead of init, so that stops still reach it (and the shim reaps it)."""
    try:
        import ctypes  # only here: 0.2 MB the shim need not keep for anything else

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            _log(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    except (OSError, AttributeError) as exc:
        _log(f"cannot become a subreaper: {exc}")


def _own_fds_only() -> None:
    """Close whatever fds above 2 the spawner leaked, and make sure 0-2 are open."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = []
        os.closerange(3, 65536)
    for fd in fds:
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)
    for fd in range(3):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # takes the lowest free fd: this one


def _fail(exc: OSError) -> int:
    """Say on stdout why the agent could not be started, as one JSON line; exit 127."""
    code = exc.errno if isinstance(exc.errno, int) else errno.EIO
    line = {
        "error": errno.errorcode.get(code, "EIO"),
        "errno": code,
        "filename": None if exc.filename is None else os.fsdecode(exc.filename),
        "message": exc.strerror or os.strerror(code),
    }
    with contextlib.suppress(OSError):
        _write_all(1, encode(line))
    return SPAWN_FAILED_EXIT


def _claim_socket() -> socket.socket:
    """Bind ``SOCKET_NAME`` in the current folder (mode 0600), replacing a stale socket."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(SOCKET_NAME)
    except FileNotFoundError:
        pass
    except ConnectionRefusedError:
        os.unlink(SOCKET_NAME)  # left by a shim that is gone
    else:
        raise OSError(errno.EADDRINUSE, "another shim serves this folder", SOCKET_NAME)
    finally:
        probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)  # no moment with looser permissions
    try:
        listener.bind(SOCKET_NAME)
    except OSError:
        listener.close()
        raise
    finally:
        os.umask(umask)
    os.chmod(SOCKET_NAME, 0o600)
    listener.listen(64)
    return listener


def _remove(directory: str, names: Sequence[str]) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))


class UsageError(ValueError):
    """The command line is wrong (hived's bug, not the agent's)."""


class Options:
    """The command line. Parsed by hand: argparse would cost every shim 0.4 MB for good."""

    def __init__(self, words: Sequence[str]) -> None:
        self.dir = ""
        self.cwd: str | None = None
        self.spool_max_bytes = SPOOL_MAX_BYTES
        self.orphan_exit_s = ORPHAN_EXIT_S
        self.wait_with_sigchld = False
        """Watch the agent through SIGCHLD even where pidfd_open exists (for the tests)."""
        if "--" not in words:
            raise UsageError("the agent's command must follow --")
        split = list(words).index("--")
        self.argv = list(words[split + 1 :])
        if not self.argv:
            raise UsageError("the agent's command is missing after --")
        flags = iter(words[:split])
        for word in flags:
            name, equals, value = word.partition("=")
            if word == "--wait-with-sigchld":
                self.wait_with_sigchld = True
                continue
            if name not in ("--dir", "--cwd", "--spool-max-bytes", "--orphan-exit-s"):
                raise UsageError(f"unknown option {word!r}")
            if not equals:
                value = next(flags, "")
            if not value:
                raise UsageError(f"{name} needs a value")
            if name == "--dir":
                self.dir = value
            elif name == "--cwd":
                self.cwd = value
            elif name == "--spool-max-bytes":
                self.spool_max_bytes = int(_number(name, value, int))
            else:
                self.orphan_exit_s = _number(name, value, float)
        if not self.dir:
            raise UsageError("--dir is required")


def _number(name: str, value: str, kind: Callable[[str], float]) -> float:
    try:
        number = kind(value)
    except ValueError:
        raise UsageError(f"{name}: {value!r} is not a number") from None
    if not 0 <= number < float("inf"):
        raise UsageError(f"{name}: {value!r} must be 0 or more")
    return number


def main(args: Sequence[str] | None = None) -> int:
    _own_fds_only()
    words = sys.argv[1:] if args is None else args
    if words and words[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        options = Options(words)
    except UsageError as exc:
        print(f"{USAGE}\nhived-shim: {exc}", file=sys.stderr)
        return 2
    argv = options.argv
    try:
        start_cwd = os.getcwd()
    except OSError:
        start_cwd = "/"
    directory = os.path.join(start_cwd, options.dir)
    cwd = os.path.join(start_cwd, options.cwd) if options.cwd else start_cwd
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _ignore_signal)  # hived stops agents with the signal op
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    made: list[str] = []
    listener: socket.socket | None = None
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chdir(directory)  # binding by a relative name lifts the 108-byte limit of the path
        listener = _claim_socket()
        made.append(SOCKET_NAME)
        _remove(directory, [META_NAME, EXIT_NAME])  # an earlier run's, with no shim left
        made += [STDOUT_NAME, STDERR_NAME]
        spools = (
            Spool(os.path.join(directory, STDOUT_NAME), options.spool_max_bytes),
            Spool(os.path.join(directory, STDERR_NAME), options.spool_max_bytes),
        )
        os.chdir("/")
        _become_subreaper()
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        if listener is not None:
            listener.close()
        _remove(directory, made)
        return _fail(exc if isinstance(exc, OSError) else OSError(errno.EINVAL, str(exc)))

    shim = Shim(directory, popen, spools, listener, options.orphan_exit_s)
    shim.watch_exit(use_pidfd=not options.wait_with_sigchld)
    meta = {
        "version": SHIM_PROTOCOL_VERSION,
        "shim_pid": os.getpid(),
        "agent_pid": popen.pid,
        "argv": argv,
        "cwd": cwd,
        "started_at": time.time(),
    }
    try:
        write_json_atomic(os.path.join(directory, META_NAME), meta)
    except OSError as exc:  # the agent runs but nobody could find it: end it
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        listener.close()
        _remove(directory, [*made, META_NAME + ".tmp"])
        return _fail(exc)
    with contextlib.suppress(OSError):  # if hived is gone already, a later one finds shim.json
        _write_all(1, encode({"agent_pid": popen.pid, "shim_pid": os.getpid()}))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return shim.run()


if __name__ == "__main__":
    raise SystemExit(main())
