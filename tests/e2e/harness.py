"""Start the real ``hived`` as a subprocess on a free loopback port, and talk to it.

The daemon gets its own config file and state folder under the test's tmp_path, a
``NOTIFY_SOCKET`` of the test's own (so readiness is what systemd would see), and the fake
agents from ``examples/agents``. Nothing here sleeps to wait: every wait polls a condition
under a deadline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trio
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as ws_connect
from websockets.typing import Origin

REPO: Final = Path(__file__).resolve().parents[2]
AGENTS: Final = REPO / "examples" / "agents"
PYTHON: Final = sys.executable

SECRETS: Final = {
    "admin": "admin-secret-0123456789",
    "operator": "operator-secret-0123456789",
    "viewer": "viewer-secret-0123456789",
    "agent": "agent-secret-0123456789",
}
DEADLINE_S: Final = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tokens_toml() -> str:
    return "".join(
        f'[[tokens]]\nname = "{role}-token"\nrole = "{role}"\n'
        f'sha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"\n\n'
        for role, secret in SECRETS.items()
    )


def agent_toml(name: str, script: str, *args: str, fmt: str = "text", extra: str = "") -> str:
    argv = ", ".join(f'"{a}"' for a in (PYTHON, str(AGENTS / script), *args))
    return f'[agents.{name}]\ncommand = [{argv}]\nformat = "{fmt}"\n{extra}\n'


CLAUDE_ARGS: Final = (
    "fake_claude.py",
    "-p",
    "--output-format",
    "stream-json",
    "--input-format",
    "stream-json",
    "--verbose",
)
"""The fake Claude Code, with the flags the real one needs for stream-json both ways."""

DEFAULT_AGENTS: Final = (
    agent_toml("claude", *CLAUDE_ARGS, fmt="claude", extra='restart = "no"\nstop_timeout_s = 3.0')
    + agent_toml("codex", "fake_codex.py", "exec", "--json", fmt="codex", extra='restart = "no"')
    + agent_toml("text", "fake_text.py", extra='restart = "no"\nstop_timeout_s = 3.0')
)


def config_text(port: int, state_dir: Path, *, server: str = "", body: str = "") -> str:
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\nheartbeat_interval_s = 2.0\n'
        f"heartbeat_timeout_s = 2.0\n{server}\n"
        f'[state]\ndir = "{state_dir}"\nsync_interval_ms = 50\n\n'
        f"[daemon]\nshutdown_timeout_s = 10.0\n\n"
        f"{tokens_toml()}{DEFAULT_AGENTS}{body}"
    )


@attrs.define
class RunningDaemon:
    """A hived subprocess and what the test can observe of it."""

    proc: trio.Process
    config_path: Path
    port: int
    log_path: Path
    notify_sock: trio.socket.SocketType
    notifications: list[str] = attrs.field(factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def admin_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/admin"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def send_signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    async def wait_for(
        self, condition: Callable[[], object], what: str, timeout_s: float = DEADLINE_S
    ) -> None:
        """Poll ``condition`` (e.g. on the log file) until it holds, under a deadline."""
        with trio.move_on_after(timeout_s):
            while not condition():
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"hived exited ({self.proc.returncode}) waiting for {what}:\n{self.log()}"
                    )
                await trio.sleep(0.02)
            return
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}:\n{self.log()}")

    async def wait_notified(self, message: str, timeout_s: float = DEADLINE_S) -> None:
        """Wait for an sd_notify datagram that contains ``message``."""
        with trio.move_on_after(timeout_s):
            while not any(message in n for n in self.notifications):
                self.notifications.append((await self.notify_sock.recv(4096)).decode())
            return
        raise AssertionError(
            f"no sd_notify {message!r} within {timeout_s} s (got {self.notifications}):\n"
            f"{self.log()}"
        )

    async def wait_exit(self, timeout_s: float = DEADLINE_S) -> int:
        with trio.move_on_after(timeout_s):
            return await self.proc.wait()
        raise AssertionError(f"hived did not exit within {timeout_s} s:\n{self.log()}")

    async def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        await self.proc.wait()
        self.notify_sock.close()


async def start_daemon(
    tmp_path: Path,
    config: str | None = None,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> RunningDaemon:
    """Write the config (default: :func:`config_text`) and start hived; it is not ready yet."""
    port = port or free_port()
    state = tmp_path / "state"
    config_path = tmp_path / "hived.toml"
    config_path.write_text(
        config if config is not None else config_text(port, state), encoding="utf-8"
    )
    notify_path = tmp_path / "notify.sock"
    if notify_path.exists():
        notify_path.unlink()
    notify_sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify_sock.bind(str(notify_path))
    log_path = tmp_path / f"hived-{port}.log"
    environ = {**os.environ, "NOTIFY_SOCKET": str(notify_path), **(env or {})}
    environ.pop("JOURNAL_STREAM", None)
    hived = Path(PYTHON).parent / "hived"
    argv = [str(hived)] if hived.exists() else [PYTHON, "-m", "hived.cli.hived"]
    with log_path.open("wb") as log_file:
        proc = await trio.lowlevel.open_process(
            [*argv, "--log-level", "debug", "run", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    return RunningDaemon(proc, config_path, port, log_path, notify_sock)


@attrs.define
class Launcher:
    """Starts daemons for one test and kills whatever is left of them afterwards."""

    tmp_path: Path
    started: list[RunningDaemon] = attrs.field(factory=list)

    def config(self, **kwargs: str) -> tuple[int, str]:
        """A free port and the default config for it (``server=`` and ``body=`` add to it)."""
        port = free_port()
        return port, config_text(port, self.tmp_path / "state", **kwargs)

    async def start(
        self,
        config: str | None = None,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        ready: bool = True,
    ) -> RunningDaemon:
        """Start hived (by default with the default config) and wait for READY=1."""
        daemon = await start_daemon(self.tmp_path, config, port=port, env=env)
        self.started.append(daemon)
        if ready:
            await daemon.wait_notified("READY=1")
        return daemon

    async def kill_all(self) -> None:
        """Kill every daemon the test started, and then what they leave running on purpose:
        the agents under their shims (they outlive a killed daemon), and the shims."""
        for daemon in self.started:
            await daemon.kill()
        for meta in (self.tmp_path / "state" / "shims").glob("*/shim.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                pids = json.loads(meta.read_text())
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pids["agent_pid"], signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pids["shim_pid"], signal.SIGKILL)
        # A shim that had not written its shim.json when its daemon was killed is found by its
        # command line (its --dir is in this test's folder), its agent as its child.
        here = str(self.tmp_path)
        shims = [pid for pid, line in processes() if "hived.agents.shim" in line and here in line]
        for pid, _ in processes():
            if parent_of(pid) in shims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        for pid in shims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def until(what: str, check: Callable[[], Any], timeout_s: float = DEADLINE_S) -> Any:
    """Poll the async ``check`` (a coroutine function) until it returns something true, under a
    deadline; that value."""
    last = None
    with trio.move_on_after(timeout_s):
        while True:
            last = await check()
            if last:
                return last
            await trio.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout_s} s; last: {last}")


def processes() -> list[tuple[int, str]]:
    """Every process but this one, with its command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                found.append((int(entry.name), cmdline.decode(errors="replace")))
    return found


def parent_of(pid: int) -> int | None:
    """The parent of ``pid`` (from /proc/PID/stat), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


async def http_request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes; the status, lower-cased headers and body of the answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        data = b""
        with trio.fail_after(DEADLINE_S):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


async def http_get(port: int, path: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    return await http_request(
        port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode()
    )


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@asynccontextmanager
async def websockets_client(
    url: str, token: str | None, *, origin: str | None = None
) -> AsyncIterator[ClientConnection]:
    """A WebSocket of the independent ``websockets`` library (its Trio client), with a header
    token when ``token`` is set; no pings of its own, no compression, and the library's default
    limits (a 1 MiB message), which no frame hived batches may pass."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    async with ws_connect(
        url,
        additional_headers=headers,
        origin=None if origin is None else Origin(origin),
        proxy=None,
        compression=None,
        open_timeout=DEADLINE_S,
        ping_interval=None,
        close_timeout=2,
    ) as ws:
        yield ws
