"""The outbox table: the SQL of a notification's life (born, settled, delivered or given up).

A birth's ``INSERT`` and a settling's ``UPDATE`` ride with the event that caused them, in the
store writer's transaction (:meth:`hived.store.Store.add_statement`); the delivery outcomes and
the reads run on the writer's connection in a worker thread (:meth:`hived.store.Store.run`).
Statuses: ``pending`` (waiting for its time or its turn), ``delivered``, ``dropped`` (settled
before delivery: answered, withdrawn…) and ``failed`` (retries spent).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import orjson

from hived.core.pages import page
from hived.notify.rules import Birth, Item

LOAD_MAX: Final = 10_000
"""Most pending notifications taken up at start (the oldest first)."""

INSERT: Final = (
    "INSERT OR IGNORE INTO notifications (id, rule, key, session, topic, seq, born_at, due_at, "
    "status, outcome, attempts, done_at, item) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', NULL, 0, NULL, ?)"
)
DROP: Final = (
    "UPDATE notifications SET status = 'dropped', outcome = ?, done_at = ? "
    "WHERE id = ? AND status = 'pending'"
)


def insert_params(birth: Birth) -> tuple[Any, ...]:
    return (
        birth.id,
        birth.rule,
        birth.key,
        birth.item.session,
        birth.topic,
        birth.seq,
        birth.born_at,
        birth.due_at,
        orjson.dumps(birth.item.to_json()).decode(),
    )


def load_pending(conn: sqlite3.Connection) -> list[tuple[Birth, int]]:
    """The pending notifications (at most :data:`LOAD_MAX`, oldest first) and their attempts."""
    rows = conn.execute(
        "SELECT id, rule, key, topic, seq, born_at, due_at, item, attempts FROM notifications "
        "WHERE status = 'pending' ORDER BY born_at LIMIT ?",
        (LOAD_MAX,),
    ).fetchall()
    return [
        (
            Birth(
                id=row[0],
                rule=row[1],
                key=row[2],
                topic=row[3],
                seq=row[4],
                born_at=row[5],
                due_at=row[6],
                item=Item.from_json(orjson.loads(row[7])),
            ),
            row[8],
        )
        for row in rows
    ]


def mark(
    conn: sqlite3.Connection,
    ids: Sequence[str],
    status: str,
    outcome: str | None,
    at: float,
    attempted: bool,
) -> None:
    """Set the status of the notifications ``ids`` (``pending`` counts one more attempt)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "UPDATE notifications SET status = ?, outcome = ?, done_at = ?, "
            "attempts = attempts + ? WHERE id = ?",
            [
                (status, outcome, None if status == "pending" else at, int(attempted), i)
                for i in ids
            ],
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def recent(
    conn: sqlite3.Connection, limit: int, after: tuple[float, str] | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the notifications born, newest first, as ``hivectl notifications`` shows
    them: at most ``limit`` and 256 KiB of them (an item can be long), from the one after
    ``after`` (a :func:`cursor_position`); and the cursor of the next page, or None."""
    where, params = "", []
    if after is not None:
        # Ordered by born_at, then id: a page ends between two of a same time too.
        where = "WHERE born_at < ? OR (born_at = ? AND id > ?) "
        params = [after[0], after[0], after[1]]
    rows = conn.execute(
        "SELECT id, rule, key, session, born_at, due_at, status, outcome, attempts, done_at, "
        f"item FROM notifications {where}ORDER BY born_at DESC, id LIMIT ?",
        (*params, limit + 1),
    )
    return page(_entries(rows), limit, lambda entry: f"{entry['born_at']!r}/{entry['id']}")


def _entries(rows: Iterable[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    names = ("id", "rule", "key", "session", "born_at", "due_at", "status", "outcome")
    for row in rows:
        entry: dict[str, Any] = dict(zip(names, row[:8], strict=True))
        entry["attempts"], entry["done_at"] = row[8], row[9]
        entry["item"] = orjson.loads(row[10])
        yield entry


def cursor_position(cursor: str) -> tuple[float, str] | None:
    """Where a page's ``next`` (``"<born_at>/<id>"``) says the next page starts; None when it
    is not such a cursor."""
    born_at, slash, notification_id = cursor.partition("/")
    try:
        when = float(born_at)
    except ValueError:
        return None
    return (when, notification_id) if slash and math.isfinite(when) else None


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Forget the notifications settled (delivered, dropped, failed) before ``before``."""
    deleted = conn.execute(
        "DELETE FROM notifications WHERE status != 'pending' AND done_at < ?", (before,)
    )
    return deleted.rowcount


def counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """How many notifications each rule has in each status."""
    rows = conn.execute(
        "SELECT rule, status, count(*) FROM notifications GROUP BY rule, status"
    ).fetchall()
    return {(row[0], row[1]): row[2] for row in rows}
