"""Log lines: journald priorities under systemd, timestamps elsewhere."""

from __future__ import annotations

import logging

import pytest

from hived.logs import JournalFormatter, setup_logging


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("hived.x", level, __file__, 1, message, (), None)


def test_journal_lines_carry_the_syslog_priority_and_no_timestamp() -> None:
    formatter = JournalFormatter("%(name)s: %(message)s")
    assert formatter.format(record(logging.WARNING, "disk slow")) == "<4>hived.x: disk slow"
    assert formatter.format(record(logging.ERROR, "a\nb")) == "<3>hived.x: a\n<3>b"
    assert formatter.format(record(logging.DEBUG, "d")) == "<7>hived.x: d"


def test_setup_picks_the_journal_format_when_journal_stream_is_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", {"JOURNAL_STREAM": "8:1234"})
        logging.getLogger("hived.t").info("session %s: exited rc=%d", "s1", 3)
        logging.getLogger("hived.t").debug("not shown")
        assert capsys.readouterr().err == "<6>hived.t: session s1: exited rc=3\n"
        setup_logging("debug", {})
        logging.getLogger("hived.t").debug("shown")
        line = capsys.readouterr().err
        assert line.endswith("DEBUG   hived.t: shown\n")
        assert line[:4].isdigit()  # a timestamp leads
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
