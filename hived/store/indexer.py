"""The follower: keeps the search index and the usage ledger in step with the events table.

How it works: ``history_state.followed_upto`` is the id of the last event the follower has
read. Each step reads the next :data:`FOLLOW_CHUNK` events by id, puts the searchable text of
each into ``events_fts`` (rowid = the event's id) and the usage each ``state`` event of a
session topic announces into ``usage_ledger`` (:func:`hived.core.history.usage_delta` against
``usage_totals``; its sums per UTC day and session in ``usage_daily``), and moves
``followed_upto`` — all in one transaction on the writer's
connection, through the batch writer's lock. So an event is indexed and counted exactly once,
whatever crashes when; and a store written by an older hived (or while the follower lagged) is
indexed by the same steps, in the background, from its first kept event.

The follower never holds up live publishing: the hub queues events whatever it does, and while
events wait to be committed the follower takes at most :data:`BUSY_SHARE` of the writer's
time and one step per :data:`FOLLOW_BUSY_INTERVAL_S` (it rests between steps), catching up
once the writer is idle. Events become searchable once committed and followed: within
``sync_interval_ms`` plus :data:`FOLLOW_INTERVAL_S` on an idle store, plus up to
:data:`FOLLOW_BUSY_INTERVAL_S` while agents write (more under a flood, which the index catches
up with afterwards). A step that finds nothing new is not repeated until the writer commits
again. The text of most events is computed in SQL, the rest by a registered function
(:data:`_INDEX`): a step runs almost no Python per event.
``status`` shows how far behind it is (:class:`IndexStats`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
import orjson
import trio

from hived.core.history import (
    MARKERS,
    MAX_TEXT_CHARS,
    SEARCHED_KINDS,
    SPACES,
    USAGE_FIELDS,
    usage_delta,
)
from hived.store.schema import SEARCH_TEXT_FUNCTION
from hived.store.sql import FOLLOWED_KEY
from hived.store.writer import BatchWriter

log = logging.getLogger(__name__)

FOLLOW_CHUNK: Final = 1000
"""Events read per step while the writer has work (one transaction: some 50 ms of its lock)."""
CATCH_UP_CHUNK: Final = 5000
"""Events read per step while the writer is idle: fewer commits and merges, twice the speed
on a store of millions (bench/RESULTS.md), for at most a few hundred ms of the lock."""
FOLLOW_RETRY_S: Final = 5.0
"""Wait before another step after one failed (a full or read-only disk)."""
FOLLOW_INTERVAL_S: Final = 0.25
"""How often an idle follower looks for newly committed events."""
BUSY_SHARE: Final = 0.1
"""The most of the writer's time the follower takes while events wait to be committed."""
FOLLOW_BUSY_INTERVAL_S: Final = 1.0
"""The least rest between two steps while events wait to be committed: while agents write,
the index follows in steps of up to :data:`FOLLOW_CHUNK` a second rather than a step per
commit, leaving the cores and the GIL to live traffic (each step has its cost: a transaction,
an fsync, a new FTS5 segment to merge)."""

_INSERT_LEDGER: Final = (
    "INSERT INTO usage_ledger (ts, session, name, agent, cwd, "
    + ", ".join(USAGE_FIELDS)
    + ") VALUES (?, ?, ?, ?, ?, "
    + ", ".join("?" * len(USAGE_FIELDS))
    + ")"
)

_ADD_DAILY: Final = (
    "INSERT INTO usage_daily (day, session, name, agent, cwd, "
    + ", ".join(USAGE_FIELDS)
    + ") VALUES (?, ?, ?, ?, ?, "
    + ", ".join("?" * len(USAGE_FIELDS))
    + ") ON CONFLICT (day, session) DO UPDATE SET name = excluded.name, agent = excluded.agent, "
    + "cwd = excluded.cwd, "
    + ", ".join(f"{name} = {name} + excluded.{name}" for name in USAGE_FIELDS)
)


@attrs.frozen
class FollowStep:
    """What one step did."""

    read: int
    """Events read."""
    followed_upto: int
    """The id of the last event followed, after the step."""
    last_id: int
    """The id of the newest committed event (the step's target)."""


