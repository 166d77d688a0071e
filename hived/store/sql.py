"""The store's SQL: synchronous functions, run in worker threads on the connection they are given.

Events are kept as columns (topic, seq, ts, kind, session) plus ``data``, the JSON text of the
event's data. ``data`` is cut out of the frame the hub already encoded (the frame ends with
``,"data":<data>}``) by SQLite itself, in the INSERT (``substr``/``instr``; ``,"data":``
cannot occur earlier in a frame: a ``"`` inside a JSON string is escaped), so the writer
serializes nothing. Bound row by row (``executemany``), the worker thread gives the GIL up
for each row's step and takes it back to bind the next: cheap while the event loop is idle,
but while agents' output waits for the writer the loop is busy with the next lines, and in a
200,000-line burst the writer waited for the GIL more than it worked (bench/RESULTS.md,
session 7). A batch written while sources wait (``one_parameter``) therefore goes in by INSERTs
whose one parameter is up to 1,000 of its frames joined into a JSON array: SQLite reads the columns
out of each frame (``json_each``, ``json_extract``; ``data`` comes back as the frame's own text
of it, byte for byte), and the GIL is taken once per array. It costs SQLite more CPU per row
(parsing), which is why it is not always used. SQLite's JSON functions cut a string at an
escaped NUL, so an array with ``\\u0000`` anywhere in it is bound row by row all the same, and
so is one too long for a parameter. Reading rebuilds the frame by
concatenation, without parsing ``data``. The rebuilt text equals
:func:`~hived.core.events.encode_event` of the event, byte for byte: a replayed frame is the
frame that went out live. Keeping columns rather than frames saves the ~110 bytes of keys and
repeated topic per event (a third of a 300-byte event); rebuilding costs about 0.5 µs per
event, a quarter of a replay's time at ~500k events/s (``python -m bench.bench_store``).

``topics`` holds each topic's kept seq range, ``first_seq`` to ``last_seq``; it outlives the
topic's events, so that seq counters continue after retention removed every event of a topic
(``first_seq = last_seq + 1`` then). Events of a topic are inserted in seq order and pruned
oldest first by insertion order, so a topic's kept events are always one contiguous range.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from operator import itemgetter
from typing import Any, Final

import attrs
import orjson

from hived.core.events import SpoolMark
from hived.core.sessions import ENDED_STATES, LIVE_STATES, SessionSummary, State

log = logging.getLogger(__name__)

_MATERIALIZED: Final = "MATERIALIZED " if sqlite3.sqlite_version_info >= (3, 35) else ""
_INSERT_EVENTS: Final = (
    "INSERT INTO events (topic, seq, ts, kind, session, data) "
    f"WITH frames (f) AS {_MATERIALIZED}(SELECT value FROM json_each(?1)) SELECT "
    "json_extract(f, '$.topic'), json_extract(f, '$.seq'), json_extract(f, '$.ts'), "
    "json_extract(f, '$.kind'), json_extract(f, '$.session'), json_extract(f, '$.data') "
    "FROM frames"
)
"""One parameter: the frames of a batch as a JSON array, in order. ``json_each`` renders an
element's text anew each time its ``value`` is read: read once into a table of its own
(``MATERIALIZED``, SQLite ≥ 3.35), the six columns cost a fifth less."""
_INSERT_EVENT: Final = (
    "INSERT INTO events (topic, seq, ts, kind, session, data) VALUES (?1, ?2, ?3, ?4, ?5, "
    """substr(?6, instr(?6, ',"data":') + 8, length(?6) - instr(?6, ',"data":') - 8))"""
)
"""Parameters: topic, seq, ts, kind, session and the frame, whose data it keeps."""
ARRAY_EVENTS: Final = 1000
"""Most events in one array (one INSERT): a batch of 10,000 as one array held its text and
SQLite's parse of it at once, and a 200,000-line burst peaked 23 MiB higher."""
ARRAY_MAX_CHARS: Final = 16 << 20
"""Longest array given to SQLite as one parameter: the events of a longer one (large lines)
are bound row by row."""
_ESCAPED_NUL: Final = "\\u0000"
Pending = tuple[str, int, str, str, str | None, str, SpoolMark | None]
"""An event waiting to be written: topic, seq, ts, kind, session, its frame and its spool mark
(its data is in the frame; the dict it was made from is not kept while it waits)."""
_COLUMNS: Final = itemgetter(0, 1, 2, 3, 4, 5)
_FRAME: Final = itemgetter(5)
_TOPIC: Final = itemgetter(0)
_SEQ: Final = itemgetter(1)
_OR_IGNORE: Final = {
    statement: statement.replace("INSERT", "INSERT OR IGNORE", 1)
    for statement in (_INSERT_EVENTS, _INSERT_EVENT)
}
_UPSERT_TOPIC: Final = (
    "INSERT INTO topics (topic, first_seq, last_seq) VALUES (?, ?, ?) "
    "ON CONFLICT (topic) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)"
)
_UPSERT_SESSION: Final = (
    "INSERT OR REPLACE INTO sessions (id, name, agent, state, pid, pid_start, cwd, observed, "
    "started_at, ended_at, exit_code, usage, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_READ_EVENTS: Final = (
    "SELECT seq, ts, kind, session, data FROM events "
    "WHERE topic = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
)


