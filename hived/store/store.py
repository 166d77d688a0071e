"""The :class:`Store`: the hub's history and the session recorder, over one SQLite file.

See :mod:`hived.store` for how it works and the rules it keeps.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import orjson
import trio
from prometheus_client import Histogram

from hived.agents.orphans import is_running, stop_orphan
from hived.core.config import Config, StateConfig
from hived.core.errors import StoreError
from hived.core.events import Event, SpoolMark, session_topic, utc_timestamp
from hived.core.logtext import printable
from hived.core.sessions import SessionSummary
from hived.store import schema, sql
from hived.store.forget import forget_session
from hived.store.indexer import Indexer, IndexStats, followed_upto
from hived.store.ledger import usage
from hived.store.lock import StateLock
from hived.store.retention import Retention
from hived.store.search import SearchFilters, search
from hived.store.sessions import SessionQueries
from hived.store.writer import BatchWriter

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_PENDING_EVENTS: Final = 20_000
"""Events queued and not yet committed past which :meth:`Store.wait_writable` blocks sources.
Two of the writer's batches: enough to keep it busy, and a burst holds ~15 MiB at most (a
waiting 300-byte event takes ~700 bytes; 100,000 of them held 70 MiB and more)."""
READERS_MAX: Final = 4
"""Reads running at once, each on its own connection."""
LOST_REASON: Final = "daemon stopped while the session ran"
FIND_LIMIT: Final = 10
"""Most sessions :meth:`Store.find_sessions` returns for an ambiguous id prefix."""
OBSERVED_NAMESAKES: Final = 20
"""Sessions of one name read to find a kept observed session by its agent session id."""


@attrs.frozen
class StoreStats:
    """The store's figures for ``status``."""

    path: str
    """The database file."""
    size_bytes: int
    """The database file and its WAL, on disk."""
    events: int
    """Events kept (committed)."""
    pending: int
    """Events queued or being written, not yet committed."""
    pending_bytes: int
    """The length of their frames."""
    saturated: bool
    """The pending events are at a bound (``state.max_pending_bytes``, or
    :data:`MAX_PENDING_EVENTS`): agents' output waits, and hooks are answered 503."""
    events_lost: int
    """Events dropped because writing them failed for a reason other than the disk's."""
    write_lag_ms: int
    """Age of the oldest item not yet committed (0 when none is pending)."""
    last_commit: str | None
    """When the last batch was committed."""
    error: str | None
    """Why writes fail now (disk full, read-only…); None while they work."""
    commits: int
    """Transactions committed since start."""
    events_pruned: int
    """Events deleted by retention since start."""
    sessions_lost: int
    """Sessions found live in the store at start and marked LOST."""
    orphans_reaped: int
    """Processes of such sessions that still ran and were stopped."""
    index: IndexStats
    """The search index and usage ledger: how far behind the committed events they are."""


