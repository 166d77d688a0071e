"""Running out of file descriptors at accept: a log that stays readable, and a spare descriptor.

How it works: when ``accept`` fails for want of a resource (EMFILE, ENFILE, ENOMEM, ENOBUFS),
the listener retries every :data:`~hived.server.accepting.ACCEPT_RETRY_S` — ten times a second.
:class:`Shortage` logs the first failure as an error, then at most one summary every
:data:`LOG_EVERY_S` while it lasts, and one line when accepting works again.

Out of descriptors, the connection waiting in the backlog cannot even be told so. The
:class:`Shortage` holds one spare descriptor (``/dev/null``) for that moment, as nginx and
libev do: it closes it, the listener accepts the waiting connection in its place and answers
it 503 with the reason (``/healthz`` included, so that a monitor sees why), closes it, and the
spare is taken again. One such connection at a time; the others wait in the backlog.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Final

import trio

log = logging.getLogger(__name__)

LOG_EVERY_S: Final = 10.0
"""While accepting keeps failing, at most one log line this often."""
DESCRIPTOR_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE})
"""The failures a freed descriptor helps with."""


class Shortage:
    """Accept failures for want of a resource, and the spare descriptor (see the module doc)."""

    def __init__(self) -> None:
        self.since: float | None = None
        """When the current shortage began (trio's clock); None while accepting works."""
        self.reason = ""
        """What the last failure said (``Too many open files``)."""
        self._failures = 0
        self._logged_at = 0.0
        self._logged_failures = 0
        self._spare: int | None = None

    @property
    def short(self) -> bool:
        return self.since is not None

    def failed(self, code: int, retry_s: float) -> None:
        """Count a failed accept with ``errno`` ``code``; log it at most every LOG_EVERY_S."""
        now = trio.current_time()
        self.reason = os.strerror(code)
        self._failures += 1
        if self.since is None:
            self.since = self._logged_at = now
            self._failures = self._logged_failures = 1
            log.error(
                "listener: accept failed (%s); retrying every %g s, new connections wait",
                self.reason,
                retry_s,
            )
        elif now - self._logged_at >= LOG_EVERY_S:
            log.warning(
                "listener: accept still failing (%s): %d times in the last %.0f s",
                self.reason,
                self._failures - self._logged_failures,
                now - self._logged_at,
            )
            self._logged_at, self._logged_failures = now, self._failures

    def recovered(self) -> None:
        """An accept worked: end the shortage (logged once) and hold a spare again."""
        if self.since is not None:
            log.warning(
                "listener: accepting works again after %d failures in %.1f s (%s)",
                self._failures,
                trio.current_time() - self.since,
                self.reason,
            )
            self.since = None
        self.reserve()

    def reserve(self) -> None:
        """Hold a spare descriptor if none is held (and one can be had)."""
        if self._spare is None:
            try:
                self._spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._spare = None

    def release(self, code: int) -> bool:
        """Give the spare up for a failure with ``errno`` ``code`` that a freed descriptor
        helps with; True when one was freed."""
        if self._spare is None or code not in DESCRIPTOR_ERRNOS:
            return False
        os.close(self._spare)
        self._spare = None
        return True

    def close(self) -> None:
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
