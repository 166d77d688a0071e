"""Retention: old events by age, the oldest by size, and long-ended sessions.

How it works: every :data:`PRUNE_INTERVAL_S` (and at once after a reload) one pass deletes the
events older than ``retention_days``, then, while the data in the file passes ``max_bytes``,
the oldest events until it is under :data:`SIZE_TARGET` of it (their search index entries go
with them), then the sessions that ended more than :data:`SESSION_KEEP_FACTOR` ×
``retention_days`` ago, and the usage ledger's rows as old. Every step is one transaction of at
most :data:`PRUNE_CHUNK` rows run through the batch writer, so a batch of new events waits for
one step at most. Events go oldest first by insertion, so each topic keeps one contiguous
range of seqs; ``on_pruned`` learns each topic's new first seq.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Final

import trio

from hived.core.events import utc_timestamp
from hived.store import sql
from hived.store.ledger import prune_ledger
from hived.store.writer import BatchWriter

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S: Final = 5.0
"""How often retention looks for something to prune."""
PRUNE_CHUNK: Final = 1000
"""Rows deleted per transaction: short enough never to hold up a batch for long."""
SIZE_TARGET: Final = 0.9
"""Past ``max_bytes``, events are pruned until the store uses this fraction of it."""
SESSION_KEEP_FACTOR: Final = 4
"""Ended sessions are kept this many times ``retention_days`` after they ended."""
SECONDS_PER_DAY: Final = 86_400


class Retention:
    """Prunes the store through its batch writer (see the module docstring)."""

    def __init__(
        self,
        batches: BatchWriter,
        retention_days: int,
        max_bytes: int,
        on_pruned: Callable[[dict[str, int]], None],
    ) -> None:
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self.pruned = 0
        """Events deleted since start."""
        self._batches = batches
        self._on_pruned = on_pruned
        self._now = trio.Event()

    def reload(self, retention_days: int, max_bytes: int) -> None:
        """New limits; the next pass starts at once."""
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self._now.set()

    async def serve(self) -> None:
        """A pass now, then every PRUNE_INTERVAL_S or after a reload, until cancelled."""
        while True:
            await self.prune()
            with trio.move_on_after(PRUNE_INTERVAL_S):
                await self._now.wait()
            self._now = trio.Event()

    async def prune(self) -> int:
        """One pass; the number of events deleted. A failing disk ends it early (logged)."""
        now = time.time()
        days = self.retention_days
        deleted = 0
        try:
            older_than = utc_timestamp(now - days * SECONDS_PER_DAY)
            while True:
                step = await self._step(older_than)
                deleted += step.deleted
                if step.deleted < PRUNE_CHUNK:
                    break
            if step.used_bytes > self.max_bytes:
                log.info("store: %d bytes in use, over state.max_bytes", step.used_bytes)
                while step.used_bytes > self.max_bytes * SIZE_TARGET:
                    step = await self._step(None)
                    deleted += step.deleted
                    if not step.deleted:
                        break
            ended_before = utc_timestamp(now - SESSION_KEEP_FACTOR * days * SECONDS_PER_DAY)
            while True:
                removed = await self._batches.run(sql.prune_sessions, ended_before, PRUNE_CHUNK)
                if removed < PRUNE_CHUNK:
                    break
            await self._batches.run(prune_ledger, ended_before)
        except sqlite3.Error as exc:
            # While the writer fails too, its own error says so already.
            level = logging.DEBUG if self._batches.error else logging.WARNING
            log.log(level, "store: retention stopped early: %s", exc)
        if deleted:
            log.info("store: retention removed %d events", deleted)
        return deleted

    async def _step(self, older_than: str | None) -> sql.Pruned:
        step = await self._batches.run(sql.prune_events, older_than, PRUNE_CHUNK)
        self.pruned += step.deleted
        if step.first_seqs:
            self._on_pruned(step.first_seqs)
        return step