FOLLOWED_KEY: Final = "followed_upto"
"""The ``history_state`` key of the last event id the index follower has read."""
CLAMP_FOLLOWED: Final = (
    "UPDATE history_state SET value = (SELECT coalesce(max(id), 0) FROM events) "
    f"WHERE key = '{FOLLOWED_KEY}' AND value > (SELECT coalesce(max(id), 0) FROM events)"
)
"""Run in the transaction of any deletion that may remove the newest events (forgetting their
session, retention down to nothing): SQLite gives the next event the largest id + 1, which
would otherwise be at or below ``followed_upto``, and never indexed."""


_FRAME_OVERHEAD_BYTES: Final = 160
"""About what an event's frame holds besides its data (type, topic, seq, ts, kind, session)."""


def _quote(text: str | None) -> str:
    return orjson.dumps(text).decode()


def build_frames(topic: str, rows: Iterable[tuple[int, str, str, str | None, str]]) -> list[str]:
    """The frames of ``rows`` (seq, ts, kind, session, data) of ``topic``, byte for byte."""
    head = '{"type":"event","topic":' + _quote(topic) + ',"seq":'
    # A topic's rows share a handful of kinds and usually one session: quote each once.
    quoted: dict[str | None, str] = {}
    frames = []
    for seq, ts, kind, session, data in rows:
        q_kind = quoted.get(kind)
        if q_kind is None:
            q_kind = quoted[kind] = _quote(kind)
        q_session = quoted.get(session)
        if q_session is None:
            q_session = quoted[session] = _quote(session)
        frames.append(
            f'{head}{seq},"ts":{_quote(ts)},"kind":{q_kind},"session":{q_session},"data":{data}}}'
        )
    return frames


def _session_row(s: SessionSummary) -> tuple[Any, ...]:
    return (
        s.id,
        s.name,
        s.agent,
        str(s.state),
        s.pid,
        s.pid_start,
        s.cwd,
        int(s.observed),
        s.started_at,
        s.ended_at,
        s.exit_code,
        orjson.dumps(s.usage.to_json()).decode(),
        orjson.dumps(s.to_record()).decode(),
    )


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; a failing rollback is left to the next BEGIN."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.debug("store: rollback failed", exc_info=True)


def write_batch(
    conn: sqlite3.Connection,
    events: Sequence[Pending],
    sessions: Sequence[SessionSummary],
    marks: Sequence[SpoolMark] = (),
    statements: Sequence[tuple[str, tuple[Any, ...]]] = (),
    one_parameter: bool = False,
) -> dict[str, int]:
    """Insert ``events``, upsert ``sessions`` and the spool ``marks`` (in event order: the last
    of a spool wins) and run ``statements`` (in order) in one transaction; the last seq per
    topic. With ``one_parameter`` the events go in as JSON arrays of their frames, which take
    the GIL once per array rather than once per row (see the module docstring), unless an
    escaped NUL or the length keeps an array's events to row by row.

    Raises ``sqlite3.Error`` with nothing written. An event whose (topic, seq) is already
    stored (a bug upstream; it can never be stored) is skipped with an error in the log, so
    that it cannot block every event after it.
    """
    # Each topic's first and last seq, without a Python loop per event: a dict built from
    # (topic, seq) pairs keeps the last pair of each topic.
    topics, seqs = list(map(_TOPIC, events)), list(map(_SEQ, events))
    last = dict(zip(topics, seqs, strict=True))
    first = dict(zip(reversed(topics), reversed(seqs), strict=True))
    ranges = [(topic, first[topic], seq) for topic, seq in last.items()]
    _rollback(conn)
    try:
        _write(conn, events, one_parameter, False, ranges, sessions, marks, statements)
    except sqlite3.IntegrityError:
        _rollback(conn)
        inserted = _write(conn, events, one_parameter, True, ranges, sessions, marks, statements)
        log.error("store: %d events were already stored and are skipped", len(events) - inserted)
    return last


