"""The session state machine, session ids, summaries, and the restart policy's arithmetic.

How it works: a session is always in one :class:`State`. Whoever changes it (the supervisor for
the sessions hived starts, hook ingestion for the ones it only observes, the store when it
recovers from a crash) asks :func:`check_transition` first, which looks the move up in
:data:`TRANSITIONS` and raises :class:`InvalidTransition` for a move the table does not list. A
state never moves to itself: a session that stays where it is publishes no ``state`` event.

The table, row by row (``ACTIVE`` is RUNNING, WORKING, WAITING and STALLED: the agent process is
up and past its start)::

    STARTING  → RUNNING STOPPING EXITED FAILED LOST
    ACTIVE    → the other ACTIVE states, STOPPING EXITED FAILED LOST
    STOPPING  → EXITED FAILED LOST
    EXITED    → BACKOFF STARTING FATAL
    FAILED    → BACKOFF STARTING FATAL
    BACKOFF   → STARTING STOPPING EXITED FATAL LOST
    FATAL     → STARTING
    LOST      → STARTING RUNNING WORKING WAITING

Why each row:

- A supervised session starts in STARTING; RUNNING once its process is spawned (FAILED when
  it cannot be: command not found, bad cwd); WORKING/WAITING follow the agent's own events and
  STALLED the stall watch, and each of those four can follow any other. Output while STOPPING
  changes nothing: the supervisor ignores state hints then.
- A run ends EXITED (exit status 0, or stopped on request) or FAILED (any other status, a
  signal nobody asked for, a command that could not start). Then the restart policy decides:
  BACKOFF (a delay, then STARTING), FATAL when the restart budget is spent (straight from
  EXITED/FAILED, or from BACKOFF), or nothing — the session stays ended. EXITED/FAILED →
  STARTING is also a manual ``session.restart``.
- BACKOFF has no process: a stop during it goes STOPPING → EXITED, or straight to EXITED.
- FATAL is terminal except for a manual restart (FATAL → STARTING).
- An observed session (one seen only through hooks) is first seen in RUNNING, WORKING or
  WAITING, moves among those, and ends EXITED (``SessionEnd``) or LOST (silence for
  ``observed_idle_s``). It comes back from LOST when it speaks again (the person came back to
  the terminal): LOST → RUNNING/WORKING/WAITING.
- Every live state (:data:`LIVE_STATES`) may become LOST: the daemon died under it, and the
  store marks it so at the next start. LOST → STARTING is a manual restart of such a session.

Sessions are first created in one of :data:`INITIAL_STATES` (no transition is checked then).
Ids are ULIDs (:func:`new_session_id`): they sort by creation time. :class:`SessionSummary` is
the wire shape of one session; :func:`backoff_delay_s` and :class:`RestartBudget` are the
restart policy's numbers, kept here so that they are tested without a clock.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from hived.core.drivers.base import TurnOutcome
from hived.core.errors import HivedError
from hived.core.events import Usage


class State(enum.StrEnum):
    """Where a session is in its life. The value is the name, as it appears on the wire."""

    STARTING = "STARTING"
    """hived is spawning the process."""
    RUNNING = "RUNNING"
    """The process is up; its format does not say (yet) whether it works or waits."""
    WORKING = "WORKING"
    """The agent is busy with a turn (its own events say so)."""
    WAITING = "WAITING"
    """The agent waits for input or for an approval (``reason`` says which)."""
    STALLED = "STALLED"
    """No output for the template's ``idle_s``."""
    STOPPING = "STOPPING"
    """SIGTERM sent to the process group; SIGKILL follows after ``stop_timeout_s``."""
    EXITED = "EXITED"
    """The run ended cleanly: exit status 0, or stopped on request."""
    FAILED = "FAILED"
    """The run ended badly: another exit status, an unexpected signal, or it could not start."""
    BACKOFF = "BACKOFF"
    """Waiting out the delay before the next restart."""
    FATAL = "FATAL"
    """The restart budget is spent; only a manual restart starts it again."""
    LOST = "LOST"
    """hived lost track of it: the daemon died under it, or an observed session fell silent."""


_S = State
_ACTIVE: Final = frozenset({_S.RUNNING, _S.WORKING, _S.WAITING, _S.STALLED})
_RUN_ENDS: Final = frozenset({_S.STOPPING, _S.EXITED, _S.FAILED, _S.LOST})

