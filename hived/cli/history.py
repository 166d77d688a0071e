"""hivectl's history commands: ``search``, ``usage``, ``export``, ``forget``, and the filters
of ``logs`` (``-n``, ``--since``, ``--kind``, ``--grep``).

Times on the command line are ISO 8601 (``2026-12-01``, ``2026-12-01T08:00:00Z``; no zone
means UTC) or an age back from now (``90s``, ``30m``, ``2h``, ``7d``).
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from hived.cli.render import Painter, cost, cut, event_line, json_text, printable, table, tokens
from hived.client import Client
from hived.core.events import KINDS
from hived.core.history import event_text
from hived.core.messages import SEARCH_MAX_LIMIT

AGE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
AGE_UNITS_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
SEARCH_DEFAULT: Final = 50


def time_arg(value: str) -> str:
    """A TIME argument as an ISO 8601 UTC time (what hived compares event times with)."""
    age = AGE.fullmatch(value.strip())
    now = datetime.datetime.now(datetime.UTC)
    if age is not None:
        moment = now - datetime.timedelta(seconds=float(age[1]) * AGE_UNITS_S[age[2]])
    else:
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not a time: give ISO 8601 (2026-12-01T08:00:00Z) or an age "
                "(90s, 30m, 2h, 7d)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def kind_arg(value: str) -> str:
    if value not in KINDS:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an event kind; known: {', '.join(sorted(KINDS))}"
        )
    return value


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number ≥ 1")
    return number


def add_parsers(
    command: Callable[[str, str], argparse.ArgumentParser],
    logs: argparse.ArgumentParser,
    session_ref: Callable[[str], str],
) -> None:
    """Add the history commands, and the filters of ``logs``."""
    add_filters(logs, tail_help="only the last N events (after the filters)")
    logs.add_argument("--grep", metavar="TEXT", help="only events whose text holds TEXT (any case)")
    search = command("search", "full-text search over every kept event, newest first")
    search.add_argument("query", metavar="QUERY", help='words, "a phrase", prefix*, AND/OR/NOT')
    search.add_argument("--session", metavar="SESSION", type=session_ref, help="only this session")
    search.add_argument("--agent", metavar="TEMPLATE", help="only sessions of this template")
    add_filters(search, tail_help=f"at most N hits (default {SEARCH_DEFAULT})")
    search.add_argument("--until", metavar="TIME", type=time_arg, help="only events before TIME")
    usage = command("usage", "tokens and cost by day, template, session or folder")
    usage.add_argument(
        "--by", choices=["day", "template", "session", "cwd"], default="day", help="group by"
    )
    usage.add_argument("--since", metavar="TIME", type=time_arg, help="from TIME")
    usage.add_argument("--until", metavar="TIME", type=time_arg, help="to TIME (exclusive)")
    export = command("export", "print a session's transcript: JSONL (lossless) or Markdown")
    export.add_argument("session", metavar="SESSION", type=session_ref)
    export.add_argument("--format", choices=["jsonl", "md"], default="jsonl", help="jsonl or md")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    forget = command("forget", "delete ended sessions and everything kept of them")
    forget.add_argument("session", nargs="?", metavar="SESSION", type=session_ref)
    forget.add_argument(
        "--ended-before", metavar="TIME", type=time_arg, help="every session ended before TIME"
    )


def add_filters(parser: argparse.ArgumentParser, tail_help: str) -> None:
    parser.add_argument("-n", "--tail", metavar="N", type=positive, help=tail_help)
    parser.add_argument("--since", metavar="TIME", type=time_arg, help="only events from TIME")
    parser.add_argument(
        "--kind",
        metavar="KIND",
        action="append",
        type=kind_arg,
        help="only events of this kind (repeatable)",
    )


# logs


class LogFilter:
    """The ``logs`` filters, applied to each event (those a request cannot narrow)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.since: str | None = args.since
        self.kinds = frozenset(args.kind or ())
        self.grep: str | None = args.grep.casefold() if args.grep else None

    def __call__(self, event: Mapping[str, Any]) -> bool:
        if self.kinds and event.get("kind") not in self.kinds:
            return False
        if self.since is not None and str(event.get("ts", "")) < self.since:
            return False
        if self.grep is not None:
            data = event.get("data") or {}
            text = event_text(str(event.get("kind")), data) if isinstance(data, Mapping) else ""
            return self.grep in (text or json_text(data)).casefold()
        return True