def _insert_events(
    conn: sqlite3.Connection, events: Sequence[Pending], one_parameter: bool, or_ignore: bool
) -> int:
    """Insert ``events`` (see :func:`write_batch`); how many went in. As arrays, they go
    :data:`ARRAY_EVENTS` at a time, so that one array's text and SQLite's parse of it stay
    small beside the batch."""
    rows, array = _INSERT_EVENT, _INSERT_EVENTS
    if or_ignore:
        rows, array = _OR_IGNORE[rows], _OR_IGNORE[array]
    if not one_parameter:
        return conn.executemany(rows, map(_COLUMNS, events)).rowcount
    inserted = 0
    for start in range(0, len(events), ARRAY_EVENTS):
        chunk = events[start : start + ARRAY_EVENTS]
        frames = "[" + ",".join(map(_FRAME, chunk)) + "]"
        if _ESCAPED_NUL in frames or len(frames) > ARRAY_MAX_CHARS:
            inserted += conn.executemany(rows, map(_COLUMNS, chunk)).rowcount
        else:
            inserted += conn.execute(array, (frames,)).rowcount
    return inserted


def _write(
    conn: sqlite3.Connection,
    events: Sequence[Pending],
    one_parameter: bool,
    or_ignore: bool,
    ranges: list[tuple[str, int, int]],
    sessions: Sequence[SessionSummary],
    marks: Sequence[SpoolMark],
    statements: Sequence[tuple[str, tuple[Any, ...]]],
) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        inserted = _insert_events(conn, events, one_parameter, or_ignore)
        conn.executemany(_UPSERT_TOPIC, ranges)
        if sessions:
            conn.executemany(_UPSERT_SESSION, [_session_row(s) for s in sessions])
        if marks:
            conn.executemany(_UPSERT_MARK, [(m.key, m.offset, m.nth) for m in marks])
        for statement, params in statements:
            conn.execute(statement, params)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return inserted


_UPSERT_MARK: Final = (
    "INSERT INTO spool_marks (key, offset, idx) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET offset = excluded.offset, idx = excluded.idx"
)


def select_mark(conn: sqlite3.Connection, key: str) -> SpoolMark | None:
    """The committed mark of one spool, or None."""
    row = conn.execute("SELECT offset, idx FROM spool_marks WHERE key = ?", (key,)).fetchone()
    return None if row is None else SpoolMark(key, int(row[0]), int(row[1]))


