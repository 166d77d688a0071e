"""Events: what agents do, as hived records and streams it.

How it works: a parser turns one line of agent output into :class:`AgentEvent` s (a kind, the
agent's own fields, and hints for the session: a state it now is in, usage to add). The hub
stamps each with its topic, a per-topic ``seq`` and a time, which makes an :class:`Event`; that
is serialized once (:func:`encode_event`) and the same text goes to every subscriber and to the
store.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import attrs
import orjson

KINDS: Final = frozenset(
    {
        "state",
        "init",
        "message",
        "thinking",
        "tool_use",
        "tool_result",
        "permission_request",
        "rate_limit",
        "result",
        "text",
        "stderr",
        "hook",
        "input",
        "request_withdrawn",
        "agent_event",
        "budget",
    }
)
"""Event kinds on the wire. ``agent_event`` carries an agent line of a type hived does not map;
``budget`` says a session reached its budget (:mod:`hived.notify.budget`)."""

SESSIONS_TOPIC: Final = "sessions"


def session_topic(session_id: str) -> str:
    """The topic of everything one session does."""
    return f"session/{session_id}"


@attrs.frozen
class Usage:
    """Tokens, cost, turns and time of a session, as the agent reported them.

    Tokens are counted Claude's way: ``input_tokens`` excludes the cached input, which is in
    ``cache_read_tokens`` (read from the cache) and ``cache_write_tokens`` (written to it);
    ``reasoning_tokens`` is the part of the output spent reasoning, where the agent says.
    ``cost_usd`` is what the agent reports (DESIGN §10): never a sum of running totals.
    """

    input_tokens: int = 0
    """Input tokens not read from the cache (Claude's meaning; Codex's figure minus cached)."""
    output_tokens: int = 0
    cost_usd: float = 0.0
    turns: int = 0
    duration_ms: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    """Output tokens spent reasoning, where the agent reports them (part of ``output_tokens``)."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            turns=self.turns + other.turns,
            duration_ms=self.duration_ms + other.duration_ms,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class SpoolMark(NamedTuple):
    """How far into an agent's spool the events of a session go: the event it rides on is the
    ``nth`` (from 0) of those made from the spool line that ends at ``offset``. A tuple:
    one is made per event of an agent's output, on the hot path."""

    key: str
    """The spool: ``<session id>/<agent pid>/<stdout|stderr>``."""
    offset: int
    nth: int


class AgentEvent(NamedTuple):
    """What a parser makes of one line of agent output (before it has a topic and a seq).

    A named tuple: one is made per line of agent output (see :class:`Event`)."""

    kind: str
    """One of :data:`KINDS`."""
    data: Mapping[str, Any]
    """The agent's own fields under their own names (plus hived's notes, e.g. ``parse_error``)."""
    state: str | None = None
    """``WORKING`` or ``WAITING`` when the agent's own event says which."""
    reason: str | None = None
    """Why the state changed (e.g. ``permission_request``)."""
    usage: Usage | None = None
    """Usage this event adds to the session's totals."""
    agent_session_id: str | None = None
    """The agent's own session id, where the line carries one (Claude ``session_id``)."""


@functools.lru_cache(maxsize=4)
def _second_prefix(whole: int) -> str:
    # strftime is most of a timestamp's cost, and events come many per second: cache it.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


class _LastStamp:
    """The last timestamp made, by its millisecond: a burst stamps many events in each."""

    __slots__ = ("millis", "text")

    def __init__(self) -> None:
        self.millis = -1
        self.text = ""


_last_stamp = _LastStamp()


def utc_timestamp(now: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds: ``2026-11-26T08:00:00.123Z`` (now: the millisecond it
    is in, read in integers; ``now`` in seconds: rounded to the nearest)."""
    millis = time.time_ns() // 1_000_000 if now is None else round(now * 1000)
    last = _last_stamp
    if millis == last.millis:
        return last.text
    whole, fraction = divmod(millis, 1000)
    text = f"{_second_prefix(whole)}.{fraction:03d}Z"
    last.millis, last.text = millis, text
    return text


class Event(NamedTuple):
    """A published event: the wire's ``{"type": "event", ...}`` message.

    A named tuple rather than an attrs class: one is made per line of agent output, on the hot
    path, and a frozen attrs instance cost several times as much to make.
    """

    topic: str
    seq: int
    ts: str
    kind: str
    session: str | None
    data: Mapping[str, Any]
    mark: SpoolMark | None = None
    """Where in its agent's spool the event comes from (kept with it; not on the wire)."""

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "event",
            "topic": self.topic,
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "session": self.session,
            "data": self.data,
        }


def encode_event(event: Event) -> str:
    """The frame text of one event; computed once per publish and shared by every reader."""
    return orjson.dumps(event.to_wire()).decode()
