"""When a missing pong ends a connection (hived/core/pongs.py): plain arithmetic, no loop."""

from __future__ import annotations

import math

from hived.core.pongs import STALL_S, Missed, check_pong

NEVER_HELD = -math.inf


def test_the_pong_is_due_a_timeout_after_the_ping_was_written_not_asked_for() -> None:
    # Asked for at 20, written at 25 (behind a send to a client that reads slowly).
    assert (
        check_pong(
            30.0, late=False, asked_at=20.0, sent_at=25.0, held_until=NEVER_HELD, timeout_s=10.0
        )
        == 35.0
    )
    assert check_pong(
        35.0, late=False, asked_at=20.0, sent_at=25.0, held_until=NEVER_HELD, timeout_s=10.0
    ) == Missed("no pong within 10 s of the ping")


def test_a_ping_not_written_within_the_timeout_is_a_client_that_reads_nothing() -> None:
    verdict = check_pong(
        30.0, late=False, asked_at=20.0, sent_at=None, held_until=NEVER_HELD, timeout_s=10.0
    )
    assert verdict == Missed(
        "no pong within 10 s: the ping could not even be sent (the client reads nothing)"
    )
    assert (
        check_pong(
            29.0, late=False, asked_at=20.0, sent_at=None, held_until=NEVER_HELD, timeout_s=10.0
        )
        == 30.0
    )


def test_no_verdict_while_the_reader_waits_for_a_request_slot() -> None:
    for now in (30.0, 100.0, 1000.0):
        assert (
            check_pong(
                now, late=False, asked_at=20.0, sent_at=20.0, held_until=math.inf, timeout_s=10.0
            )
            == now + 10.0
        )


def test_the_pong_is_due_a_timeout_after_the_reader_read_on() -> None:
    assert (
        check_pong(30.0, late=False, asked_at=20.0, sent_at=20.0, held_until=28.0, timeout_s=10.0)
        == 38.0
    )
    assert isinstance(
        check_pong(38.0, late=False, asked_at=20.0, sent_at=20.0, held_until=28.0, timeout_s=10.0),
        Missed,
    )
    # Held before the ping was written: the ping's time counts.
    assert check_pong(
        30.0, late=False, asked_at=20.0, sent_at=20.0, held_until=12.0, timeout_s=10.0
    ) == Missed("no pong within 10 s of the ping")


def test_a_late_look_gives_no_verdict_and_looks_again_soon() -> None:
    assert (
        check_pong(
            45.0, late=True, asked_at=20.0, sent_at=20.0, held_until=NEVER_HELD, timeout_s=10.0
        )
        == 45.0 + STALL_S
    )
    assert (
        check_pong(
            45.0, late=True, asked_at=20.0, sent_at=None, held_until=NEVER_HELD, timeout_s=10.0
        )
        == 45.0 + STALL_S
    )
