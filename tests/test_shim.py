"""The shim (hived/agents/shim.py), run for real: ``python -m hived.agents.shim`` with small inline agents.

Every test starts real processes and talks to the shim over its unix socket; nothing waits by
sleeping a fixed time: conditions are polled until a deadline. Whatever a test starts is killed
at its end (the ``shims`` fixture).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hived.agents import shim
from hived.agents.shim import EXIT_NAME, META_NAME, SOCKET_NAME, STDERR_NAME, STDOUT_NAME

REPO = Path(__file__).resolve().parent.parent
DEADLINE_S = 10.0
PY = sys.executable

# Agents: each a program for ``python -c``.
ECHO = "import sys\nfor line in sys.stdin.buffer: sys.stdout.buffer.write(line.upper()); sys.stdout.flush()"
NOTHING_LOST = {"stdout_lost_bytes": 0, "stderr_lost_bytes": 0, "lost_since": None}
WAIT = "import signal\nprint('up', flush=True)\nsignal.pause()"


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def read_line(fd: int, timeout: float = DEADLINE_S) -> bytes:
    """One line from a pipe (or what came before EOF), within ``timeout``."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            pytest.fail(f"no line within {timeout} s (got {data!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Conn:
    """A client of the control socket: requests, replies, and the events between them."""

    def __init__(self, directory: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(DEADLINE_S)
        self.sock.connect(str(directory / SOCKET_NAME))
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any] | bytes) -> None:
        line = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.sock.sendall(line)

    def receive(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the shim closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, message: dict[str, Any] | bytes) -> dict[str, Any]:
        """Send one request and return its reply; events that come first are kept in order."""
        self.send(message)
        while "ok" not in (reply := self.receive()):
            self.events.append(reply)
        return reply

    def next_event(self) -> dict[str, Any]:
        if self.events:
            return self.events.pop(0)
        return self.receive()

    def wait_event(self, kind: str) -> dict[str, Any]:
        while (event := self.next_event())["event"] != kind:
            pass
        return event

    def close(self) -> None:
        self.sock.close()


class Shim:
    """One shim started by a test."""

    def __init__(self, directory: Path, popen: subprocess.Popen[bytes], ready: dict[str, Any]):
        self.dir = directory
        self.popen = popen
        self.ready = ready
        self.conns: list[Conn] = []

    @property
    def agent_pid(self) -> int:
        pid: int = self.ready["agent_pid"]
        return pid

    def connect(self) -> Conn:
        conn = Conn(self.dir)
        self.conns.append(conn)
        return conn

    def spool(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()

    def wait_spool(self, name: str, text: bytes) -> bytes:
        return wait_for(lambda: text in (data := self.spool(name)) and data, f"{text!r} in {name}")

    def wait_exit(self) -> dict[str, Any]:
        """The agent's exit, once the shim reports it."""
        conn = self.connect()
        return wait_for(
            lambda: (s := conn.request({"op": "status"}))["exit_code"] is not None and s,
            "the agent's exit",
        )


def shim_command(directory: Path, agent: list[str], *options: str) -> list[str]:
    return [PY, "-m", "hived.agents.shim", "--dir", str(directory), *options, "--", *agent]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a path short enough for a unix socket's 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="shim-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shims(short_dir: Path) -> Iterator[Callable[..., Shim]]:
    """Start shims (``start(agent_code, *options)``); kill them and their agents at the end."""
    started: list[Shim] = []
    counter = iter(range(1000))

    def start(code: str, *options: str, env: dict[str, str] | None = None) -> Shim:
        directory = short_dir / f"run{next(counter)}"
        popen = subprocess.Popen(
            shim_command(directory, [PY, "-c", code], *options),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        assert popen.stdout is not None
        line = read_line(popen.stdout.fileno())
        assert line, f"the shim printed nothing (exit {popen.wait()})"
        started.append(running := Shim(directory, popen, json.loads(line)))
        return running

    yield start
    for running in started:
        for conn in running.conns:
            conn.close()
        with_group = running.agent_pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(with_group, signal.SIGKILL)
        running.popen.kill()
        running.popen.wait()
        assert running.popen.stdout is not None
        running.popen.stdout.close()


def test_ready_line_shim_json_and_modes(shims: Callable[..., Shim]) -> None:
    env = {**os.environ, "SHIM_TEST_VALUE": "passed through"}
    code = "import os\nprint(os.environ['SHIM_TEST_VALUE'], os.getcwd(), flush=True)\ninput()"
    run = shims(code, "--cwd", "/tmp", env=env)
    assert run.ready == {"agent_pid": run.agent_pid, "shim_pid": run.popen.pid}
    assert run.popen.stdout is not None
    assert read_line(run.popen.stdout.fileno()) == b"", "the shim's stdout reaches EOF"
    meta = json.loads((run.dir / META_NAME).read_text())
    assert meta["version"] == shim.SHIM_PROTOCOL_VERSION == 2
    assert meta["shim_pid"] == run.popen.pid
    assert meta["agent_pid"] == run.agent_pid
    assert meta["argv"] == [PY, "-c", code]
    assert meta["cwd"] == "/tmp"
    assert abs(meta["started_at"] - time.time()) < 60
    assert os.getpgid(run.agent_pid) == run.agent_pid != os.getpgid(run.popen.pid)
    assert stat.S_IMODE((run.dir / SOCKET_NAME).stat().st_mode) == 0o600
    assert stat.S_ISSOCK((run.dir / SOCKET_NAME).stat().st_mode)
    assert stat.S_IMODE(run.dir.stat().st_mode) == 0o700
    for name in (STDOUT_NAME, STDERR_NAME):
        assert stat.S_IMODE((run.dir / name).stat().st_mode) == 0o600
    assert run.wait_spool(STDOUT_NAME, b"\n") == b"passed through /tmp\n"
    assert not (run.dir / EXIT_NAME).exists()


@pytest.mark.parametrize(
    ("agent", "cwd", "name", "culprit"),
    [
        (["/nonexistent/agent"], None, "ENOENT", "/nonexistent/agent"),
        ([PY, "-c", "pass"], "/nonexistent/folder", "ENOENT", "/nonexistent/folder"),
        ([str(REPO / "README.md")], None, "EACCES", str(REPO / "README.md")),
    ],
    ids=["not-found", "bad-cwd", "not-executable"],
)
def test_spawn_failure_is_one_error_line_and_exit_127(
    short_dir: Path, agent: list[str], cwd: str | None, name: str, culprit: str
) -> None:
    directory = short_dir / "run"
    options = ["--cwd", cwd] if cwd else []
    done = subprocess.run(
        shim_command(directory, agent, *options),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=REPO,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == shim.SPAWN_FAILED_EXIT == 127
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    error = json.loads(lines[0])
    assert error["error"] == name
    assert error["errno"] == getattr(errno, name)
    assert error["filename"] == culprit
    assert error["message"]
    assert list(directory.iterdir()) == []


def test_output_is_spooled_byte_exact(shims: Callable[..., Shim]) -> None:
    payload = bytes(range(256)) * 1000 + b"\xff\xfe no newline at the end"
    code = (
        "import sys\n"
        "sys.stdout.buffer.write(bytes(range(256)) * 1000 + b'\\xff\\xfe no newline at the end')\n"
        "sys.stdout.flush()\n"
        "sys.stderr.buffer.write(b'err\\x00\\x80'); sys.stderr.flush()\n"
        "sys.stdout.buffer.write(b'tail'); sys.stdout.flush()"
    )
    run = shims(code)
    status = run.wait_exit()
    assert run.spool(STDOUT_NAME) == payload + b"tail"
    assert run.spool(STDERR_NAME) == b"err\x00\x80"
    assert status["stdout_bytes"] == len(payload) + 4
    assert status["stderr_bytes"] == 5
    assert status["exit_code"] == 0
    assert status["stdin_open"] is False


def test_write_and_close_stdin_round_trip(shims: Callable[..., Shim]) -> None:
    run = shims(ECHO)
    conn = run.connect()
    for text in (b"hello\n", b"world\n" * 3):
        assert conn.request({"op": "write", "data": base64.b64encode(text).decode()}) == {
            "ok": True
        }
    assert run.wait_spool(STDOUT_NAME, b"HELLO\nWORLD\nWORLD\nWORLD\n")
    assert conn.request({"op": "status"})["stdin_open"] is True
    assert conn.request({"op": "close_stdin"}) == {"ok": True}
    assert conn.request({"op": "status"})["stdin_open"] is False
    refused = conn.request({"op": "write", "data": "eA=="})
    assert refused["ok"] is False
    assert "closed" in refused["error"]
    assert run.wait_exit()["exit_code"] == 0


def test_a_stdin_the_agent_never_reads_does_not_block_the_shim(shims: Callable[..., Shim]) -> None:
    run = shims(WAIT)
    conn = run.connect()
    chunk = base64.b64encode(b"x" * (1 << 20)).decode()
    replies = [conn.request({"op": "write", "data": chunk}) for _ in range(17)]
    assert all(r == {"ok": True} for r in replies[:16])
    assert replies[16]["ok"] is False
    assert "stdin queue full" in replies[16]["error"]
    started = time.monotonic()
    status = run.connect().request({"op": "status"})
    assert status["stdin_open"] is True
    assert status["exit_code"] is None
    assert time.monotonic() - started < 1.0


def test_stdin_closed_by_the_agent_refuses_writes(shims: Callable[..., Shim]) -> None:
    run = shims("import os, signal\nos.close(0)\nprint('closed', flush=True)\nsignal.pause()")
    run.wait_spool(STDOUT_NAME, b"closed")
    conn = run.connect()
    first = conn.request({"op": "write", "data": "eAo="})
    assert first == {"ok": False, "error": "stdin closed by the agent"}
    assert conn.request({"op": "write", "data": "eAo="}) == first
    assert conn.request({"op": "status"})["stdin_open"] is False


def test_signal_reaches_the_whole_group(shims: Callable[..., Shim]) -> None:
    grandchild = (
        "import signal, sys\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('grandchild got TERM', flush=True), sys.exit(0)))\n"
        "print('grandchild up', flush=True)\n"
        "signal.pause()"
    )
    code = (
        "import signal, subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
        "signal.pause()"
    )
    run = shims(code)
    run.wait_spool(STDOUT_NAME, b"grandchild up")
    conn = run.connect()
    assert conn.request({"op": "signal", "signal": signal.SIGTERM}) == {"ok": True}
    assert run.wait_exit()["exit_code"] == -signal.SIGTERM
    assert b"grandchild got TERM" in run.spool(STDOUT_NAME)
    for bad in ("TERM", True, -1, 1000):
        assert conn.request({"op": "signal", "signal": bad})["ok"] is False


@pytest.mark.parametrize(
    ("code", "options", "expected"),
    [
        ("import sys; sys.exit(3)", (), 3),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", (), -9),
        ("import sys; sys.exit(5)", ("--wait-with-sigchld",), 5),
    ],
    ids=["status", "signal", "sigchld-fallback"],
)
def test_exit_json_records_the_exit(
    shims: Callable[..., Shim], code: str, options: tuple[str, ...], expected: int
) -> None:
    run = shims(code, *options)
    assert run.wait_exit()["exit_code"] == expected
    signal_after = run.connect().request({"op": "signal", "signal": signal.SIGTERM})
    assert signal_after == {"ok": True, "gone": True}
    record = json.loads((run.dir / EXIT_NAME).read_text())
    assert record["exit_code"] == expected
    assert abs(record["ended_at"] - time.time()) < 60


def test_watch_gets_data_events_and_the_exit(shims: Callable[..., Shim]) -> None:
    run = shims("import sys\nfor line in sys.stdin: print(line, end='', flush=True)\nsys.exit(4)")
    watcher = run.connect()
    assert watcher.request({"op": "watch"}) == {"ok": True}
    assert watcher.next_event() == {"event": "data", "stdout_bytes": 0, "stderr_bytes": 0}
    assert watcher.request({"op": "write", "data": base64.b64encode(b"one\n").decode()})["ok"]
    assert watcher.wait_event("data") == {"event": "data", "stdout_bytes": 4, "stderr_bytes": 0}
    assert watcher.request({"op": "close_stdin"}) == {"ok": True}
    exit_event = {
        "event": "exit",
        "exit_code": 4,
        "stdout_bytes": 4,
        "stderr_bytes": 0,
        **NOTHING_LOST,
    }
    assert watcher.wait_event("exit") == exit_event
    late = run.connect()
    assert late.request({"op": "watch"}) == {"ok": True}
    assert late.next_event() == {"event": "data", "stdout_bytes": 4, "stderr_bytes": 0}
    assert late.next_event() == exit_event


def test_a_watch_without_data_notices_gets_only_the_exit_with_the_final_sizes(
    shims: Callable[..., Shim],
) -> None:
    run = shims("import sys\nfor line in sys.stdin: print(line, end='', flush=True)\nsys.exit(3)")
    watcher = run.connect()
    assert watcher.request({"op": "watch", "data": False}) == {"ok": True}
    other = run.connect()
    assert other.request({"op": "write", "data": base64.b64encode(b"one\ntwo\n").decode()})["ok"]
    wait_for(lambda: other.request({"op": "status"})["stdout_bytes"] == 8, "the output")
    assert other.request({"op": "close_stdin"}) == {"ok": True}
    exit_event = {
        "event": "exit",
        "exit_code": 3,
        "stdout_bytes": 8,
        "stderr_bytes": 0,
        **NOTHING_LOST,
    }
    assert watcher.next_event() == exit_event


def read_tail(conn: Conn, size: int) -> bytes:
    """Bytes from a tail connection until ``size`` of them came, or the shim ended it."""
    data = conn.buffer
    conn.buffer = b""
    while len(data) < size:
        chunk = conn.sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return data


def test_a_tail_carries_a_spool_from_an_offset_live_and_ends_after_the_last_byte(
    shims: Callable[..., Shim],
) -> None:
    run = shims(ECHO)
    control = run.connect()
    assert control.request({"op": "write", "data": base64.b64encode(b"one\n").decode()})["ok"]
    wait_for(lambda: control.request({"op": "status"})["stdout_bytes"] == 4, "the first line")
    whole, part = run.connect(), run.connect()
    assert whole.request({"op": "tail", "stream": "stdout", "offset": 0}) == {"ok": True}
    assert part.request({"op": "tail", "stream": "stdout", "offset": 2}) == {"ok": True}
    assert read_tail(whole, 4) == b"ONE\n"
    assert read_tail(part, 2) == b"E\n"
    assert control.request({"op": "write", "data": base64.b64encode(b"two\n").decode()})["ok"]
    assert read_tail(whole, 4) == b"TWO\n", "live output comes as the agent prints it"
    assert read_tail(part, 4) == b"TWO\n"
    assert control.request({"op": "close_stdin"}) == {"ok": True}
    assert read_tail(whole, 1) == b"", "the tail ends once the agent closed its stdout"
    assert (run.dir / STDOUT_NAME).read_bytes() == b"ONE\nTWO\n"


def test_a_tail_that_falls_behind_reads_on_from_the_file_in_order(
    shims: Callable[..., Shim],
) -> None:
    lines = 3000
    run = shims(
        f"import sys\nsys.stdin.readline()\nfor i in range({lines}):"
        " sys.stdout.write(f'{i:07d}' + 'z' * 1000 + '\\n'); sys.stdout.flush()"
    )
    tail = run.connect()
    assert tail.request({"op": "tail", "stream": "stdout", "offset": 0}) == {"ok": True}
    tail.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    control = run.connect()
    assert control.request({"op": "write", "data": base64.b64encode(b"go\n").decode()})["ok"]
    size = lines * 1008
    wait_for(lambda: control.request({"op": "status"})["stdout_bytes"] == size, "all the output")
    data = read_tail(tail, size + 1)
    assert data == (run.dir / STDOUT_NAME).read_bytes()
    assert [int(line[:7]) for line in data.splitlines()] == list(range(lines))


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"op": "tail", "stream": "stdin", "offset": 0}, '"stream" must be'),
        ({"op": "tail", "stream": "stdout"}, '"offset" must be an integer from 0 to 3'),
        ({"op": "tail", "stream": "stdout", "offset": 5}, "from 0 to 3"),
        ({"op": "tail", "stream": "stderr", "offset": True}, '"offset" must be'),
    ],
)
def test_a_bad_tail_request_is_refused_and_the_connection_stays_a_control_one(
    shims: Callable[..., Shim], request_: dict[str, Any], error: str
) -> None:
    run = shims(WAIT)
    conn = run.connect()
    wait_for(lambda: conn.request({"op": "status"})["stdout_bytes"] == 3, "the agent's 'up'")
    conn2 = run.connect()
    reply = conn2.request(request_)
    assert reply["ok"] is False
    assert error in reply["error"]
    assert conn2.request({"op": "status"})["exit_code"] is None


