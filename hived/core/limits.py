"""Rate limits: a token bucket per connection, as plain arithmetic.

How it works: a bucket holds at most ``burst`` tokens and gains ``rate_per_s`` tokens a second
while it is not full; every message takes one, and a message that finds less than one token
is refused. So a client may send ``burst`` messages at once, and ``rate_per_s`` a second for
as long as it likes. The whole state of a bucket is two floats, its level and the time that
level was true, which the caller keeps (a connection keeps them in two slots of its own: every
idle connection carries them, so they are not an object of their own). Time is passed in, in
seconds of any clock that does not go back; the rate and the burst are passed in on every call,
so that a reloaded config applies from the next message. A new bucket is full: its level is
:data:`FULL`, "as full as the burst allows", whatever the burst is by its first message.
"""

from __future__ import annotations

import math
from typing import Final

FULL: Final = math.inf
"""The level of a new bucket: full, whatever its burst."""


def level_at(level: float, at: float, now: float, rate_per_s: float, burst: int) -> float:
    """The level of a bucket that held ``level`` at ``at``, by ``now``: refilled at
    ``rate_per_s`` since then, never above ``burst``."""
    return min(float(burst), level + (now - at) * rate_per_s)


def take(level: float, at: float, now: float, rate_per_s: float, burst: int) -> float | None:
    """Take a token, at ``now``, from a bucket that held ``level`` at ``at``.

    Returns the level left, to keep with ``now`` as its time; None when the bucket has less
    than one token: the message is refused, and the bucket is as it was.
    """
    available = level_at(level, at, now, rate_per_s, burst)
    if available < 1.0:
        return None
    return available - 1.0
