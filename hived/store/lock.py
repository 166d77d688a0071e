"""One daemon per state folder: an exclusive ``flock`` on ``<state.dir>/hived.lock``.

How it works. :meth:`StateLock.acquire` opens the lock file (creating it 0600 if missing),
takes an exclusive, non-blocking ``flock`` on it, and writes the holder's pid into it
(``"PID\\n"``). The lock is held as long as that file stays open: :meth:`StateLock.release`
closes it. A second daemon on the same folder finds the lock taken and is refused with a
:class:`~hived.core.errors.StoreError` naming the folder and the pid read from the file, before
it opens the database, so it never marks the first daemon's sessions LOST.

The kernel releases a flock when the last descriptor of its open file is closed, which happens
however the process ends, SIGKILL included. So a lock file that a killed daemon left behind
holds no lock and never blocks the next start: what counts is the lock, not the file or the pid
in it (that pid is only for the message). The descriptor is close-on-exec, so agents that
outlive a killed daemon do not keep its lock. A flock belongs to an open file, not to a
process: a second :meth:`~StateLock.acquire` in the same process is refused as well.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

import attrs

from hived.core.errors import StoreError

LOCK_NAME: Final = "hived.lock"
FILE_MODE: Final = 0o600
PID_MAX_BYTES: Final = 32
"""The most of the lock file read to find the holder's pid."""


@attrs.define
class StateLock:
    """The exclusive lock on a state folder, held from :meth:`acquire` to :meth:`release`."""

    path: Path
    """The lock file."""
    _fd: int | None
    """The open lock file; None once released."""

    @classmethod
    def acquire(cls, directory: Path) -> StateLock:
        """Lock ``directory`` (which must exist) for this process, or raise StoreError.

        Refused at once, never waiting, when another open file holds the lock: the message
        names the folder and the holder's pid (or "another process" when the file has none).
        """
        path = directory / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise StoreError(_cannot_lock(path, exc)) from exc
        try:
            _lock(fd, path)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        """Give the folder up (close the lock file); the file itself stays. Idempotent."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def in_use_message(directory: Path, pid: int | None) -> str:
    """What a daemon refused because ``directory`` is locked says; ``pid`` is the holder's."""
    holder = "another process" if pid is None else f"another hived (pid {pid})"
    return (
        f"{directory}: state.dir is in use by {holder}; stop it, or give this one another state.dir"
    )


def _lock(fd: int, path: Path) -> None:
    """Take the flock on the open lock file ``fd`` and write this process's pid into it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StoreError(in_use_message(path.parent, _read_pid(fd))) from None
    except OSError as exc:
        raise StoreError(_cannot_lock(path, exc)) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError as exc:
        raise StoreError(_cannot_lock(path, exc)) from exc


def _read_pid(fd: int) -> int | None:
    """The pid the holder wrote, or None when the file holds none (not yet written, garbage)."""
    try:
        text = os.pread(fd, PID_MAX_BYTES, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _cannot_lock(path: Path, exc: OSError) -> str:
    return (
        f"{path}: cannot take the state.dir lock: {exc.strerror or exc}; the daemon's user "
        f"needs read and write access to {path.parent} and its files (chown it, mode 0700)"
    )
