"""Logging to stderr, in the shape the environment wants.

Under systemd (``JOURNAL_STREAM`` set) each line starts with its syslog priority in angle
brackets (``<4>``) and has no timestamp: journald adds its own and keeps the level. Elsewhere a
line has a timestamp and the level name.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Final

from hived.core.logtext import printable

LEVELS: Final = ("debug", "info", "warning", "error")

_SYSLOG_PRIORITY: Final = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class OneLineFormatter(logging.Formatter):
    """A formatter whose messages stay one line: control characters in the message (a name
    with a newline, an escape sequence) are escaped; a traceback after it keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message, max_chars=None)
        return super().formatMessage(record)


class JournalFormatter(OneLineFormatter):
    """``<priority>logger: message``, the format journald parses from a stream."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def setup_logging(level: str = "info", environ: Mapping[str, str] = os.environ) -> None:
    """Send hived's logs to stderr at ``level``, journald-style under systemd."""
    handler = logging.StreamHandler(sys.stderr)
    if environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
