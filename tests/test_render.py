"""hivectl's text output: tables, times, costs, one-line events, and terminal safety.

Agents print whatever their tools print; nothing they wrote may reach the terminal as a
control character (an escape sequence can clear the screen, retitle the window, or write the
clipboard with OSC 52). Only the colours hivectl itself adds may.
"""

from __future__ import annotations

import datetime
import io
import unicodedata
from typing import Any

import orjson
import pytest

from hived.cli import render
from hived.cli.hivectl import Output
from hived.cli.render import (
    Painter,
    connections_table,
    event_line,
    printable,
    sessions_table,
    status_text,
    table,
)

NOW = datetime.datetime(2026, 11, 26, 8, 0, 0, tzinfo=datetime.UTC)
CLEAR_SCREEN = "\x1b[2J\x1b[H"
CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4K\x07"  # OSC 52: put "rm -rf ~" on the clipboard
C1_CSI = "\x9b31m"  # the one-byte CSI of C1
HOSTILE = f"ok{CLEAR_SCREEN}{CLIPBOARD}{C1_CSI}\r\x08\x7f\x00end"
PLAIN = Painter(enabled=False)
COLOUR = Painter(enabled=True)


def controls(text: str) -> list[str]:
    """The control characters (C0, DEL, C1) in ``text``."""
    return [char for char in text if unicodedata.category(char) == "Cc"]


def event(kind: str, **data: Any) -> dict[str, Any]:
    return {
        "type": "event",
        "topic": "session/01J",
        "seq": 1,
        "ts": "2026-11-26T08:00:00.123Z",
        "kind": kind,
        "session": "01JDX4V9N2",
        "data": data,
    }


def session(**fields: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "id": "01JDX4V9N2ABCDEFGH",
        "name": "tests",
        "agent": "claude",
        "state": "WAITING",
        "pid": 4242,
        "started_at": "2026-11-26T07:57:00.000Z",
        "usage": {"input_tokens": 12345, "output_tokens": 950, "cost_usd": 0.25, "turns": 3},
    }
    summary.update(fields)
    return summary


# -- printable ------------------------------------------------------------------------------


def test_printable_shows_c0_c1_and_del_as_escapes_and_a_tab_as_a_space() -> None:
    shown = printable(f"a\tb{HOSTILE}")
    assert controls(shown) == []
    assert shown == (
        "a bok\\x1b[2J\\x1b[H\\x1b]52;c;cm0gLXJmIH4K\\x07\\x9b31m\\x0d\\x08\\x7f\\x00end"
    )


def test_printable_leaves_other_text_alone() -> None:
    text = "naïve → 日本語 ✓ $0.25 \u00a0nbsp"
    assert printable(text) == text
    assert printable(42) == "42"


# -- every line made from hived's data is free of control characters ------------------------


@pytest.mark.parametrize(
    "hostile_event",
    [
        event("text", line=HOSTILE),
        event("stderr", line=HOSTILE),
        event("message", text=HOSTILE),
        event("thinking", thinking=HOSTILE),
        event("tool_use", name=HOSTILE, input={"command": HOSTILE}),
        event("tool_result", content=HOSTILE, is_error=True),
        event("permission_request", request_id=HOSTILE, tool_name=HOSTILE, input=HOSTILE),
        event("result", subtype=HOSTILE, num_turns=HOSTILE, result=HOSTILE),
        event("input", text=HOSTILE),
        event("hook", hook_event_name=HOSTILE, tool_name=HOSTILE),
        event("init", model=HOSTILE, cwd=HOSTILE),
        event(
            "state",
            state=HOSTILE,
            previous=HOSTILE,
            reason=HOSTILE,
            exit_code=HOSTILE,
            summary={"name": HOSTILE},
        ),
        event(HOSTILE, anything=HOSTILE),
        {**event("text", line="x"), "ts": HOSTILE * 3, "session": HOSTILE},
    ],
    ids=lambda e: str(e["kind"])[:12],
)
def test_event_lines_carry_no_control_characters_from_the_event(
    hostile_event: dict[str, Any],
) -> None:
    line = event_line(hostile_event, PLAIN, show_session=True)
    assert controls(line) == []
    assert "\\x1b" in line


