"""A real ``redis-server`` for the cluster tests, on a free loopback port.

:func:`redis_server` starts Debian's ``redis-server`` (no persistence, loopback only) and waits,
under a deadline, until it answers ``PING``; a test can :meth:`RedisServer.stop` it and
:meth:`RedisServer.start` it again on the same port (the engine down for a while). Tests skip,
saying why, where the binary is missing. :class:`EngineLink` is a relay between some nodes and
the engine that a test cuts and restores: those nodes lose the engine while the others keep it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import attrs
import pytest
import trio

from tests.e2e.harness import free_port

REDIS_SERVER: Final = shutil.which("redis-server")
DEADLINE_S: Final = 10.0

needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@attrs.define
class RedisServer:
    """One redis-server process the test owns."""

    port: int
    folder: Path
    extra: tuple[str, ...] = ()
    """More command-line options (TLS, a password)."""
    proc: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert REDIS_SERVER is not None
        log = (self.folder / f"redis-{self.port}.log").open("ab")
        with log:
            self.proc = await trio.lowlevel.open_process(
                [
                    REDIS_SERVER,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.folder),
                    *self.extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        with trio.fail_after(DEADLINE_S):
            while not await trio.to_thread.run_sync(_answers, self.port):
                if self.proc.poll() is not None:
                    raise AssertionError(f"redis-server exited with {self.proc.returncode}")
                await trio.sleep(0.02)

    async def command(self, *words: str) -> bytes:
        """Send one command (inline form) and return the first line of the answer."""

        def send() -> bytes:
            with socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE_S) as sock:
                sock.sendall(" ".join(words).encode() + b"\r\n")
                return sock.recv(4096).split(b"\r\n")[0]

        return await trio.to_thread.run_sync(send)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None


@attrs.define
class EngineLink:
    """A loopback TCP relay to the engine on ``target``; :meth:`cut` closes every relayed
    connection and refuses new ones until :meth:`restore` (a network cut, for one node)."""

    target: int
    port: int = attrs.field(factory=free_port)
    cut_off: bool = False
    _relays: set[trio.CancelScope] = attrs.field(factory=set)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    def cut(self) -> None:
        self.cut_off = True
        for relay in self._relays:
            relay.cancel()

    def restore(self) -> None:
        self.cut_off = False

    async def _relay(self, near: trio.SocketStream) -> None:
        with trio.CancelScope() as relay:
            self._relays.add(relay)
            try:
                if not self.cut_off:
                    far = await trio.open_tcp_stream("127.0.0.1", self.target)
                    async with far, trio.open_nursery() as nursery:
                        nursery.start_soon(_pump, near, far, nursery.cancel_scope)
                        nursery.start_soon(_pump, far, near, nursery.cancel_scope)
            except OSError:
                pass  # the engine is down: the node sees its connection closed
            finally:
                self._relays.discard(relay)
        with trio.CancelScope(shield=True):
            await near.aclose()


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        async for data in source:
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


@asynccontextmanager
async def redis_server(folder: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(free_port(), folder)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
