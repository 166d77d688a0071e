"""One task pings every WebSocket connection of the server, each on its own schedule.

How it works: a connection is added when it opens, due one ``heartbeat_interval_s`` later. The
task sleeps until the earliest due time (a heap of them), then calls each due connection's
:meth:`Beating.beat`, which says when it is due next, or that it is gone. A connection's beat
alternates between asking its writer to send a ping (due again ``heartbeat_timeout_s`` later)
and checking that the pong came (due again an interval after the ping; else, once it is
missed, it drops itself). A connection is told when its call comes more than
:data:`~hived.core.pongs.STALL_S` after it was due: the event loop was held up, and a pong
that waits in the socket may not be read yet, so that call gives no verdict
(:mod:`hived.core.pongs`).

Why one task: a task per connection was the heartbeat's whole cost in an idle connection's
memory (a coroutine, its frames, a cancel scope), for a timer that fires every 20 s. The
schedule holds connections weakly, so that a connection that ended is freed at once rather
than when it would next have been due.
"""

from __future__ import annotations

import heapq
import itertools
import math
import weakref
from typing import Protocol

import trio

from hived.core.pongs import STALL_S


class Beating(Protocol):
    """A connection as the heartbeat sees it."""

    def beat(self, now: float, late: bool) -> float | None:
        """Do what is due at ``now`` (``late``: it was due more than
        :data:`~hived.core.pongs.STALL_S` earlier); when to be called next, or None once it
        has ended."""


class Heartbeat:
    """The schedule of every connection's next beat, and the task that keeps it."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, weakref.ref[Beating]]] = []
        self._order = itertools.count()
        self._sleep: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._due)

    def add(self, connection: Beating, when: float) -> None:
        """Call ``connection.beat`` at ``when`` (trio time), unless it is gone by then."""
        heapq.heappush(self._due, (when, next(self._order), weakref.ref(connection)))
        sleep = self._sleep
        if sleep is not None and when < sleep.deadline:
            sleep.deadline = when

    async def run(self) -> None:
        """Keep the schedule until cancelled."""
        while True:
            with trio.CancelScope(deadline=self._due[0][0] if self._due else math.inf) as sleep:
                self._sleep = sleep
                await trio.sleep_forever()
            self._sleep = None
            now = trio.current_time()
            while self._due and self._due[0][0] <= now:
                due, _, ref = heapq.heappop(self._due)
                connection = ref()
                if connection is None:
                    continue
                when = connection.beat(now, now - due > STALL_S)
                if when is not None:
                    self.add(connection, when)
