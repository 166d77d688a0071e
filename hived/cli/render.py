"""How hivectl shows things to people: aligned tables, relative times, colour, one-line events.

Colour is used only on a terminal and never when ``NO_COLOR`` is set (https://no-color.org).
Scripts use ``--json`` instead, whose shapes are documented in hivectl(1).

Everything shown here came from hived, and much of it from agents, which print whatever their
tools and models print: escape sequences that clear the screen, retitle the window or write the
clipboard (OSC 52). Every such string goes through :func:`printable` before it is shown, so the
only control characters on the terminal are the colours of :class:`Painter`.
"""

from __future__ import annotations

import datetime
import signal
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

RESET: Final = "\033[0m"
COLOURS: Final = {
    "red": "\033[31m",
    "green": "\033[32m",
    "yellow": "\033[33m",
    "blue": "\033[34m",
    "magenta": "\033[35m",
    "cyan": "\033[36m",
    "dim": "\033[2m",
    "bold": "\033[1m",
}
STATE_COLOURS: Final = {
    "STARTING": "cyan",
    "RUNNING": "green",
    "WORKING": "green",
    "WAITING": "yellow",
    "STALLED": "magenta",
    "STOPPING": "cyan",
    "BACKOFF": "magenta",
    "EXITED": "dim",
    "FAILED": "red",
    "FATAL": "red",
    "LOST": "red",
    "UNREACHABLE": "magenta",
}
EVENT_TEXT_LIMIT: Final = 160
CELL_LIMIT: Final = 24
"""Widest a table cell of names may be; longer ones are cut with ``…``."""
REASON_LIMIT: Final = 32
NEWLINE_MARK: Final = "⏎"
"""Shown for a line break inside a prompt, so that a one-line event keeps its shape."""
ENDED_STATES: Final = frozenset({"EXITED", "FAILED", "BACKOFF"})
"""States whose ``state`` event says how the process ended (exit status or signal)."""

_UNPRINTABLE: Final = str.maketrans(
    {code: " " if code == 0x09 else f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
)


_JSON_UNPRINTABLE: Final = str.maketrans({code: f"\\u{code:04x}" for code in range(0x7F, 0xA0)})


def printable(value: object) -> str:
    """``str(value)`` safe for a terminal: C0 and C1 controls and DEL as ``\\x1b``-style
    escapes (a tab as a space), so that text from agents cannot drive the terminal."""
    return str(value).translate(_UNPRINTABLE)


def json_text(value: Any) -> str:
    """``value`` as JSON with sorted keys, safe for a terminal too.

    JSON escapes C0 controls but may leave DEL and the C1 controls raw (U+009B is a CSI to
    many terminals); they can only occur inside strings, where ``\\u`` escapes mean the same.
    """
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode().translate(_JSON_UNPRINTABLE)


class Painter:
    """Wraps text in ANSI colours, or leaves it alone when colour is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, colour: str | None) -> str:
        if not self.enabled or colour is None:
            return text
        return f"{COLOURS[colour]}{text}{RESET}"

    def state(self, state: str) -> str:
        return self(state, STATE_COLOURS.get(state))


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def relative_time(value: str | None, now: datetime.datetime | None = None) -> str:
    """``3m ago``, ``2h ago``, ``5d ago``; ``-`` when there is no time."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    now = now or datetime.datetime.now(datetime.UTC)
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def duration(seconds: float) -> str:
    """``42s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def cost(usd: object) -> str:
    """``$0.0460``: always four decimals, as the dashboard shows it (agents cost fractions of a
    cent per turn)."""
    value = float(usd) if isinstance(usd, int | float) else 0.0
    return f"${value:.4f}"


def tokens(count: object) -> str:
    """``950``, ``12.3k``, ``4.1M``."""
    value = int(count) if isinstance(count, int | float) else 0
    if value < 1000:
        return str(value)
    if value < 1_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.1f}M"


def _char_width(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _visible_len(text: str) -> int:
    """Columns ``text`` takes on a terminal: colour codes take none, wide characters two."""
    length, skipping = 0, False
    for char in text:
        if char == "\033":
            skipping = True
        elif skipping:
            skipping = char != "m"
        else:
            length += _char_width(char)
    return length


def cut(text: str, limit: int = CELL_LIMIT) -> str:
    """``text`` in at most ``limit`` columns (no colour codes in it), cut with ``…``."""
    if _visible_len(text) <= limit:
        return text
    kept, width = [], 1
    for char in text:
        width += _char_width(char)
        if width > limit:
            break
        kept.append(char)
    return "".join(kept) + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned on their widest cell (colour codes do not count); no trailing blanks."""
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], _visible_len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell + " " * (widths[i] - _visible_len(cell)) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def sessions_table(sessions: Sequence[Mapping[str, Any]], paint: Painter) -> str:
    """The sessions as a table, in the order given; ``no sessions`` rather than a bare header."""
    if not sessions:
        return "no sessions"
    # In a cluster (docs/cluster.md) every summary names its node: a NODE column shows it.
    clustered = any("node" in session for session in sessions)
    rows = []
    for session in sessions:
        usage = session.get("usage") or {}
        node = [cut(printable(session.get("node", "")))] if clustered else []
        rows.append(
            [
                printable(session.get("id", ""))[:12],
                *node,
                cut(printable(session.get("name", ""))),
                cut(printable(session.get("agent", ""))),
                paint.state(printable(session.get("state", ""))),
                cut(_short(session.get("reason") or "-"), REASON_LIMIT),
                printable(session.get("pid") or "-"),
                relative_time(session.get("started_at")),
                f"{tokens(usage.get('input_tokens'))}/{tokens(usage.get('output_tokens'))}",
                cost(usage.get("cost_usd")),
                printable(usage.get("turns", 0)),
            ]
        )
    return table(
        [
            "ID",
            *(["NODE"] if clustered else []),
            "NAME",
            "AGENT",
            "STATE",
            "REASON",
            "PID",
            "STARTED",
            "TOKENS IN/OUT",
            "COST",
            "TURNS",
        ],
        rows,
    )