class Tail:
    """Keeps the last ``n`` events shown (all, when ``n`` is None), to print at the end."""

    def __init__(self, n: int | None, show: Callable[[dict[str, Any]], None]) -> None:
        self.kept: deque[dict[str, Any]] | None = None if n is None else deque(maxlen=n)
        self.show = show

    def add(self, event: dict[str, Any]) -> None:
        if self.kept is None:
            self.show(event)
        else:
            self.kept.append(event)

    def flush(self) -> None:
        while self.kept:
            self.show(self.kept.popleft())


# search


def hit_line(hit: Mapping[str, Any], paint: Painter) -> str:
    """One search hit for people: time, session, kind, where (seq), and the marked snippet on
    one line (its line breaks as spaces, one character for one, so that the marks still fit)."""
    snippet = str(hit.get("snippet") or "").replace("\n", " ")
    shown, at = [], 0
    for start, end in hit.get("marks") or []:
        shown += [printable(snippet[at:start]), paint(printable(snippet[start:end]), "bold")]
        at = end
    shown.append(printable(snippet[at:]))
    where = f"{printable(hit.get('name') or str(hit.get('session'))[:12])}#{hit.get('seq')}"
    return (
        f"{paint(printable(hit.get('ts', ''))[:19], 'dim')} {where} "
        f"{paint(printable(hit.get('kind')), 'cyan')} {''.join(shown)}"
    )


async def cmd_search(
    client: Client, args: argparse.Namespace, paint: Painter, json_mode: bool
) -> int:
    wanted = args.tail or SEARCH_DEFAULT
    cursor = None
    shown = 0
    page: dict[str, Any] = {}
    while shown < wanted:
        page = await client.request(
            "search",
            query=args.query,
            session=args.session,
            agent=args.agent,
            kinds=args.kind or [],
            since=args.since,
            until=args.until,
            limit=min(wanted - shown, SEARCH_MAX_LIMIT),
            cursor=cursor,
        )
        for hit in page.get("hits", []):
            sys.stdout.write((json_text(hit) if json_mode else hit_line(hit, paint)) + "\n")
            shown += 1
        cursor = page.get("next")
        if cursor is None:
            break
    if not json_mode and not shown:
        sys.stdout.write("no match\n")
    index = page.get("index") or {}
    if index.get("behind") and not json_mode:
        sys.stderr.write(f"note: {index['behind']} recent events are not indexed yet\n")
    sys.stdout.flush()
    return 0


# usage


def usage_table(result: Mapping[str, Any]) -> str:
    rows = [*result.get("rows", []), {"label": "total", **(result.get("total") or {})}]
    body: list[Sequence[str]] = [
        [
            cut(printable(row.get("label") or row.get("key") or "-")),
            tokens(row.get("input_tokens")),
            tokens(row.get("output_tokens")),
            tokens(row.get("cache_read_tokens")),
            tokens(row.get("cache_write_tokens")),
            tokens(row.get("reasoning_tokens")),
            cost(row.get("cost_usd")),
            printable(row.get("turns", 0)),
            printable(row.get("sessions", 0)),
        ]
        for row in rows
    ]
    headers = [str(result.get("by", "day")).upper(), "IN", "OUT", "CACHE READ", "CACHE WRITE"]
    text = table([*headers, "REASONING", "COST", "TURNS", "SESSIONS"], body)
    shown, listed = len(rows) - 1, result.get("rows_total")
    if isinstance(listed, int) and listed > shown:
        text += f"\n({listed - shown} more rows not listed; the total counts them)"
    return text


# export


async def cmd_export(client: Client, args: argparse.Namespace, session: str) -> int:
    # hivectl runs one task: a blocking write to a local file holds up nothing.
    sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: ASYNC230, SIM115
    escape = sink is sys.stdout and sys.stdout.isatty()
    try:
        cursor = None
        while True:
            page = await client.request(
                "session.export", session=session, format=args.format, cursor=cursor
            )
            text = str(page.get("text", ""))
            if escape:
                text = "\n".join(printable(line) for line in text.split("\n"))
            sink.write(text)
            cursor = page.get("next")
            if cursor is None:
                break
    finally:
        if sink is not sys.stdout:
            sink.close()
        else:
            sys.stdout.flush()
    return 0


def forgotten_text(result: Mapping[str, Any]) -> str:
    gone = result.get("forgotten") or []
    if not gone:
        return "nothing to forget"
    return "\n".join(
        f"forgot {printable(s.get('name'))} ({printable(s.get('session'))}): "
        f"{printable(s.get('events'))} events"
        for s in gone
    )


def show_event(paint: Painter, json_mode: bool) -> Callable[[dict[str, Any]], None]:
    def show(event: dict[str, Any]) -> None:
        sys.stdout.write((json_text(event) if json_mode else event_line(event, paint)) + "\n")

    return show
