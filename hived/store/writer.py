"""The batch writer: the queue of events and summaries, and the one task that commits it.

How it works: :meth:`BatchWriter.add_event` and :meth:`~BatchWriter.add_session` append to the
queue and never block. :meth:`~BatchWriter.serve` waits until the oldest queued item is
``interval_s`` old (or :data:`BATCH_EVENTS` are queued; or not at all while sources wait for
room, since the writer is then what they wait for), moves up to that many events and every
queued summary *in flight*, and commits them in one transaction in a worker thread. On success
they are gone from memory; on a database error they go back to the head of the queue, the
error is kept for ``stats`` (logged once), and the next attempt comes after a backoff. So an
item is always in exactly one of: the queue, in flight, the database — which is what lets
:meth:`~BatchWriter.queued_frames` serve every recorded event without a gap.

:meth:`~BatchWriter.add_statement` queues one SQL statement to run in the transaction that
commits the events queued before it (the notifications outbox, DESIGN §12: a notification is
recorded exactly when the event that gave birth to it is).

Any other error in a commit (a bug, not the disk) never ends the daemon: it is logged with its
traceback and the batch is retried like a failing disk's; a batch that fails so
:data:`UNEXPECTED_FAILURES_MAX` times in a row is dropped, its events counted in
``events_lost`` (a gap a replay then reports) so that it cannot block every event after it.

The queue is bounded for the sources that can wait (:meth:`~BatchWriter.wait_writable`) in
events and in bytes of frames alike: an agent printing 1 MiB lines to a failing disk fills the
byte bound long before the count.

Every use of the writer's connection (batches, retention steps) goes through :meth:`run`,
under one lock: SQLite has one writer at a time, and this way it never waits for a busy lock.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, TypeVar

import trio
from prometheus_client import Histogram

from hived.core.events import Event, SpoolMark, utc_timestamp
from hived.core.sessions import SessionSummary
from hived.memory import trim_heap
from hived.store import sql
from hived.store.sql import Pending

_FRAME: Final = itemgetter(5)
_MARK: Final = itemgetter(6)
_KEY: Final = itemgetter(0)

Statement = tuple[str, tuple[Any, ...]]
"""One SQL statement and its parameters."""

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_EVENTS: Final = 10_000
"""Most events written in one transaction; a queue this long is written without waiting."""
RETRY_MAX_S: Final = 5.0
"""Longest wait between two attempts to write to a failing disk."""
UNEXPECTED_FAILURES_MAX: Final = 3
"""Attempts at a batch that fails with an error other than SQLite's before it is dropped."""
COMMIT_BUCKETS_S: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
"""Upper bounds of the commit-time histogram: a small batch on an SSD takes well under a
millisecond, 10,000 events on a slow or failing disk seconds."""
TRIM_AFTER_EVENTS: Final = 5_000
"""Once this many events were pending at once and all are written, the C heap is trimmed
(:func:`~hived.memory.trim_heap`): a burst's memory goes back to the system."""


def last_marks(events: list[Pending]) -> list[SpoolMark]:
    """The last spool mark of each spool among ``events``: what a batch that commits them
    commits as how far the kept events go (DESIGN §11). Built in C (a dict keeps the last mark
    of each key): it runs on the event loop's thread, once per batch of up to 10,000."""
    marks: list[SpoolMark] = list(filter(None, map(_MARK, events)))
    return list(dict(zip(map(_KEY, marks), marks, strict=True)).values())