def agents_table(agents: Sequence[Mapping[str, Any]]) -> str:
    """The agent templates: name, format, whether a cwd may be chosen and input sent, and the
    description; ``no agent templates`` rather than a bare header."""
    if not agents:
        return "no agent templates"
    rows = [
        [
            cut(printable(agent.get("name", ""))),
            printable(agent.get("format", "")),
            "yes" if agent.get("cwd_choosable") else "no",
            "yes" if agent.get("takes_input") else "no",
            printable(agent.get("description") or "-"),
        ]
        for agent in agents
    ]
    return table(["NAME", "FORMAT", "CWD", "INPUT", "DESCRIPTION"], rows)


def connections_table(connections: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            printable(c.get("id", "")),
            printable(c.get("peer", "")),
            printable(c.get("channel", "")),
            cut(printable(c.get("token_name", ""))),
            printable(c.get("role", "")),
            relative_time(c.get("since") or c.get("connected_since")),
            printable(",".join(c.get("subscriptions") or ()) or "-"),
            printable(c.get("queue_depth", 0)),
            printable(f"{c.get('frames_in', 0)}/{c.get('frames_out', 0)}"),
        ]
        for c in connections
    ]
    headers = [
        "ID",
        "PEER",
        "CHANNEL",
        "TOKEN",
        "ROLE",
        "SINCE",
        "TOPICS",
        "QUEUE",
        "FRAMES IN/OUT",
    ]
    return table(headers, rows)


NOTIFICATION_COLOURS: Final = {
    "pending": "yellow",
    "delivered": "green",
    "dropped": "dim",
    "failed": "red",
}


def notifications_table(rows: Sequence[Mapping[str, Any]], paint: Painter) -> str:
    """``hivectl notifications``: newest first, what each said and what became of it."""
    lines = []
    for row in rows:
        item = row.get("item") or {}
        status = str(row.get("status", ""))
        born = row.get("born_at")
        when = "-"
        if isinstance(born, int | float):
            when = relative_time(datetime.datetime.fromtimestamp(born, datetime.UTC).isoformat())
        outcome = row.get("outcome") or ""
        attempts = row.get("attempts") or 0
        if attempts and status != "delivered":
            outcome = f"{outcome} ({attempts} tries)" if outcome else f"{attempts} tries"
        lines.append(
            [
                printable(row.get("id", "")),
                cut(printable(row.get("rule", ""))),
                when,
                paint(printable(status), NOTIFICATION_COLOURS.get(status)),
                cut(printable(item.get("title", ""))),
                cut(printable(outcome)),
            ]
        )
    return table(["ID", "RULE", "BORN", "STATUS", "WHAT", "OUTCOME"], lines)