def test_a_watcher_that_does_not_read_blocks_nobody(shims: Callable[..., Shim]) -> None:
    run = shims(
        "import sys\nfor _ in range(2000): sys.stdout.write('y' * 4095 + '\\n'); sys.stdout.flush()"
        "\nsys.stdin.readline()"
    )
    sleeper = run.connect()
    sleeper.send({"op": "watch"})
    other = run.connect()
    wait_for(
        lambda: other.request({"op": "status"})["stdout_bytes"] == 2000 * 4096, "all the output"
    )
    assert other.request({"op": "close_stdin"}) == {"ok": True}
    run.wait_exit()
    assert sleeper.receive() == {"ok": True}
    events = []
    while (event := sleeper.receive())["event"] != "exit":
        events.append(event["stdout_bytes"])
    assert events == sorted(events)
    assert events[-1] == 2000 * 4096
    assert len(events) < 2000, "notices are merged for a slow reader"


ESCAPE = """\
import os, sys, time
if os.fork() == 0:
    os.setsid()  # out of the agent's group and session
    if os.fork() == 0:
        print(os.getpid(), flush=True)
        while True:
            time.sleep(1)
    os._exit(0)  # orphans its child: the shim adopts it
os.wait()
sys.stdin.readline()
"""


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def escaped_pid(run: Shim) -> int:
    wait_for(lambda: (run.dir / STDOUT_NAME).read_text().strip(), "the escaped child's pid")
    pid = int((run.dir / STDOUT_NAME).read_text())
    assert os.getpgid(pid) != run.agent_pid, "it left the agent's group"
    return pid


