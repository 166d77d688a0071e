"""What hived remembers, as requests see it: past sessions and their events.

The supervisor knows the sessions of this run; the store knows every kept session, from this
run and earlier ones. ``sessions`` merges the two (the supervisor's view wins for a session it
runs), and ``session.events`` pages through a session's stored events. At start, sessions the
store found running when the daemon died are announced as ``LOST`` on the ``sessions`` topic.

The requests that act on one session (``session.input``, ``.approve``, ``.answer``,
``.interrupt``, ``.stop``, ``.restart``, ``.resume``) resolve their ref here too, live or kept,
so that an id, a prefix (any case) or a name of a session from an earlier run is found: a
session this run holds is handed to the supervisor by its id; one only kept is adopted by the
supervisor for ``.restart`` and ``.resume`` (it goes on as the same session), and answered
``conflict`` for the others, saying it is not running.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import attrs

from hived.agents.supervisor import Supervisor
from hived.core.errors import RequestError
from hived.core.events import SESSIONS_TOPIC, session_topic
from hived.core.messages import SessionEvents, Sessions
from hived.core.pages import sessions_page
from hived.core.protocol import Caller
from hived.core.sessions import LIVE_STATES, SessionSummary, State, ulid_time_ms
from hived.hub import Hub
from hived.store import Store

Handler = Callable[[Any, Caller], Awaitable[Any]]

EVENTS_PAGE_DEFAULT: Final = 100
EVENTS_PAGE_MAX_BYTES: Final = 262_144
"""A ``session.events`` page stops before this many bytes of events (it holds at least one):
pages of large events stay small in memory and on the wire, whatever their ``limit``."""
AMBIGUOUS_SHOWN: Final = 10
"""Candidates named in the error for an ambiguous session prefix."""
REVIVING: Final = frozenset({"session.restart", "session.resume"})
"""Requests that may take up a session only the store keeps (an earlier run's)."""
SESSION_ACTIONS: Final = (
    "session.input",
    "session.approve",
    "session.answer",
    "session.interrupt",
    "session.stop",
    "session.restart",
    "session.resume",
)
"""The supervisor's requests on one session, whose ref is resolved here first."""


def announce_recovered(hub: Hub, recovered: Iterable[SessionSummary]) -> None:
    """Publish a ``state`` event for each session that a crash left running, now LOST."""
    for summary in recovered:
        data = {
            "state": State.LOST,
            "previous": None,
            "reason": summary.reason,
            "exit_code": None,
            "signal": None,
            "summary": summary.to_json(),
        }
        hub.publish(SESSIONS_TOPIC, "state", data, session=summary.id)
        hub.publish(session_topic(summary.id), "state", data, session=summary.id)


@attrs.define
class Records:
    """The ``sessions`` and ``session.events`` requests, over the supervisor and the store."""

    supervisor: Supervisor
    store: Store
    started_ms: int = attrs.field(factory=lambda: int(time.time() * 1000))
    """When this run began: a kept session started before it is of an earlier run."""

    def handlers(self) -> dict[str, Handler]:
        supervised = self.supervisor.handlers()
        acting = {name: self._acting(name, supervised[name]) for name in SESSION_ACTIONS}
        return {"sessions": self.sessions, "session.events": self.session_events, **acting}

    def _acting(self, wire_type: str, handler: Handler) -> Handler:
        """``handler`` (the supervisor's) given the resolved id of a session this run holds."""

        async def handle(request: Any, caller: Caller) -> Any:
            session_id = self.resolve(request.session)
            if not self.supervisor.holds(session_id):
                kept = self.store.get_session(session_id)
                if wire_type not in REVIVING or kept is None:
                    raise self._not_held(wire_type, session_id)
                self.supervisor.adopt(kept)
            return await handler(attrs.evolve(request, session=session_id), caller)

        return handle

    def _not_held(self, wire_type: str, session_id: str) -> RequestError:
        """The ``conflict`` for a request on a session only the store keeps."""
        kept = self.store.get_session(session_id)
        name = kept.name if kept is not None else session_id
        state = kept.state if kept is not None else State.LOST
        if ulid_time_ms(session_id) < self.started_ms:
            when = f"{state} in an earlier run of hived"
        else:
            when = f"{state}; hived no longer holds it"
        return RequestError("conflict", f"session {name} is not running ({when})")

    async def sessions(self, request: Sessions, caller: Caller) -> dict[str, Any]:
        """Live sessions, newest first; with ``all``, ``state`` or ``since``, ended ones too.

        A page: at most ``limit``, and at most :data:`~hived.core.pages.LIST_REPLY_MAX_BYTES`
        of summaries; ``next`` (the last id shown, else None) asks for the rest as ``before``.
        """
        state = request.state.upper() if request.state else None
        everything = bool(request.all or state or request.since)
        kept = self.store.list_sessions(
            state=state,
            agent=request.agent,
            since=request.since,
            # One more than asked, to tell whether more are left.
            limit=request.limit + 1 if request.limit and not request.before else None,
            states=None if everything else LIVE_STATES,
        )
        every_live = attrs.evolve(request, limit=None)
        live = (await self.supervisor.handlers()["sessions"](every_live, caller))["sessions"]
        shown = {summary["id"] for summary in live}
        merged = [*live, *(s.to_json() for s in kept if s.id not in shown)]
        if request.before is not None:
            before = request.before.upper()
            merged = [s for s in merged if s["id"] < before]
        merged.sort(key=lambda s: s["id"], reverse=True)
        return sessions_page(merged, request.limit)

    async def session_events(self, request: SessionEvents, caller: Caller) -> dict[str, Any]:
        """A page of one session's events after ``since``, oldest first."""
        session_id = self.resolve(request.session)
        limit = request.limit or EVENTS_PAGE_DEFAULT
        events = await self.store.events(
            session_id, since=request.since, limit=limit, max_bytes=EVENTS_PAGE_MAX_BYTES
        )
        return {"session": session_id, "events": events}

    def resolve(self, ref: str) -> str:
        """A session id from an id, a unique id prefix or a name, live or kept."""
        try:
            return self.supervisor.find(ref).id
        except RequestError as exc:
            if exc.code != "not_found":
                raise
        matches = self.store.find_sessions(ref, AMBIGUOUS_SHOWN + 1)
        if len(matches) == 1:
            return matches[0].id
        if not matches:
            forgotten = self.store.forgotten(ref.upper())
            if forgotten is not None:
                raise RequestError(
                    "not_found", f"session {ref.upper()} was forgotten at {forgotten}"
                )
            raise RequestError(
                "not_found", f"no session {ref!r} (give an id, an id prefix or a name)"
            )
        names = ", ".join(f"{s.id} ({s.name})" for s in matches[:AMBIGUOUS_SHOWN])
        more = " and more" if len(matches) > AMBIGUOUS_SHOWN else ""
        raise RequestError("bad_request", f"session {ref!r} is ambiguous: it matches {names}{more}")
