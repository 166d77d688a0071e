"""Telling a process from a later one with the same pid, and stopping orphaned agents.

Agent processes run in their own process groups, so they outlive a daemon killed with SIGKILL.
The store records each session's ``pid`` and ``pid_start``: the process start time in clock
ticks since boot, field 22 of ``/proc/<pid>/stat``. A pid alone names a process only while it
runs; pid and start time together name exactly one process for the life of the machine. So a
recorded agent is stopped at the next start only when both still match — a pid that the kernel
has since given to another program is never signalled.

Linux only (``/proc``). Where ``/proc`` is missing, :func:`pid_start` returns None and nothing is
ever taken for an orphan.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
from typing import Final

import attrs
import trio

log = logging.getLogger(__name__)

POLL_INTERVAL_S: Final = 0.05
"""How often a stopping process group is looked at."""
KILL_WAIT_S: Final = 5.0
"""How long to wait for a group to disappear after SIGKILL before giving up on it."""
_GONE_STATES: Final = frozenset({"Z", "X", "x"})
"""``/proc/<pid>/stat`` states of a process that has exited (zombie, dead)."""


@attrs.frozen
class ProcStat:
    """The few fields of ``/proc/<pid>/stat`` hived needs."""

    pid: int
    state: str
    """One letter: R, S, D, T, Z (zombie: exited, not yet reaped)…"""
    pgrp: int
    """The process group id."""
    start: int
    """Start time in clock ticks after boot (field 22)."""


def read_stat(pid: int) -> ProcStat | None:
    """The process's ``/proc/<pid>/stat`` fields, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.ENOENT):
            return None
        raise
    return parse_stat(pid, raw)


def parse_stat(pid: int, raw: bytes) -> ProcStat:
    """Parse the text of ``/proc/<pid>/stat``."""
    # The command name (field 2) is in parentheses and may itself hold spaces and ")".
    rest = raw[raw.rindex(b")") + 2 :].split()
    # rest[0] is field 3 (state), rest[2] field 5 (pgrp), rest[19] field 22 (starttime).
    return ProcStat(pid=pid, state=rest[0].decode(), pgrp=int(rest[2]), start=int(rest[19]))


def pid_start(pid: int) -> int | None:
    """The start time of process ``pid`` (field 22 of ``/proc/<pid>/stat``); None if none runs."""
    stat = read_stat(pid)
    return None if stat is None else stat.start


def is_running(pid: int, start: int) -> bool:
    """Whether the process that started at ``start`` still runs as ``pid`` (not a zombie)."""
    stat = read_stat(pid)
    return stat is not None and stat.start == start and stat.state not in _GONE_STATES


def group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes in process group ``pgid``."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = read_stat(int(name))
        if stat is not None and stat.pgrp == pgid and stat.state not in _GONE_STATES:
            members.append(stat.pid)
    return members


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


async def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    # No event tells when a process that is not our child exits: poll /proc.
    with trio.move_on_after(timeout_s):
        while group_members(pgid):  # noqa: ASYNC110
            await trio.sleep(POLL_INTERVAL_S)
        return True
    return False


async def stop_orphan(pid: int, start: int, grace_s: float) -> str | None:
    """Stop the process group led by ``pid`` if that process is still the one started at ``start``.

    SIGTERM to the group, up to ``grace_s`` for every member to exit, then SIGKILL to whatever
    is left. A process that is no longer the recorded one (exited, or a reused pid) is left
    alone, and so is a process that does not lead its own group (only the supervisor's agents,
    started with ``start_new_session=True``, are taken for orphans).

    Returns what was done: ``"terminated"``, ``"killed"``, or None when nothing was signalled.
    """
    stat = read_stat(pid)
    if stat is None or stat.start != start or stat.state in _GONE_STATES:
        return None
    if stat.pgrp != pid:
        log.warning(
            "orphan %d: does not lead its own process group (pgrp %d); left alone", pid, stat.pgrp
        )
        return None
    _signal_group(pid, signal.SIGTERM)
    if await _wait_group_gone(pid, grace_s):
        return "terminated"
    # The group id cannot be reused while a member still exists: SIGKILL reaches only those.
    if group_members(pid):
        _signal_group(pid, signal.SIGKILL)
    if not await _wait_group_gone(pid, KILL_WAIT_S):
        log.error("orphan %d: process group still there %.0f s after SIGKILL", pid, KILL_WAIT_S)
    return "killed"
