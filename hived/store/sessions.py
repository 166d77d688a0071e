"""Reads of the sessions table, merged with the summaries the writer has not committed yet.

They run on the trio thread, on a connection of their own, and each reads a handful of rows
by index (live states, a name, an id or an id range) or a page: every row read costs a JSON
parse. A queued summary is newer than the kept row of its session and replaces it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from hived.core.errors import StoreError
from hived.core.events import utc_timestamp
from hived.core.sessions import SessionSummary
from hived.store import sql
from hived.store.schema import Connect

T = TypeVar("T")


def normalize_time(text: str) -> str:
    """An ISO 8601 time in the store's own format (UTC, milliseconds, ``Z``), which sorts."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return utc_timestamp(moment.timestamp())


def newest_first(s: SessionSummary) -> tuple[str, str]:
    """The sort key of sessions, newest start first when reversed (as the SQL orders them)."""
    return (s.started_at or "", s.id)


class SessionQueries:
    """The store's session lookups (see the module docstring); ``queued`` gives the summaries
    not yet committed, by id."""

    def __init__(
        self, path: Path, connect: Connect, queued: Callable[[], dict[str, SessionSummary]]
    ) -> None:
        self._path = path
        self._connect = connect
        self._queued = queued
        self._conn: sqlite3.Connection | None = None

    def select(
        self,
        states: Collection[str] | None,
        agent: str | None,
        since: str | None,
        limit: int | None,
    ) -> list[SessionSummary]:
        """Sessions in one of ``states`` (any, if None), of ``agent``, started at or after
        ``since``, newest start first, at most ``limit``."""
        wanted = None if states is None else {str(s) for s in states}
        started_since = None if since is None else normalize_time(since)
        queued = self._queued()
        kept = []
        if wanted is None or wanted:
            extra = None if limit is None else limit + len(queued)
            kept = self._run(sql.select_sessions, wanted, agent, started_since, extra)

        def matches(s: SessionSummary) -> bool:
            return (
                (wanted is None or str(s.state) in wanted)
                and (agent is None or s.agent == agent)
                and (started_since is None or (s.started_at or "") >= started_since)
            )

        found = sorted(_merge(kept, queued, matches), key=newest_first, reverse=True)
        return found if limit is None else found[:limit]

    def find(self, ref: str, limit: int) -> list[SessionSummary]:
        """The session with id ``ref``; else the newest named ``ref``; else up to ``limit``
        whose id starts with ``ref`` upper-cased, by id; the first of those that is not empty."""
        by_id = self.get(ref)
        if by_id is not None:
            return [by_id]
        queued = self._queued()
        named = self._run(sql.select_sessions_named, ref, 1 + len(queued))
        found = _merge(named, queued, lambda s: s.name == ref)
        if found:
            return [max(found, key=newest_first)]
        prefix = ref.upper()
        if not prefix:
            return []
        prefixed = self._run(sql.select_sessions_prefixed, prefix, limit + len(queued))
        found = _merge(prefixed, queued, lambda s: s.id.startswith(prefix))
        return sorted(found, key=lambda s: s.id)[:limit]

    def named(self, name: str, limit: int) -> list[SessionSummary]:
        """The sessions called ``name``, newest start first, at most ``limit`` (by index)."""
        queued = self._queued()
        kept = self._run(sql.select_sessions_named, name, limit + len(queued))
        found = _merge(kept, queued, lambda s: s.name == name)
        return sorted(found, key=newest_first, reverse=True)[:limit]

    def get(self, session_id: str) -> SessionSummary | None:
        """One session's latest summary, or None."""
        queued = self._queued().get(session_id)
        if queued is not None:
            return queued
        return self._run(sql.select_session, session_id)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, select: Callable[..., T], *args: Any) -> T:
        """``select(connection, *args)``; StoreError if SQLite fails."""
        try:
            if self._conn is None:
                self._conn = self._connect(self._path)
                self._conn.execute("PRAGMA query_only = 1")
            return select(self._conn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: cannot read sessions: {exc}") from exc


def _merge(
    kept: list[SessionSummary],
    queued: dict[str, SessionSummary],
    matches: Callable[[SessionSummary], bool],
) -> list[SessionSummary]:
    """``kept`` (rows the SQL matched) and the queued summaries that ``matches``; a queued
    summary replaces the kept row of its session, whether it still matches or not."""
    found = {s.id: s for s in kept if s.id not in queued}
    found.update((s.id, s) for s in queued.values() if matches(s))
    return list(found.values())