TRANSITIONS: Final[Mapping[State, frozenset[State]]] = MappingProxyType(
    {
        _S.STARTING: frozenset({_S.RUNNING, _S.STOPPING, _S.EXITED, _S.FAILED, _S.LOST}),
        _S.RUNNING: (_ACTIVE | _RUN_ENDS) - {_S.RUNNING},
        _S.WORKING: (_ACTIVE | _RUN_ENDS) - {_S.WORKING},
        _S.WAITING: (_ACTIVE | _RUN_ENDS) - {_S.WAITING},
        _S.STALLED: (_ACTIVE | _RUN_ENDS) - {_S.STALLED},
        _S.STOPPING: frozenset({_S.EXITED, _S.FAILED, _S.LOST}),
        _S.EXITED: frozenset({_S.BACKOFF, _S.STARTING, _S.FATAL}),
        _S.FAILED: frozenset({_S.BACKOFF, _S.STARTING, _S.FATAL}),
        _S.BACKOFF: frozenset({_S.STARTING, _S.STOPPING, _S.EXITED, _S.FATAL, _S.LOST}),
        _S.FATAL: frozenset({_S.STARTING}),
        _S.LOST: frozenset({_S.STARTING, _S.RUNNING, _S.WORKING, _S.WAITING}),
    }
)
"""For each state, the states it may move to. See the module docstring for why."""

ACTIVE_STATES: Final[frozenset[State]] = _ACTIVE
"""The agent process is up and past its start: it can take input."""
LIVE_STATES: Final[frozenset[State]] = _ACTIVE | {_S.STARTING, _S.STOPPING, _S.BACKOFF}
"""The session is in progress: a process runs or is about to. A daemon crash leaves it LOST."""
ENDED_STATES: Final[frozenset[State]] = frozenset({_S.EXITED, _S.FAILED, _S.FATAL, _S.LOST})
"""No process and none pending (EXITED/FAILED may still be followed by a restart)."""
UNREACHABLE: Final = "UNREACHABLE"
"""Not a :class:`State`: how a cluster node shows a live session of another node that stopped
heart-beating (never entered; the session shows its own state again once its node is back)."""
INITIAL_STATES: Final[frozenset[State]] = frozenset(
    {_S.STARTING, _S.RUNNING, _S.WORKING, _S.WAITING}
)
"""A supervised session is created STARTING; an observed one in the state its first hook says."""


class InvalidTransition(HivedError, ValueError):
    """A state change that :data:`TRANSITIONS` does not allow: a bug in the caller."""

    def __init__(self, current: State, new: State) -> None:
        self.current = current
        self.new = new
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing"
        super().__init__(f"a session cannot go from {current} to {new}; from {current}: {allowed}")


def check_transition(current: State, new: State) -> None:
    """Raise :class:`InvalidTransition` unless a session may go from ``current`` to ``new``."""
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(current, new)


def is_live(state: State) -> bool:
    """Whether the session is in progress (see :data:`LIVE_STATES`)."""
    return state in LIVE_STATES


def is_active(state: State) -> bool:
    """Whether the agent process is up and can take input (see :data:`ACTIVE_STATES`)."""
    return state in ACTIVE_STATES


# Session ids: ULIDs (https://github.com/ulid/spec).

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS: Final = 80
_RANDOM_LIMIT: Final = 1 << _RANDOM_BITS
ULID_LENGTH: Final = 26


def _encode_base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


def ulid_time_ms(ulid: str) -> int:
    """The creation time (ms since the epoch) written in the first 10 characters of a ULID."""
    value = 0
    for char in ulid[:10]:
        value = value * 32 + _CROCKFORD.index(char)
    return value


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _random80() -> int:
    return int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")