def test_a_child_that_escapes_the_group_is_adopted_and_stopped_with_the_agent(
    shims: Callable[..., Shim],
) -> None:
    run = shims(ESCAPE)
    pid = escaped_pid(run)
    assert ppid_of(pid) == run.popen.pid, "the shim adopted it, not init"
    conn = run.connect()
    assert conn.request({"op": "signal", "signal": signal.SIGTERM}) == {"ok": True}
    assert run.wait_exit()["exit_code"] == -signal.SIGTERM
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), "the escaped child ended and reaped")


def test_a_child_that_escaped_ends_when_the_agent_exits_by_itself(
    shims: Callable[..., Shim],
) -> None:
    run = shims(ESCAPE)
    pid = escaped_pid(run)
    conn = run.connect()
    assert conn.request({"op": "close_stdin"}) == {"ok": True}
    assert run.wait_exit()["exit_code"] == 0
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), "the escaped child ended and reaped")


def test_collect_deletes_the_folder_and_ends_the_shim(shims: Callable[..., Shim]) -> None:
    run = shims("print('done')")
    run.wait_exit()
    conn = run.connect()
    assert conn.request({"op": "collect"}) == {"ok": True, "exit_code": 0}
    assert not run.dir.exists()
    assert run.popen.wait(timeout=DEADLINE_S) == 0