@attrs.frozen
class IndexStats:
    """The follower's figures for ``status`` (``store.index``)."""

    state: str
    """``indexing`` while it is behind the committed events, else ``ready``."""
    followed_upto: int
    """The id of the last event indexed."""
    last_id: int
    """The id of the newest committed event, when last looked at."""
    behind: int
    """About how many committed events are not indexed yet (ids past ``followed_upto``)."""
    indexed_since_start: int
    """Events read by the follower since the daemon started."""
    error: str | None
    """Why the last step failed, while it fails."""


def followed_upto(conn: sqlite3.Connection) -> int:
    """The id of the last event followed (0 for none)."""
    row = conn.execute("SELECT value FROM history_state WHERE key = ?", (FOLLOWED_KEY,)).fetchone()
    return 0 if row is None else int(row[0])


def follow_step(conn: sqlite3.Connection, chunk: int) -> FollowStep:
    """Index and count the next ``chunk`` events after ``followed_upto``, in one transaction."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")
    try:
        upto = followed_upto(conn)
        last_id = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        read, end = conn.execute(_CHUNK, (upto, chunk)).fetchone()
        if read:
            conn.execute(_INDEX, (upto, end, SPACES))
            totals: dict[str, Any] = {}
            ledger: list[tuple[Any, ...]] = []
            for topic, ts, session, data in conn.execute(_STATES, (upto, end)).fetchall():
                if session and topic == f"session/{session}":
                    _count(conn, totals, ledger, ts, session, data)
            if ledger:
                conn.executemany(_INSERT_LEDGER, ledger)
                conn.executemany(_ADD_DAILY, [(row[0][:10], *row[1:]) for row in ledger])
            if totals:
                conn.executemany(
                    "INSERT OR REPLACE INTO usage_totals (session, usage) VALUES (?, ?)",
                    [(s, orjson.dumps(u).decode()) for s, u in totals.items()],
                )
            upto = end
            conn.execute(
                "INSERT OR REPLACE INTO history_state (key, value) VALUES (?, ?)",
                (FOLLOWED_KEY, upto),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return FollowStep(read, upto, max(last_id, upto))


_CHUNK: Final = (
    "SELECT count(*), max(id) FROM (SELECT id FROM events WHERE id > ? ORDER BY id LIMIT ?)"
)
"""How many events a step reads (at most its chunk), and the id of the last."""

_ONE_FIELD: Final = {"text": "line", "stderr": "line", "input": "text"}
"""The kinds whose searchable text is one string field of their data, by that field."""


def _one_field(field: str) -> str:
    """SQL: ``data``'s string ``field``; NULL when ``data`` is no JSON object or the field no
    string, as :func:`~hived.core.history.event_text` takes it (CASE is evaluated lazily)."""
    path = f"'$.{field}'"
    return (
        f"CASE WHEN json_valid(data) THEN CASE WHEN json_type(data, {path}) = 'text' "
        f"THEN json_extract(data, {path}) END END"
    )


_IN_PYTHON: Final = ", ".join(f"'{kind}'" for kind in sorted(SEARCHED_KINDS - _ONE_FIELD.keys()))
_INDEX: Final = (
    "INSERT INTO events_fts (rowid, text) SELECT id, text FROM (SELECT id, "
    "replace(replace(substr(CASE "
    + "".join(f"WHEN kind = '{kind}' THEN {_one_field(name)} " for kind, name in _ONE_FIELD.items())
    + f"WHEN kind IN ({_IN_PYTHON}) THEN {SEARCH_TEXT_FUNCTION}(kind, data) END, "
    + f"1, {MAX_TEXT_CHARS}), char({ord(MARKERS[0])}), ' '), char({ord(MARKERS[1])}), ' ') "
    + "AS text FROM events WHERE id > ?1 AND id <= ?2 LIMIT -1) WHERE trim(text, ?3) <> ''"
)
"""Every searchable event of a step's range into the index, with the text
:func:`~hived.core.history.search_text` gives it (parameters: after, upto, the characters
:meth:`str.strip` removes). The kinds whose text is one field (plain output lines, stderr,
prompts: most events of a busy agent) are read in SQL, so that the worker thread takes the GIL
for none of them; the others through :func:`~hived.core.history.search_text_json` (the
writer's connection has it as :data:`~hived.store.schema.SEARCH_TEXT_FUNCTION`). A test holds
the two ways to the same texts. ``LIMIT -1`` keeps SQLite from flattening the subquery, which
would compute each text twice (once for the WHERE, once for the insert)."""

_STATES: Final = (
    "SELECT topic, ts, session, data FROM events WHERE id > ? AND id <= ? AND kind = 'state' "
    "ORDER BY id"
)
"""The step's state events: the usage they announce goes into the ledger."""


def _count(
    conn: sqlite3.Connection,
    totals: dict[str, Any],
    ledger: list[tuple[Any, ...]],
    ts: str,
    session: str,
    data: str,
) -> None:
    """Add to the ledger what a session's state event says was spent since the last one."""
    try:
        summary = orjson.loads(data).get("summary")
        usage = summary.get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return
    if not isinstance(usage, dict):
        return
    if session not in totals:
        row = conn.execute(
            "SELECT usage FROM usage_totals WHERE session = ?", (session,)
        ).fetchone()
        totals[session] = None if row is None else orjson.loads(row[0])
    delta = usage_delta(totals[session], usage)
    totals[session] = {key: usage.get(key, 0) for key in USAGE_FIELDS}
    if not any(delta.values()):
        return
    ledger.append(
        (
            ts,
            session,
            summary.get("name"),
            summary.get("agent"),
            summary.get("cwd"),
            *(delta[key] for key in USAGE_FIELDS),
        )
    )


class Indexer:
    """Runs :func:`follow_step` until cancelled (see the module docstring)."""

    def __init__(self, batches: BatchWriter, on_step: Callable[[], None] | None = None) -> None:
        self._batches = batches
        self._on_step = on_step
        self.followed_upto = 0
        self.last_id = 0
        self.indexed = 0
        self.error: str | None = None
        self._committed_seen = 0

    def stats(self) -> IndexStats:
        # Past the last step's look at the table, and what the writer committed since.
        since_seen = self._batches.committed_events - self._committed_seen
        behind = max(self.last_id - self.followed_upto, 0) + since_seen
        return IndexStats(
            state="indexing" if behind else "ready",
            followed_upto=self.followed_upto,
            last_id=self.last_id,
            behind=behind,
            indexed_since_start=self.indexed,
            error=self.error,
        )

    async def step(self, chunk: int = FOLLOW_CHUNK) -> FollowStep:
        """One step now (through the writer's lock)."""
        # The step holds the writer's lock: nothing is committed while it runs.
        committed = self._batches.committed_events
        step = await self._batches.run(follow_step, chunk)
        self._committed_seen = committed
        self.followed_upto, self.last_id = step.followed_upto, step.last_id
        self.indexed += step.read
        if self._on_step is not None:
            self._on_step()
        return step

    async def catch_up(self) -> None:
        """Follow every committed event now (tests, and a search on a quiet store)."""
        while (await self.step()).read:
            pass

    async def serve(self) -> None:
        """Follow the events table until cancelled, resting as the module docstring says."""
        seen_commits = -1
        while True:
            if self._batches.commits == seen_commits:
                # Nothing committed since the last step found nothing new.
                await trio.sleep(FOLLOW_INTERVAL_S)
                continue
            commits = self._batches.commits
            chunk = FOLLOW_CHUNK if self._batches.pending else CATCH_UP_CHUNK
            started = time.monotonic()
            try:
                step = await self.step(chunk)
            except sqlite3.Error as exc:
                message = f"indexing stopped: {exc}; retried in {FOLLOW_RETRY_S:.0f} s"
                if self.error is None:
                    log.warning("store: %s", message)
                self.error = message
                await trio.sleep(FOLLOW_RETRY_S)
                continue
            if self.error is not None:
                log.info("store: indexing works again")
                self.error = None
            took = time.monotonic() - started
            if step.read < chunk:
                seen_commits = commits
            if self._batches.pending:
                # The writer has work: leave it the lock (1 - BUSY_SHARE) of the time, and
                # live traffic the cores.
                await trio.sleep(max(took * (1 - BUSY_SHARE) / BUSY_SHARE, FOLLOW_BUSY_INTERVAL_S))
            else:
                await trio.lowlevel.checkpoint()