@attrs.define
class UlidGenerator:
    """Makes ULIDs that are strictly increasing in one process.

    Within one millisecond (or when the clock steps back) the next id is the previous one plus
    one in its random part; should that part overflow, the time part moves on by a millisecond.
    """

    now_ms: Callable[[], int] = _now_ms
    random80: Callable[[], int] = _random80
    _last_ms: int = attrs.field(default=-1, init=False)
    _last_random: int = attrs.field(default=0, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def __call__(self) -> str:
        with self._lock:
            ms = self.now_ms()
            if ms > self._last_ms:
                self._last_ms, self._last_random = ms, self.random80()
            else:
                self._last_random += 1
                if self._last_random >= _RANDOM_LIMIT:
                    self._last_ms, self._last_random = self._last_ms + 1, 0
            return _encode_base32(self._last_ms, 10) + _encode_base32(self._last_random, 16)


_session_ids: Final = UlidGenerator()


def new_session_id() -> str:
    """A new session id: a ULID, 26 characters that sort by creation time, unique."""
    return _session_ids()


# Summaries.


@attrs.frozen
class SessionSummary:
    """One session as ``sessions`` and ``status`` show it, and as the store keeps it."""

    id: str
    """The session id (a ULID)."""
    name: str
    """A human name, unique among live sessions."""
    agent: str
    """The agent template's name (``claude`` in ``[agents.claude]``); for observed sessions the
    agent that reported them."""
    state: State
    pid: int | None = None
    """The agent's process id (its process group id too) while it has one."""
    started_at: str | None = None
    """When the current run started (ISO 8601 UTC, :func:`hived.core.events.utc_timestamp`)."""
    ended_at: str | None = None
    """When the last run ended; ``None`` while live."""
    exit_code: int | None = None
    """The last run's exit status; a negative number -N for death by signal N."""
    usage: Usage = attrs.field(factory=Usage)
    """Summed over every run of the session."""
    reason: str | None = None
    """Why it is in its state (``permission_request``, ``command not found: …``)."""
    restarts: int = 0
    """Restarts made so far."""
    observed: bool = False
    """Seen through hooks, not started by hived."""
    agent_session_id: str | None = None
    """The agent's own session id (Claude's ``session_id``), where known."""
    cwd: str | None = None
    """The agent's working directory."""
    pid_start: int | None = None
    """The process start time in clock ticks since boot (``/proc/PID/stat`` field 22): with
    ``pid`` it tells the agent's process from a later one that reused the pid. Not on the wire."""
    last_turn: TurnOutcome | None = None
    """How the agent's last turn ended, where its format tells (DESIGN §10)."""
    launch: Mapping[str, Any] | None = attrs.field(default=None, eq=False)
    """What the session was started with (args, cwd, first prompt, who), kept so that a later
    daemon run can resume it (:class:`hived.agents.session.Launch`). Not on the wire."""

    def to_json(self) -> dict[str, Any]:
        """The wire shape of a session summary (DESIGN §4)."""
        return {
            "id": self.id,
            "name": self.name,
            "agent": self.agent,
            "state": str(self.state),
            "pid": self.pid,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "exit_code": self.exit_code,
            "usage": self.usage.to_json(),
            "reason": self.reason,
            "restarts": self.restarts,
            "observed": self.observed,
            "agent_session_id": self.agent_session_id,
            "cwd": self.cwd,
            "last_turn": None if self.last_turn is None else self.last_turn.to_json(),
        }

    def to_record(self) -> dict[str, Any]:
        """What the store keeps: the wire shape plus the fields clients do not see."""
        return self.to_json() | {"pid_start": self.pid_start, "launch": self.launch}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SessionSummary:
        """Rebuild a summary from :meth:`to_json` or :meth:`to_record` output.

        Only ``id``, ``name``, ``agent`` and ``state`` are required; the store may hold rows
        written before a field existed. Raises ``KeyError`` or ``ValueError`` on a broken row.
        """
        usage = d.get("usage") or {}
        return cls(
            id=d["id"],
            name=d["name"],
            agent=d["agent"],
            state=State(d["state"]),
            pid=d.get("pid"),
            started_at=d.get("started_at"),
            ended_at=d.get("ended_at"),
            exit_code=d.get("exit_code"),
            usage=Usage(**{f: usage[f] for f in _USAGE_FIELDS if f in usage}),
            reason=d.get("reason"),
            restarts=d.get("restarts", 0),
            observed=d.get("observed", False),
            agent_session_id=d.get("agent_session_id"),
            cwd=d.get("cwd"),
            pid_start=d.get("pid_start"),
            last_turn=TurnOutcome.from_json(d["last_turn"]) if d.get("last_turn") else None,
            launch=d.get("launch"),
        )


_USAGE_FIELDS: Final = tuple(a.name for a in attrs.fields(Usage))


# Restart policy.

BACKOFF_FIRST_S: Final = 1.0
BACKOFF_MAX_S: Final = 60.0


def backoff_delay_s(attempt: int) -> float:
    """The delay before restart number ``attempt`` (from 1): 1 s, 2 s, 4 s… capped at 60 s."""
    if attempt < 1:
        raise ValueError(f"restart attempts count from 1, got {attempt}")
    # Past 2**6 the cap holds; bounding the exponent keeps huge attempts from making huge ints.
    return min(BACKOFF_FIRST_S * 2.0 ** min(attempt - 1, 16), BACKOFF_MAX_S)


@attrs.define
class RestartBudget:
    """At most ``max_restarts`` restarts within any ``restart_window_s``; past that, FATAL.

    Times are seconds on any monotonic clock (``trio.current_time()``). ``recent`` also serves
    as the backoff attempt: a session that ran quietly for a whole window starts again at 1 s.
    """

    max_restarts: int
    restart_window_s: float
    _times: deque[float] = attrs.field(factory=deque, init=False)

    def record(self, now: float) -> bool:
        """Whether one more restart is allowed at ``now``; if so, count it."""
        self._forget(now)
        if len(self._times) >= self.max_restarts:
            return False
        self._times.append(now)
        return True

    def recent(self, now: float) -> int:
        """Restarts counted within the window that ends at ``now``."""
        self._forget(now)
        return len(self._times)

    def reset(self) -> None:
        """Forget every restart (a manual restart of a FATAL session gets a fresh budget)."""
        self._times.clear()

    def _forget(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.restart_window_s:
            self._times.popleft()
