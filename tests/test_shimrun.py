"""An agent run through its shim, as the daemon drives it (hived/agents/shimrun.py over hived/agents/shim.py).

Real shims and real agents (the fakes of examples/agents): spawn errors in words, the agent's
own process group and environment, the output read from the spool from any offset, and stops
that end the whole group — an agent that ignores SIGTERM and its grandchild included.
"""

from __future__ import annotations

import signal
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import pytest
import trio

from hived.agents.process import SpawnError, read_lines, signal_group
from hived.agents.shim import EXIT_NAME, META_NAME, STDERR_NAME, STDOUT_NAME
from hived.agents.shimrun import ShimRun, end_run, stop_run
from tests.test_process import MISBEHAVE, wait_gone
from tests.test_store import wait_until


@asynccontextmanager
async def running(tmp_path: Path, *argv: str, **kwargs: object) -> AsyncIterator[ShimRun]:
    """A shim running ``argv``, watched; the run is ended and collected at the end."""
    run = await ShimRun.start(tmp_path / "run", argv, cwd=str(tmp_path), **kwargs)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run.serve_watch)
        try:
            yield run
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(15):
                await end_run(run)
            nursery.cancel_scope.cancel()


async def lines(run: ShimRun, count: int, offset: int = 0) -> list[str]:
    got: list[str] = []
    stream = run.spool("stdout", offset)
    async with stream, aclosing(read_lines(stream, offset=offset)) as batches:
        async for batch in batches:
            got += batch.lines
            if len(got) >= count:
                break
    return got


# -- spawning ---------------------------------------------------------------------------------


async def test_a_missing_command_says_command_not_found(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match=r"^command not found: claudee-not-here$"):
        await ShimRun.start(tmp_path / "run", ["claudee-not-here", "-p"], cwd=str(tmp_path))