def test_an_event_line_keeps_its_own_colours_and_escapes_the_agents() -> None:
    line = event_line(event("stderr", line=CLEAR_SCREEN + "boom"), COLOUR)
    assert line.count("\x1b") == 4  # dim and reset around the time, red and reset on the kind
    assert line.endswith("\\x1b[2J\\x1b[Hboom")


def test_sessions_table_escapes_control_characters_and_stays_aligned() -> None:
    rows = sessions_table(
        [session(name=f"evil{CLEAR_SCREEN}", agent=CLIPBOARD), session(name="fine")], PLAIN
    ).splitlines()
    assert all(controls(row) == [] for row in rows)
    assert "evil\\x1b[2J\\x1b[H" in rows[1]
    # The AGENT column starts at the same place on every row.
    agents = ["AGENT", "\\x1b]52", "claude"]
    starts = [row.index(agent) for row, agent in zip(rows, agents, strict=True)]
    assert len(set(starts)) == 1


def test_connections_table_escapes_control_characters() -> None:
    text = connections_table(
        [
            {
                "id": 7,
                "peer": "127.0.0.1:5000",
                "channel": "/v1/ws",
                "token_name": HOSTILE,
                "role": "viewer",
                "since": "2026-11-26T07:59:00.000Z",
                "subscriptions": ["sessions", f"session/{CLEAR_SCREEN}"],
                "queue_depth": 0,
                "frames_in": 3,
                "frames_out": 9,
            }
        ]
    )
    assert all(controls(line) == [] for line in text.splitlines())
    assert "ok\\x1b[2J" in text


def test_status_text_escapes_control_characters() -> None:
    status = {
        "version": HOSTILE,
        "pid": 1,
        "uptime_s": 75.0,
        "config_path": f"/etc/hived/{CLEAR_SCREEN}.toml",
        "listen": "127.0.0.1:7420",
        "connections": {"connections": 2, "by_role": {HOSTILE: 1, "admin": 1}},
        "hub": {"events_published": 10, "topics": 2, "subscribers_closed_slow": 0},
        "store": {"path": HOSTILE, "events": 10, "size_bytes": 4096, "error": HOSTILE},
        "tasks": 12,
        "sessions": [session(name=HOSTILE)],
    }
    for paint in (PLAIN, COLOUR):
        text = status_text(status, paint)
        if paint is PLAIN:
            assert controls(text.replace("\n", "")) == []
        assert "/etc/hived/\\x1b[2J\\x1b[H.toml" in text
    assert "clients   2 (admin 1, ok\\x1b[2J" in status_text(status, PLAIN)


def test_json_output_keeps_the_text_and_escapes_every_control_character(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdout = io.StringIO()
    monkeypatch.setattr("sys.stdout", stdout)
    hostile = event("text", line=HOSTILE)
    Output(json_mode=True).event(hostile, show_session=False)
    written = stdout.getvalue()
    assert controls(written) == ["\n"]
    assert orjson.loads(written) == hostile


# -- the rest of what a person reads --------------------------------------------------------


def test_tables_align_on_visible_width_ignoring_colour() -> None:
    text = table(["A", "STATE"], [["x", COLOUR.state("WAITING")], ["longer", "RUNNING"]])
    plain = text.replace("\x1b[33m", "").replace("\x1b[0m", "")
    assert plain.splitlines() == ["A       STATE", "x       WAITING", "longer  RUNNING"]


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        ("2026-11-26T07:59:58.000Z", "2s ago"),
        ("2026-11-26T07:57:00.000Z", "3m ago"),
        ("2026-11-26T05:00:00.000Z", "3h ago"),
        ("2026-11-21T08:00:00.000Z", "5d ago"),
        ("2026-11-26T08:00:05.000Z", "just now"),
        (None, "-"),
        ("not a time", "-"),
    ],
)
def test_relative_time(moment: str | None, shown: str) -> None:
    assert render.relative_time(moment, NOW) == shown


