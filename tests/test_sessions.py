from __future__ import annotations

import itertools
import time

import attrs
import orjson
import pytest

from hived.core.errors import HivedError
from hived.core.events import Usage, utc_timestamp
from hived.core.sessions import (
    ACTIVE_STATES,
    ENDED_STATES,
    INITIAL_STATES,
    LIVE_STATES,
    TRANSITIONS,
    ULID_LENGTH,
    InvalidTransition,
    RestartBudget,
    SessionSummary,
    State,
    UlidGenerator,
    backoff_delay_s,
    check_transition,
    is_active,
    is_live,
    new_session_id,
    ulid_time_ms,
)

S = State

# The table again, written independently of the module, pair by pair: a change to either
# side shows up as a failing pair.
ALLOWED = {
    (S.STARTING, S.RUNNING),
    (S.STARTING, S.STOPPING),
    (S.STARTING, S.EXITED),
    (S.STARTING, S.FAILED),
    (S.STARTING, S.LOST),
    *(
        (a, b)
        for a in (S.RUNNING, S.WORKING, S.WAITING, S.STALLED)
        for b in (S.RUNNING, S.WORKING, S.WAITING, S.STALLED)
        if a != b
    ),
    *(
        (a, b)
        for a in (S.RUNNING, S.WORKING, S.WAITING, S.STALLED)
        for b in (S.STOPPING, S.EXITED, S.FAILED, S.LOST)
    ),
    (S.STOPPING, S.EXITED),
    (S.STOPPING, S.FAILED),
    (S.STOPPING, S.LOST),
    (S.EXITED, S.BACKOFF),
    (S.EXITED, S.STARTING),
    (S.EXITED, S.FATAL),
    (S.FAILED, S.BACKOFF),
    (S.FAILED, S.STARTING),
    (S.FAILED, S.FATAL),
    (S.BACKOFF, S.STARTING),
    (S.BACKOFF, S.STOPPING),
    (S.BACKOFF, S.EXITED),
    (S.BACKOFF, S.FATAL),
    (S.BACKOFF, S.LOST),
    (S.FATAL, S.STARTING),
    (S.LOST, S.STARTING),
    (S.LOST, S.RUNNING),
    (S.LOST, S.WORKING),
    (S.LOST, S.WAITING),
}
PAIRS = list(itertools.product(State, State))


@pytest.mark.parametrize(("current", "new"), [p for p in PAIRS if p in ALLOWED])
def test_allowed_transition_passes(current: State, new: State) -> None:
    check_transition(current, new)
    assert new in TRANSITIONS[current]


@pytest.mark.parametrize(("current", "new"), [p for p in PAIRS if p not in ALLOWED])
def test_refused_transition_raises_invalid_transition(current: State, new: State) -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition(current, new)
    assert info.value.current is current
    assert info.value.new is new
    assert f"from {current} to {new}" in str(info.value)


def test_table_has_a_row_for_every_state() -> None:
    assert set(TRANSITIONS) == set(State)


def test_invalid_transition_is_a_hived_error_and_a_value_error() -> None:
    with pytest.raises(HivedError):
        check_transition(S.FATAL, S.RUNNING)
    with pytest.raises(ValueError, match=r"from FATAL: STARTING"):
        check_transition(S.FATAL, S.RUNNING)


def test_no_state_moves_to_itself() -> None:
    assert all(state not in TRANSITIONS[state] for state in State)


def test_every_live_state_can_become_lost() -> None:
    assert {s for s in State if S.LOST in TRANSITIONS[s]} == LIVE_STATES


def test_state_sets_partition_the_states() -> None:
    assert set(State) == LIVE_STATES | ENDED_STATES
    assert not LIVE_STATES & ENDED_STATES
    assert ACTIVE_STATES < LIVE_STATES
    assert INITIAL_STATES <= LIVE_STATES
    assert is_live(S.BACKOFF)
    assert not is_live(S.EXITED)
    assert is_active(S.STALLED)
    assert not is_active(S.STARTING)


