"""The usage ledger's sums: tokens by kind, cost, turns and sessions, grouped over a period.

``usage_ledger`` has one row per turn of a session (more exactly: per state change that
announced new usage), written by :mod:`hived.store.indexer` with the time of that change, and
``usage_daily`` their sums per UTC day and session, written in the same transaction. A period
is read from the daily sums for its whole days and from the turns for the part days at its
ends: exact to the turn, and a year's ledger costs a row per session and day, not per turn.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from hived.core.history import USAGE_FIELDS, USAGE_TOKENS
from hived.core.pages import label

GROUPS: Final = {
    "day": "day",
    "template": "coalesce(agent, '')",
    "session": "session",
    "cwd": "coalesce(cwd, '')",
}
"""``by`` → the SQL of a row's key (over the rows of :func:`_rows`)."""

_FIELDS: Final = ", ".join(USAGE_FIELDS)
_SUMS: Final = ", ".join(f"total({name})" for name in USAGE_FIELDS)
_DAY_START: Final = "T00:00:00.000Z"


def _rows(since: str | None, until: str | None) -> tuple[str, list[str]]:
    """The SQL of the ledger's rows in ``[since, until)`` with their day, and its parameters:
    the whole days from ``usage_daily`` (one row per session and day), the part days at either
    end from ``usage_ledger`` (one row per turn). Exact, and a year costs what its days do."""
    first = None if since is None else _day_at_or_after(since)
    last = None if until is None else until[:10]
    if first is not None and last is not None and first > last:
        first = last = until[:10] if until is not None else None
    daily_where, daily_params = _between("day", first, last)
    edges: list[str] = []
    edge_params: list[str] = []
    if since is not None and first is not None and since < first + _DAY_START:
        edges.append("(ts >= ? AND ts < ?)")
        edge_params += [since, min(first + _DAY_START, until or first + _DAY_START)]
    if until is not None and last is not None and until > last + _DAY_START:
        edges.append("(ts >= ? AND ts < ?)")
        edge_params += [max(last + _DAY_START, since or ""), until]
    sql = f"SELECT day, session, name, agent, cwd, {_FIELDS} FROM usage_daily {daily_where}"
    if edges:
        sql += (
            f" UNION ALL SELECT substr(ts, 1, 10), session, name, agent, cwd, {_FIELDS} "
            f"FROM usage_ledger WHERE {' OR '.join(edges)}"
        )
    return sql, daily_params + edge_params


def _day_at_or_after(moment: str) -> str:
    """The first whole UTC day that starts at or after ``moment``."""
    day = moment[:10]
    if moment <= day + _DAY_START:
        return day
    following = datetime.date.fromisoformat(day) + datetime.timedelta(days=1)
    return following.isoformat()


def _between(column: str, first: str | None, last: str | None) -> tuple[str, list[str]]:
    clauses, params = [], []
    if first is not None:
        clauses.append(f"{column} >= ?")
        params.append(first)
    if last is not None:
        clauses.append(f"{column} < ?")
        params.append(last)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def usage(
    conn: sqlite3.Connection, by: str, since: str | None, until: str | None
) -> dict[str, Any]:
    """The ledger grouped ``by`` (a key of :data:`GROUPS`) over ``[since, until)`` and its
    total: days ascending, other keys by cost, highest first (then by key). A session's label
    is its name as last recorded (cut by :func:`~hived.core.pages.label`); other labels are
    their key."""
    rows_sql, params = _rows(since, until)
    rows = conn.execute(
        f"SELECT {GROUPS[by]}, max(name), {_SUMS}, count(DISTINCT session) "
        f"FROM ({rows_sql}) GROUP BY 1",
        params,
    ).fetchall()
    total = conn.execute(
        f"SELECT {_SUMS}, count(DISTINCT session) FROM ({rows_sql})", params
    ).fetchone()
    out = [
        {"key": row[0], "label": label(row[1]) if by == "session" and row[1] else row[0]}
        | figures(row[2:])
        for row in rows
    ]
    if by == "day":
        out.sort(key=lambda row: str(row["key"]))
    else:
        out.sort(key=lambda row: (-row["cost_usd"], str(row["key"])))
    return {"rows": out, "total": figures(total)}


def figures(row: Sequence[Any]) -> dict[str, Any]:
    """The ``usage`` figures of one row of sums (:data:`USAGE_FIELDS`, then sessions)."""
    named = dict(zip((*USAGE_FIELDS, "sessions"), row, strict=True))
    return {
        **{name: int(named[name]) for name in USAGE_TOKENS},
        "cost_usd": round(float(named["cost_usd"]), 6),
        "turns": int(named["turns"]),
        "sessions": int(named["sessions"]),
    }


def prune_ledger(conn: sqlite3.Connection, older_than: str) -> int:
    """Delete the ledger rows older than ``older_than`` (they go with the sessions they count:
    retention keeps those :data:`~hived.store.retention.SESSION_KEEP_FACTOR` × its days)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    conn.execute("DELETE FROM usage_daily WHERE day < ?", (older_than[:10],))
    return conn.execute("DELETE FROM usage_ledger WHERE ts < ?", (older_than,)).rowcount
