"""The systemd contract of the real daemon, checked without systemd (issue 7, item 5).

The test plays systemd's part: it binds the ``NOTIFY_SOCKET`` datagram socket (the harness does)
and sets ``WATCHDOG_USEC``, ``WATCHDOG_PID``, ``LISTEN_FDS`` and ``LISTEN_PID`` as a unit with
``Type=notify``, ``WatchdogSec=`` and a ``.socket`` would, then reads what hived sends: READY=1
once listening, STATUS= lines, WATCHDOG=1 at half the watchdog period, RELOADING=1 with
MONOTONIC_USEC= then READY=1 on SIGHUP, STOPPING=1 on SIGTERM.

The machine's ``net.unix.max_dgram_qlen`` is small (10) and hived drops a datagram systemd has
no room for, so a :class:`Listener` reads the socket the whole time a test watches it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import attrs
import orjson
import pytest
import trio

from hived.client import connect
from tests.e2e.harness import (
    DEADLINE_S,
    PYTHON,
    SECRETS,
    Launcher,
    RunningDaemon,
    free_port,
    http_get,
)

pytestmark = pytest.mark.e2e

WATCHDOG_USEC: Final = 400_000
"""Asks for a ping at least every 0.4 s: hived pings every 0.2 s."""
WATCH_S: Final = 1.5
"""How long the pings are counted: about 7 of them."""
SYSTEMD_VARIABLES: Final = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)


@attrs.define
class Listener:
    """Every datagram on the daemon's notify socket, with when it arrived (trio's clock)."""

    daemon: RunningDaemon
    received: list[tuple[float, str]] = attrs.field(factory=list)
    _arrived: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        # What the harness already read while waiting for READY=1.
        self.received.extend((0.0, n) for n in self.daemon.notifications)

    async def run(self) -> None:
        while True:
            data = await self.daemon.notify_sock.recv(4096)
            self.received.append((trio.current_time(), data.decode()))
            self._arrived.set()
            self._arrived = trio.Event()

    def messages(self, since: float = 0.0) -> list[str]:
        return [text for at, text in self.received if at >= since]

    async def wait_for(
        self, what: str, predicate: Callable[[str], bool], since: float = 0.0
    ) -> int:
        """Wait until a datagram received at or after ``since`` matches; its index."""
        with trio.move_on_after(DEADLINE_S):
            while True:
                for index, (at, text) in enumerate(self.received):
                    if at >= since and predicate(text):
                        return index
                await self._arrived.wait()
        raise AssertionError(f"no sd_notify {what} (got {self.messages()}):\n{self.daemon.log()}")


@asynccontextmanager
async def listening(daemon: RunningDaemon) -> AsyncIterator[Listener]:
    listener = Listener(daemon)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.run)
        yield listener
        nursery.cancel_scope.cancel()


def has(line: str) -> Callable[[str], bool]:
    return lambda text: line in text.split("\n")


async def watch(seconds: float) -> float:
    """Let ``seconds`` of wall time pass while the listener records (a measuring window, not a
    wait for a condition); the time it started."""
    start = trio.current_time()
    await trio.sleep(seconds)
    return start


def pings(listener: Listener, since: float) -> list[float]:
    return [at for at, text in listener.received if at >= since and "WATCHDOG=1" in text]


async def test_ready_once_listening_and_status_says_where(hived: Launcher) -> None:
    daemon = await hived.start()
    # Once READY=1 arrived, the port answers at once: nothing is started after it.
    status, _, _ = await http_get(daemon.port, "/healthz")
    assert status == 200
    async with listening(daemon) as listener:
        await listener.wait_for("STATUS=", lambda t: t.startswith("STATUS="))
        status_lines = [t for t in listener.messages() if t.startswith("STATUS=")]
        assert all("\n" not in t for t in status_lines)
        assert any(f"127.0.0.1:{daemon.port}" in t for t in status_lines), status_lines
        ready = [i for i, (_, t) in enumerate(listener.received) if has("READY=1")(t)]
        assert len(ready) == 1


async def test_watchdog_pings_at_half_the_period(hived: Launcher) -> None:
    daemon = await hived.start(env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
    async with listening(daemon) as listener:
        start = await watch(WATCH_S)
        seen = pings(listener, start)
    # Every 0.2 s: about 7 in 1.5 s. The band is wide; the period is the point.
    assert 4 <= len(seen) <= 12, f"{len(seen)} pings in {WATCH_S} s: {seen}"
    gaps = sorted(b - a for a, b in itertools.pairwise(seen))
    median = gaps[len(gaps) // 2]
    assert 0.1 <= median <= 0.35, f"median gap between pings {median:.3f} s, expected ~0.2 s"
    assert max(gaps) < WATCHDOG_USEC / 1e6, f"a gap of {max(gaps):.3f} s would trip the watchdog"


async def test_watchdog_pid_of_another_process_means_no_pings(hived: Launcher) -> None:
    daemon = await hived.start(
        env={"WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": str(os.getpid())}
    )
    async with listening(daemon) as listener:
        start = await watch(1.0)
        assert pings(listener, start) == []
    assert not any("WATCHDOG=1" in n for n in daemon.notifications)


async def test_watchdog_pid_of_hived_itself_gets_pings(hived: Launcher, tmp_path: Path) -> None:
    # The pid is known only once the process exists: a wrapper sets it, then execs hived.
    port, config = hived.config()
    daemon = await start_wrapped(
        hived, tmp_path, config, port, env={"WATCHDOG_USEC": str(WATCHDOG_USEC)}, pid_vars=True
    )
    async with listening(daemon) as listener:
        await listener.wait_for("READY=1", has("READY=1"))
        start = await watch(1.0)
        assert len(pings(listener, start)) >= 2


async def test_no_notify_socket_means_no_datagram_at_all(hived: Launcher) -> None:
    daemon = await hived.start(env={"NOTIFY_SOCKET": "", "WATCHDOG_USEC": "100000"}, ready=False)
    await wait_serving(daemon)
    async with listening(daemon) as listener:
        await watch(0.5)
        assert listener.messages() == []


async def test_sighup_sends_reloading_with_monotonic_usec_then_ready(hived: Launcher) -> None:
    daemon = await hived.start(env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
    async with listening(daemon) as listener:
        before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        sent = trio.current_time()
        daemon.send_signal(signal.SIGHUP)
        reloading = await listener.wait_for("RELOADING=1", has("RELOADING=1"), since=sent)
        ready = await listener.wait_for("READY=1 after RELOADING=1", has("READY=1"), since=sent)
        assert reloading < ready
        fields = dict(line.split("=", 1) for line in listener.received[reloading][1].split("\n"))
        after_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert before_us <= int(fields["MONOTONIC_USEC"]) <= after_us, fields
        # The watchdog goes on after the reload.
        await listener.wait_for("WATCHDOG=1 after the reload", has("WATCHDOG=1"), since=sent + 0.3)
    await daemon.wait_for(lambda: "reload: applied" in daemon.log(), "the reload in the log")


async def test_sigterm_sends_stopping_and_exits_0(hived: Launcher) -> None:
    daemon = await hived.start(env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
    async with listening(daemon) as listener:
        sent = trio.current_time()
        daemon.send_signal(signal.SIGTERM)
        await listener.wait_for("STOPPING=1", has("STOPPING=1"), since=sent)
        assert await daemon.wait_exit() == 0
    assert not any(has("READY=1")(t) for t in listener.messages(since=sent))


async def test_systemd_variables_do_not_reach_agents(hived: Launcher) -> None:
    code = orjson.dumps(
        "import os\nprint(sorted(k for k in os.environ if k.startswith(('NOTIFY', 'WATCHDOG', "
        "'LISTEN'))), flush=True)\ninput()"
    ).decode()
    port, config = hived.config(
        body=f'[agents.envdump]\ncommand = ["{PYTHON}", "-c", {code}]\nformat = "text"\n'
        'restart = "no"\n'
    )
    env = {"WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1", "LISTEN_FDNAMES": "x"}
    daemon = await hived.start(config, port=port, env=env)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = (await client.request("session.start", agent="envdump"))["session"]
        sub = await client.subscribe(f"session/{session}", since=0)
        with trio.fail_after(DEADLINE_S):
            while (event := await sub.receive())["kind"] != "text":
                pass
    assert event["data"]["line"] == "[]"


# -- socket activation ---------------------------------------------------------------------

WRAPPER: Final = """
import os, sys
listen_fd = int(sys.argv[1])
if listen_fd >= 0:
    if listen_fd != 3:
        os.dup2(listen_fd, 3)
        os.close(listen_fd)
    os.set_inheritable(3, True)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
