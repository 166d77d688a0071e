"""The two servers under test, as subprocesses on loopback, and a control channel to each.

:class:`HivedServer` runs the real daemon (``hived run --config``) with a generated config: one
operator token, a ``flood`` agent template (format ``text``) that runs ``bench/agents/flood.py``,
a state folder of its own, heartbeats and subscriber queues sized so that neither interferes with
a benchmark run. The peers run the same agent: :class:`PeerServer` is ``bench/peer_server.py``
on asyncio, :class:`UvloopPeer` the same on uvloop, :class:`NodePeer` ``bench/node/peer.js``
(Node's ``ws``); a peer that cannot run here says why (:func:`available_peers`). All are
driven the same way: :meth:`Server.start_session` (``session.start`` with the agent's args) and
:meth:`Server.send_input` (``session.input``) over a WebSocket with the operator token.

Every process started here is stopped in :meth:`Server.stop` (SIGTERM, then SIGKILL after a grace
period); use the servers as context managers.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

from websockets.sync.client import ClientConnection, connect

REPO: Final = Path(__file__).resolve().parents[1]
FLOOD_AGENT: Final = REPO / "bench" / "agents" / "flood.py"
NODE_DIR: Final = REPO / "bench" / "node"
PYTHON: Final = sys.executable
TOKEN: Final = "bench-operator-secret-0123456789abcdef"
ADMIN_TOKEN: Final = "bench-admin-secret-0123456789abcdef"
"""For ``status`` on the admin channel (:meth:`HivedServer.status`)."""
START_DEADLINE_S: Final = 30.0
STOP_GRACE_S: Final = 10.0
REQUEST_DEADLINE_S: Final = 15.0
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_BYTES: Final = os.sysconf("SC_PAGE_SIZE")


class BenchError(Exception):
    """A server did not start or answer as the benchmark needs."""


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (not its children), from ``/proc``.

    Read from ``/proc`` rather than with psutil so the benchmark (and its smoke test) need
    nothing beyond the test dependencies; the benchmark is Linux-only anyway (epoll).
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def process_rss_bytes(pid: int) -> int:
    """Resident set size of one process, from ``/proc``."""
    resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident_pages * PAGE_BYTES


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hived_config(port: int, state_dir: Path, subscriber_queue: int) -> str:
    """The daemon's config for a benchmark run."""
    command = json.dumps([PYTHON, str(FLOOD_AGENT)])
    return f"""\
[server]
listen = "127.0.0.1:{port}"
heartbeat_interval_s = 600.0
heartbeat_timeout_s = 60.0
subscriber_queue = {subscriber_queue}

[state]
dir = {json.dumps(str(state_dir))}

[daemon]
shutdown_timeout_s = 5.0

[[tokens]]
name = "bench"
role = "operator"
sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"

[[tokens]]
name = "bench-admin"
role = "admin"
sha256 = "{hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}"

[agents.flood]
command = {command}
format = "text"
args_allowed = "[0-9.]+|--rate|--wait"
restart = "no"
idle_s = 3600.0
stop_timeout_s = 2.0
"""


class Control:
    """Requests with ids over one WebSocket; frames may be one message or a JSON array."""

    def __init__(self, port: int, path: str = "/v1/ws", token: str = TOKEN) -> None:
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(
                f"ws://127.0.0.1:{port}{path}",
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=REQUEST_DEADLINE_S,
                max_size=None,
                compression=None,
            )
        )
        self.next_id = 100

    def request(self, type_: str, **fields: Any) -> dict[str, Any]:
        """The ``result`` of a request, or :class:`BenchError` with the ``error``."""
        self.next_id += 1
        rid = self.next_id
        self.ws.send(json.dumps({"type": type_, "id": rid, **fields}))
        deadline = time.monotonic() + REQUEST_DEADLINE_S
        while True:
            frame = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.001)))
            for message in frame if isinstance(frame, list) else [frame]:
                if message.get("id") != rid:
                    continue
                if message.get("type") == "error":
                    raise BenchError(f"{type_}: {message.get('code')}: {message.get('message')}")
                result: dict[str, Any] = message["result"]
                return result

    def close(self) -> None:
        self._stack.close()


class Server:
    """A server subprocess: its pid, port, control channel, CPU and memory."""

    name: str = "?"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._control: Control | None = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def control(self) -> Control:
        if self._control is None:
            self._control = Control(self.port)
        return self._control

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process itself (not its agents)."""
        return process_cpu_s(self.pid)

    def rss_bytes(self) -> int:
        return process_rss_bytes(self.pid)

    def start_session(self, args: list[str]) -> str:
        """Start a flood agent with ``args``; its session id."""
        return str(self.control.request("session.start", agent="flood", args=args)["session"])

    def send_input(self, session: str, text: str) -> None:
        """One line to the session's stdin, retrying while the session is still starting."""
        deadline = time.monotonic() + REQUEST_DEADLINE_S
        while True:
            try:
                self.control.request("session.input", session=session, text=text)
                return
            except BenchError as exc:
                if "conflict" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def stop(self) -> None:
        if self._control is not None:
            with contextlib.suppress(Exception):  # the server may be gone already
                self._control.close()
            self._control = None
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _check_alive(self, log: Path | None = None) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise BenchError(f"{self.name} exited with {self.proc.returncode} at start\n{tail}")


