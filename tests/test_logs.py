"""Log lines: journald priorities under systemd, timestamps elsewhere."""

from __future__ import annotations

import logging
import sys

import pytest

from hived.core.logtext import printable
from hived.logs import JournalFormatter, OneLineFormatter, setup_logging


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("hived.x", level, __file__, 1, message, (), None)


def test_journal_lines_carry_the_syslog_priority_and_no_timestamp() -> None:
    formatter = JournalFormatter("%(name)s: %(message)s")
    assert formatter.format(record(logging.WARNING, "disk slow")) == "<4>hived.x: disk slow"
    assert formatter.format(record(logging.DEBUG, "d")) == "<7>hived.x: d"


def test_a_message_stays_one_line_whatever_names_it_holds() -> None:
    """A session name or hook session id with a newline must not forge a log line (#19)."""
    forged = "x\n<6>hived.admin: daemon.stop by alice\x1b[2J"
    for formatter in (JournalFormatter("%(name)s: %(message)s"), OneLineFormatter()):
        line = formatter.format(record(logging.ERROR, f"session {forged}: exited"))
        assert "\n" not in line
        assert "x\\n<6>hived.admin" in line
        assert "\\x1b[2J" in line


def test_a_traceback_keeps_its_lines_with_their_priority() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("hived.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    lines = JournalFormatter("%(name)s: %(message)s").format(rec).splitlines()
    assert lines[0] == "<3>hived.x: failed"
    assert lines[-1] == "<3>ValueError: boom"
    assert all(line.startswith("<3>") for line in lines)


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


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain name", "plain name"),
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("nul\x00", "nul\\x00"),
        ("line\u2028sep", "line\\u2028sep"),
        ("c1\x85", "c1\\x85"),
        ("héllo wörld", "héllo wörld"),
    ],
)
def test_printable_escapes_control_characters(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_printable_cuts_a_long_string() -> None:
    assert printable("x" * 1000) == "x" * 197 + "..."
    assert printable("x" * 1000, max_chars=None) == "x" * 1000