def test_collect_before_the_exit_is_refused(shims: Callable[..., Shim]) -> None:
    run = shims(WAIT)
    conn = run.connect()
    assert conn.request({"op": "collect"}) == {"ok": False, "error": "agent still running"}
    assert conn.request({"op": "status"})["exit_code"] is None
    assert (run.dir / META_NAME).exists()


def test_the_shim_ignores_stop_signals_and_outlives_its_parent(short_dir: Path) -> None:
    directory = short_dir / "run"
    launcher = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen({shim_command(directory, [PY, '-c', WAIT])!r},"
        " stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,"
        " start_new_session=True)\n"
        "sys.stdout.buffer.write(p.stdout.readline())"
    )
    parent = subprocess.run(
        [PY, "-c", launcher], capture_output=True, cwd=REPO, timeout=DEADLINE_S, check=True
    )
    ready = json.loads(parent.stdout)
    conn = Conn(directory)
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(ready["shim_pid"], signum)
        assert conn.request({"op": "status"})["exit_code"] is None
        os.killpg(ready["agent_pid"], 0)  # still running
        assert conn.request({"op": "signal", "signal": signal.SIGTERM})["ok"]
        wait_for(lambda: conn.request({"op": "status"})["exit_code"] == -15, "the agent's end")
        assert conn.request({"op": "collect"})["ok"]
        wait_for(lambda: gone(ready["shim_pid"]), "the shim's exit")
    finally:
        conn.close()
        for kill, pid in ((os.killpg, ready["agent_pid"]), (os.kill, ready["shim_pid"])):
            with contextlib.suppress(ProcessLookupError):
                kill(pid, signal.SIGKILL)


