"""When a missing pong ends a connection: never because hived itself was busy.

How it works: the server's heartbeat asks a connection for a ping at ``asked_at``; its sender
writes the ping at ``sent_at`` (later when a send to the client is under way); the client's pong
is read by the connection's reader. Where the pong has not come when the heartbeat looks,
:func:`check_pong` says when to look again, or that it is :class:`Missed`:

- a ping not written ``timeout_s`` after it was asked for is held up by a send the client does
  not read: missed (a client that stopped reading is dropped, even while a send to it blocks);
- otherwise the pong is due ``timeout_s`` after the later of two moments: the ping was written,
  and hived read on again. The reader does not read while the connection's requests fill their
  slots (a client that sent fifty ``session.start`` at once has its pong behind the 34 that
  wait, in the socket or parsed but not yet handled): until then a pong cannot be seen, and
  that time is hived's, not the client's (issue 19: the client saw 1006 although it had
  answered). ``held_until`` is when the reader went on, ``math.inf`` while it waits;
- a look taken more than :data:`STALL_S` after it was due (``late``) gives no verdict: the event
  loop was held up (a stalled daemon, a starved machine), and the reader, woken in the same
  turn as the heartbeat, may not have read the pong that waits in the socket. It looks again
  :data:`STALL_S` later, when the reader has had its turn.

Times are seconds of one clock that does not go back (trio's), passed in.
"""

from __future__ import annotations

import math
from typing import Final

import attrs

STALL_S: Final = 0.5
"""A look at a pong taken this much later than it was due was held up by a busy event loop:
no verdict from it; the next look is this much later."""


@attrs.frozen
class Missed:
    """The pong did not come in time: the connection is dead; ``reason`` says why (its close
    reason, and the log's)."""

    reason: str


def check_pong(
    now: float,
    *,
    late: bool,
    asked_at: float,
    sent_at: float | None,
    held_until: float,
    timeout_s: float,
) -> float | Missed:
    """For a ping whose pong has not come by ``now``: when to look again, or :class:`Missed`.

    ``sent_at`` is None while the ping is not written yet; ``held_until`` is when the reader
    last went on after waiting (``-math.inf`` if it never waited, ``math.inf`` while it waits).
    """
    if sent_at is None:
        due = asked_at + timeout_s
        reason = (
            f"no pong within {timeout_s:g} s: the ping could not even be sent "
            "(the client reads nothing)"
        )
    else:
        due = max(sent_at, held_until) + timeout_s
        reason = f"no pong within {timeout_s:g} s of the ping"
    if now < due:
        return due if due < math.inf else now + timeout_s
    if late:
        return now + STALL_S
    return Missed(reason)
