from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from hived.agents.orphans import group_members, is_running, parse_stat, pid_start, read_stat
from hived.core.config import StateConfig
from hived.core.sessions import SessionSummary, State
from hived.store import Store

DEADLINE_S = 10.0
Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start child processes in their own process groups, as the supervisor does; reap them."""
    children: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()


async def exited(child: subprocess.Popen[bytes]) -> int:
    with trio.fail_after(DEADLINE_S):
        while child.poll() is None:  # noqa: ASYNC110 (no event tells when a child exits)
            await trio.sleep(0.01)
    return child.returncode


def running(session_id: str, pid: int, start: int | None, observed: bool = False) -> SessionSummary:
    return SessionSummary(
        id=session_id,
        name=session_id,
        agent="fake",
        state=State.RUNNING,
        pid=pid,
        pid_start=start,
        observed=observed,
    )


async def crash_with(tmp_path: Path, *sessions: SessionSummary) -> Store:
    """Record sessions as running, stop the store without marking them, and open it again."""
    state = StateConfig(dir=str(tmp_path / "state"))
    store = Store.open(state)
    for s in sessions:
        store.record_session(s)
    await store.drain()
    store.close()
    return Store.open(state)


def test_parse_stat_reads_fields_after_a_command_name_with_spaces_and_parens() -> None:
    fields = " ".join(str(n) for n in range(6, 23))
    raw = f"4242 (evil) (name 1) S 1 4240 {fields} 99 0\n".encode()
    stat = parse_stat(4242, raw)
    assert (stat.state, stat.pgrp, stat.start) == ("S", 4240, 22)


def test_pid_start_is_stable_for_a_process_and_none_for_no_process() -> None:
    start = pid_start(os.getpid())
    assert start is not None
    assert pid_start(os.getpid()) == start
    assert is_running(os.getpid(), start)
    assert not is_running(os.getpid(), start + 1)
    assert pid_start(2**22 + 1) is None  # above the kernel's pid_max


async def test_an_orphan_recorded_as_running_is_stopped_on_recovery(
    tmp_path: Path, spawn: Spawn
) -> None:
    child = spawn("sleep", "60")
    start = pid_start(child.pid)
    store = await crash_with(tmp_path, running("s1", child.pid, start))
    try:
        assert store.stats().sessions_lost == 1
        assert await store.reap_orphans(grace_s=5.0) == ["s1"]
        assert await exited(child) == -signal.SIGTERM
        assert store.stats().orphans_reaped == 1
        lost = store.get_session("s1")
        assert lost is not None
        assert lost.state == State.LOST
        assert lost.reason is not None
        assert "terminated" in lost.reason
    finally:
        store.close()


async def test_an_orphan_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, spawn: Spawn
) -> None:
    # An ignored signal stays ignored across exec: sleep ignores SIGTERM too.
    child = spawn("sh", "-c", "trap '' TERM; echo ready; exec sleep 60")
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    store = await crash_with(tmp_path, running("s1", child.pid, pid_start(child.pid)))
    try:
        assert await store.reap_orphans(grace_s=0.2) == ["s1"]
        assert await exited(child) == -signal.SIGKILL
    finally:
        store.close()


async def test_every_process_of_the_orphans_group_is_stopped(tmp_path: Path, spawn: Spawn) -> None:
    child = spawn("sh", "-c", "sleep 60 & sleep 60 & echo ready; wait")
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    assert len(group_members(child.pid)) == 3
    store = await crash_with(tmp_path, running("s1", child.pid, pid_start(child.pid)))
    try:
        assert await store.reap_orphans(grace_s=5.0) == ["s1"]
        await exited(child)
        assert group_members(child.pid) == []
    finally:
        store.close()


async def test_a_live_process_with_the_same_pid_but_another_start_is_left_alone(
    tmp_path: Path, spawn: Spawn
) -> None:
    child = spawn("sleep", "60")
    start = pid_start(child.pid)
    assert start is not None
    # The record says this pid started at another time: the pid has been reused since.
    store = await crash_with(tmp_path, running("s1", child.pid, start + 1))
    try:
        assert await store.reap_orphans(grace_s=0.2) == []
        assert child.poll() is None
        stat = read_stat(child.pid)
        assert stat is not None
        assert stat.state != "Z"
        assert store.stats().orphans_reaped == 0
        assert store.stats().sessions_lost == 1
    finally:
        store.close()


async def test_an_observed_sessions_process_is_left_alone(tmp_path: Path, spawn: Spawn) -> None:
    child = spawn("sleep", "60")
    store = await crash_with(
        tmp_path, running("s1", child.pid, pid_start(child.pid), observed=True)
    )
    try:
        assert await store.reap_orphans(grace_s=0.2) == []
        assert child.poll() is None
    finally:
        store.close()