def test_the_spool_cap_writes_a_note_and_drops_the_rest(shims: Callable[..., Shim]) -> None:
    code = (
        "import sys\n"
        "for _ in range(3): sys.stdout.write('x' * 1000); sys.stdout.flush()\n"
        "print('written', file=sys.stderr, flush=True)\n"
        "sys.stdin.readline()\n"
        "sys.stdout.write('z' * 5000); sys.stdout.flush()\n"
        "print('alive', file=sys.stderr, flush=True)\n"
        "sys.stdin.readline()"
    )
    run = shims(code, "--spool-max-bytes", "1500")
    run.wait_spool(STDERR_NAME, b"written")
    note = b"\n[hived-shim: spool cap of 1500 bytes reached; further output dropped]\n"
    wait_for(lambda: run.spool(STDOUT_NAME) == b"x" * 1500 + note, "the capped spool")
    conn = run.connect()
    assert conn.request({"op": "write", "data": base64.b64encode(b"go\n").decode()})["ok"]
    run.wait_spool(STDERR_NAME, b"alive")
    status = conn.request({"op": "status"})
    assert status["exit_code"] is None
    assert status["stdout_bytes"] == 1500 + len(note)
    assert run.spool(STDOUT_NAME) == b"x" * 1500 + note


def test_orphan_exit_keeps_the_files(shims: Callable[..., Shim]) -> None:
    run = shims("print('bye')", "--orphan-exit-s", "0.3")
    assert run.popen.wait(timeout=DEADLINE_S) == 0
    assert sorted(p.name for p in run.dir.iterdir()) == sorted(
        [STDOUT_NAME, STDERR_NAME, META_NAME, EXIT_NAME]
    )
    assert json.loads((run.dir / EXIT_NAME).read_text())["exit_code"] == 0
    assert run.spool(STDOUT_NAME) == b"bye\n"