def test_costs_tokens_and_durations_read_as_people_write_them() -> None:
    assert [render.cost(v) for v in (0.25, 0.004, 0.046, 0, None, 12.5)] == [
        "$0.2500",
        "$0.0040",
        "$0.0460",
        "$0.0000",
        "$0.0000",
        "$12.5000",
    ]
    assert [render.tokens(v) for v in (950, 12345, 4_100_000, None)] == [
        "950",
        "12.3k",
        "4.1M",
        "0",
    ]
    assert [render.duration(s) for s in (42, 192, 7500, 273600)] == [
        "42s",
        "3m12s",
        "2h05m",
        "3d04h",
    ]


def test_a_long_tool_input_is_one_line_cut_with_an_ellipsis() -> None:
    line = event_line(event("tool_use", name="Bash", input={"command": "x\n" * 500}), PLAIN)
    assert "\n" not in line
    assert line.endswith("…")
    assert len(line.split("Bash ", 1)[1]) == render.EVENT_TEXT_LIMIT


# -- what each kind of event says -------------------------------------------------------------


def what(line: str) -> str:
    """An event line without its time and kind."""
    return line[9:].split(" ", 1)[1].lstrip()


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        ({"approval": {"request_id": "r-1", "allow": True, "message": None}}, "approve r-1 allow"),
        (
            {"approval": {"request_id": "r-2", "allow": False, "message": "not today"}},
            "approve r-2 deny not today",
        ),
        ({"interrupt": True, "by": "admin"}, "interrupt"),
        ({"text": "first line\nsecond line", "by": "admin"}, "first line ⏎ second line"),
    ],
)
def test_inputs_show_approvals_interrupts_and_prompt_line_breaks(
    data: dict[str, Any], shown: str
) -> None:
    assert what(event_line(event("input", **data), PLAIN)) == shown


def test_a_failed_tool_result_is_marked_as_an_error_in_red() -> None:
    failed = event("tool_result", content="no such file", is_error=True)
    assert what(event_line(failed, PLAIN)) == "error: no such file"
    assert "\x1b[31merror:\x1b[0m" in event_line(failed, COLOUR)
    assert what(event_line(event("tool_result", content="fine", is_error=False), PLAIN)) == "fine"


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        ({"hook_event_name": "UserPromptSubmit", "prompt": "fix it\nnow"}, "fix it ⏎ now"),
        (
            {"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"}},
            'Bash {"command":"ls"}',
        ),
        ({"hook_event_name": "PostToolUse", "tool_name": "Read"}, "Read"),
        ({"hook_event_name": "Notification", "message": "Claude needs you"}, "Claude needs you"),
    ],
)
def test_hook_events_show_what_the_hook_carried(data: dict[str, Any], shown: str) -> None:
    assert what(event_line(event("hook", **data), PLAIN)) == f"{data['hook_event_name']} {shown}"


def test_a_codex_result_shows_its_tokens_without_a_double_space() -> None:
    usage = {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}
    line = what(event_line(event("result", usage=usage), PLAIN))
    assert line == "tokens=24.8k/122"
    claude = event("result", subtype="success", num_turns=2, total_cost_usd=0.25, result="ok")
    assert what(event_line(claude, PLAIN)) == "success turns=2 cost=$0.2500 ok"


def test_state_events_show_exit_only_on_ending_and_signals_by_name() -> None:
    working = event("state", state="WAITING", previous="WORKING", reason="turn ended", exit_code=1)
    assert what(event_line(working, PLAIN)) == "WORKING → WAITING (turn ended)"
    exited = event("state", state="EXITED", previous="STOPPING", exit_code=0)
    assert what(event_line(exited, PLAIN)) == "STOPPING → EXITED exit=0"
    killed = event("state", state="FAILED", previous="STOPPING", exit_code=-9, signal=9)
    assert what(event_line(killed, PLAIN)) == "STOPPING → FAILED SIGKILL"
    named = event("state", state="BACKOFF", previous="RUNNING", exit_code=-15, signal="SIGTERM")
    assert what(event_line(named, PLAIN)) == "RUNNING → BACKOFF SIGTERM"


