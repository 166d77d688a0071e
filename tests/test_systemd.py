from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from hived.systemd import (
    Notifier,
    listen_fds,
    listen_sockets,
)

REPO: Path = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["path", "abstract"])
def systemd_socket(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket as systemd's, and the NOTIFY_SOCKET value that names it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        # tmp_path_factory keeps the path short: AF_UNIX paths stop at 107 bytes.
        env_value = str(tmp_path_factory.mktemp("sd") / "notify")
        sock.bind(env_value)
    else:
        env_value = f"@hived-test-{uuid.uuid4().hex}"
        sock.bind("\0" + env_value[1:])
    sock.setblocking(False)
    with sock:
        yield env_value, sock


NotifierFrom = Callable[[dict[str, str]], Notifier]


@pytest.fixture
def notifier_from() -> Iterator[NotifierFrom]:
    """Makes notifiers from environments, and closes them after the test."""
    made: list[Notifier] = []

    def make(environ: dict[str, str]) -> Notifier:
        made.append(Notifier.from_environ(environ))
        return made[-1]

    yield make
    for notifier in made:
        notifier.close()


def received(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on ``sock`` (sending one is synchronous on AF_UNIX)."""
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(65536))
        except BlockingIOError:
            return datagrams


def test_each_message_arrives_as_one_datagram_with_exact_content(
    systemd_socket: tuple[str, socket.socket],
    notifier_from: NotifierFrom,
) -> None:
    env_value, sock = systemd_socket
    notifier = notifier_from({"NOTIFY_SOCKET": env_value})
    notifier.ready()
    notifier.status("serving on 127.0.0.1:7420; 2 sessions")
    notifier.watchdog()
    notifier.stopping()
    assert received(sock) == [
        b"READY=1",
        b"STATUS=serving on 127.0.0.1:7420; 2 sessions",
        b"WATCHDOG=1",
        b"STOPPING=1",
    ]


def test_reloading_sends_reloading_and_monotonic_usec_in_one_datagram(
    systemd_socket: tuple[str, socket.socket],
    notifier_from: NotifierFrom,
) -> None:
    env_value, sock = systemd_socket
    notifier = notifier_from({"NOTIFY_SOCKET": env_value})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    [datagram] = received(sock)
    first, second = datagram.split(b"\n")
    assert first == b"RELOADING=1"
    key, _, usec = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(usec) <= after


def test_status_is_one_line_and_the_latest_is_kept(
    systemd_socket: tuple[str, socket.socket],
    notifier_from: NotifierFrom,
) -> None:
    env_value, sock = systemd_socket
    notifier = notifier_from({"NOTIFY_SOCKET": env_value})
    notifier.status("starting")
    notifier.status("2 sessions\n1 connection")
    assert received(sock) == [b"STATUS=starting", b"STATUS=2 sessions 1 connection"]
    assert notifier.last_status == "2 sessions 1 connection"


def test_notify_sends_lines_and_fields_together_in_one_datagram(
    systemd_socket: tuple[str, socket.socket],
    notifier_from: NotifierFrom,
) -> None:
    env_value, sock = systemd_socket
    notifier = notifier_from({"NOTIFY_SOCKET": env_value})
    notifier.notify("READY=1", STATUS="up", MAINPID=42)
    assert received(sock) == [b"READY=1\nSTATUS=up\nMAINPID=42"]


def test_nothing_is_sent_without_notify_socket(
    monkeypatch: pytest.MonkeyPatch, notifier_from: NotifierFrom
) -> None:
    def no_socket(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError("a socket was made without NOTIFY_SOCKET")

    monkeypatch.setattr(socket, "socket", no_socket)
    notifier = notifier_from({"WATCHDOG_USEC": "1000000"})
    notifier.ready()
    notifier.status("up")
    notifier.reloading()
    notifier.watchdog()
    notifier.stopping()
    notifier.notify("X=1", Y=2)
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None


def test_unsupported_notify_socket_disables_the_notifier(
    caplog: pytest.LogCaptureFixture,
    notifier_from: NotifierFrom,
) -> None:
    with caplog.at_level(logging.WARNING, logger="hived.systemd"):
        notifier = notifier_from({"NOTIFY_SOCKET": "vsock:2:9999"})
    assert not notifier.enabled
    assert "vsock:2:9999" in caplog.text


def test_failed_sends_never_raise_and_warn_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, notifier_from: NotifierFrom
) -> None:
    notifier = notifier_from({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING, logger="hived.systemd"):
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "nobody-listens" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("environ", "interval_s"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid_only(
    environ: dict[str, str], interval_s: float | None, notifier_from: NotifierFrom
) -> None:
    notifier = notifier_from({"NOTIFY_SOCKET": "@unused", **environ})
    assert notifier.watchdog_interval_s == interval_s


async def test_watchdog_pings_every_half_period(
    systemd_socket: tuple[str, socket.socket],
    autojump_clock: trio.testing.MockClock,
    notifier_from: NotifierFrom,
) -> None:
    env_value, sock = systemd_socket
    notifier = notifier_from({"NOTIFY_SOCKET": env_value, "WATCHDOG_USEC": "4000000"})
    receiver = trio.socket.from_stdlib_socket(sock.dup())
    pings: list[tuple[float, bytes]] = []

    async def collect() -> None:
        while True:
            data = await receiver.recv(65536)
            pings.append((trio.current_time(), data))

    with receiver:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            start = trio.current_time()
            await nursery.start(notifier.serve_watchdog)
            await trio.sleep(61.0)
            nursery.cancel_scope.cancel()
    assert [data for _, data in pings] == [b"WATCHDOG=1"] * 31  # at 0, 2, 4, ... 60 s
    assert [t - start for t, _ in pings] == [2.0 * n for n in range(31)]


async def test_serve_watchdog_returns_at_once_when_not_asked_for(
    systemd_socket: tuple[str, socket.socket],
    autojump_clock: trio.testing.MockClock,
    notifier_from: NotifierFrom,
) -> None:
    env_value, sock = systemd_socket
    environ = {"NOTIFY_SOCKET": env_value, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
    notifier = notifier_from(environ)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.serve_watchdog)
    assert trio.current_time() == start
    assert received(sock) == []


@pytest.mark.parametrize(
    ("environ", "fds"),
    [
        ({"LISTEN_PID": "1234", "LISTEN_FDS": "2"}, [3, 4]),
        ({"LISTEN_PID": "1234", "LISTEN_FDS": "0"}, []),
        ({"LISTEN_PID": "999", "LISTEN_FDS": "2"}, []),
        ({"LISTEN_FDS": "2"}, []),
        ({"LISTEN_PID": "1234"}, []),
        ({"LISTEN_PID": "1234", "LISTEN_FDS": "two"}, []),
        ({}, []),
    ],
)
def test_listen_fds_counts_from_fd_3_only_for_our_pid(
    environ: dict[str, str], fds: list[int]
) -> None:
    assert list(listen_fds(environ, pid=1234)) == fds


def test_listen_sockets_is_empty_when_not_socket_activated() -> None:
    assert listen_sockets({"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}) == []


def test_listen_sockets_adopts_a_socket_passed_on_fd_3() -> None:
    # In a child process, where fd 3 can be given to the socket as systemd would.
    script = textwrap.dedent(
        """
        import os, socket, sys
        fd = int(sys.argv[1])
        if fd != 3:
            os.dup2(fd, 3)
            os.close(fd)
        from hived.systemd import listen_sockets
        [sock] = listen_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"})
        print(sock.getsockname()[1], sock.type == socket.SOCK_STREAM, os.get_inheritable(3))
        """
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        child = subprocess.run(
            [sys.executable, "-c", script, str(listener.fileno())],
            pass_fds=[listener.fileno()],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert child.stdout.split() == [str(listener.getsockname()[1]), "True", "False"]
