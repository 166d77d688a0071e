"""Observed sessions: Claude Code sessions hived did not start, seen through their hooks.

How it works: every hook payload names the agent's own ``session_id`` and the
``hook_event_name``. :meth:`ObservedSessions.ingest_hook` looks the session up by that id (making
it on first sight), publishes the whole payload as a ``hook`` event on the session's topic, and
moves the session to the state the hook implies (:data:`HOOK_STATES`): ``SessionStart`` →
RUNNING, a prompt or a tool hook → WORKING, a notification, a permission request or ``Stop`` →
WAITING, ``SessionEnd`` → EXITED. Hook names it does not know are published all the same and
change nothing. A session silent for ``hooks.observed_idle_s`` is marked LOST by
:meth:`ObservedSessions.serve_idle_watch`; it comes back when it speaks again. So does one kept
from an earlier run of hived (LOST when that run ended): the ``recall`` callback finds it in the
store by its agent session id, and it comes back with its own id.

A payload whose ``session_id`` belongs to a session hived supervises (a claude session that
reports through hooks too) joins that session's topic instead: the supervisor tells which
through the ``join`` callback. Ingestion is synchronous and never waits, so the HTTP endpoint
can answer the agent at once.

Bounds: a hook costs O(1) (or O(log n)) whatever the number of sessions kept. The idle watch
keeps a heap of deadlines, one entry per live session, checked lazily (a hook only moves the
session's ``last_seen``; the entry, once due, is pushed again if the session spoke since), and
is woken only when a deadline comes earlier than the one it waits for. Ended sessions are kept
in the order they ended, the oldest forgotten past :data:`MAX_ENDED_OBSERVED`. The sessions a
token's hooks keep live are at most ``hooks.max_live_per_token``: a hook that would make one
more (a new session, or one that comes back) is refused with :class:`HookLimitError` (HTTP 429).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import attrs
import trio

from hived.core.config import HooksConfig
from hived.core.convert import expected
from hived.core.drivers.base import TurnOutcome
from hived.core.errors import RequestError
from hived.core.events import session_topic, utc_timestamp
from hived.core.logtext import printable
from hived.core.sessions import (
    INITIAL_STATES,
    SessionSummary,
    State,
    check_transition,
    new_session_id,
)
from hived.hub import Hub

log = logging.getLogger(__name__)

HOOK_STATES: Final[Mapping[str, State]] = {
    "SessionStart": State.RUNNING,
    "UserPromptSubmit": State.WORKING,
    "PreToolUse": State.WORKING,
    "PostToolUse": State.WORKING,
    "PostToolUseFailure": State.WORKING,
    "PermissionDenied": State.WORKING,
    "SubagentStart": State.WORKING,
    "Notification": State.WAITING,
    "PermissionRequest": State.WAITING,
    "Stop": State.WAITING,
    "StopFailure": State.WAITING,
    "Interrupt": State.WAITING,
    "SessionEnd": State.EXITED,
}
"""The state each hook puts an observed session in; other hooks leave the state as it is.
``Interrupt`` (the person pressed Esc) and ``StopFailure`` (the turn died on an API error) end a
turn as ``Stop`` does, without a ``Stop`` after them."""

OBSERVED_AGENT: Final = "claude"
"""The agent an observed session is shown as (the hook endpoint is Claude Code's)."""
MAX_ENDED_OBSERVED: Final = 1000
"""Ended observed sessions kept in memory (the oldest are forgotten; the store keeps them)."""

_LIVE: Final = frozenset({State.RUNNING, State.WORKING, State.WAITING})

StateCallback = Callable[[SessionSummary, State | None], None]
"""Called with the new summary and the previous state (None for a new session)."""
Recall = Callable[[str, str], SessionSummary | None]
"""A kept observed session by name and agent session id (``Store.kept_observed``)."""


def observed_name(agent_session_id: str) -> str:
    """The name an observed session is shown with: the agent's and its session id's start."""
    return f"{OBSERVED_AGENT}-{agent_session_id[:8]}"


class HookLimitError(RequestError):
    """A hook refused because its token keeps ``hooks.max_live_per_token`` sessions live."""

    def __init__(self, message: str) -> None:
        super().__init__("conflict", message)


@attrs.define(eq=False)
class ObservedSession:
    """One observed session: its summary and when it last spoke (``trio.current_time()``)."""

    summary: SessionSummary
    last_seen: float
    token: str = ""
    """The name of the token whose hook made it live (it counts against that token's bound)."""
    watched: bool = False
    """It has an entry in the idle watch's heap."""


def turn_outcome(hook: str, payload: Mapping[str, Any]) -> TurnOutcome | None:
    """How the hook says the turn ended (``Stop``, ``StopFailure``, ``Interrupt``), or None."""
    if hook == "Stop":
        return TurnOutcome(ok=True)
    if hook == "Interrupt":
        return TurnOutcome(ok=False, error="interrupted")
    if hook != "StopFailure":
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    kind = payload.get("error_type")
    return TurnOutcome(
        ok=False,
        error=kind if isinstance(kind, str) and kind else "api_error",
        message=error if isinstance(error, str) else None,
    )


def _reason(hook: str, payload: Mapping[str, Any]) -> str:
    """Why a hook moved the session: the hook's name, or its own finer reason where it has one."""
    if hook == "Notification" and isinstance(payload.get("notification_type"), str):
        return str(payload["notification_type"])
    if hook == "SessionEnd" and isinstance(payload.get("reason"), str):
        return f"SessionEnd: {payload['reason']}"
    return hook


class ObservedSessions:
    """The observed sessions, keyed by the agent's ``session_id``.

    ``on_state`` publishes and records every state change (the supervisor's, so that observed
    sessions look like the others on the ``sessions`` topic); ``join`` maps an agent session id
    to the id of a supervised session that has it, or None; ``recall`` finds a kept one from an
    earlier run.
    """

    def __init__(
        self,
        hub: Hub,
        config: HooksConfig,
        on_state: StateCallback,
        join: Callable[[str], str | None],
        recall: Recall | None = None,
    ) -> None:
        self._hub = hub
        self._config = config
        self._on_state = on_state
        self._join = join
        self._recall = recall
        self._sessions: dict[str, ObservedSession] = {}
        """Every observed session kept, by hived's id."""
        self._by_agent_id: dict[str, ObservedSession] = {}
        """The latest session of each agent session id."""
        self._ended: dict[str, ObservedSession] = {}
        """The sessions kept that are not live, in the order they ended."""
        self._live_by_token: Counter[str] = Counter()
        self._deadlines: list[tuple[float, int, ObservedSession]] = []
        """The idle watch's heap: (when it may be idle, tie-breaker, session)."""
        self._order = itertools.count()
        self._watching_until = math.inf
        self._woken = trio.Event()

    def reload(self, config: HooksConfig) -> None:
        """A new ``[hooks]`` section: the idle limit applies from now on."""
        self._config = config
        idle_s = config.observed_idle_s
        self._deadlines = [(s.last_seen + idle_s, order, s) for _, order, s in self._deadlines]
        heapq.heapify(self._deadlines)
        self._woken.set()

    def live_count(self, token: str) -> int:
        """The live sessions whose hooks came with ``token`` (its name)."""
        return self._live_by_token[token]

    def __iter__(self) -> Iterator[ObservedSession]:
        return iter(list(self._sessions.values()))

    def ingest_hook(self, payload: Mapping[str, Any], token: str = "") -> None:
        """Take one hook payload, sent with the token named ``token``: publish it and update
        its session. Never blocks.

        Raises ``RequestError('bad_request')`` when ``session_id`` or ``hook_event_name`` is
        missing or not a non-empty string, and :class:`HookLimitError` when the hook would make
        one more session live for a token that has ``hooks.max_live_per_token`` (nothing is
        published then).
        """
        agent_id = payload.get("session_id")
        hook = payload.get("hook_event_name")
        for field, value in (("session_id", agent_id), ("hook_event_name", hook)):
            if value is None:
                raise RequestError("bad_request", f"hook payload: {field}: missing")
            if not isinstance(value, str) or not value:
                message = expected("a non-empty string", value)
                raise RequestError("bad_request", f"hook payload: {field}: {message}")
        assert isinstance(agent_id, str)
        assert isinstance(hook, str)
        data = dict(payload)
        joined = self._join(agent_id)
        if joined is not None:
            self._hub.publish(session_topic(joined), "hook", data, joined)
            return
        now = trio.current_time()
        target = HOOK_STATES.get(hook)
        reason = _reason(hook, payload)
        session = self._by_agent_id.get(agent_id) or self._recalled(agent_id, now)
        new = session is None or (session.summary.state is State.EXITED and hook == "SessionStart")
        if new or (session is not None and session.summary.state is State.LOST):
            self._check_room(token, agent_id)
        if session is None or new:
            session = self._create(agent_id, payload, target, reason, now, token)
            self._publish_hook(session, data)
            if target is State.EXITED:
                self._move(session, State.EXITED, reason)
            return
        session.last_seen = now
        self._publish_hook(session, data)
        outcome = turn_outcome(hook, payload)
        if outcome is not None:
            session.summary = attrs.evolve(session.summary, last_turn=outcome)
        state = session.summary.state
        if state is State.LOST:
            # It speaks again: the person came back to it.
            session.token = token
            self._move(session, target if target in _LIVE else State.RUNNING, reason)
            if target is State.EXITED:
                self._move(session, State.EXITED, reason)
        elif state is not State.EXITED and target is not None and target is not state:
            self._move(session, target, reason)

    def _check_room(self, token: str, agent_id: str) -> None:
        most = self._config.max_live_per_token
        if self._live_by_token[token] >= most:
            raise HookLimitError(
                f"hook for session {printable(agent_id)[:80]}: token {token or '(none)'} "
                f"already keeps {most} observed sessions live (hooks.max_live_per_token); end "
                "some (SessionEnd), or raise the limit"
            )

    def _recalled(self, agent_id: str, now: float) -> ObservedSession | None:
        """The kept session of an earlier run with this agent session id, taken back; or None."""
        kept = None if self._recall is None else self._recall(observed_name(agent_id), agent_id)
        if kept is None or kept.id in self._sessions:
            return None
        session = ObservedSession(kept, now)
        self._sessions[kept.id] = session
        self._by_agent_id[agent_id] = session
        self._ended[kept.id] = session
        log.info("observed session %s: %s is back (%s)", kept.id, printable(agent_id), kept.state)
        self._forget_ended()
        return session

    def _create(
        self,
        agent_id: str,
        payload: Mapping[str, Any],
        target: State | None,
        reason: str,
        now: float,
        token: str,
    ) -> ObservedSession:
        cwd = payload.get("cwd")
        summary = SessionSummary(
            id=new_session_id(),
            name=observed_name(agent_id),
            agent=OBSERVED_AGENT,
            state=target if target in INITIAL_STATES else State.RUNNING,
            started_at=utc_timestamp(),
            reason=reason,
            observed=True,
            agent_session_id=agent_id,
            cwd=cwd if isinstance(cwd, str) else None,
        )
        session = ObservedSession(summary, now, token)
        self._sessions[summary.id] = session
        self._by_agent_id[agent_id] = session
        log.info("observed session %s: %s seen through hooks", summary.id, printable(agent_id))
        self._counted(session, None, summary.state)
        self._on_state(summary, None)
        return session

    def _publish_hook(self, session: ObservedSession, data: Mapping[str, Any]) -> None:
        sid = session.summary.id
        self._hub.publish(session_topic(sid), "hook", data, sid)

    def _move(self, session: ObservedSession, new: State, reason: str) -> None:
        previous = session.summary.state
        if new is previous:
            return
        check_transition(previous, new)
        ended = new in (State.EXITED, State.LOST)
        session.summary = attrs.evolve(
            session.summary,
            state=new,
            reason=reason,
            ended_at=utc_timestamp() if ended else None,
        )
        self._counted(session, previous, new)
        self._on_state(session.summary, previous)

    def _counted(self, session: ObservedSession, previous: State | None, new: State) -> None:
        """Keep the live counts, the ended sessions and the idle watch up to a state change."""
        was_live, live = previous in _LIVE, new in _LIVE
        if was_live and not live:
            self._live_by_token[session.token] -= 1
            if not self._live_by_token[session.token]:
                del self._live_by_token[session.token]
        if live and not was_live:
            self._live_by_token[session.token] += 1
            self._ended.pop(session.summary.id, None)
            self._watch(session)
        if not live:
            self._ended.pop(session.summary.id, None)
            self._ended[session.summary.id] = session
            self._forget_ended()

    def _watch(self, session: ObservedSession) -> None:
        """Give a live session an entry in the idle watch's heap, if it has none."""
        if session.watched:
            return
        session.watched = True
        deadline = session.last_seen + self._config.observed_idle_s
        heapq.heappush(self._deadlines, (deadline, next(self._order), session))
        if deadline < self._watching_until:
            self._woken.set()

    def release(self, session_id: str) -> None:
        """Let go of an ended session (``session.forget``)."""
        session = self._sessions.get(session_id)
        if session is not None and session.summary.state not in _LIVE:
            del self._sessions[session_id]
            self._ended.pop(session_id, None)
            agent_id = session.summary.agent_session_id or ""
            if self._by_agent_id.get(agent_id) is session:
                del self._by_agent_id[agent_id]

    def _forget_ended(self) -> None:
        while len(self._ended) > MAX_ENDED_OBSERVED:
            session = self._ended.pop(next(iter(self._ended)))
            del self._sessions[session.summary.id]
            agent_id = session.summary.agent_session_id or ""
            if self._by_agent_id.get(agent_id) is session:
                del self._by_agent_id[agent_id]

    async def serve_idle_watch(self) -> None:
        """Mark observed sessions LOST after ``observed_idle_s`` of silence, until cancelled."""
        while True:
            deadlines = self._deadlines
            self._watching_until = deadlines[0][0] if deadlines else math.inf
            with trio.move_on_at(self._watching_until):
                await self._woken.wait()
            self._woken = trio.Event()
            deadlines = self._deadlines  # a reload makes a new heap
            now = trio.current_time()
            idle_s = self._config.observed_idle_s
            while deadlines and deadlines[0][0] <= now:
                _, order, session = heapq.heappop(deadlines)
                session.watched = False
                if session.summary.state not in _LIVE:
                    continue
                silent_s = now - session.last_seen
                if silent_s < idle_s:
                    # It spoke since the entry was made: its turn comes later.
                    session.watched = True
                    heapq.heappush(deadlines, (session.last_seen + idle_s, order, session))
                    continue
                log.info(
                    "observed session %s: silent for %.0f s: LOST", session.summary.id, silent_s
                )
                self._move(session, State.LOST, f"no hook for {idle_s:g} s")
