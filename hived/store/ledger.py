"""The usage ledger's sums: tokens by kind, cost, turns and sessions, grouped over a period.

``usage_ledger`` has one row per turn of a session (more exactly: per state change that
announced new usage), written by :mod:`hived.store.indexer` with the time of that change. A
sum over any period is therefore exact to the turn, and a whole store's ledger by day is one
scan of a table with one row per turn, not of the events.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from hived.core.history import USAGE_FIELDS, USAGE_TOKENS

GROUPS: Final = {
    "day": "substr(ts, 1, 10)",
    "template": "coalesce(agent, '')",
    "session": "session",
    "cwd": "coalesce(cwd, '')",
}
"""``by`` → the SQL of a row's key."""

_SUMS: Final = ", ".join(f"total({name})" for name in USAGE_FIELDS)


def usage(
    conn: sqlite3.Connection, by: str, since: str | None, until: str | None
) -> dict[str, Any]:
    """The ledger's rows grouped ``by`` (a key of :data:`GROUPS`) over ``[since, until)`` and
    their total: days ascending, other keys by cost, highest first (then by key). A session's
    label is its name as last recorded; other labels are their key."""
    where, params = _period(since, until)
    rows = conn.execute(
        f"SELECT {GROUPS[by]}, max(name), {_SUMS}, count(DISTINCT session) FROM usage_ledger "
        f"{where} GROUP BY 1",
        params,
    ).fetchall()
    total = conn.execute(
        f"SELECT {_SUMS}, count(DISTINCT session) FROM usage_ledger {where}", params
    ).fetchone()
    out = [
        {"key": row[0], "label": row[1] if by == "session" and row[1] else row[0]}
        | figures(row[2:])
        for row in rows
    ]
    if by == "day":
        out.sort(key=lambda row: str(row["key"]))
    else:
        out.sort(key=lambda row: (-row["cost_usd"], str(row["key"])))
    return {"rows": out, "total": figures(total)}


def _period(since: str | None, until: str | None) -> tuple[str, list[str]]:
    clauses, params = [], []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


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
    return conn.execute("DELETE FROM usage_ledger WHERE ts < ?", (older_than,)).rowcount