async def test_a_missing_cwd_says_so(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(SpawnError) as info:
        await ShimRun.start(tmp_path / "run", [sys.executable, "-c", "pass"], cwd=missing)
    assert info.value.reason == f"cwd does not exist: {missing}"


async def test_a_file_that_is_not_executable_says_so(tmp_path: Path) -> None:
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(SpawnError, match=r"^command not executable: "):
        await ShimRun.start(tmp_path / "run", [str(script)], cwd=str(tmp_path))


async def test_the_agent_runs_in_its_own_group_without_hiveds_systemd_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    code = (
        "import os; print(os.getpgrp() == os.getpid(), os.getcwd(),"
        " 'NOTIFY_SOCKET' in os.environ, 'WATCHDOG_USEC' in os.environ, os.environ['EXTRA'])"
    )
    async with running(tmp_path, sys.executable, "-c", code, env={"EXTRA": "yes"}) as run:
        with trio.fail_after(10):
            assert await lines(run, 1) == [f"True {tmp_path} False False yes"]
            assert await run.wait_exit() == 0


async def test_the_output_is_read_again_from_any_offset(tmp_path: Path) -> None:
    code = "print('one'); print('two'); print('three')"
    async with running(tmp_path, sys.executable, "-c", code) as run:
        with trio.fail_after(10):
            await run.wait_exit()
            assert await lines(run, 3) == ["one", "two", "three"]
            assert await lines(run, 2, offset=len("one\n")) == ["two", "three"]


async def test_live_output_comes_through_the_tail_and_the_rest_from_the_file_if_the_shim_dies(
    tmp_path: Path,
) -> None:
    code = (
        "import sys\nprint('first', flush=True)\nsys.stdin.readline()\n"
        "sys.stdout.write('x' * 100000 + '\\nlast\\n'); sys.stdout.flush()\nsys.stdin.readline()"
    )
    async with running(tmp_path, sys.executable, "-c", code) as run:
        stream = run.spool("stdout")
        with trio.fail_after(10):
            async with stream, aclosing(read_lines(stream)) as batches:
                got: list[str] = []
                async for batch in batches:
                    got += batch.lines
                    if got == ["first"]:
                        await run.write(b"go\n")
                        # Wait until the shim spooled it all, then kill it before the tail
                        # could be read: the rest must come from the file.
                        await wait_until(lambda: (run.dir / "stdout").stat().st_size == 100012)
                        signal_group(run.shim_pid, signal.SIGKILL)
            assert got == ["first", "x" * 100000, "last"]
            await run.wait_exit()
            assert run.gone
            # A reader that starts now finds no shim to tail: it reads the file.
            assert await lines(run, 3) == ["first", "x" * 100000, "last"]


# -- stopping ---------------------------------------------------------------------------------


async def test_a_stop_kills_an_agent_that_ignores_sigterm_and_its_grandchild(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, sys.executable, MISBEHAVE, "ignore-term") as run:
        with trio.fail_after(10):
            _, pid, grandchild = (await lines(run, 1))[0].split()
            assert int(pid) == run.agent_pid
            await stop_run(run, 0.3)
            assert run.exit_code == -signal.SIGKILL
    await wait_gone(run.agent_pid, int(grandchild))


async def test_an_agent_that_obeys_sigterm_ends_within_the_grace(tmp_path: Path) -> None:
    async with running(tmp_path, sys.executable, MISBEHAVE, "sleep") as run:
        with trio.fail_after(10):
            assert await lines(run, 1) == ["ready"]
            await stop_run(run, 10.0)
            assert run.exit_code == -signal.SIGTERM


async def test_a_cancelled_run_is_still_killed_and_collected(tmp_path: Path) -> None:
    async with running(tmp_path, sys.executable, MISBEHAVE, "ignore-term") as run:
        with trio.fail_after(10):
            grandchild = int((await lines(run, 1))[0].split()[2])
        with trio.move_on_after(0.1):
            await stop_run(run, 30.0)
    assert run.exit_code == -signal.SIGKILL
    assert not run.dir.exists(), "collected: the shim removed the run's folder"
    await wait_gone(grandchild)


async def test_leftovers_die_when_the_leader_exits_by_itself(tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "print(p.pid, flush=True)"
    )
    async with running(tmp_path, sys.executable, "-c", code) as run:
        with trio.fail_after(10):
            grandchild = int((await lines(run, 1))[0])
            assert await run.wait_exit() == 0
            # The shim ends them as it records the exit: no stop needed, no daemon either.
            await wait_gone(grandchild)


async def test_signal_group_reaches_the_group_and_reports_when_it_is_gone(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, sys.executable, MISBEHAVE, "sleep") as run:
        with trio.fail_after(10):
            assert await lines(run, 1) == ["ready"]
            assert signal_group(run.agent_pid, signal.SIGINT)
            assert await run.wait_exit() == -signal.SIGINT
    assert not signal_group(run.agent_pid, signal.SIGINT)


async def test_the_files_a_shim_left_say_what_output_a_full_disk_lost(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / META_NAME).write_text('{"version": 2, "agent_pid": 11, "shim_pid": 12}')
    (run_dir / STDOUT_NAME).write_bytes(b"kept\n")
    (run_dir / STDERR_NAME).write_bytes(b"")
    (run_dir / EXIT_NAME).write_text(
        '{"exit_code": 0, "ended_at": 1.0, "stdout_lost_bytes": 4096, "stderr_lost_bytes": 0,'
        ' "lost_since": 1796443101.5}'
    )
    run = await ShimRun.from_files(run_dir)
    assert (run.exit_code, run.sizes) == (0, {"stdout": 5, "stderr": 0})
    assert (run.lost, run.lost_since) == ({"stdout": 4096}, 1796443101.5)
    # A shim from before the count: nothing said, nothing lost.
    (run_dir / EXIT_NAME).write_text('{"exit_code": 0, "ended_at": 1.0}')
    older = await ShimRun.from_files(run_dir)
    assert (older.lost, older.lost_since) == ({}, None)