class Store:
    """Events and sessions in SQLite: made by :meth:`open`, written while :meth:`serve` runs."""

    def __init__(
        self,
        state: StateConfig,
        path: Path,
        writer: sqlite3.Connection,
        connect: schema.Connect,
        max_pending: int,
        lock: StateLock,
    ) -> None:
        self.path = path
        self._lock = lock
        self._connect = connect
        self._writer = writer
        self._batches = BatchWriter(
            writer, path, state.sync_interval_ms / 1000, max_pending, state.max_pending_bytes
        )
        self._readers: list[sqlite3.Connection] = []
        self._read_limiter = trio.CapacityLimiter(READERS_MAX)
        self._sessions = SessionQueries(path, connect, self._batches.queued_sessions)
        self._first: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._events_at_open = 0
        self._retention = Retention(
            self._batches, state.retention_days, state.max_bytes, self._pruned_to
        )
        self._indexer = Indexer(self._batches)
        self._forgotten: dict[str, str] = {}
        self._orphans: list[SessionSummary] = []
        self._orphans_reaped = 0
        self.recovered: tuple[SessionSummary, ...] = ()
        """The sessions found live at open, as now recorded: LOST."""
        self.epoch = 0
        """This daemon run's number in the store (resume positions carry it)."""
        self.lost_events = 0
        """Events not written when :meth:`drain` ended (a full or failing disk): lost."""
        self._closed = False

    @classmethod
    def open(
        cls,
        state: StateConfig,
        *,
        connect: schema.Connect = schema.connect,
        max_pending: int = MAX_PENDING_EVENTS,
        held: Collection[str] = (),
    ) -> Store:
        """Open (or create) the store in ``state.dir``; raise StoreError if it cannot be used.

        First locks the folder (:class:`~hived.store.lock.StateLock`, until :meth:`close`): while
        another daemon holds it, StoreError, with the database untouched. The kernel drops the
        lock when its process dies, even by SIGKILL, so a killed daemon never blocks a start.
        Then continues the seq counters, marks sessions recorded as live LOST, and notes which
        of their processes still run (for :meth:`reap_orphans`). ``connect`` opens each SQLite
        connection; ``max_pending`` is the backpressure bound (see :meth:`wait_writable`).
        Sessions ``held`` (their agents run on under their shims) are left as they are.
        """
        directory = Path(state.dir)
        schema.prepare_dir(directory)
        lock = StateLock.acquire(directory)
        try:
            path = schema.prepare_files(directory)
            writer = schema.open_database(path, connect)
            try:
                schema.check_integrity(writer, path)
                topics = sql.load_topics(writer)
                forgotten = dict(writer.execute("SELECT session, at FROM forgotten").fetchall())
                indexed = followed_upto(writer)
                recovered = sql.recover_sessions(writer, utc_timestamp(), LOST_REASON, held)
                epoch = sql.begin_epoch(writer, utc_timestamp())
            except sqlite3.Error as exc:
                writer.close()
                raise schema.open_error(path, exc) from exc
            except BaseException:
                writer.close()
                raise
        except BaseException:
            lock.release()
            raise
        store = cls(state, path, writer, connect, max_pending, lock)
        store.epoch = epoch
        store._forgotten = forgotten
        store._indexer.followed_upto = indexed
        for topic, (first, last) in topics.items():
            store._first[topic] = first
            store._last[topic] = store._batches.committed_seqs[topic] = last
            store._events_at_open += last - first + 1
        store.recovered = tuple(after for _, after in recovered)
        for before, _ in recovered:
            store._note_lost(before)
        log.info(
            "store: %s: %d events in %d topics; %d session%s marked LOST",
            path,
            store._events_at_open,
            len(topics),
            len(recovered),
            "" if len(recovered) == 1 else "s",
        )
        return store

    def _note_lost(self, s: SessionSummary) -> None:
        log.warning(
            "store: session %s (%s) was %s when hived stopped: LOST",
            s.id,
            printable(s.name),
            s.state,
        )
        if s.observed or s.pid is None or s.pid_start is None:
            return
        if is_running(s.pid, s.pid_start):
            log.warning("store: session %s: its process %d still runs: an orphan", s.id, s.pid)
            self._orphans.append(s)
        else:
            log.info("store: session %s: process %d is gone (or the pid is reused)", s.id, s.pid)

    async def reap_orphans(self, grace_s: float) -> list[str]:
        """Stop the process groups of the orphans found at open (SIGTERM, grace, SIGKILL).

        A process is signalled only while its pid and start time both match the record. Stops
        them all at once; returns the ids of the sessions whose process was stopped.
        """
        orphans, self._orphans = self._orphans, []
        stopped: list[str] = []

        async def stop(s: SessionSummary, pid: int, start: int) -> None:
            outcome = await stop_orphan(pid, start, grace_s)
            if outcome is None:
                log.info("store: session %s: process %d ended before it was stopped", s.id, pid)
                return
            log.warning("store: session %s: orphaned process group %d %s", s.id, pid, outcome)
            stopped.append(s.id)
            reason = f"{LOST_REASON}; its process was {outcome} at restart"
            self.recovered = tuple(
                attrs.evolve(r, reason=reason) if r.id == s.id else r for r in self.recovered
            )
            self.record_session(next(r for r in self.recovered if r.id == s.id))

        async with trio.open_nursery() as nursery:
            for s in orphans:
                if s.pid is not None and s.pid_start is not None:
                    nursery.start_soon(stop, s, s.pid, s.pid_start)
        self._orphans_reaped += len(stopped)
        return stopped

    # The hub's History, and the supervisor's SessionRecorder.

    def last_seqs(self) -> dict[str, int]:
        """The last seq of every topic (kept or recorded), to continue the hub's counters."""
        return dict(self._last)

    def record(self, event: Event, frame: str) -> None:
        """Queue one event for the writer; never blocks. ``frame`` is encode_event(event); its
        ``mark`` (an event made from an agent's output) is committed with it."""
        self._batches.add_event(event, frame)
        topic = event.topic
        if topic not in self._first:
            self._first[topic] = event.seq
        self._last[topic] = event.seq

    def record_session(self, summary: SessionSummary) -> None:
        """Queue a session's summary (the latest of a session replaces a queued one)."""
        self._batches.add_session(summary)

    async def keep_session(self, summary: SessionSummary) -> None:
        """Record a session's summary and return once it is on disk (a session about to start
        an agent: a crash from then on leaves the next daemon its record to take it up by);
        :class:`~hived.core.errors.StoreError` when the disk refuses it."""
        self._batches.add_session(summary)
        if not await self._batches.commit_now():
            raise StoreError(self._batches.error or f"cannot write to {self.path}")

    # The notifications' outbox (hived.notify.service.Outbox).

    def add_statement(self, statement: str, params: tuple[Any, ...]) -> None:
        """Queue a statement for the transaction that commits the events recorded so far."""
        self._batches.add_statement(statement, params)

    def committed(self, topic: str, seq: int) -> bool:
        """Whether the event ``seq`` of ``topic`` (and what rode with it) is committed."""
        return self._batches.committed_seqs.get(topic, 0) >= seq

    @property
    def commit_seconds(self) -> Histogram:
        """The time of each batch commit (a histogram, for ``GET /metrics``)."""
        return self._batches.commit_seconds

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in a worker thread on the writer's connection."""
        return await self._batches.run(fn, *args)

    def oldest_seq(self, topic: str) -> int | None:
        """The smallest seq kept for ``topic``; None for a topic never seen.

        When retention removed every event of a topic, this is its last seq + 1: nothing at or
        before the last seq is kept.
        """
        return self._first.get(topic)

    @property
    def pending(self) -> int:
        """Events queued or being written, not yet committed."""
        return self._batches.pending

    @property
    def saturated(self) -> bool:
        """Whether the events waiting to be written are at a bound (see :meth:`wait_writable`):
        sources that cannot wait are refused meanwhile (hooks: 503)."""
        return self._batches.saturated

    async def wait_writable(self) -> None:
        """Return once fewer than ``max_pending`` events, and fewer than
        ``state.max_pending_bytes`` bytes of them, wait to be written.

        Sources that can wait (agent output readers) await this before they publish; while the
        writer is behind or the disk refuses writes, they stop reading their agents. Once
        blocked, they resume when the queue is down to half the bound.
        """
        await self._batches.wait_writable()

    async def read(
        self, topic: str, after: int, upto: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, str]]:
        """``(seq, frame)`` of ``topic``'s events with ``after < seq <= upto``, ascending, at
        most ``limit`` — and, with ``max_bytes``, about that many bytes at most (always at
        least one event).

        Committed events come from the database (in a worker thread, on a read connection of
        its own); the others from the writer's queue, so every recorded event can be read.
        """
        # The only awaits come before a look at the committed seq: a batch committed during an
        # await has left the queue, so the queue must be read with no await since that look.
        await trio.lowlevel.checkpoint()
        frames: list[tuple[int, str]] = []
        last = after
        committed = self._batches.committed_seqs
        left_bytes = max_bytes
        while len(frames) < limit and last < upto and (left_bytes is None or left_bytes > 0):
            stored = min(upto, committed.get(topic, 0))
            if last >= stored:
                queued = self._batches.queued_frames(topic, last, upto, limit - len(frames))
                frames += _within(queued, left_bytes, first=not frames)
                break
            page = await self._read_db(topic, last, stored, limit - len(frames), left_bytes)
            if frames and left_bytes is not None:
                page = _within(page, left_bytes, first=False)
                if not page:
                    break
            # An empty page: retention removed those events; go on after them.
            last = page[-1][0] if page else stored
            frames += page
            if left_bytes is not None:
                left_bytes -= sum(len(frame) for _, frame in page)
        return frames

    async def _read_db(
        self, topic: str, after: int, upto: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, str]]:
        try:
            return await self._read_with(sql.read_frames, topic, after, upto, limit, max_bytes)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read events of {topic}: {exc}") from exc

    async def _read_with(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in a worker thread, on a read connection of the pool."""
        conn = self._readers.pop() if self._readers else None
        used, result = await trio.to_thread.run_sync(
            self._read_sync, conn, fn, args, limiter=self._read_limiter
        )
        if self._closed:
            used.close()
        else:
            self._readers.append(used)
        return result

    def _read_sync(
        self, conn: sqlite3.Connection | None, fn: Callable[..., T], args: tuple[Any, ...]
    ) -> tuple[sqlite3.Connection, T]:
        if conn is None:
            conn = self._connect(self.path)
            conn.execute("PRAGMA query_only = 1")
        try:
            result = fn(conn, *args)
        except BaseException:
            conn.close()
            raise
        return conn, result

    # History queries.

    def list_sessions(
        self,
        state: str | None = None,
        agent: str | None = None,
        since: str | None = None,
        limit: int | None = None,
        *,
        states: Collection[str] | None = None,
    ) -> list[SessionSummary]:
        """Kept sessions, ended ones too, newest start first; queued summaries included.

        ``state`` keeps one state and ``states`` any of several (both given: the one, if it is
        among them); ``since`` (ISO 8601) keeps the sessions whose current run started at or
        after it; ``limit`` is applied in SQL. It runs on the caller's thread and parses each
        row it reads: ask for what you need, e.g. ``states=LIVE_STATES`` reads only the live
        sessions (by index), however many ended ones are kept.
        """
        if state is not None:
            states = [state] if states is None or state in {str(s) for s in states} else []
        return self._sessions.select(states, agent, since, limit)

    def find_sessions(self, ref: str, limit: int = FIND_LIMIT) -> list[SessionSummary]:
        """The kept sessions that ``ref`` may name, read by index; queued summaries included.

        The session whose id is ``ref``, if there is one; else the newest session named
        ``ref``, if any; else the sessions whose id starts with ``ref`` upper-cased (ids are
        ULIDs), by id, at most ``limit``. So: one session, several when ``ref`` is an ambiguous
        id prefix, or none. Ask ``limit + 1`` to learn whether there are more than ``limit``.
        """
        return self._sessions.find(ref, limit)

    def kept_observed(self, name: str, agent_session_id: str) -> SessionSummary | None:
        """The newest kept observed session called ``name`` with this agent session id, or None.

        Observed sessions are named after their agent session id, so this reads by the name
        index; a hook from an earlier run's session brings that session back with it.
        """
        for summary in self._sessions.named(name, OBSERVED_NAMESAKES):
            if summary.observed and summary.agent_session_id == agent_session_id:
                return summary
        return None

    async def spool_mark(self, key: str) -> SpoolMark | None:
        """The committed mark of one agent spool (see :class:`~hived.core.events.SpoolMark`)."""
        return await self._batches.run(sql.select_mark, key)

    async def forget_marks(self, prefix: str) -> None:
        """Drop the marks of a run whose spool is gone (``<session id>/<agent pid>/``)."""
        await self._batches.run(sql.delete_marks, prefix)

    def get_session(self, session_id: str) -> SessionSummary | None:
        """One session's latest summary (queued or kept), or None."""
        return self._sessions.get(session_id)

    async def events(
        self,
        session_id: str,
        since: int | None = None,
        limit: int = 100,
        max_bytes: int | None = None,
    ) -> list[dict[str, Any]]:
        """A page of one session's events (its topic's, ``seq`` > since), as wire objects: at
        most ``limit`` and about ``max_bytes`` (at least one event)."""
        topic = session_topic(session_id)
        frames = await self.read(topic, since or 0, self._last.get(topic, 0), limit, max_bytes)
        return [orjson.loads(frame) for _, frame in frames]

    # Search, the usage ledger, forgetting (issue 16).

    async def search(
        self, query: str, filters: SearchFilters, limit: int, before: int | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of search hits, newest first, and the next page's cursor (see
        :mod:`hived.store.search`). Raises QueryError for a query FTS5 cannot parse."""
        try:
            return await self._read_with(search, query, filters, limit, before)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot search: {exc}") from exc

    async def usage(self, by: str, since: str | None, until: str | None) -> dict[str, Any]:
        """The usage ledger grouped ``by`` day, template, session or cwd over a period."""
        try:
            return await self._read_with(usage, by, since, until)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the usage ledger: {exc}") from exc

    async def index_now(self) -> None:
        """Commit what is queued, then index and count it (the follower does this by itself,
        within ``sync_interval_ms`` plus a quarter second)."""
        await self.drain()
        await self._indexer.catch_up()

    def forgotten(self, session_id: str) -> str | None:
        """When a session was forgotten (:meth:`forget`), or None."""
        return self._forgotten.get(session_id)

    async def forget(self, session_id: str) -> int:
        """Delete every trace of an ended session (:mod:`hived.store.forget`); its events
        deleted. What is queued is committed first, so nothing of it is written after."""
        await self.drain()
        at = utc_timestamp()
        try:
            deleted = await self._batches.run(forget_session, session_id, at)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot forget session {session_id}: {exc}") from exc
        topic = session_topic(session_id)
        self._first.pop(topic, None)
        self._last.pop(topic, None)
        self._batches.committed_seqs.pop(topic, None)
        self._events_at_open -= deleted
        self._forgotten[session_id] = at
        log.info("store: session %s forgotten (%d events)", session_id, deleted)
        return deleted

    # The service.

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit queued events in batches and apply retention until cancelled; then close."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._retention.serve)
                nursery.start_soon(self._indexer.serve)
                task_status.started()
                await self._batches.serve()
        finally:
            self.close()

    async def drain(self) -> None:
        """Commit everything queued (retrying a failing disk until the caller's deadline); what
        could not be written by then, and what the writer dropped on the way (a batch failing
        for a reason other than the disk's), is counted in :attr:`lost_events`."""
        count = self.pending
        try:
            await self._batches.drain()
        finally:
            unwritten = self.pending if self._batches.has_pending else 0
            self.lost_events = unwritten + self._batches.events_lost
        log.info("store: drained (%d events committed)", count)

    async def fence(self, topic: str, epoch: int) -> int | None:
        """Where ``topic`` stood in the store when run ``epoch`` ended, if that run ended
        uncleanly (what it sent past there may be lost, and its seqs handed out again); None
        for the current run, a clean one or an unknown one."""
        if epoch == self.epoch:
            await trio.lowlevel.checkpoint()
            return None
        try:
            return await self._batches.run(sql.select_fence, epoch, topic)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the fences of {topic}: {exc}") from exc

    def reload(self, config: Config) -> None:
        """Apply new retention and sync settings (``state.dir`` changes at the next start)."""
        new = config.state
        self._batches.interval_s = new.sync_interval_ms / 1000
        self._batches.max_pending_bytes = new.max_pending_bytes
        self._retention.reload(new.retention_days, new.max_bytes)

    async def prune(self) -> int:
        """Apply retention now (it also runs by itself while :meth:`serve` runs); events deleted."""
        return await self._retention.prune()

    def _pruned_to(self, first_seqs: dict[str, int]) -> None:
        for topic, first in first_seqs.items():
            self._first[topic] = max(self._first.get(topic, first), first)

    # Figures and closing.

    def stats(self) -> StoreStats:
        """The store's figures now."""
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                size += Path(f"{self.path}{suffix}").stat().st_size
        batches = self._batches
        return StoreStats(
            path=str(self.path),
            size_bytes=size,
            events=self._events_at_open + batches.committed_events - self._retention.pruned,
            pending=batches.pending,
            pending_bytes=batches.pending_bytes,
            saturated=batches.saturated,
            events_lost=batches.events_lost,
            write_lag_ms=batches.lag_ms(),
            last_commit=batches.last_commit,
            error=batches.error,
            commits=batches.commits,
            events_pruned=self._retention.pruned,
            sessions_lost=len(self.recovered),
            orphans_reaped=self._orphans_reaped,
            index=self._indexer.stats(),
        )

    def close(self) -> None:
        """Close every connection, then release the folder's lock; anything still queued is
        lost (:meth:`drain` first)."""
        if self._closed:
            return
        self._closed = True
        if self._batches.has_pending:
            log.warning(
                "store: closed with %d events and %d session summaries not written",
                self.pending,
                len(self._batches.queued_sessions()),
            )
        elif not self._batches.events_lost:
            # Every event this run published is kept: a client resuming from any of them
            # after the next start is resumed exactly (no fence for this run).
            try:
                sql.end_epoch(self._writer, self.epoch)
            except sqlite3.Error as exc:
                log.error("store: cannot record that this run ended cleanly: %s", exc)
        for conn in [self._writer, *self._readers]:
            conn.close()
        self._sessions.close()
        self._readers.clear()
        self._lock.release()


def _within(
    frames: list[tuple[int, str]], max_bytes: int | None, *, first: bool
) -> list[tuple[int, str]]:
    """The first of ``frames`` that fit in ``max_bytes`` (the very first anyway when ``first``:
    a page holds at least one event)."""
    if max_bytes is None:
        return frames
    size = 0
    for index, (_, frame) in enumerate(frames):
        size += len(frame)
        if size > max_bytes and (index or not first):
            return frames[:index]
    return frames