def delete_marks(conn: sqlite3.Connection, prefix: str) -> None:
    """Forget the marks of a run whose spool is gone (``<session id>/<agent pid>/``)."""
    conn.execute("DELETE FROM spool_marks WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))


def read_frames(
    conn: sqlite3.Connection,
    topic: str,
    after: int,
    upto: int,
    limit: int,
    max_bytes: int | None = None,
) -> list[tuple[int, str]]:
    """``(seq, frame)`` of ``topic``'s events with ``after < seq <= upto``, ascending, at most
    ``limit``, and (when ``max_bytes`` is set) no more rows than fit in about ``max_bytes`` of
    event data: the first row always, then while they fit. Rows are read one by one, so a page
    of large events never holds more than that in memory."""
    cursor = conn.execute(_READ_EVENTS, (topic, after, upto, limit))
    if max_bytes is None:
        rows = cursor.fetchall()
    else:
        rows = []
        size = 0
        for row in cursor:
            size += len(row[4]) + _FRAME_OVERHEAD_BYTES
            if rows and size > max_bytes:
                break
            rows.append(row)
    return list(zip((row[0] for row in rows), build_frames(topic, rows), strict=True))


def load_topics(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """Every topic's kept seq range, ``(first_seq, last_seq)``."""
    rows = conn.execute("SELECT topic, first_seq, last_seq FROM topics").fetchall()
    return {topic: (first, last) for topic, first, last in rows}


def begin_epoch(conn: sqlite3.Connection, now: str) -> int:
    """Record a new daemon run and return its epoch. If the last run did not end cleanly (its
    events may have been sent and not kept), keep where each topic stood: its fence."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        last = conn.execute(
            "SELECT epoch, clean FROM epochs ORDER BY epoch DESC LIMIT 1"
        ).fetchone()
        if last is not None and not last[1]:
            conn.execute(
                "INSERT INTO fences (epoch, topic, last_seq) SELECT ?, topic, last_seq FROM topics",
                (last[0],),
            )
        epoch = 1 if last is None else last[0] + 1
        conn.execute("INSERT INTO epochs (epoch, started_at, clean) VALUES (?, ?, 0)", (epoch, now))
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return int(epoch)


def end_epoch(conn: sqlite3.Connection, epoch: int) -> None:
    """The run ended with every event it published kept."""
    conn.execute("UPDATE epochs SET clean = 1 WHERE epoch = ?", (epoch,))


def select_fence(conn: sqlite3.Connection, epoch: int, topic: str) -> int | None:
    """The last seq of ``topic`` kept when run ``epoch`` ended uncleanly; None when that run
    ended cleanly or is unknown (nothing it sent was lost)."""
    run = conn.execute("SELECT clean FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
    if run is None or run[0]:
        return None
    row = conn.execute(
        "SELECT last_seq FROM fences WHERE epoch = ? AND topic = ?", (epoch, topic)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _live_state_params() -> tuple[str, list[str]]:
    states = sorted(str(s) for s in LIVE_STATES)
    return ", ".join("?" * len(states)), states


def recover_sessions(
    conn: sqlite3.Connection, ended_at: str, reason: str, held: Collection[str] = ()
) -> list[tuple[SessionSummary, SessionSummary]]:
    """Mark every session recorded as live LOST, but those ``held`` (their agents still run
    under their shims: the supervisor takes them up); each one as it was and as it is now."""
    marks, states = _live_state_params()
    rows = conn.execute(
        f"SELECT id, record FROM sessions WHERE state IN ({marks})", states
    ).fetchall()
    rows = [row for row in rows if row[0] not in held]
    recovered = []
    broken = []
    for session_id, record in rows:
        try:
            before = SessionSummary.from_json(orjson.loads(record))
        except (KeyError, ValueError, TypeError):
            log.warning("store: session %s: unreadable record; marked LOST as it is", session_id)
            broken.append(session_id)
            continue
        after = attrs.evolve(
            before, state=State.LOST, reason=reason, ended_at=before.ended_at or ended_at
        )
        recovered.append((before, after))
    if recovered or broken:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_UPSERT_SESSION, [_session_row(after) for _, after in recovered])
            conn.executemany(
                "UPDATE sessions SET state = ? WHERE id = ?",
                [(str(State.LOST), session_id) for session_id in broken],
            )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
    return recovered


def select_sessions(
    conn: sqlite3.Connection,
    states: Collection[str] | None,
    agent: str | None,
    started_since: str | None,
    limit: int | None,
) -> list[SessionSummary]:
    """Kept sessions matching the filters, newest start first.

    ``states`` uses the index on state, and ``limit`` alone the one on start time: asking for
    live sessions, or for a page, reads only those rows.
    """
    where = []
    params: list[Any] = []
    if states is not None:
        where.append(f"state IN ({', '.join('?' * len(states))})")
        params += sorted(states)
    for clause, value in (("agent = ?", agent), ("started_at >= ?", started_since)):
        if value is not None:
            where.append(clause)
            params.append(value)
    query = "SELECT record FROM sessions"
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY started_at DESC, id DESC"
    if limit is not None:
        query += " LIMIT ?"
        params.append(limit)
    return [_summary(record) for (record,) in conn.execute(query, params)]


def select_session(conn: sqlite3.Connection, session_id: str) -> SessionSummary | None:
    """One kept session, or None."""
    row = conn.execute("SELECT record FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return None if row is None else _summary(row[0])


def select_sessions_named(conn: sqlite3.Connection, name: str, limit: int) -> list[SessionSummary]:
    """Kept sessions called ``name``, newest start first, at most ``limit`` (by index)."""
    rows = conn.execute(
        "SELECT record FROM sessions WHERE name = ? ORDER BY started_at DESC, id DESC LIMIT ?",
        (name, limit),
    )
    return [_summary(record) for (record,) in rows]


def select_sessions_prefixed(
    conn: sqlite3.Connection, prefix: str, limit: int
) -> list[SessionSummary]:
    """Kept sessions whose id starts with ``prefix``, by id, at most ``limit`` (a range of the
    primary key: SQLite compares text as UTF-8 bytes, which sort as code points do)."""
    end = prefix_end(prefix)
    query = "SELECT record FROM sessions WHERE id >= ?"
    params: list[Any] = [prefix]
    if end is not None:
        query += " AND id < ?"
        params.append(end)
    rows = conn.execute(query + " ORDER BY id LIMIT ?", [*params, limit])
    return [_summary(record) for (record,) in rows]


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``; None if there is none."""
    while prefix:
        point = ord(prefix[-1]) + 1
        if 0xD800 <= point <= 0xDFFF:
            point = 0xE000  # surrogates cannot be stored: skip them
        if point <= 0x10FFFF:
            return prefix[:-1] + chr(point)
        prefix = prefix[:-1]
    return None


def _summary(record: str) -> SessionSummary:
    return SessionSummary.from_json(orjson.loads(record))


@attrs.frozen
class Pruned:
    """What one prune step did."""

    deleted: int
    """Events deleted."""
    first_seqs: dict[str, int]
    """The new first kept seq of each topic that lost events."""
    used_bytes: int
    """Bytes of the database file in use after the step (free pages not counted)."""


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database file holding data (the WAL and free pages not counted)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def prune_events(conn: sqlite3.Connection, older_than: str | None, chunk: int) -> Pruned:
    """Delete up to ``chunk`` of the oldest events (by insertion), in one short transaction.

    With ``older_than``, only the leading run of events whose ``ts`` is before it. Freed pages
    go back to the file system a few at a time (incremental vacuum).
    """
    rows = conn.execute("SELECT id, ts FROM events ORDER BY id LIMIT ?", (chunk,)).fetchall()
    if older_than is not None:
        count = 0
        for _, ts in rows:
            if ts >= older_than:
                break
            count += 1
        rows = rows[:count]
    if not rows:
        return Pruned(0, {}, used_bytes(conn))
    last_id = rows[-1][0]
    _rollback(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        first_seqs = {
            topic: seq + 1
            for topic, seq in conn.execute(
                "SELECT topic, max(seq) FROM events WHERE id <= ? GROUP BY topic", (last_id,)
            )
        }
        # The search index goes with its events (hived.store.indexer): same ids, same step.
        conn.execute("DELETE FROM events_fts WHERE rowid <= ?", (last_id,))
        deleted = conn.execute("DELETE FROM events WHERE id <= ?", (last_id,)).rowcount
        conn.execute(CLAMP_FOLLOWED)
        conn.executemany(
            "UPDATE topics SET first_seq = ? WHERE topic = ? AND first_seq < ?",
            [(first, topic, first) for topic, first in first_seqs.items()],
        )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    # Each step of this pragma frees one page: fetchall runs it to the end.
    conn.execute(f"PRAGMA incremental_vacuum({chunk})").fetchall()
    return Pruned(deleted, first_seqs, used_bytes(conn))


def prune_sessions(conn: sqlite3.Connection, ended_before: str, chunk: int) -> int:
    """Delete up to ``chunk`` ended sessions that ended before ``ended_before``; how many."""
    states = sorted(str(s) for s in ENDED_STATES)
    marks = ", ".join("?" * len(states))
    _rollback(conn)
    return conn.execute(
        f"DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE state IN ({marks}) "
        "AND coalesce(ended_at, started_at, '') < ? LIMIT ?)",
        [*states, ended_before, chunk],
    ).rowcount
