"""Agent processes: why one could not start, reading its lines, signalling its group.

How it works: an agent runs in its own session, started by its shim (:mod:`hived.agents.shimrun`),
so its pid is also the id of a process group holding everything it forks.
:func:`spawn_reason` says in words why a start failed. :func:`read_lines` turns a stream (the
agent's spool) into batches of lines, one batch per chunk read, with a bound on a line's length
so that an agent printing without newlines cannot make hived grow without bound.
:func:`signal_group` signals the whole group.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import AsyncGenerator
from typing import Final

import attrs
import trio

from hived.core.errors import HivedError

log = logging.getLogger(__name__)

LINE_LIMIT_BYTES: Final = 1 << 20
"""The longest line kept whole; the rest of a longer one is dropped up to its newline."""
READ_CHUNK_BYTES: Final = 64 * 1024
"""How much one read from a pipe asks for: the lines of one chunk are published together."""
REAP_BUDGET_S: Final = 5.0
"""After SIGKILL, how long reaping may take before hived gives up waiting (a process stuck in
the kernel); the pidfd stays watched by trio until it goes."""


class SpawnError(HivedError, OSError):
    """An agent's command could not be started; ``reason`` says why, for a person."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def spawn_reason(exc: OSError, program: str, cwd: str | None) -> str:
    """What went wrong, in words: subprocess names the failing path in ``filename``."""
    about_cwd = cwd is not None and exc.filename == cwd
    if about_cwd:
        if isinstance(exc, FileNotFoundError):
            return f"cwd does not exist: {cwd}"
        if isinstance(exc, NotADirectoryError):
            return f"cwd is not a folder: {cwd}"
        if isinstance(exc, PermissionError):
            return f"cwd is not accessible: {cwd}"
        return f"cannot enter cwd {cwd}: {exc.strerror}"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {program}"
    if isinstance(exc, PermissionError):
        return f"command not executable: {program}"
    if exc.errno == errno.ENOEXEC:
        return f"command is not a program this machine can run: {program}"
    return f"cannot start {program}: {exc.strerror or exc}"


@attrs.frozen
class Lines:
    """The complete lines of one chunk read from a pipe."""

    lines: list[str]
    """Each line without its ``\\n``; invalid UTF-8 replaced by U+FFFD."""
    cut: frozenset[int] = frozenset()
    """Indexes into ``lines`` of lines cut at the limit (what followed, up to the newline, was
    dropped)."""
    ends: tuple[int, ...] = attrs.field(default=(), eq=False)
    """For each line, the stream offset just past it (past its newline; for a cut line, where
    it was cut): where to read again to get the lines after it."""


async def read_lines(
    stream: trio.abc.ReceiveStream,
    limit: int = LINE_LIMIT_BYTES,
    chunk_bytes: int = READ_CHUNK_BYTES,
    offset: int = 0,
) -> AsyncGenerator[Lines, None]:
    """Batches of lines from ``stream`` until it ends, one batch per chunk read.

    A line longer than ``limit`` bytes is cut there (and marked in :attr:`Lines.cut`) as soon
    as the limit is passed; the rest of it is read and dropped up to its newline, so at most
    ``limit`` + ``chunk_bytes`` bytes are ever held. The last line is given at the end even
    without its newline. ``offset`` is where in its stream ``stream`` starts (a spool read from
    the middle): :attr:`Lines.ends` count from the stream's start.
    """
    buffer = bytearray()
    consumed = offset  # stream offset of buffer[0]
    dropping = False  # inside the tail of a cut line
    while True:
        data = await stream.receive_some(chunk_bytes)
        if not data:
            break
        start = 0
        if dropping:
            newline = data.find(b"\n")
            if newline < 0:
                consumed += len(data)
                continue
            dropping = False
            start = newline + 1
            consumed += start
        buffer += data[start:] if start else data
        lines: list[str] = []
        ends: list[int] = []
        cut: set[int] = set()
        begin = 0
        while (newline := buffer.find(b"\n", begin)) >= 0:
            end = newline - 1 if newline > begin and buffer[newline - 1] == 0x0D else newline
            if end - begin > limit:
                cut.add(len(lines))
                end = begin + limit
            lines.append(buffer[begin:end].decode("utf-8", "replace"))
            begin = newline + 1
            ends.append(consumed + begin)
        del buffer[:begin]
        consumed += begin
        if len(buffer) > limit:
            cut.add(len(lines))
            lines.append(buffer[:limit].decode("utf-8", "replace"))
            consumed += len(buffer)
            ends.append(consumed)
            buffer.clear()
            dropping = True
        if lines:
            yield Lines(lines, frozenset(cut), tuple(ends))
    if buffer:
        yield Lines([buffer.decode("utf-8", "replace")], ends=(consumed + len(buffer),))


def _signal_group(pgid: int, signum: signal.Signals) -> bool:
    """Send ``signum`` to the group; False when the group has no member left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member changed its credentials (setuid); the rest got the signal.
        log.warning("process group %d: not allowed to signal every member", pgid)
    return True


def signal_group(pgid: int, signum: signal.Signals) -> bool:
    """Send ``signum`` to the process group ``pgid``; False when it is gone."""
    return _signal_group(pgid, signum)