if os.environ.pop("SET_WATCHDOG_PID", None):
    os.environ["WATCHDOG_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""
"""What systemd does between fork and exec: the socket on fd 3, LISTEN_PID (and WATCHDOG_PID)
naming the process that is about to become hived."""


def notify_socket_path(tmp_path: Path) -> Path:
    return tmp_path / "notify.sock"


def hived_argv(config_path: Path) -> list[str]:
    hived = Path(PYTHON).parent / "hived"
    return [str(hived), "--log-level", "debug", "run", "--config", str(config_path)]


async def start_process(
    hived: Launcher,
    tmp_path: Path,
    config: str,
    port: int,
    argv: Callable[[Path], list[str]],
    env: dict[str, str],
    pass_fds: tuple[int, ...] = (),
) -> RunningDaemon:
    """Start ``argv`` (which execs hived) as the harness would start hived, and register it with
    the launcher so that it is killed after the test."""
    config_path = tmp_path / "hived.toml"
    config_path.write_text(config, encoding="utf-8")
    notify_path = notify_socket_path(tmp_path)
    notify_path.unlink(missing_ok=True)
    notify_sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify_sock.bind(str(notify_path))
    log_path = tmp_path / f"hived-{port}.log"
    environ = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARIABLES}
    environ.pop("JOURNAL_STREAM", None)
    environ.update(env)
    with log_path.open("wb") as log_file:
        proc = await trio.lowlevel.open_process(
            argv(config_path),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environ,
            pass_fds=pass_fds,
        )
    daemon = RunningDaemon(proc, config_path, port, log_path, notify_sock)
    hived.started.append(daemon)
    return daemon


