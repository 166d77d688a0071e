"""How hivectl shows things to people: aligned tables, relative times, colour, one-line events.

Colour is used only on a terminal and never when ``NO_COLOR`` is set (https://no-color.org).
Scripts use ``--json`` instead, whose shapes are documented in hivectl(1).
"""

from __future__ import annotations

import datetime
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
}
EVENT_TEXT_LIMIT: Final = 160


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
    """``$0.25``; small costs keep a digit that is not zero (``$0.004``)."""
    value = float(usd) if isinstance(usd, int | float) else 0.0
    if 0 < value < 0.01:
        return f"${value:.3f}"
    return f"${value:.2f}"


def tokens(count: object) -> str:
    """``950``, ``12.3k``, ``4.1M``."""
    value = int(count) if isinstance(count, int | float) else 0
    if value < 1000:
        return str(value)
    if value < 1_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.1f}M"


def _visible_len(text: str) -> int:
    length, skipping = 0, False
    for char in text:
        if char == "\033":
            skipping = True
        elif skipping:
            skipping = char != "m"
        else:
            length += 1
    return length


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
    rows = []
    for session in sessions:
        usage = session.get("usage") or {}
        rows.append(
            [
                str(session.get("id", ""))[:12],
                str(session.get("name", "")),
                str(session.get("agent", "")),
                paint.state(str(session.get("state", ""))),
                str(session.get("pid") or "-"),
                relative_time(session.get("started_at")),
                f"{tokens(usage.get('input_tokens'))}/{tokens(usage.get('output_tokens'))}",
                cost(usage.get("cost_usd")),
                str(usage.get("turns", 0)),
            ]
        )
    return table(
        ["ID", "NAME", "AGENT", "STATE", "PID", "STARTED", "TOKENS IN/OUT", "COST", "TURNS"], rows
    )


def connections_table(connections: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            str(c.get("id", "")),
            str(c.get("peer", "")),
            str(c.get("channel", "")),
            str(c.get("token_name", "")),
            str(c.get("role", "")),
            relative_time(c.get("since") or c.get("connected_since")),
            ",".join(c.get("subscriptions") or ()) or "-",
            str(c.get("queue_depth", 0)),
            f"{c.get('frames_in', 0)}/{c.get('frames_out', 0)}",
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


def _short(value: object, limit: int = EVENT_TEXT_LIMIT) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_line(event: Mapping[str, Any], paint: Painter, *, show_session: bool = False) -> str:
    """One event as one readable line: time, (session), kind, and what it says."""
    data = event.get("data") or {}
    kind = str(event.get("kind", "?"))
    ts = str(event.get("ts", ""))[11:19]
    what, colour = _describe_event(kind, data)
    prefix = paint(ts, "dim")
    if show_session:
        prefix += " " + str(event.get("session") or "")[:12]
    return f"{prefix} {paint(f'{kind:<18}', colour)} {what}".rstrip()


def _describe_event(kind: str, data: Mapping[str, Any]) -> tuple[str, str | None]:
    if kind == "state":
        summary = data.get("summary") or {}
        name = summary.get("name") or ""
        extra = ""
        if data.get("exit_code") is not None:
            extra += f" exit={data['exit_code']}"
        if data.get("reason"):
            extra += f" ({data['reason']})"
        return f"{name} {data.get('previous') or '-'} → {data.get('state')}{extra}".strip(), (
            STATE_COLOURS.get(str(data.get("state")))
        )
    if kind == "tool_use":
        return f"{data.get('name')} {_short(data.get('input', {}))}", "cyan"
    if kind == "tool_result":
        error = bool(data.get("is_error"))
        return _short(data.get("content", "")), "red" if error else None
    if kind in ("message", "thinking"):
        return _short(
            data.get("text") or data.get("thinking") or ""
        ), None if kind == "message" else "dim"
    if kind == "permission_request":
        return (
            f"request {data.get('request_id')}: {data.get('tool_name')} "
            f"{_short(data.get('input', {}), 100)}",
            "yellow",
        )
    if kind == "result":
        error = bool(data.get("is_error"))
        figures = f"turns={data.get('num_turns', '-')} cost={cost(data.get('total_cost_usd'))}"
        return f"{data.get('subtype', '')} {figures} {_short(data.get('result', ''), 80)}", (
            "red" if error else "green"
        )
    if kind in ("text", "stderr"):
        return _short(data.get("line", "")), "red" if kind == "stderr" else None
    if kind == "input":
        return _short(data.get("text", data)), "blue"
    if kind == "hook":
        return f"{data.get('hook_event_name')} {_short(data.get('tool_name', ''), 60)}", "magenta"
    if kind == "init":
        return f"model={data.get('model', '-')} cwd={data.get('cwd', '-')}", "dim"
    return _short(data), None


def status_text(status: Mapping[str, Any], paint: Painter) -> str:
    """The answer to ``hivectl status`` for a person."""
    connections = status.get("connections") or {}
    by_role = connections.get("by_role") or {}
    roles = ", ".join(f"{role} {n}" for role, n in sorted(by_role.items())) or "none"
    hub = status.get("hub") or {}
    store = status.get("store") or {}
    sessions = status.get("sessions") or []
    lines = [
        f"hived {status.get('version')}  pid {status.get('pid')}  "
        f"up {duration(float(status.get('uptime_s', 0)))}"
        + (paint("  STOPPING", "yellow") if status.get("stopping") else ""),
        f"config    {status.get('config_path')} "
        f"(loaded {relative_time(status.get('config_loaded_at'))})",
        f"listen    {status.get('listen')}  tls {'on' if status.get('tls') else 'off'}",
        f"clients   {connections.get('connections', sum(by_role.values()))} ({roles})",
        f"events    {hub.get('events_published', 0)} published on {hub.get('topics', 0)} topics, "
        f"{hub.get('subscribers_closed_slow', 0)} slow subscribers closed",
    ]
    if store:
        error = store.get("error")
        lines.append(
            f"store     {store.get('path', '')} {tokens(store.get('events', 0))} events, "
            f"{int(store.get('size_bytes', 0)) // 1024} KiB, lag {store.get('write_lag_ms', 0)} ms"
            + (paint(f"  ERROR: {error}", "red") if error else "")
        )
    lines.append(f"tasks     {status.get('tasks')}")
    lines.append(f"sessions  {len(sessions)}")
    if sessions:
        lines.append("")
        lines.append(sessions_table(sessions, paint))
    return "\n".join(lines)
