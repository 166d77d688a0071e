"""Forgetting a session: every trace of it gone from the store in one transaction.

Its events (on its own topic and its state changes on ``sessions``), their search index
entries, its topic's seq range and fences, its summary, its spool marks, its usage ledger rows
and running total. What stays is one row in ``forgotten`` (the id and when), so that a later
replay or request on that session can say it was forgotten rather than that it never existed.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from hived.store.sql import CLAMP_FOLLOWED

_STATEMENTS: Final = (
    "DELETE FROM events_fts WHERE rowid IN (SELECT id FROM events WHERE session = ?1)",
    "DELETE FROM events WHERE session = ?1",
    "DELETE FROM topics WHERE topic = 'session/' || ?1",
    "DELETE FROM fences WHERE topic = 'session/' || ?1",
    "DELETE FROM sessions WHERE id = ?1",
    "DELETE FROM spool_marks WHERE substr(key, 1, length(?1) + 1) = ?1 || '/'",
    "DELETE FROM usage_ledger WHERE session = ?1",
    "DELETE FROM usage_daily WHERE session = ?1",
    "DELETE FROM usage_totals WHERE session = ?1",
)


def forget_session(conn: sqlite3.Connection, session_id: str, at: str) -> int:
    """Delete every trace of one session (see the module docstring); its events deleted."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")
    try:
        events = 0
        for statement in _STATEMENTS:
            count = conn.execute(statement, (session_id,)).rowcount
            if statement.startswith("DELETE FROM events "):
                events = count
        conn.execute(CLAMP_FOLLOWED)
        conn.execute(
            "INSERT OR REPLACE INTO forgotten (session, at) VALUES (?, ?)", (session_id, at)
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return events


def forgotten_at(conn: sqlite3.Connection, session_id: str) -> str | None:
    """When the session was forgotten, or None."""
    row = conn.execute("SELECT at FROM forgotten WHERE session = ?", (session_id,)).fetchone()
    return None if row is None else str(row[0])