async def start_wrapped(
    hived: Launcher,
    tmp_path: Path,
    config: str,
    port: int,
    *,
    env: dict[str, str],
    listen_fd: int = -1,
    pid_vars: bool = False,
) -> RunningDaemon:
    extra = {"NOTIFY_SOCKET": str(notify_socket_path(tmp_path)), **env}
    if pid_vars:
        extra["SET_WATCHDOG_PID"] = "1"
    return await start_process(
        hived,
        tmp_path,
        config,
        port,
        lambda path: [PYTHON, "-c", WRAPPER, str(listen_fd), *hived_argv(path)],
        extra,
        pass_fds=(listen_fd,) if listen_fd >= 0 else (),
    )


async def wait_serving(daemon: RunningDaemon) -> None:
    """Poll /healthz until it answers 200 (connection refused meanwhile)."""
    with trio.move_on_after(DEADLINE_S):
        while True:
            try:
                status, _, _ = await http_get(daemon.port, "/healthz")
            except OSError:
                status = 0
            if status == 200:
                return
            if daemon.proc.poll() is not None:
                break
            await trio.sleep(0.05)
    raise AssertionError(f"hived never served /healthz on {daemon.port}:\n{daemon.log()}")


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def check_serves_on_the_passed_socket(daemon: RunningDaemon, config_port: int) -> None:
    async with listening(daemon) as listener:
        # systemd-socket-activate binds the port after it started, and execs hived on the
        # first connection.
        await wait_serving(daemon)
        await listener.wait_for("READY=1", has("READY=1"))
    assert refuses(config_port), "hived bound server.listen although it was given a socket"
    assert f"listening on 127.0.0.1:{daemon.port}" in daemon.log()
    async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as client:
        assert (await client.request("ping")) == {}
    daemon.send_signal(signal.SIGTERM)
    assert await daemon.wait_exit() == 0


async def test_socket_activation_with_listen_fds_serves_on_fd_3(
    hived: Launcher, tmp_path: Path
) -> None:
    config_port, config = hived.config()
    with socket.create_server(("127.0.0.1", 0)) as passed:
        port = passed.getsockname()[1]
        daemon = await start_wrapped(
            hived, tmp_path, config, port, env={}, listen_fd=passed.fileno()
        )
    await check_serves_on_the_passed_socket(daemon, config_port)


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed"
)
async def test_socket_activation_with_systemd_socket_activate(
    hived: Launcher, tmp_path: Path
) -> None:
    config_port, config = hived.config()
    port = free_port()
    activate = shutil.which("systemd-socket-activate")
    assert activate is not None

    def argv(config_path: Path) -> list[str]:
        # Not in its own environment (it would send READY=1 itself): -E hands it to hived.
        notify = f"NOTIFY_SOCKET={notify_socket_path(tmp_path)}"
        return [activate, "-l", f"127.0.0.1:{port}", "-E", notify, *hived_argv(config_path)]

    daemon = await start_process(hived, tmp_path, config, port, argv, {})
    await check_serves_on_the_passed_socket(daemon, config_port)
