"""The event store: every published event and every session summary, kept in SQLite.

How it works. :meth:`Store.open` (at daemon start, synchronous) opens ``hived.db`` in
``state.dir`` (folder 0700, files 0600), migrates its schema, reloads each topic's seq range so
the hub continues its counters, and marks the sessions recorded as live LOST ("daemon stopped
while the session ran"). Those whose process still runs — same pid *and* same start time, so
never a reused pid — are orphans: :meth:`Store.reap_orphans` stops their process groups.

The hub calls :meth:`Store.record` for each event it publishes, and the supervisor
:meth:`Store.record_session` for each summary; both only append to a queue. :meth:`Store.serve`
runs the single writer: it waits until the oldest queued item is ``state.sync_interval_ms``
old (or :data:`BATCH_EVENTS` are queued) and commits the queue in one transaction in a worker
thread. Commits are durable (WAL, ``synchronous = FULL``), so a daemon killed by SIGKILL, or a
machine that loses power, loses at most the last ``sync_interval_ms`` of events and never
corrupts the file. Reads run in worker threads on connections of their own (WAL lets them run
beside the writer) and also see what is queued but not yet committed. Session lookups run on
the trio thread and read by index only the rows asked for (:mod:`hived.store.sessions`).

Rules:

- **Backpressure.** Publishing never waits for the disk. When :data:`MAX_PENDING_EVENTS`
  (20 000) are queued and not committed, or ``state.max_pending_bytes`` of frames (64 MiB),
  :meth:`Store.wait_writable` blocks the sources that await it (the agent output readers)
  until the queue is down to half of both. Events are never dropped; state changes are still
  queued past the bound, and hooks are refused with HTTP 503 while :attr:`Store.saturated`.
- **Bad disks.** When a commit fails (disk full, file or folder made read-only, I/O error), the
  batch stays queued and is not counted as stored; the error is logged once and shown in
  :meth:`Store.stats` (``error``); the writer retries with a backoff from
  ``sync_interval_ms`` doubling to :data:`RETRY_MAX_S`, and resumes when the disk takes writes
  again. Live streaming goes on meanwhile (it never touches the disk), and replay still
  serves the queued events — up to the backpressure bound above, after which agents pause.
- **Retention.** Every :data:`PRUNE_INTERVAL_S`, and after a reload, events older than
  ``state.retention_days`` are deleted, then, if the data in the file passes
  ``state.max_bytes``, the oldest events until it is under 90% of it. Deletion runs in
  transactions of :data:`PRUNE_CHUNK` rows under the writer's lock, so a batch waits at most
  one such step. A topic's seq counter survives the removal of all its events. Ended sessions'
  summaries are kept :data:`SESSION_KEEP_FACTOR` × ``retention_days`` (4×: 120 days by default)
  after they ended, longer than their events, so that ``sessions`` still lists what ran;
  live sessions are never removed, and size pruning removes only events.
- **Opening.** A file that cannot be opened (not a database, damaged anywhere — every page is
  read at open, ``PRAGMA quick_check`` —, empty, not writable, a newer schema) raises
  :class:`~hived.core.errors.StoreUnusable` (exit 78) with the path and a hint; the store is
  never silently replaced by an empty one. A new database is made under another name and
  renamed once it has its schema, so that an empty ``hived.db`` is always a damaged one. The
  folder is locked first (:mod:`~hived.store.lock`):
  a second daemon on it gets a StoreError before it touches the database.
"""

from __future__ import annotations

from hived.store.retention import PRUNE_CHUNK, PRUNE_INTERVAL_S, SESSION_KEEP_FACTOR
from hived.store.store import MAX_PENDING_EVENTS, Store, StoreStats
from hived.store.writer import BATCH_EVENTS, RETRY_MAX_S

__all__ = [
    "BATCH_EVENTS",
    "MAX_PENDING_EVENTS",
    "PRUNE_CHUNK",
    "PRUNE_INTERVAL_S",
    "RETRY_MAX_S",
    "SESSION_KEEP_FACTOR",
    "Store",
    "StoreStats",
]
