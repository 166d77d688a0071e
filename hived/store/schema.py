"""Opening the SQLite file: folder and file permissions, pragmas, schema migrations.

The schema version is the single row of ``schema_version``. :data:`MIGRATIONS` is a list of SQL
scripts; script ``i`` takes the schema from version ``i`` to ``i + 1`` and runs in one
transaction with the version bump, so a crash mid-migration leaves the previous version intact.
A file whose version is newer than :data:`SCHEMA_VERSION` was written by a newer hived and is
refused. Add a migration by appending a script; never edit one that has shipped.

Every way the file can fail to open (not a database, damaged, not readable or writable, a
newer schema) raises :class:`~hived.core.errors.StoreError` naming the path and what to do.
The store is never replaced by a new empty one behind the operator's back.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final

from hived.core.errors import StoreError, StoreUnusable
from hived.core.history import search_text_json

log = logging.getLogger(__name__)

DB_NAME: Final = "hived.db"
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
BUSY_TIMEOUT_MS: Final = 10_000
JOURNAL_SIZE_LIMIT_BYTES: Final = 16 << 20
"""The WAL file is truncated back to this size after a checkpoint that emptied it."""

SEARCH_TEXT_FUNCTION: Final = "hived_search_text"
"""The SQL name of :func:`~hived.core.history.search_text_json` on the writer's connection
(the index follower's statement calls it)."""

Connect = Callable[[Path], sqlite3.Connection]
"""Opens a connection to the database file (a parameter, so tests can wrap connections)."""

MIGRATIONS: Final[tuple[str, ...]] = (
    # 0 → 1: events, the per-topic seq range, sessions.
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts TEXT NOT NULL,
        kind TEXT NOT NULL,
        session TEXT,
        data TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_topic_seq ON events (topic, seq);
    CREATE INDEX events_session_ts ON events (session, ts);
    CREATE TABLE topics (
        topic TEXT PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        agent TEXT NOT NULL,
        state TEXT NOT NULL,
        pid INTEGER,
        pid_start INTEGER,
        cwd TEXT,
        observed INTEGER NOT NULL,
        started_at TEXT,
        ended_at TEXT,
        exit_code INTEGER,
        usage TEXT NOT NULL,
        record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sessions_started_at ON sessions (started_at);
    """,
    # 1 → 2: the lookups of live sessions and of a session by name, without a table scan.
    """
    CREATE INDEX sessions_state ON sessions (state, started_at);
    CREATE INDEX sessions_name ON sessions (name, started_at);
    """,
    # 2 → 3: how far into each agent's spool the kept events go (DESIGN §11: the shim).
    """
    CREATE TABLE spool_marks (
        key TEXT PRIMARY KEY,
        offset INTEGER NOT NULL,
        idx INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 3 → 4 (history, issue 16): the search index, the usage ledger (a row per turn, and its sums
    # per day and session), how far the follower that keeps them has read the events table, and
    # the sessions that were forgotten.
    """
    CREATE VIRTUAL TABLE events_fts USING fts5 (text, tokenize = 'unicode61 remove_diacritics 2');
    CREATE TABLE history_state (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE usage_ledger (
        id INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        session TEXT NOT NULL,
        name TEXT,
        agent TEXT,
        cwd TEXT,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        turns INTEGER NOT NULL
    );
    CREATE INDEX usage_ledger_ts ON usage_ledger (ts);
    CREATE INDEX usage_ledger_session ON usage_ledger (session);
    CREATE TABLE usage_daily (
        day TEXT NOT NULL,
        session TEXT NOT NULL,
        name TEXT,
        agent TEXT,
        cwd TEXT,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        turns INTEGER NOT NULL,
        PRIMARY KEY (day, session)
    ) WITHOUT ROWID;
    CREATE INDEX usage_daily_session ON usage_daily (session);
    CREATE TABLE usage_totals (
        session TEXT PRIMARY KEY,
        usage TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE forgotten (
        session TEXT PRIMARY KEY,
        at TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 4 → 5: one epoch per daemon run; where each topic stood when a run ended uncleanly
    # (resume positions across a crash, docs/protocol.md §6).
    """
    CREATE TABLE epochs (
        epoch INTEGER PRIMARY KEY,
        started_at TEXT NOT NULL,
        clean INTEGER NOT NULL
    );
    CREATE TABLE fences (
        epoch INTEGER NOT NULL,
        topic TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (epoch, topic)
    ) WITHOUT ROWID;
    """,
    # 5 → 6: the notifications outbox (DESIGN §12), written in the transaction of the event
    # that gave birth to each one; the dashboards' Web Push subscriptions.
    """
    CREATE TABLE notifications (
        id TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        key TEXT NOT NULL,
        session TEXT,
        topic TEXT NOT NULL,
        seq INTEGER NOT NULL,
        born_at REAL NOT NULL,
        due_at REAL NOT NULL,
        status TEXT NOT NULL,
        outcome TEXT,
        attempts INTEGER NOT NULL,
        done_at REAL,
        item TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX notifications_status ON notifications (status, due_at);
    CREATE INDEX notifications_born ON notifications (born_at);
    CREATE TABLE push_subscriptions (
        endpoint TEXT PRIMARY KEY,
        p256dh TEXT NOT NULL,
        auth TEXT NOT NULL,
        token_name TEXT NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
)
"""Forward migrations; see the module docstring."""

SCHEMA_VERSION: Final = len(MIGRATIONS)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any thread.

    Each connection is used by one thread at a time: the writer's by the store's writer, each
    reader's by the read it serves.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def prepare_dir(directory: Path) -> None:
    """Create the state folder (0700) if missing.

    An existing folder is left as it is, with a warning when others can read it. Nothing in it
    is touched: the daemon locks the folder (:mod:`hived.store.lock`) before
    :func:`prepare_files` and the database.
    """
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"{directory}: state.dir is not a folder; point state.dir at a folder")
    try:
        if not directory.exists():
            directory.mkdir(mode=DIR_MODE, parents=True)
            directory.chmod(DIR_MODE)
        else:
            mode = stat.S_IMODE(directory.stat().st_mode)
            if mode & 0o077:
                log.warning(
                    "store: %s is open to other users (mode %04o); chmod 0700 it", directory, mode
                )
    except OSError as exc:
        raise _cannot_open(directory / DB_NAME, exc) from exc


def prepare_files(directory: Path) -> Path:
    """Make the database (0600) in the state folder if missing; the db path.

    A new database is made under another name, given its schema and only then renamed into
    place: so ``hived.db`` is never empty once made, and an empty one is a store that was
    truncated or lost, refused (:class:`~hived.core.errors.StoreUnusable`) rather than taken
    for a new one. An existing database file that others can read is tightened to 0600, with
    its WAL and shared memory files (SQLite gives those the database file's mode).
    """
    path = directory / DB_NAME
    try:
        if not path.exists():
            _create_database(path)
        elif path.stat().st_size == 0:
            raise StoreUnusable(
                f"{path}: the event store is empty (0 bytes): it was truncated or lost, and "
                "hived will not start over in its place (the seqs clients hold would be handed "
                f"out again): restore a backup, or move it aside (mv {path} {path}.empty) to "
                "start with an empty store"
            )
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
            file = directory / name
            if file.exists() and stat.S_IMODE(file.stat().st_mode) & 0o077:
                file.chmod(FILE_MODE)
    except StoreError:
        raise
    except OSError as exc:
        raise _cannot_open(path, exc) from exc
    return path


def _create_database(path: Path) -> None:
    """Make ``path`` with the current schema, by way of a file of another name."""
    new = path.with_name(path.name + ".new")
    for leftover in (new, Path(f"{new}-wal"), Path(f"{new}-shm")):
        leftover.unlink(missing_ok=True)  # from a start killed half-way
    os.close(os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE))
    open_database(new).close()
    os.replace(new, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cannot_open(path: Path, exc: OSError) -> StoreError:
    if isinstance(exc, PermissionError):
        return StoreUnusable(
            f"{path}: cannot open the event store: {exc.strerror}; the daemon's user needs "
            f"read and write access to {path.parent} and its files (chown it, mode 0700)"
        )
    return StoreError(
        f"{path}: cannot open the event store: {exc.strerror or exc}; check state.dir"
    )


def open_database(path: Path, connect: Connect = connect) -> sqlite3.Connection:
    """Open the writer's connection: WAL, durable commits, schema migrated to the current version.

    ``synchronous = FULL`` makes each commit durable (an fsync of the WAL); the store commits a
    few times per ``sync_interval_ms``, not per event, so this costs little.
    """
    conn: sqlite3.Connection | None = None
    try:
        conn = connect(path)
        version = _current_version(conn)
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StoreUnusable(
                f"{path}: this SQLite file was not made by hived (it has tables but no "
                "schema_version); hived will not change it: point state.dir at another folder"
            )
        if version == 0:
            # Must precede the first table; lets retention give pages back to the file system.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (still {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
        migrate(conn, path, version)
        probe_writable(conn)
        conn.create_function(SEARCH_TEXT_FUNCTION, 2, search_text_json, deterministic=True)
    except StoreError:
        if conn is not None:
            conn.close()
        raise
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise open_error(path, exc) from exc
    return conn


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """Raise StoreUnusable when SQLite finds the file damaged (``PRAGMA quick_check``: every
    page is read, so a page broken in the middle of the file is found now, not by a write)."""
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise StoreUnusable(
            f"{path}: the event store is damaged ({'; '.join(problems)[:300]}); hived will not "
            f"replace it: restore a backup, or move it aside (mv {path} {path}.broken) to start "
            "with an empty store"
        )


def _current_version(conn: sqlite3.Connection) -> int:
    """The schema version; 0 for an empty file (this reads the header: garbage fails here)."""
    found = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()[0]
    if not found:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Apply every migration after ``version``, each in its own transaction."""
    if version > SCHEMA_VERSION:
        raise StoreUnusable(
            f"{path}: the store has schema version {version}, newer than this hived knows "
            f"({SCHEMA_VERSION}); run the newer hived that wrote it, or restore a backup"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            for statement in _statements(MIGRATIONS[target - 1]):
                conn.execute(statement)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info("store: %s: schema migrated to version %d", path, target)


def probe_writable(conn: sqlite3.Connection) -> None:
    """Raise ``sqlite3.Error`` unless the connection can write (a read-only file opens fine)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE schema_version SET version = version")
    finally:
        conn.execute("ROLLBACK")


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (scripts hold no ``;`` inside literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def open_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """The error for an open failure: :class:`~hived.core.errors.StoreUnusable` when starting
    again cannot help (a damaged file, no access), else :class:`~hived.core.errors.StoreError`."""
    message = describe_open_error(path, exc)
    lowered = str(exc).lower()
    if any(word in lowered for word in _UNUSABLE_WORDS):
        return StoreUnusable(message)
    return StoreError(message)


_DAMAGED_WORDS: Final = ("not a database", "malformed", "corrupt")
_NO_ACCESS_WORDS: Final = ("readonly", "unable to open", "permission")
_UNUSABLE_WORDS: Final = _DAMAGED_WORDS + _NO_ACCESS_WORDS


def describe_open_error(path: Path, exc: sqlite3.Error) -> str:
    """A message for an open failure: the path, SQLite's words and what to do about it."""
    text = str(exc)
    lowered = text.lower()
    if any(word in lowered for word in _DAMAGED_WORDS):
        hint = (
            "the file is not a hived store or is damaged; hived will not replace it: move it "
            f"aside (mv {path} {path}.broken) to start with an empty store, or restore a backup"
        )
    elif any(word in lowered for word in _NO_ACCESS_WORDS):
        hint = (
            f"the daemon's user needs read and write access to {path.parent} and the files in "
            "it (chown them to that user; mode 0700 for the folder, 0600 for the files)"
        )
    elif "locked" in lowered or "busy" in lowered:
        hint = f"another process holds it: is another hived running with state.dir {path.parent}?"
    elif "full" in lowered:
        hint = f"the file system of {path.parent} is full; free some space"
    else:
        hint = "check the file and its folder"
    return f"{path}: cannot open the event store: {text}; {hint}"
