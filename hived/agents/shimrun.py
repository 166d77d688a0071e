"""One agent run through its shim, as the daemon sees it (DESIGN §11; the shim:
hived/agents/shim.py).

How it works: :meth:`ShimRun.start` starts ``python -m hived.agents.shim`` in a session of its
own, which starts the agent and answers one readiness line; :meth:`ShimRun.attach` takes up a
shim an earlier daemon run started. Either way the daemon holds connections to the shim's control
socket: one for requests (write to stdin, close it, signal the process group, collect the exit
status), one it watches for the agent's exit status, and one ``tail`` per output stream, on
which the shim sends the bytes of that stream's spool from an offset, then live as the agent
prints them (:meth:`ShimRun.spool`): what the daemon has kept is where it reads on from. Once a
tail ends, or breaks because the shim died, the rest is read from the spool file itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from hived.agents.process import REAP_BUDGET_S, SpawnError, signal_group, spawn_reason
from hived.agents.shim import (
    EXIT_NAME,
    META_NAME,
    SHIM_PROTOCOL_VERSION,
    SOCKET_NAME,
    STDERR_NAME,
    STDOUT_NAME,
)
from hived.core.agentenv import agent_environ
from hived.core.drivers.base import Action, DriverLaunch
from hived.core.events import Usage

log = logging.getLogger(__name__)

SHIMS_DIR: Final = "shims"
"""Under ``state.dir``: one folder per running agent, named by its session id."""
ACTIONS_NAME: Final = "actions.jsonl"
"""The operator's actions on the run's driver (:class:`~hived.core.drivers.base.Action`)."""
LAUNCH_NAME: Final = "hived.json"
"""What the daemon keeps in a run's folder to take the run up again (its driver's launch)."""
START_DEADLINE_S: Final = 10.0
"""How long a shim may take to say it started the agent."""
REQUEST_DEADLINE_S: Final = 10.0
"""How long a request to a shim may take before the shim is taken for gone."""
READ_CHUNK_BYTES: Final = 64 * 1024
STREAMS: Final = {"stdout": STDOUT_NAME, "stderr": STDERR_NAME}


@contextlib.contextmanager
def socket_path(run_dir: Path) -> Iterator[str]:
    """A path to the run's control socket short enough for ``connect`` (108 bytes at most): the
    folder through an open descriptor of it (``/proc/self/fd/N``) when its own path is long."""
    path = str(run_dir / SOCKET_NAME)
    if len(path.encode()) < 100:
        yield path
        return
    fd = os.open(run_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{SOCKET_NAME}"
    finally:
        os.close(fd)


class ShimGone(OSError):
    """The shim does not answer: it died, or its folder is gone."""


@attrs.define(eq=False)
class _Line:
    """Newline-delimited JSON on a socket stream."""

    stream: trio.SocketStream
    buffer: bytearray = attrs.Factory(bytearray)

    async def send(self, obj: Mapping[str, Any]) -> None:
        await self.stream.send_all(json.dumps(obj).encode() + b"\n")

    async def receive(self) -> dict[str, Any]:
        while (newline := self.buffer.find(b"\n")) < 0:
            data = await self.stream.receive_some(65536)
            if not data:
                raise ShimGone("the shim closed its control socket")
            self.buffer += data
        line = bytes(self.buffer[:newline])
        del self.buffer[: newline + 1]
        return dict(json.loads(line))


@attrs.define(eq=False)
class ShimRun:
    """One agent run held by a shim (see the module docstring)."""

    dir: Path
    agent_pid: int
    shim_pid: int
    process: trio.Process | None = None
    """The shim process, when this daemon started it (it is then this daemon's to reap)."""
    sizes: dict[str, int] | None = None
    """Each spool's final size, once the agent has ended."""
    exit_code: int | None = None
    """The agent's exit status once it has ended and its output is all spooled."""
    lost: dict[str, int] = attrs.Factory(dict)
    """Bytes of each stream the shim could not write to its spool (a full disk), once the
    agent has ended; empty when none were lost."""
    lost_since: float | None = None
    """When output was first lost (Unix time)."""
    gone: bool = False
    """The shim stopped answering while the agent ran (it was killed)."""
    offline: bool = False
    """Taken from the files of a shim that exited long after its agent (:meth:`from_files`):
    its pid, and the group's, may name other processes by now; nothing is signalled."""
    _requests: _Line | None = None
    _lock: trio.Lock = attrs.Factory(trio.Lock)
    _exited: trio.Event = attrs.Factory(trio.Event)

    @property
    def session_id(self) -> str:
        return self.dir.name

    def mark_key(self, stream: str) -> str:
        """The key of this run's spool ``stream`` in the store's marks."""
        return f"{self.session_id}/{self.agent_pid}/{stream}"

    # -- starting and taking up -----------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        run_dir: Path,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str] | None = None,
        spool_max_bytes: int | None = None,
    ) -> ShimRun:
        """Start a shim that starts ``argv``; :class:`~hived.agents.process.SpawnError` if it
        cannot."""
        if not argv:
            raise SpawnError("empty command")
        environ = agent_environ(os.environ, env or {})
        command = [sys.executable, "-m", "hived.agents.shim", "--dir", str(run_dir), "--cwd", cwd]
        if spool_max_bytes is not None:
            command += ["--spool-max-bytes", str(spool_max_bytes)]
        proc = await trio.lowlevel.open_process(
            [*command, "--", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,
            env=environ,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            with trio.fail_after(START_DEADLINE_S):
                ready = await _read_line(proc.stdout)
        except (trio.TooSlowError, ValueError) as exc:
            proc.kill()
            await proc.wait()
            raise SpawnError(f"the shim did not start the agent: {exc!r}") from exc
        finally:
            await proc.stdout.aclose()
        if "error" in ready:
            await proc.wait()
            raise SpawnError(_reason(ready, argv[0], cwd))
        run = cls(run_dir, int(ready["agent_pid"]), int(ready["shim_pid"]), proc)
        await run._connect()
        return run

    @classmethod
    async def attach(cls, run_dir: Path) -> ShimRun:
        """Take up the shim of ``run_dir`` that an earlier daemon run started;
        :class:`ShimGone` when it no longer answers."""
        try:
            meta = json.loads(await trio.Path(run_dir / META_NAME).read_text())
        except (OSError, ValueError) as exc:
            raise ShimGone(f"{run_dir}: no readable {META_NAME}: {exc}") from exc
        if meta.get("version") != SHIM_PROTOCOL_VERSION:
            raise ShimGone(
                f"{run_dir}: its shim speaks protocol {meta.get('version')!r}, this hived "
                f"{SHIM_PROTOCOL_VERSION}"
            )
        run = cls(run_dir, int(meta["agent_pid"]), int(meta["shim_pid"]))
        await run._connect()
        return run

    @classmethod
    async def from_files(cls, run_dir: Path) -> ShimRun:
        """A run whose shim has exited after its agent ended (it waited a day for a daemon to
        collect it): what the agent printed and its exit status, from the files it left;
        :class:`ShimGone` when they are not there (the agent did not end: an orphan)."""
        try:
            meta = json.loads(await trio.Path(run_dir / META_NAME).read_text())
            ended = json.loads(await trio.Path(run_dir / EXIT_NAME).read_text())
            sizes = {
                name: (await trio.Path(run_dir / file).stat()).st_size
                for name, file in STREAMS.items()
            }
        except (OSError, ValueError) as exc:
            raise ShimGone(f"{run_dir}: no exit status left: {exc}") from exc
        run = cls(run_dir, int(meta["agent_pid"]), int(meta["shim_pid"]), sizes=sizes)
        run.exit_code, run.offline = int(ended["exit_code"]), True
        run._take_losses(ended)
        return run

    def _take_losses(self, report: Mapping[str, Any]) -> None:
        """The output lost to a full disk, from an exit report (absent: none)."""
        for name in STREAMS:
            count = report.get(f"{name}_lost_bytes")
            if isinstance(count, int) and count > 0:
                self.lost[name] = count
        since = report.get("lost_since")
        if self.lost and isinstance(since, int | float):
            self.lost_since = float(since)

    async def _connect(self) -> None:
        self._requests = _Line(await self._open())

    async def _open(self) -> trio.SocketStream:
        try:
            with socket_path(self.dir) as path:
                return await trio.open_unix_socket(path)
        except OSError as exc:
            raise ShimGone(f"{self.dir}: the shim does not answer: {exc}") from exc

    # -- requests ----------------------------------------------------------------------------

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request to the shim and its answer; :class:`ShimGone` if it does not come."""
        async with self._lock:
            if self._requests is None:
                raise ShimGone(f"{self.dir}: not connected")
            try:
                with trio.fail_after(REQUEST_DEADLINE_S):
                    await self._requests.send({"op": op, **fields})
                    return await self._requests.receive()
            except (
                OSError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                trio.TooSlowError,
                ValueError,
            ) as exc:
                raise ShimGone(f"{self.dir}: {op}: {exc!r}") from exc

    async def write(self, data: bytes) -> None:
        """Queue ``data`` for the agent's stdin; ``BrokenResourceError`` when it is closed."""
        answer = await self.request("write", data=base64.b64encode(data).decode())
        if not answer.get("ok"):
            raise trio.BrokenResourceError(answer.get("error", "the agent's stdin is closed"))

    async def close_stdin(self) -> None:
        await self.request("close_stdin")

    async def signal(self, signum: signal.Signals) -> None:
        """``signum`` to the agent's whole process group."""
        await self.request("signal", signal=int(signum))

    async def collect(self) -> None:
        """The exit status is taken: the shim removes the run's folder and exits (the folder of
        a shim that is gone is removed here)."""
        try:
            await self.request("collect")
        except ShimGone:
            log.info("%s: the shim was gone before it was collected", self.dir)
            await trio.to_thread.run_sync(shutil.rmtree, self.dir, True)
        if self._requests is not None:
            await self._requests.stream.aclose()
        if self.process is not None:
            with trio.move_on_after(REAP_BUDGET_S):
                await self.process.wait()

    async def detach(self) -> None:
        """Let go of the shim without ending anything (the daemon stops or restarts)."""
        if self._requests is not None:
            await self._requests.stream.aclose()

    # -- watching ------------------------------------------------------------------------------

    async def serve_watch(self) -> None:
        """Wait for the shim to say the agent has ended (its spools are then complete)."""
        if self.offline:
            return
        watch = _Line(await self._open())
        try:
            await watch.send({"op": "watch", "data": False})
            while self.exit_code is None:
                notice = await watch.receive()
                if notice.get("event") != "exit":
                    continue
                self.sizes = {name: int(notice[f"{name}_bytes"]) for name in STREAMS}
                self._take_losses(notice)
                self.exit_code = int(notice["exit_code"])
                self._exited.set()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as exc:
            if self.exit_code is not None:
                return  # the agent had ended: its shim went away after it was collected
            # Nobody holds the agent's pipes any more: end it, as an orphan would be.
            log.error("%s: the shim is gone (%r); stopping its agent", self.dir, exc)
            self.gone = True
            signal_group(self.agent_pid, signal.SIGKILL)
            self.exit_code = -signal.SIGKILL
            self._exited.set()
        finally:
            await watch.stream.aclose()

    async def wait_exit(self) -> int:
        while self.exit_code is None:
            await self._exited.wait()
        return self.exit_code

    def spool(self, stream: str, offset: int = 0, upto: int | None = None) -> SpoolStream:
        """The agent's ``stream`` (stdout or stderr) from ``offset`` to its end (or to
        ``upto``): live from the shim while it runs, from the file once it has ended."""
        if upto is None and self.sizes is not None:
            upto = self.sizes[stream]
        return SpoolStream(self, stream, offset, upto)


@attrs.define(eq=False)
class SpoolStream(trio.abc.ReceiveStream):
    """A spool read as a stream: through a ``tail`` connection to the shim while the agent
    runs, from the file for what is already complete.

    Live, each read is the bytes the shim just took from the agent's pipe: one hop, no notice
    and no file read. When the tail ends (the agent closed the stream and every byte was sent)
    or breaks (the shim died), whatever the file holds past the offset is read from it, so the
    stream is complete either way. The file is read with ``pread`` on the event loop's thread:
    what it reads sits in the page cache, so a read takes microseconds.
    """

    run: ShimRun
    stream: str
    offset: int
    upto: int | None = None
    """Read the file up to here and stop; None: tail the shim."""
    _tail: trio.SocketStream | None = None
    _early: bytes = b""
    """Bytes that came with the shim's answer to ``tail``."""
    _tailed: bool = False
    _fd: int | None = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        want = max_bytes or READ_CHUNK_BYTES
        if self.upto is None and not self._tailed:
            data = await self._receive_live(want)
            if data:
                self.offset += len(data)
                return data
        await trio.lowlevel.checkpoint()
        if self.upto is not None:
            if self.offset >= self.upto:
                return b""
            want = min(want, self.upto - self.offset)
        if self._fd is None:
            self._fd = os.open(self.run.dir / STREAMS[self.stream], os.O_RDONLY | os.O_CLOEXEC)
        data = os.pread(self._fd, want, self.offset)
        self.offset += len(data)
        return data

    async def _receive_live(self, want: int) -> bytes:
        """The next bytes from the shim; empty once the tail has ended or broken."""
        try:
            if self._tail is None:
                await self._open_tail()
            if self._early:
                data, self._early = self._early[:want], self._early[want:]
                return data
            assert self._tail is not None
            data = await self._tail.receive_some(want)
        except (OSError, trio.BrokenResourceError, ValueError) as exc:
            log.warning(
                "%s: %s tail broke (%r); reading on from the file", self.run.dir, self.stream, exc
            )
            data = b""
        if not data:
            self._tailed = True
        return data

    async def _open_tail(self) -> None:
        self._tail = await self.run._open()
        request = {"op": "tail", "stream": self.stream, "offset": self.offset}
        await self._tail.send_all(json.dumps(request).encode() + b"\n")
        answer = b""
        while (newline := answer.find(b"\n")) < 0:
            chunk = await self._tail.receive_some(READ_CHUNK_BYTES)
            if not chunk:
                raise ShimGone("the shim closed the tail before answering")
            answer += chunk
        reply = json.loads(answer[:newline])
        if not reply.get("ok"):
            raise ValueError(f"tail refused: {reply.get('error')}")
        self._early = answer[newline + 1 :]

    async def aclose(self) -> None:
        if self._tail is not None:
            await self._tail.aclose()
            self._tail = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        await trio.lowlevel.checkpoint()


def live_runs(shims_dir: Path) -> set[str]:
    """The session ids whose shim answers on its socket, or whose agent ended and left its exit
    status (blocking; run it in a thread). The store leaves these sessions as they were; the
    supervisor takes them up."""
    live: set[str] = set()
    try:
        entries = list(shims_dir.iterdir())
    except OSError:
        return live
    for run_dir in entries:
        if (run_dir / EXIT_NAME).exists():
            live.add(run_dir.name)  # ended while no daemon was there: collected from its files
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                with socket_path(run_dir) as path:
                    probe.connect(path)
            except OSError:
                continue
            live.add(run_dir.name)
    return live


async def find_shims(shims_dir: Path) -> list[tuple[Path, ShimRun | None]]:
    """Every run folder under ``shims_dir`` with its shim taken up, or None where the shim
    does not answer (it died, or its agent ended long ago and it left only its files)."""
    found: list[tuple[Path, ShimRun | None]] = []
    if not await trio.Path(shims_dir).is_dir():
        return found
    for entry in sorted(await trio.Path(shims_dir).iterdir()):
        run_dir = Path(entry)
        try:
            found.append((run_dir, await ShimRun.attach(run_dir)))
        except ShimGone as exc:
            try:
                found.append((run_dir, await ShimRun.from_files(run_dir)))
            except ShimGone:
                log.info("%s", exc)
                found.append((run_dir, None))
    return found


@attrs.frozen
class Resume:
    """Where a run's output is read from: its spools' offsets (0 for a new run)."""

    stdout: int = 0
    stderr: int = 0


async def write_launch(run: ShimRun, launch: DriverLaunch) -> None:
    """Keep the driver's launch in the run's folder, for a later daemon run to take it up."""
    data = {
        "cwd": launch.cwd,
        "prompt": launch.prompt,
        "resume_id": launch.resume_id,
        "usage": launch.usage.to_json(),
    }
    await trio.Path(run.dir / LAUNCH_NAME).write_text(json.dumps(data))


async def read_launch(run_dir: Path) -> DriverLaunch:
    """The driver's launch kept by :func:`write_launch`; ``ValueError`` or ``OSError``."""
    data = json.loads(await trio.Path(run_dir / LAUNCH_NAME).read_text())
    return DriverLaunch(
        cwd=str(data["cwd"]),
        prompt=data.get("prompt"),
        resume_id=data.get("resume_id"),
        usage=Usage(**data.get("usage") or {}),
    )


def note_action(run: ShimRun, action: Action) -> None:
    """Append an operator's action to the run's folder (a small local write, done in place so
    that it is on disk before the action's bytes reach the agent)."""
    with contextlib.suppress(OSError), open(run.dir / ACTIONS_NAME, "a") as file:
        file.write(json.dumps(action.to_json()) + "\n")


async def read_actions(run_dir: Path) -> list[Action]:
    """The operator's actions noted for a run, in order; an unreadable line ends the list."""
    try:
        text = await trio.Path(run_dir / ACTIONS_NAME).read_text()
    except FileNotFoundError:
        return []
    actions = []
    for line in text.splitlines():
        try:
            actions.append(Action.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            log.warning("%s: an unreadable action; the later ones are left out", run_dir)
            break
    return actions


async def stop_run(run: ShimRun, timeout_s: float) -> None:
    """End the agent's process group: SIGTERM, up to ``timeout_s`` for it to exit, SIGKILL,
    then SIGKILL again for what it left behind. Needs :meth:`ShimRun.serve_watch` running."""
    if run.exit_code is None:
        await _signal_quietly(run, signal.SIGTERM)
        with trio.move_on_after(timeout_s):
            await run.wait_exit()
    if run.exit_code is None:
        log.info("agent %d: still running after SIGTERM; SIGKILL", run.agent_pid)
        await _signal_quietly(run, signal.SIGKILL)
        with trio.move_on_after(REAP_BUDGET_S):
            await run.wait_exit()
    # Whatever the leader left behind in its group.
    if not run.offline:
        signal_group(run.agent_pid, signal.SIGKILL)


async def end_run(run: ShimRun) -> int:
    """After the run's tasks: make sure the agent has ended (SIGKILL if it has not), collect
    its exit status from the shim (which then goes away), and return it."""
    if run.exit_code is None and not run.gone:
        await _signal_quietly(run, signal.SIGKILL)
        with trio.move_on_after(REAP_BUDGET_S):
            while run.exit_code is None:
                try:
                    answer = await run.request("status")
                except ShimGone:
                    break
                if answer.get("exit_code") is not None:
                    run._take_losses(answer)
                    run.exit_code = int(answer["exit_code"])
                    break
                await trio.sleep(0.05)
    code = run.exit_code if run.exit_code is not None else -signal.SIGKILL
    await run.collect()
    return code


async def _signal_quietly(run: ShimRun, signum: signal.Signals) -> None:
    try:
        await run.signal(signum)
    except ShimGone:
        signal_group(run.agent_pid, signum)


async def _read_line(stream: trio.abc.ReceiveStream) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ValueError(f"the shim ended without a word ({data!r})")
        data += chunk
    return dict(json.loads(data))


def _reason(ready: Mapping[str, Any], program: str, cwd: str) -> str:
    """The shim's spawn error in the words :func:`hived.agents.process.spawn_reason` gives."""
    number = int(ready.get("errno") or 0)
    # OSError(errno, …) is the subclass for that errno (FileNotFoundError for ENOENT, …).
    exc = OSError(number, ready.get("message") or os.strerror(number), ready.get("filename"))
    return spawn_reason(exc, program, cwd)