def test_clients_are_independent(shims: Callable[..., Shim]) -> None:
    run = shims(WAIT)
    first, second = run.connect(), run.connect()
    assert first.request({"op": "watch"}) == {"ok": True}
    assert second.request({"op": "status"})["ok"]
    rude = run.connect()
    rude.send(b"x" * (shim.REQUEST_MAX_BYTES + 2))  # one line past the limit, no newline
    with pytest.raises((EOFError, ConnectionResetError)):
        rude.receive()
    quitter = run.connect()
    quitter.send({"op": "status"})
    quitter.close()
    assert first.request({"op": "status"})["ok"]
    assert second.request({"op": "status"})["ok"]
    assert first.next_event()["event"] == "data"


def test_bad_requests_get_an_error_reply(shims: Callable[..., Shim]) -> None:
    conn = shims(WAIT).connect()
    for line in (b"not json\n", b"[1, 2]\n", b'{"op": 7}\n', b"\n", b"[" * 100000 + b"\n"):
        reply = conn.request(line)
        assert reply["ok"] is False
        assert reply["error"]
    assert "unknown op 'launch'" in conn.request({"op": "launch"})["error"]
    assert "base64" in conn.request({"op": "write", "data": "%%"})["error"]
    assert conn.request({"op": "status"})["ok"] is True


def test_replies_come_in_order_for_pipelined_requests(shims: Callable[..., Shim]) -> None:
    conn = shims(WAIT).connect()
    conn.send(b"".join(json.dumps({"op": op}).encode() + b"\n" for op in ["status", "x"] * 500))
    replies = [conn.receive() for _ in range(1000)]
    assert [r["ok"] for r in replies] == [True, False] * 500