def _short(value: object, limit: int = EVENT_TEXT_LIMIT) -> str:
    """One printable line of at most ``limit`` characters (white space runs become one)."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = printable(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _prompt(text: object, limit: int = EVENT_TEXT_LIMIT) -> str:
    """A prompt on one line, its line breaks kept visible as ``⏎``."""
    lines = str(text).replace("\r\n", "\n").split("\n")
    return _short(f" {NEWLINE_MARK} ".join(" ".join(line.split()) for line in lines), limit)


def signal_name(value: object) -> str:
    """``SIGKILL`` for 9 or ``"SIGKILL"``; the number itself when it names no signal."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value).name
        except ValueError:
            return f"signal {value}"
    return printable(value)


def event_line(event: Mapping[str, Any], paint: Painter, *, show_session: bool = False) -> str:
    """One event as one readable line: time, (session), kind, and what it says."""
    data = event.get("data") or {}
    kind = printable(event.get("kind", "?"))
    ts = printable(event.get("ts", ""))[11:19]
    what, colour = _describe_event(kind, data)
    prefix = paint(ts, "dim")
    if show_session:
        prefix += " " + printable(event.get("session") or "")[:12]
    if kind == "tool_result" and data.get("is_error"):
        what = paint("error:", "red") + " " + what
    return f"{prefix} {paint(f'{kind:<18}', colour)} {what}".rstrip()


def _describe_state(data: Mapping[str, Any]) -> str:
    summary = data.get("summary") or {}
    name = printable(summary.get("name") or "")
    state = printable(data.get("state"))
    extra = ""
    if state in ENDED_STATES:
        if data.get("signal") is not None:
            extra += f" {signal_name(data['signal'])}"
        elif data.get("exit_code") is not None:
            extra += f" exit={printable(data['exit_code'])}"
    if data.get("reason"):
        extra += f" ({_short(data['reason'], 80)})"
    change = f"{printable(data.get('previous') or '-')} → {state}"
    return f"{name} {change}{extra}".strip()


def _describe_input(data: Mapping[str, Any]) -> str:
    approval = data.get("approval")
    if not isinstance(approval, Mapping) and "allow" in data:
        approval = data
    if isinstance(approval, Mapping):
        verdict = "allow" if approval.get("allow") else "deny"
        words = ["approve", printable(approval.get("request_id")), verdict]
        if approval.get("message"):
            words.append(_short(approval["message"], 100))
        return " ".join(words)
    if data.get("interrupt"):
        return "interrupt"
    return _prompt(data.get("text", ""))


def _describe_hook(data: Mapping[str, Any]) -> str:
    name = printable(data.get("hook_event_name") or "?")
    if name == "UserPromptSubmit":
        detail = _prompt(data.get("prompt", ""), 120)
    elif name in ("PreToolUse", "PostToolUse"):
        tool_input = data.get("tool_input")
        detail = f"{printable(data.get('tool_name') or '?')}"
        if tool_input:
            detail += " " + _short(tool_input, 80)
    elif name == "Notification":
        detail = _short(data.get("message", ""), 120)
    else:
        detail = _short(data.get("tool_name", ""), 60)
    return f"{name} {detail}".rstrip()


def _describe_result(data: Mapping[str, Any]) -> str:
    figures = []
    if "num_turns" in data:
        figures.append(f"turns={printable(data['num_turns'])}")
    if "total_cost_usd" in data:
        figures.append(f"cost={cost(data['total_cost_usd'])}")
    usage = data.get("usage")
    if isinstance(usage, Mapping) and usage:
        figures.append(
            f"tokens={tokens(usage.get('input_tokens'))}/{tokens(usage.get('output_tokens'))}"
        )
    words = [printable(data.get("subtype") or ""), *figures, _short(data.get("result") or "", 80)]
    return " ".join(word for word in words if word)


def _describe_agent_event(data: Mapping[str, Any]) -> tuple[str, str | None]:
    if data.get("type") == "control_response":
        response = data.get("response") or {}
        subtype = printable(response.get("subtype") or "?") if isinstance(response, Mapping) else ""
        request = (
            printable(response.get("request_id") or "") if isinstance(response, Mapping) else ""
        )
        return f"control_response {subtype} {request}".rstrip(), "dim"
    return _short(data), None