class HivedServer(Server):
    """The real daemon, ``hived run --config <generated>``."""

    name = "hived"

    def __init__(self, subscriber_queue: int = 1 << 20) -> None:
        super().__init__()
        self.subscriber_queue = subscriber_queue
        self.tmp = tempfile.TemporaryDirectory(prefix="hived-bench-")
        self.log_path = Path(self.tmp.name) / "hived.log"
        self._log: IO[bytes] | None = None
        self._admin: Control | None = None

    def start(self) -> None:
        self.port = free_port()
        config = Path(self.tmp.name) / "hived.toml"
        config.write_text(self.config_text())
        self._log = self.log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        self.proc = subprocess.Popen(
            [str(Path(PYTHON).parent / "hived"), "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=env,
        )
        deadline = time.monotonic() + START_DEADLINE_S
        while not self._healthy():
            self._check_alive(self.log_path)
            if time.monotonic() > deadline:
                raise BenchError(f"hived did not serve /healthz within {START_DEADLINE_S} s")
            time.sleep(0.05)

    def config_text(self) -> str:
        """The generated config (a subclass adds sections)."""
        return hived_config(self.port, Path(self.tmp.name) / "state", self.subscriber_queue)

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2.0)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def status(self) -> dict[str, Any]:
        """The daemon's ``status`` (asked on the admin channel, over a connection of its own)."""
        if self._admin is None:
            self._admin = Control(self.port, "/v1/admin", ADMIN_TOKEN)
        return self._admin.request("status")

    def stop(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):  # the server may be gone already
                self._admin.close()
            self._admin = None
        try:
            super().stop()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            self.tmp.cleanup()


class PeerServer(Server):
    """``bench/peer_server.py``: asyncio + ``websockets.broadcast()``."""

    name = "python"
    loop = "asyncio"

    @classmethod
    def unavailable(cls) -> str | None:
        return None

    def command(self) -> list[str]:
        return [
            *(PYTHON, "-m", "bench.peer_server", "--loop", self.loop, "--port", "0"),
            *("--", PYTHON, str(FLOOD_AGENT)),
        ]

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command(), cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded: the peer prints it or exits
        if not line:
            self._check_alive()
            raise BenchError(f"{self.name} peer closed its stdout at start")
        self.port = int(json.loads(line)["listening"])


class UvloopPeer(PeerServer):
    """The same peer on uvloop's event loop."""

    name = "uvloop"
    loop = "uvloop"

    @classmethod
    def unavailable(cls) -> str | None:
        if importlib.util.find_spec("uvloop") is None:
            return "uvloop is not installed (make bench installs the [bench] extra)"
        return None


class NodePeer(PeerServer):
    """``bench/node/peer.js``: Node.js and the ``ws`` package with ``bufferutil``."""

    name = "node"

    @classmethod
    def unavailable(cls) -> str | None:
        if shutil.which("node") is None:
            return "node is not installed"
        if not (NODE_DIR / "node_modules" / "ws").is_dir():
            return "bench/node/node_modules is missing (make bench-node installs it)"
        return None

    def command(self) -> list[str]:
        node = shutil.which("node") or "node"
        return [node, str(NODE_DIR / "peer.js"), "--port", "0", "--", PYTHON, str(FLOOD_AGENT)]


PEERS: Final[dict[str, type[PeerServer]]] = {
    "python": PeerServer,
    "uvloop": UvloopPeer,
    "node": NodePeer,
}
"""The peers, in the order of the table's columns; ``python`` is the one ``fanout_ratio_n100``
has always been measured against."""
SERVERS: Final[dict[str, type[Server]]] = {"hived": HivedServer, **PEERS}


def available_peers() -> tuple[list[str], dict[str, str]]:
    """The peers that can run here, and why each other one cannot."""
    missing = {name: why for name, cls in PEERS.items() if (why := cls.unavailable())}
    return [name for name in PEERS if name not in missing], missing


def node_version() -> str:
    """``node`` and ``ws`` versions, for the report."""
    node = shutil.which("node")
    if node is None:
        return "node absent"
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10)
    ws = NODE_DIR / "node_modules" / "ws" / "package.json"
    ws_version = json.loads(ws.read_text())["version"] if ws.exists() else "absent"
    return f"node {out.stdout.strip()}, ws {ws_version} with bufferutil"
