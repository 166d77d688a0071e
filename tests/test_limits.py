"""The token bucket of the rate limit: plain arithmetic, time passed in."""

from __future__ import annotations

import attrs
import pytest

from hived.core.limits import FULL, level_at, take

RATE_PER_S = 2.0
BURST = 5


@attrs.define
class Bucket:
    """A bucket kept as a connection keeps it: a level, and when it held."""

    level: float = FULL
    at: float = 0.0

    def send(self, now: float) -> bool:
        """One message at ``now``: whether it may go."""
        left = take(self.level, self.at, now, RATE_PER_S, BURST)
        if left is None:
            return False
        self.level, self.at = left, now
        return True

    def sends(self, count: int, now: float) -> list[bool]:
        return [self.send(now) for _ in range(count)]


def test_a_new_bucket_is_full_whatever_the_time() -> None:
    assert level_at(FULL, 0.0, 1234.5, RATE_PER_S, BURST) == BURST
    assert Bucket().sends(BURST, now=1234.5) == [True] * BURST


def test_the_burst_goes_at_once_and_the_next_message_is_refused() -> None:
    bucket = Bucket()
    assert bucket.sends(BURST + 1, now=10.0) == [True] * BURST + [False]


def test_a_refused_message_leaves_the_bucket_as_it_was() -> None:
    bucket = Bucket()
    bucket.sends(BURST, now=10.0)
    level, at = bucket.level, bucket.at
    assert not bucket.send(10.2)
    assert (bucket.level, bucket.at) == (level, at)
    assert bucket.send(10.5)  # one token after 1 / RATE_PER_S


def test_an_empty_bucket_refills_at_the_rate() -> None:
    bucket = Bucket()
    bucket.sends(BURST, now=0.0)
    assert bucket.sends(3, now=1.0) == [True, True, False]  # 1 s at 2/s: two tokens
    assert level_at(bucket.level, bucket.at, 1.25, RATE_PER_S, BURST) == pytest.approx(0.5)


def test_sending_at_the_rate_goes_on_for_ever() -> None:
    bucket = Bucket()
    bucket.sends(BURST, now=0.0)
    assert all(bucket.send(t / RATE_PER_S) for t in range(1, 10_001))
    assert not bucket.send(10_000 / RATE_PER_S)


def test_the_level_never_goes_above_the_burst() -> None:
    assert level_at(2.0, 0.0, 1.0, RATE_PER_S, BURST) == 4.0
    assert level_at(2.0, 0.0, 2.0, RATE_PER_S, BURST) == BURST
    assert level_at(4.5, 0.0, 10.0, RATE_PER_S, BURST) == BURST


def test_a_long_idle_refills_to_the_burst_only() -> None:
    bucket = Bucket()
    bucket.sends(BURST, now=0.0)
    assert bucket.sends(BURST + 1, now=86_400.0) == [True] * BURST + [False]


def test_the_burst_and_rate_of_each_call_apply() -> None:
    # A reload: a higher burst fills up to it at the new rate; a lower one cuts the level.
    assert level_at(5.0, 0.0, 10.0, 1.0, 20) == 15.0
    assert level_at(5.0, 0.0, 10.0, 3.0, 20) == 20.0
    assert level_at(5.0, 0.0, 0.0, 1.0, 2) == 2.0
    assert take(FULL, 0.0, 0.0, 1.0, 1) == 0.0
    assert take(0.0, 0.0, 0.0, 1.0, 1) is None