def test_a_second_shim_on_a_live_folder_is_refused_and_a_stale_socket_replaced(
    shims: Callable[..., Shim], short_dir: Path
) -> None:
    run = shims(WAIT)
    done = subprocess.run(
        shim_command(run.dir, [PY, "-c", "pass"]),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=REPO,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 127
    assert json.loads(done.stdout)["error"] == "EADDRINUSE"
    assert run.connect().request({"op": "status"})["exit_code"] is None

    stale = short_dir / "run1"
    stale.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale / SOCKET_NAME))
    (stale / EXIT_NAME).write_text('{"exit_code": 1}')
    again = shims(WAIT)
    assert again.dir == stale
    assert again.connect().request({"op": "status"})["exit_code"] is None
    assert not (stale / EXIT_NAME).exists()


def test_a_folder_past_the_socket_path_limit_works(shims: Callable[..., Shim]) -> None:
    # The shim binds by a relative name; a client reaches the socket through /proc.
    run = shims(WAIT, "--cwd", "/")
    deep = run.dir / ("d" * 120)
    long_run = subprocess.Popen(
        shim_command(deep, [PY, "-c", "print('far')"]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert long_run.stdout is not None
    try:
        assert "agent_pid" in json.loads(read_line(long_run.stdout.fileno()))
        fd = os.open(deep, os.O_PATH)
        try:
            conn = Conn(Path(f"/proc/self/fd/{fd}"))
            wait_for(lambda: conn.request({"op": "status"})["exit_code"] == 0, "the exit")
            assert conn.request({"op": "collect"})["ok"]
            conn.close()
        finally:
            os.close(fd)
        assert long_run.wait(timeout=DEADLINE_S) == 0
    finally:
        long_run.kill()
        long_run.wait()
        long_run.stdout.close()


def test_a_half_closed_client_still_gets_its_replies(shims: Callable[..., Shim]) -> None:
    conn = shims(WAIT).connect()
    conn.send(b'{"op": "status"}\n{"op": "nope"}\n')
    conn.sock.shutdown(socket.SHUT_WR)
    assert conn.receive()["ok"] is True
    assert conn.receive()["ok"] is False
    with pytest.raises(EOFError):
        conn.receive()


@pytest.mark.parametrize(
    ("words", "complaint"),
    [
        (["--", PY], "--dir is required"),
        (["--dir", "/tmp/x", PY], "must follow --"),
        (["--dir", "/tmp/x", "--"], "missing after --"),
        (["--dir=/tmp/x", "--spool-max-bytes=-1", "--", PY], "must be 0 or more"),
        (["--dir", "/tmp/x", "--orphan-exit-s", "soon", "--", PY], "is not a number"),
        (["--dir", "/tmp/x", "--verbose", "--", PY], "unknown option '--verbose'"),
    ],
)
def test_a_wrong_command_line_exits_2(words: list[str], complaint: str) -> None:
    done = subprocess.run(
        [PY, "-m", "hived.agents.shim", *words],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=REPO,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 2
    assert complaint in done.stderr.decode()
    assert done.stdout == b""


class FullDisk:
    """Stands in for the spool's writes: takes ``room`` more bytes, then fails with ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room

    def write_all(self, fd: int, data: bytes) -> int:
        kept = data[: self.room]
        os.write(fd, kept)
        self.room -= len(kept)
        if len(kept) < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(data)


def test_a_full_disk_counts_the_output_lost_and_the_spool_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / STDOUT_NAME
    spool = shim.Spool(str(path), 1 << 20)
    disk = FullDisk(room=10)
    monkeypatch.setattr(shim, "_write_all", disk.write_all)
    before = time.time()
    assert spool.append(b"0123456789abcdef") == b"0123456789"  # what reached the file
    assert spool.append(b"more") == b""
    assert (spool.size, spool.lost_bytes) == (10, 10)
    assert spool.lost_since is not None
    assert before <= spool.lost_since <= time.time()
    disk.room = 100  # the disk has room again
    assert spool.append(b"back\n") == b"back\n"
    assert path.read_bytes() == b"0123456789back\n"
    assert (spool.size, spool.lost_bytes) == (15, 10)
    err = capfd.readouterr().err
    assert err.count("No space left on device; output lost") == 1  # once per run of failures
    assert "writes work again; 10 bytes lost so far" in err
