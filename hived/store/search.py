"""Full-text search over the kept events (SQLite FTS5).

How it works: ``events_fts`` holds the searchable text of each event under the event's id
(:mod:`hived.store.indexer` keeps it in step). A query is FTS5 syntax, bound as a parameter (it
is never part of the SQL text): words, ``"phrases"``, ``prefix*``, ``AND``/``OR``/``NOT``,
``NEAR(a b, 5)``; the table has one column, ``text``, so a column filter names that one or
fails. A query SQLite cannot parse is a :class:`QueryError` (a ``bad_request``) naming the
problem. Hits come newest first (by event id, which follows the time events were kept), drawn
from the index in that order and stopped at the page's limit: a common word costs no more than
a rare one. Filters narrow the id range first (a session's events lie between its first and
last id; a time range between two ids found by bisection, as ``ts`` grows with the id) and are
checked on each hit's row. A page holds at most ``limit`` hits and
:data:`~hived.core.pages.LIST_REPLY_MAX_BYTES` of them (hits carry their session's name, which
may be long), read from SQLite one by one until it is full; its cursor is the id of its last
hit.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any, Final

import attrs

from hived.core.history import MARKERS
from hived.core.pages import page

SNIPPET_TOKENS: Final = 16
"""Words around the match in a snippet."""


class QueryError(ValueError):
    """The search query is not valid FTS5 syntax; the message says why."""


@attrs.frozen
class SearchFilters:
    """What narrows a search (every one optional)."""

    session: str | None = None
    """One session's id."""
    agent: str | None = None
    """Sessions of one agent template."""
    kinds: tuple[str, ...] = ()
    """Event kinds (any of them)."""
    since: str | None = None
    """Events kept at or after this time (the store's format: UTC, ``Z``)."""
    until: str | None = None
    """Events kept before this time."""


def _id_at(conn: sqlite3.Connection, ts: str) -> int:
    """The smallest event id whose ``ts`` is at or after ``ts`` (max id + 1 if none)."""
    # Two subqueries: min() and max() in one SELECT would scan the table.
    low, high = conn.execute(
        "SELECT coalesce((SELECT min(id) FROM events), 1), "
        "coalesce((SELECT max(id) FROM events), 0)"
    ).fetchone()
    high += 1
    while low < high:
        middle = (low + high) // 2
        row = conn.execute(
            "SELECT id, ts FROM events WHERE id >= ? ORDER BY id LIMIT 1", (middle,)
        ).fetchone()
        if row is None or row[1] >= ts:
            high = middle
        else:
            low = row[0] + 1
    return int(low)


def _id_range(conn: sqlite3.Connection, filters: SearchFilters) -> tuple[int, int] | None:
    """The ids hits can have, or None when no event can match."""
    low, high = 1, conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    if filters.session is not None:
        first, last = conn.execute(
            "SELECT min(id), max(id) FROM events WHERE session = ?", (filters.session,)
        ).fetchone()
        if first is None:
            return None
        low, high = max(low, first), min(high, last)
    if filters.since is not None:
        low = max(low, _id_at(conn, filters.since))
    if filters.until is not None:
        high = min(high, _id_at(conn, filters.until) - 1)
    return (low, high) if low <= high else None


def search(
    conn: sqlite3.Connection,
    query: str,
    filters: SearchFilters,
    limit: int,
    before: int | None,
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of hits for ``query``, newest first, and the cursor of the next page (None at the
    end). ``before`` is the cursor of this page (hits with a smaller id). Raises QueryError."""
    bounds = _id_range(conn, filters)
    if bounds is None:
        _check(query)
        return [], None
    low, high = bounds
    if before is not None:
        high = min(high, before - 1)
    where = ["events_fts MATCH ?", "events_fts.rowid BETWEEN ? AND ?"]
    params: list[Any] = [query, low, high]
    if filters.session is not None:
        where.append("e.session = ?")
        params.append(filters.session)
    if filters.kinds:
        where.append(f"e.kind IN ({', '.join('?' * len(filters.kinds))})")
        params += filters.kinds
    if filters.agent is not None:
        where.append("e.session IN (SELECT id FROM sessions WHERE agent = ?)")
        params.append(filters.agent)
    sql = (
        "SELECT e.id, e.topic, e.seq, e.ts, e.kind, e.session, "
        f"snippet(events_fts, 0, char(2), char(3), '…', {SNIPPET_TOKENS}) "
        "FROM events_fts JOIN events e ON e.id = events_fts.rowid "
        f"WHERE {' AND '.join(where)} ORDER BY events_fts.rowid DESC LIMIT ?"
    )
    try:
        # One more than asked: whether it comes says whether a next page has anything.
        rows = conn.execute(sql, [*params, limit + 1])
    except sqlite3.OperationalError:
        _check(query)
        raise
    return page(_named_hits(conn, rows), limit, lambda hit: int(hit["id"]))


def _check(query: str) -> None:
    """Raise QueryError when FTS5 cannot parse ``query``.

    The query runs against an empty in-memory table with the index's one column: whatever
    fails there is the query's fault, whatever fails only on the store is the store's.
    """
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("CREATE VIRTUAL TABLE events_fts USING fts5 (text)")
        probe.execute("SELECT rowid FROM events_fts WHERE events_fts MATCH ?", (query,)).fetchall()
    except sqlite3.OperationalError as exc:
        message = str(exc).removeprefix("fts5: ")
        if message.startswith("no such column"):
            message += (
                ' (a word before ":" or after "-" names a column; the only one is text: '
                "put such words in double quotes)"
            )
        raise QueryError(message) from None
    finally:
        probe.close()


def _hit(row: tuple[Any, ...]) -> dict[str, Any]:
    event_id, topic, seq, ts, kind, session, marked = row
    text, marks = split_marks(marked)
    return {
        "id": event_id,
        "topic": topic,
        "seq": seq,
        "ts": ts,
        "kind": kind,
        "session": session,
        "snippet": text,
        "marks": marks,
    }


def split_marks(marked: str) -> tuple[str, list[list[int]]]:
    """A snippet without its match markers, and each match as ``[start, end)`` in it."""
    start_mark, end_mark = MARKERS
    text: list[str] = []
    marks: list[list[int]] = []
    length = 0
    for piece in re.split(f"({start_mark}|{end_mark})", marked):
        if piece == start_mark:
            marks.append([length, length])
        elif piece == end_mark:
            if marks:
                marks[-1][1] = length
        else:
            text.append(piece)
            length += len(piece)
    return "".join(text), marks


def _named_hits(
    conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]
) -> Iterator[dict[str, Any]]:
    """Each row as a hit with its session's name and agent template, read as the hits are
    (a page bounded in bytes stops reading rows once it is full)."""
    named: dict[str, tuple[str | None, str | None]] = {}
    for row in rows:
        hit = _hit(row)
        session = hit["session"]
        if session and session not in named:
            found = conn.execute("SELECT name, agent FROM sessions WHERE id = ?", (session,))
            named[session] = found.fetchone() or (None, None)
        hit["name"], hit["agent"] = named.get(session, (None, None))
        yield hit
