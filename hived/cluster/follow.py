"""Following another node's session from the engine: replay after ``since``, then live.

How it works: a follower keeps a cursor (the last seq it queued) and reads the topic's stream
after it (``XREAD … <cursor>-0``, blocking a while when there is nothing new). Entry ids are
seqs, so the seam between the replay and live reading is exact: no gap, no duplicate. Where
the stream does not reach back far enough (trimmed, or not yet caught up after the engine lost
its data) the missing seqs are read from the owning node (``fill``, a forwarded
``session.events``), then the stream goes on. Frames go into the connection's hub subscriber
under its usual bound (:meth:`~hived.hub.Hub.push`); the follower ends when that subscriber is
gone or overflowed, or when it is cancelled (unsubscribe, a new subscribe of the topic).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from hived.cluster.engine import ENGINE_ERRORS, Engine, retry_delay_s
from hived.cluster.keys import entry_id, entry_seq
from hived.hub import Hub, Subscriber

log = logging.getLogger(__name__)

Fill = Callable[[int, int], Awaitable[list[tuple[int, str]]]]
"""``(after, upto)`` → the owner's ``(seq, frame)`` pairs in between, ascending."""

READ_BLOCK_MS: Final = 1000
"""How long one read waits for news; the follower checks its subscriber between reads."""
READ_COUNT: Final = 1024


async def follow(
    engine: Engine,
    stream: str,
    hub: Hub,
    sub: Subscriber,
    since: int,
    fill: Fill,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Feed ``sub`` the stream's frames after ``since`` until it is gone or this is cancelled."""
    task_status.started()
    cursor = since
    failures = 0
    while True:
        try:
            got = await engine.xread(
                {stream: entry_id(cursor) if cursor > 0 else "0-0"},
                count=READ_COUNT,
                block=READ_BLOCK_MS,
            )
        except ENGINE_ERRORS as exc:
            failures += 1
            if failures == 1:
                log.warning("cluster: cannot follow %s (%s); retrying", stream, exc)
            if not hub.push(sub, []):
                return
            await trio.sleep(retry_delay_s(failures))
            continue
        failures = 0
        frames: list[str] = []
        for entry in (got or {}).get(stream, ()):
            seq = entry_seq(str(entry.identifier))
            if seq <= cursor:
                continue
            if seq > cursor + 1:
                for filled, frame in await fill(cursor, seq - 1):
                    if filled == cursor + 1:
                        frames.append(frame)
                        cursor = filled
                if cursor < seq - 1:
                    log.warning(
                        "cluster: %s: seqs %d..%d are kept nowhere", stream, cursor + 1, seq - 1
                    )
            frames.append(str(entry.field_values.get("f", "")))
            cursor = seq
        if not hub.push(sub, frames):
            return