def _describe_event(kind: str, data: Mapping[str, Any]) -> tuple[str, str | None]:
    if kind == "state":
        return _describe_state(data), STATE_COLOURS.get(str(data.get("state")))
    if kind == "tool_use":
        return f"{printable(data.get('name'))} {_short(data.get('input', {}))}", "cyan"
    if kind == "tool_result":
        error = bool(data.get("is_error"))
        return _short(data.get("content", "")), "red" if error else None
    if kind in ("message", "thinking"):
        return _short(
            data.get("text") or data.get("thinking") or ""
        ), None if kind == "message" else "dim"
    if kind == "permission_request":
        return (
            f"request {printable(data.get('request_id'))}: {printable(data.get('tool_name'))} "
            f"{_short(data.get('input', {}), 100)}",
            "yellow",
        )
    if kind == "result":
        return _describe_result(data), "red" if data.get("is_error") else "green"
    if kind in ("text", "stderr"):
        return _short(data.get("line", "")), "red" if kind == "stderr" else None
    if kind == "input":
        return _describe_input(data), "blue"
    if kind == "hook":
        return _describe_hook(data), "magenta"
    if kind == "init":
        return (
            f"model={printable(data.get('model', '-'))} cwd={printable(data.get('cwd', '-'))}",
            "dim",
        )
    if kind == "agent_event":
        return _describe_agent_event(data)
    return _short(data), None


def _count(value: Any, shown: int) -> int:
    """A list's full count as ``status`` gives it beside the capped list (else what is shown)."""
    return value if isinstance(value, int) and value >= shown else shown


def status_text(status: Mapping[str, Any], paint: Painter) -> str:
    """The answer to ``hivectl status`` for a person."""
    connections = status.get("connections") or {}
    by_role = connections.get("by_role") or {}
    roles = ", ".join(f"{role} {n}" for role, n in sorted(by_role.items())) or "none"
    roles = printable(roles)
    hub = status.get("hub") or {}
    store = status.get("store") or {}
    # Newest first, as ``sessions`` answers (ids are ULIDs: they sort by creation time).
    sessions = sorted(status.get("sessions") or [], key=lambda s: str(s.get("id")), reverse=True)
    clients = connections.get("connections", sum(by_role.values()))
    lines = [
        printable(
            f"hived {status.get('version')}  pid {status.get('pid')}  "
            f"up {duration(float(status.get('uptime_s', 0)))}"
        )
        + (paint("  STOPPING", "yellow") if status.get("stopping") else ""),
        printable(f"config    {status.get('config_path')} ")
        + f"(loaded {relative_time(status.get('config_loaded_at'))})",
        printable(f"listen    {status.get('listen')}  tls {'on' if status.get('tls') else 'off'}"),
        printable(f"clients   {clients} ({roles})"),
        printable(
            f"events    {hub.get('events_published', 0)} published on {hub.get('topics', 0)} "
            f"topics, {hub.get('subscribers_closed_slow', 0)} slow subscribers closed"
        ),
    ]
    if store:
        error = store.get("error")
        lines.append(
            printable(
                f"store     {store.get('path', '')} {tokens(store.get('events', 0))} events, "
                f"{int(store.get('size_bytes', 0)) // 1024} KiB, "
                f"lag {store.get('write_lag_ms', 0)} ms"
            )
            + (paint(f"  ERROR: {printable(error)}", "red") if error else "")
        )
    lines.append(printable(f"tasks     {status.get('tasks')}"))
    cluster = status.get("cluster")
    if isinstance(cluster, Mapping):
        nodes = [n for n in cluster.get("nodes") or [] if isinstance(n, Mapping)]
        shown = ", ".join(
            printable(n.get("name")) + ("" if n.get("alive") else paint(" (silent)", "red"))
            for n in nodes
        )
        engine = "connected" if cluster.get("connected") else paint("not connected", "red")
        lines.append(
            printable(f"cluster   node {cluster.get('node')} on {cluster.get('engine')} ") + engine
        )
        hidden = _count(cluster.get("nodes_total"), len(nodes)) - len(nodes)
        lines.append(f"nodes     {shown}" + (f" and {hidden} more" if hidden > 0 else ""))
    total = _count(status.get("sessions_total"), len(sessions))
    if total > len(sessions):
        lines.append(
            f"sessions  {total} (the newest {len(sessions)} below; hivectl sessions lists all)"
        )
    else:
        lines.append(f"sessions  {total}")
    if sessions:
        lines.append("")
        lines.append(sessions_table(sessions, paint))
    return "\n".join(lines)