def test_every_state_is_reachable_from_an_initial_state() -> None:
    seen = set(INITIAL_STATES)
    todo = list(seen)
    while todo:
        for nxt in TRANSITIONS[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert seen == set(State)


def test_state_values_are_their_names_on_the_wire() -> None:
    assert [str(s) for s in State] == [s.name for s in State]
    assert orjson.dumps(S.WAITING) == b'"WAITING"'


def test_session_ids_are_ulids_unique_and_sorted_across_10k() -> None:
    ids = [new_session_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == ULID_LENGTH for i in ids)
    assert set("".join(ids)) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def test_session_id_carries_its_creation_time_in_ms() -> None:
    before = time.time_ns() // 1_000_000
    sid = new_session_id()
    after = time.time_ns() // 1_000_000
    assert before <= ulid_time_ms(sid) <= after


def test_ids_in_the_same_millisecond_count_up_from_the_random_part() -> None:
    gen = UlidGenerator(now_ms=lambda: 1_700_000_000_000, random80=lambda: 41)
    first, second = gen(), gen()
    assert first[:10] == second[:10]
    assert first[10:] == "0" * 14 + "19"  # 41 in Crockford base32
    assert second[10:] == "0" * 14 + "1A"  # 42


def test_ids_stay_increasing_when_the_clock_steps_back() -> None:
    times = iter([5_000, 4_000, 4_000])
    gen = UlidGenerator(now_ms=lambda: next(times), random80=lambda: 7)
    ids = [gen(), gen(), gen()]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert {ulid_time_ms(i) for i in ids} == {5_000}


def test_random_part_overflow_moves_the_time_on_by_one_ms() -> None:
    gen = UlidGenerator(now_ms=lambda: 1_000, random80=lambda: (1 << 80) - 1)
    first, second = gen(), gen()
    assert first < second
    assert ulid_time_ms(second) == 1_001
    assert second[10:] == "0" * 16


def full_summary() -> SessionSummary:
    return SessionSummary(
        id=new_session_id(),
        name="claude-1",
        agent="claude",
        state=S.WAITING,
        pid=4242,
        started_at=utc_timestamp(1_700_000_000.5),
        ended_at=None,
        exit_code=None,
        usage=Usage(input_tokens=10, output_tokens=20, cost_usd=0.25, turns=2, duration_ms=900),
        reason="permission_request",
        restarts=1,
        observed=False,
        agent_session_id="6f1c-...",
        cwd="/srv/work",
        pid_start=123456,
    )


def test_summary_json_has_the_wire_fields_and_survives_json_text() -> None:
    summary = full_summary()
    wire = orjson.loads(orjson.dumps(summary.to_json()))
    assert wire == {
        "id": summary.id,
        "name": "claude-1",
        "agent": "claude",
        "state": "WAITING",
        "pid": 4242,
        "started_at": "2023-11-14T22:13:20.500Z",
        "ended_at": None,
        "exit_code": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 20,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            "cost_usd": 0.25,
            "turns": 2,
            "duration_ms": 900,
        },
        "reason": "permission_request",
        "restarts": 1,
        "observed": False,
        "agent_session_id": "6f1c-...",
        "cwd": "/srv/work",
    }


def test_summary_round_trips_through_the_wire_shape_all_but_pid_start() -> None:
    summary = full_summary()
    back = SessionSummary.from_json(orjson.loads(orjson.dumps(summary.to_json())))
    assert back.state is S.WAITING
    assert back == attrs.evolve(summary, pid_start=None)


def test_summary_round_trips_whole_through_the_store_record() -> None:
    summary = full_summary()
    assert SessionSummary.from_json(orjson.loads(orjson.dumps(summary.to_record()))) == summary


def test_summary_from_a_minimal_row_takes_the_defaults() -> None:
    back = SessionSummary.from_json({"id": "01J", "name": "n", "agent": "a", "state": "LOST"})
    assert back == SessionSummary(id="01J", name="n", agent="a", state=S.LOST)
    assert back.usage == Usage()


def test_summary_from_json_refuses_an_unknown_state() -> None:
    with pytest.raises(ValueError, match="BORED"):
        SessionSummary.from_json({"id": "01J", "name": "n", "agent": "a", "state": "BORED"})


def test_backoff_doubles_from_one_second_up_to_sixty() -> None:
    assert [backoff_delay_s(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff_delay_s(10**6) == 60


def test_backoff_refuses_attempt_zero() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay_s(0)


def test_budget_allows_max_restarts_within_the_window_then_refuses() -> None:
    budget = RestartBudget(max_restarts=3, restart_window_s=60.0)
    assert [budget.record(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert budget.record(3.0) is False
    assert budget.recent(3.0) == 3


def test_budget_refusals_are_not_counted() -> None:
    budget = RestartBudget(max_restarts=1, restart_window_s=10.0)
    assert budget.record(0.0)
    assert not budget.record(5.0)
    assert not budget.record(9.0)
    assert budget.record(10.0)  # the restart at 0.0 left the window; the refusals never entered


def test_budget_window_slides() -> None:
    budget = RestartBudget(max_restarts=2, restart_window_s=100.0)
    assert budget.record(0.0)
    assert budget.record(50.0)
    assert not budget.record(99.0)
    assert budget.record(100.0)
    assert budget.recent(100.0) == 2
    assert budget.recent(1_000.0) == 0


def test_budget_of_zero_never_restarts() -> None:
    assert RestartBudget(max_restarts=0, restart_window_s=1.0).record(0.0) is False


def test_budget_reset_forgets_every_restart() -> None:
    budget = RestartBudget(max_restarts=1, restart_window_s=300.0)
    assert budget.record(0.0)
    budget.reset()
    assert budget.record(1.0)
