"""systemd integration without libsystemd: sd_notify, the watchdog, socket activation.

How it works: systemd passes its side of the contract in environment variables. A
``Type=notify`` service finds in ``NOTIFY_SOCKET`` a datagram socket (a path, or ``@name`` for
an abstract one) and sends it ``KEY=value`` lines, one datagram per message. ``WATCHDOG_USEC``
asks for a ``WATCHDOG=1`` at least that often (we ping at half the period, as sd_watchdog_enabled
advises). ``LISTEN_PID``/``LISTEN_FDS`` hand over already-bound sockets from fd 3 on.

Sending never blocks the event loop (the socket is non-blocking: a message systemd has no room
for is dropped; the next status or watchdog ping says the same again) and never raises: hived
works the same with systemd gone; the first failure is logged.
Without ``NOTIFY_SOCKET`` nothing is sent at all. None of these variables may reach an agent:
an agent never gets them (:mod:`hived.core.agentenv`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Final

import attrs
import trio

log = logging.getLogger(__name__)

LISTEN_FDS_START: Final = 3
"""The first file descriptor systemd passes with socket activation (SD_LISTEN_FDS_START)."""


def _count(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _our_pid(environ: Mapping[str, str], key: str, pid: int) -> bool:
    return environ.get(key, "").strip() == str(pid)


def listen_fds(environ: Mapping[str, str], pid: int | None = None) -> range:
    """The file descriptors passed by socket activation to process ``pid`` (default: ours).

    Empty unless ``LISTEN_PID`` names that process and ``LISTEN_FDS`` is a count.
    """
    if not _our_pid(environ, "LISTEN_PID", os.getpid() if pid is None else pid):
        return range(0)
    text = environ.get("LISTEN_FDS", "")
    if not text:
        return range(0)
    count = _count(text)
    if count is None:
        log.warning("systemd: ignoring LISTEN_FDS=%r: not a count of sockets", text)
        return range(0)
    return range(LISTEN_FDS_START, LISTEN_FDS_START + count)


def listen_sockets(environ: Mapping[str, str]) -> list[socket.socket]:
    """The sockets systemd passed us (socket activation), ready to accept; often none.

    They are made close-on-exec, so agents do not inherit them.
    """
    sockets = []
    for fd in listen_fds(environ):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


@attrs.define
class Notifier:
    """Tells systemd how hived is doing (``sd_notify``); does nothing when not under systemd.

    Build one with :meth:`from_environ`. Every method is synchronous and cheap: call it from
    anywhere, at any time.
    """

    address: str | None = None
    """Where to send: a path, or an abstract name with its leading NUL; ``None``: disabled."""
    watchdog_usec: int | None = None
    """The watchdog period systemd asked for, when it asked this process."""
    last_status: str | None = attrs.field(default=None, init=False)
    """The latest ``STATUS=`` text."""
    _sock: socket.socket | None = attrs.field(default=None, init=False)
    _warned: bool = attrs.field(default=False, init=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """The notifier systemd's variables describe; disabled without ``NOTIFY_SOCKET``."""
        raw = environ.get("NOTIFY_SOCKET", "")
        if not raw:
            return cls()
        address = _socket_address(raw)
        if address is None:
            log.warning("systemd: NOTIFY_SOCKET=%r is neither a path nor @name; not notifying", raw)
            return cls()
        return cls(address=address, watchdog_usec=_watchdog_usec(environ))

    @property
    def enabled(self) -> bool:
        """Whether hived runs under systemd's notify protocol at all."""
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping the watchdog (half its period), or ``None`` when not asked to."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def notify(self, *lines: str, **fields: object) -> None:
        """Send ``lines`` and then ``KEY=value`` ``fields`` as one datagram. Never raises."""
        if self.address is None:
            return
        parts = [*lines, *(f"{key}={value}" for key, value in fields.items())]
        message = "\n".join(part.replace("\n", " ") for part in parts).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
        except (OSError, ValueError) as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "systemd: cannot notify %s (%s); later failures are not logged",
                    self.address.replace("\0", "@"),
                    exc,
                )

    def ready(self) -> None:
        """Startup (or a reload) is finished: hived serves."""
        self.notify(READY=1)

    def status(self, text: str) -> None:
        """Show ``text`` (one line) in ``systemctl status``."""
        self.last_status = " ".join(text.splitlines())
        self.notify(STATUS=self.last_status)

    def reloading(self) -> None:
        """A reload has begun; :meth:`ready` ends it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self) -> None:
        """hived is shutting down."""
        self.notify(STOPPING=1)

    def watchdog(self) -> None:
        """hived is alive."""
        self.notify(WATCHDOG=1)

    def close(self) -> None:
        """Close the socket; a later message opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def serve_watchdog(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Ping the watchdog every :attr:`watchdog_interval_s` until cancelled.

        Returns at once when systemd wants no pings. The pings come from the event loop itself,
        so a loop that hangs stops them, and systemd restarts hived.
        """
        interval = self.watchdog_interval_s
        task_status.started()
        if interval is None:
            return
        while True:
            self.watchdog()
            await trio.sleep(interval)


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    text = environ.get("WATCHDOG_USEC", "")
    if not text:
        return None
    if "WATCHDOG_PID" in environ and not _our_pid(environ, "WATCHDOG_PID", os.getpid()):
        return None
    usec = _count(text)
    if not usec:
        log.warning("systemd: ignoring WATCHDOG_USEC=%r: not a positive count of µs", text)
        return None
    return usec
