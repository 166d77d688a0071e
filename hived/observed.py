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
"""

from __future__ import annotations

import logging
import math
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


@attrs.define(eq=False)
class ObservedSession:
    """One observed session: its summary and when it last spoke (``trio.current_time()``)."""

    summary: SessionSummary
    last_seen: float


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
        self._woken = trio.Event()

    def reload(self, config: HooksConfig) -> None:
        """A new ``[hooks]`` section: the idle limit applies from now on."""
        self._config = config
        self._woken.set()

    def __iter__(self) -> Iterator[ObservedSession]:
        return iter(list(self._sessions.values()))

    def ingest_hook(self, payload: Mapping[str, Any]) -> None:
        """Take one hook payload: publish it and update its session. Never blocks.

        Raises ``RequestError('bad_request')`` when ``session_id`` or ``hook_event_name`` is
        missing or not a non-empty string.
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
        if session is None or (session.summary.state is State.EXITED and hook == "SessionStart"):
            session = self._create(agent_id, payload, target, reason, now)
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
            self._move(session, target if target in _LIVE else State.RUNNING, reason)
            self._woken.set()
            if target is State.EXITED:
                self._move(session, State.EXITED, reason)
        elif state is not State.EXITED and target is not None and target is not state:
            self._move(session, target, reason)

    def _recalled(self, agent_id: str, now: float) -> ObservedSession | None:
        """The kept session of an earlier run with this agent session id, taken back; or None."""
        kept = None if self._recall is None else self._recall(observed_name(agent_id), agent_id)
        if kept is None or kept.id in self._sessions:
            return None
        session = ObservedSession(kept, now)
        self._sessions[kept.id] = session
        self._by_agent_id[agent_id] = session
        log.info("observed session %s: %s is back (%s)", kept.id, printable(agent_id), kept.state)
        return session

    def _create(
        self,
        agent_id: str,
        payload: Mapping[str, Any],
        target: State | None,
        reason: str,
        now: float,
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
        session = ObservedSession(summary, now)
        self._sessions[summary.id] = session
        self._by_agent_id[agent_id] = session
        log.info("observed session %s: %s seen through hooks", summary.id, printable(agent_id))
        self._on_state(summary, None)
        self._forget_ended()
        self._woken.set()
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
        self._on_state(session.summary, previous)

    def release(self, session_id: str) -> None:
        """Let go of an ended session (``session.forget``)."""
        session = self._sessions.get(session_id)
        if session is not None and session.summary.state not in _LIVE:
            del self._sessions[session_id]
            agent_id = session.summary.agent_session_id or ""
            if self._by_agent_id.get(agent_id) is session:
                del self._by_agent_id[agent_id]

    def _forget_ended(self) -> None:
        ended = [s for s in self._sessions.values() if s.summary.state not in _LIVE]
        for session in ended[: max(len(ended) - MAX_ENDED_OBSERVED, 0)]:
            del self._sessions[session.summary.id]
            agent_id = session.summary.agent_session_id or ""
            if self._by_agent_id.get(agent_id) is session:
                del self._by_agent_id[agent_id]

    async def serve_idle_watch(self) -> None:
        """Mark observed sessions LOST after ``observed_idle_s`` of silence, until cancelled."""
        while True:
            idle_s = self._config.observed_idle_s
            live = [s for s in self._sessions.values() if s.summary.state in _LIVE]
            deadline = min((s.last_seen + idle_s for s in live), default=math.inf)
            with trio.move_on_at(deadline):
                await self._woken.wait()
            self._woken = trio.Event()
            now = trio.current_time()
            for session in live:
                silent_s = now - session.last_seen
                if session.summary.state in _LIVE and silent_s >= idle_s:
                    log.info(
                        "observed session %s: silent for %.0f s: LOST", session.summary.id, silent_s
                    )
                    self._move(session, State.LOST, f"no hook for {idle_s:g} s")