def test_a_claude_control_response_is_short_and_dim() -> None:
    response = {"subtype": "success", "request_id": "r-1", "response": {"behavior": "allow"}}
    control = event("agent_event", type="control_response", response=response)
    assert what(event_line(control, PLAIN)) == "control_response success r-1"
    assert "\x1b[2magent_event" in event_line(control, COLOUR)


# -- tables -----------------------------------------------------------------------------------


def test_tables_count_wide_characters_as_two_columns() -> None:
    text = table(["NAME", "STATE"], [["日本", "RUNNING"], ["abcde", "WAITING"]])
    assert text.splitlines() == ["NAME   STATE", "日本   RUNNING", "abcde  WAITING"]


def test_long_names_are_cut_with_an_ellipsis() -> None:
    text = sessions_table([session(name="n" * 100, agent="漢" * 30)], PLAIN)
    row = text.splitlines()[1]
    assert "n" * (render.CELL_LIMIT - 1) + "… " in row
    assert "漢" * ((render.CELL_LIMIT - 1) // 2) + "…" in row
    assert render._visible_len(render.cut("漢" * 30)) <= render.CELL_LIMIT


def test_sessions_show_a_short_reason_after_the_state() -> None:
    text = sessions_table([session(state="FAILED", reason="command not found: " + "x" * 80)], PLAIN)
    header, row = text.splitlines()
    assert header.split()[3:5] == ["STATE", "REASON"]
    assert row.split()[3:6] == ["FAILED", "command", "not"]
    assert "x" * 60 not in row
    assert "…" in row


def test_no_sessions_says_so_rather_than_a_bare_header() -> None:
    assert sessions_table([], PLAIN) == "no sessions"


def test_status_lists_sessions_newest_first() -> None:
    older, newer = session(id="01AAAAAAAA", name="older"), session(id="01BBBBBBBB", name="newer")
    text = status_text({"sessions": [older, newer]}, PLAIN)
    assert text.index("newer") < text.index("older")


def test_sessions_of_a_cluster_get_a_node_column() -> None:
    rows = sessions_table(
        [
            session(name="here", node="a"),
            session(name="there", node="build-2", state="UNREACHABLE"),
        ],
        PLAIN,
    ).splitlines()
    assert rows[0].split()[:3] == ["ID", "NODE", "NAME"]
    assert "build-2" in rows[2]
    assert "UNREACHABLE" in rows[2]
    assert "NODE" not in sessions_table([session(name="alone")], PLAIN), "one node: no column"


def test_status_of_a_cluster_lists_its_nodes_and_the_silent_ones() -> None:
    cluster = {
        "node": "a",
        "engine": "redis://127.0.0.1:6379",
        "connected": True,
        "nodes": [
            {"name": "a", "alive": True, "self": True},
            {"name": "b", "alive": True, "self": False},
            {"name": "c", "alive": False, "self": False},
        ],
    }
    text = status_text({"sessions": [], "cluster": cluster}, PLAIN)
    assert "cluster   node a on redis://127.0.0.1:6379 connected" in text
    assert "nodes     a, b, c (silent)" in text
    assert "cluster" not in status_text({"sessions": []}, PLAIN)


def test_status_says_how_many_sessions_and_nodes_its_capped_lists_left_out() -> None:
    shown = [session(id="01BBBBBBBB", name="newer"), session(id="01AAAAAAAA", name="older")]
    cluster = {"node": "a", "nodes": [{"name": "a", "alive": True}], "nodes_total": 40}
    text = status_text({"sessions": shown, "sessions_total": 500, "cluster": cluster}, PLAIN)
    assert "sessions  500 (the newest 2 below; hivectl sessions lists all)" in text
    assert "nodes     a and 39 more" in text
    assert "sessions  2\n" in status_text({"sessions": shown, "sessions_total": "2"}, PLAIN)