class BatchWriter:
    """The queue in front of the database and the task that commits it (see the module doc)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        interval_s: float,
        max_pending: int,
        max_pending_bytes: int,
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        """Longest time an item waits in the queue before a commit is started."""
        self.max_pending = max_pending
        """Events not yet committed past which :meth:`wait_writable` blocks."""
        self.max_pending_bytes = max_pending_bytes
        """Bytes of frames not yet committed past which :meth:`wait_writable` blocks."""
        self.pending_bytes = 0
        """The length of the frames queued or in flight."""
        self.events_lost = 0
        """Events dropped after :data:`UNEXPECTED_FAILURES_MAX` unexpected failures."""
        self.committed_seqs: dict[str, int] = {}
        """The last committed seq per topic."""
        self.committed_events = 0
        """Events committed by this writer."""
        self.commits = 0
        self.last_commit: str | None = None
        self.commit_seconds = Histogram(
            "hived_store_commit_seconds",
            "How long each batch commit took (one observation per transaction).",
            buckets=COMMIT_BUCKETS_S,
            registry=None,
        )
        """Time of each successful batch commit, for ``GET /metrics``."""
        self.error: str | None = None
        self._conn = conn
        self._lock = trio.Lock()
        self._queue: list[Pending] = []
        self._queue_sessions: dict[str, SessionSummary] = {}
        self._queue_since: float | None = None
        self._inflight: list[Pending] = []
        self._inflight_sessions: dict[str, SessionSummary] = {}
        self._inflight_since: float | None = None
        self._queue_statements: list[tuple[int, Statement]] = []
        """Queued statements, each with the number of queued events before it."""
        self._inflight_statements: list[tuple[int, Statement]] = []
        self._nudge = trio.Event()
        self._writable: trio.Event | None = None
        self._retry_s = interval_s
        self._inflight_bytes = 0
        self._unexpected_failures = 0
        self._trim_due = False
        self._behind = False
        """Sources waited for room since the writer last had nothing queued: the event loop is
        busy with what they produce, so batches go in as one parameter, which takes the GIL
        once, not once per row (:func:`~hived.store.sql.write_batch`), and each is started as
        soon as the last is committed, without waiting for the interval or a full batch."""

    def add_event(self, event: Event, frame: str) -> None:
        """Queue one event; never blocks. Its data is in ``frame``: the event's dict is not
        kept (it would double what a waiting event costs in memory)."""
        if self._queue_since is None:
            self._queue_since = time.monotonic()
        self._queue.append(
            (event.topic, event.seq, event.ts, event.kind, event.session, frame, event.mark)
        )
        self.pending_bytes += len(frame)
        if len(self._queue) == 1 or len(self._queue) == BATCH_EVENTS:
            self._nudge.set()

    def add_session(self, summary: SessionSummary) -> None:
        """Queue a session summary (replacing a queued one of the same session); never blocks."""
        if self._queue_since is None:
            self._queue_since = time.monotonic()
        self._queue_sessions[summary.id] = summary
        self._nudge.set()

    def add_statement(self, statement: str, params: tuple[Any, ...]) -> None:
        """Queue a statement for the transaction that commits the events queued so far (and
        none queued after it); never blocks."""
        if self._queue_since is None:
            self._queue_since = time.monotonic()
        self._queue_statements.append((len(self._queue), (statement, params)))
        self._nudge.set()

    @property
    def pending(self) -> int:
        """Events queued or in flight: not yet committed."""
        return len(self._queue) + len(self._inflight)

    @property
    def saturated(self) -> bool:
        """Whether the queue is at either bound: sources that can wait are held back."""
        return self.pending >= self.max_pending or self.pending_bytes >= self.max_pending_bytes

    @property
    def has_pending(self) -> bool:
        """Whether anything (events or summaries) waits to be committed."""
        return self._queue_since is not None or self._inflight_since is not None

    def lag_ms(self) -> int:
        """Age of the oldest item not yet committed, 0 when there is none."""
        oldest = self._inflight_since if self._inflight_since is not None else self._queue_since
        return 0 if oldest is None else int((time.monotonic() - oldest) * 1000)

    def queued_sessions(self) -> dict[str, SessionSummary]:
        """Summaries not yet committed, by session id."""
        return self._inflight_sessions | self._queue_sessions

    def queued_frames(self, topic: str, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
        """``(seq, frame)`` not yet committed of ``topic`` with ``after < seq <= upto``, at most
        ``limit``."""
        frames: list[tuple[int, str]] = []
        # In flight, then queued: a topic's events appear in seq order across both.
        for queue in (self._inflight, self._queue):
            for event_topic, seq, _, _, _, frame, _ in queue:
                if event_topic == topic and after < seq:
                    if seq > upto or len(frames) == limit:
                        return frames
                    frames.append((seq, frame))
        return frames

    async def wait_writable(self) -> None:
        """Return once fewer than ``max_pending`` events and ``max_pending_bytes`` bytes wait;
        once blocked, at half of both."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.saturated:
            if not self._behind:
                self._behind = True
                self._nudge.set()  # a writer waiting for its interval starts now
            if self._writable is None:
                self._writable = trio.Event()
            await self._writable.wait()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in a worker thread, alone on the writer's connection."""
        async with self._lock:
            return await trio.to_thread.run_sync(fn, self._conn, *args)

    async def serve(self) -> None:
        """Commit the queue in batches until cancelled (see the module docstring)."""
        while True:
            if self._queue_since is None:
                self._behind = False
                await self._wait_nudge()
                continue
            due_s = self._queue_since + self.interval_s - time.monotonic()
            if due_s > 0 and len(self._queue) < BATCH_EVENTS and not self._behind:
                with trio.move_on_after(due_s):
                    await self._wait_nudge()
                continue
            if not await self._write_once():
                await trio.sleep(self._retry_s)

    async def commit_now(self) -> bool:
        """Commit what is queued now rather than at the end of the interval; True once it is on
        disk, False when the disk refused it (it stays queued, as always)."""
        await trio.lowlevel.checkpoint()
        # Summaries all go in the next batch: one successful write commits every one queued.
        return await self._write_once()

    async def drain(self) -> None:
        """Commit everything queued, retrying a failing disk until cancelled."""
        await trio.lowlevel.checkpoint()
        while self.has_pending:
            if not await self._write_once():
                await trio.sleep(self._retry_s)

    async def _wait_nudge(self) -> None:
        await self._nudge.wait()
        self._nudge = trio.Event()

    async def _write_once(self) -> bool:
        """Commit one batch of what is queued; False (all of it queued again) if that failed."""
        async with self._lock:
            if self._queue_since is None:
                return True
            self._take_batch()
            marks = last_marks(self._inflight)
            started = time.monotonic()
            try:
                committed = await trio.to_thread.run_sync(
                    sql.write_batch,
                    self._conn,
                    self._inflight,
                    list(self._inflight_sessions.values()),
                    marks,
                    [statement for _, statement in self._inflight_statements],
                    self._behind,
                )
            except sqlite3.Error as exc:
                self._requeue()
                self._write_failed(exc)
                return False
            except Exception as exc:
                self._unexpected_failure(exc)
                return False
            except BaseException:
                self._requeue()
                raise
            self.commit_seconds.observe(time.monotonic() - started)
            self._write_succeeded(committed)
            if self._trim_due and not self.has_pending:
                self._trim_due = False
                await trio.to_thread.run_sync(trim_heap)
            return True

    def _take_batch(self) -> None:
        if len(self._queue) >= TRIM_AFTER_EVENTS:
            self._trim_due = True
        self._inflight_since = self._queue_since
        if len(self._queue) <= BATCH_EVENTS:
            self._inflight, self._queue = self._queue, []
            self._queue_since = None
        else:
            # The rest keeps the batch's start time: it may overstate their age, never understate.
            self._inflight = self._queue[:BATCH_EVENTS]
            del self._queue[:BATCH_EVENTS]
        taken = len(self._inflight)
        self._inflight_statements = [s for s in self._queue_statements if s[0] <= taken]
        self._queue_statements = [(i - taken, s) for i, s in self._queue_statements if i > taken]
        self._inflight_sessions, self._queue_sessions = self._queue_sessions, {}
        self._inflight_bytes = sum(map(len, map(_FRAME, self._inflight)))

    def _requeue(self) -> None:
        shift = len(self._inflight)
        self._queue_statements = self._inflight_statements + [
            (i + shift, s) for i, s in self._queue_statements
        ]
        self._inflight_statements = []
        self._queue[:0] = self._inflight
        self._queue_sessions = self._inflight_sessions | self._queue_sessions
        if self._inflight_since is not None:
            queued = self._queue_since
            self._queue_since = (
                self._inflight_since if queued is None else min(queued, self._inflight_since)
            )
        self._inflight, self._inflight_sessions, self._inflight_since = [], {}, None
        self._inflight_bytes = 0

    def _unexpected_failure(self, exc: Exception) -> None:
        """A commit failed with an error that is not the database's: a bug. Retry the batch
        like a failing disk's, and drop it (counted in ``events_lost``) once it failed
        :data:`UNEXPECTED_FAILURES_MAX` times in a row."""
        self._unexpected_failures += 1
        count = len(self._inflight)
        if self._unexpected_failures < UNEXPECTED_FAILURES_MAX:
            log.error(
                "store: writing %d events to %s failed unexpectedly (attempt %d of %d)",
                count,
                self.path,
                self._unexpected_failures,
                UNEXPECTED_FAILURES_MAX,
                exc_info=exc,
            )
            self._requeue()
            self.error = f"cannot write to {self.path}: {type(exc).__name__}: {exc}"
            self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
            return
        log.error(
            "store: writing %d events to %s failed %d times unexpectedly; they are dropped "
            "(a replay reports the gap)",
            count,
            self.path,
            self._unexpected_failures,
            exc_info=exc,
        )
        self._unexpected_failures = 0
        self.events_lost += count
        # Their summaries go back: a summary replaces an older one and is never in the way.
        self._queue_sessions = self._inflight_sessions | self._queue_sessions
        if self._queue_sessions and self._queue_since is None:
            self._queue_since = self._inflight_since
        self._settled()

    def _settled(self) -> None:
        """The batch in flight is gone (committed or dropped): release what waits for room."""
        self.pending_bytes -= self._inflight_bytes
        self._inflight, self._inflight_sessions, self._inflight_since = [], {}, None
        self._inflight_statements = []
        self._inflight_bytes = 0
        if self._writable is not None and self._below_half():
            self._writable.set()
            self._writable = None

    def _below_half(self) -> bool:
        return (
            self.pending <= self.max_pending // 2
            and self.pending_bytes <= self.max_pending_bytes // 2
        )

    def _write_failed(self, exc: sqlite3.Error) -> None:
        message = (
            f"cannot write to {self.path}: {exc}; {self.pending} events are held in memory "
            "and written once it works again"
        )
        if self.error is None:
            log.error("store: %s", message)
        else:
            log.debug("store: %s", message)
        self.error = message
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)

    def _write_succeeded(self, committed: dict[str, int]) -> None:
        self.committed_events += len(self._inflight)
        self.committed_seqs.update(committed)
        self._unexpected_failures = 0
        self._settled()
        self.commits += 1
        self.last_commit = utc_timestamp()
        if self.error is not None:
            log.warning("store: writes work again (%d events still queued)", self.pending)
            self.error = None
        self._retry_s = self.interval_s
