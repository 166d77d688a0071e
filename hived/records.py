"""What hived remembers, as requests see it: past sessions and their events.

The supervisor knows the sessions of this run; the store knows every kept session, from this
run and earlier ones. ``sessions`` merges the two (the supervisor's view wins for a session it
runs), and ``session.events`` pages through a session's stored events. At start, sessions the
store found running when the daemon died are announced as ``LOST`` on the ``sessions`` topic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import attrs

from hived.core.errors import RequestError
from hived.core.events import SESSIONS_TOPIC, session_topic
from hived.core.messages import SessionEvents, Sessions
from hived.core.protocol import Caller
from hived.core.sessions import LIVE_STATES, SessionSummary, State
from hived.hub import Hub
from hived.store import Store
from hived.supervisor import Supervisor

Handler = Callable[[Any, Caller], Awaitable[Any]]

EVENTS_PAGE_DEFAULT: Final = 100
AMBIGUOUS_SHOWN: Final = 10
"""Candidates named in the error for an ambiguous session prefix."""


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

    def handlers(self) -> dict[str, Handler]:
        return {"sessions": self.sessions, "session.events": self.session_events}

    async def sessions(self, request: Sessions, caller: Caller) -> dict[str, Any]:
        """Live sessions, newest first; with ``all``, ``state`` or ``since``, ended ones too."""
        state = request.state.upper() if request.state else None
        everything = bool(request.all or state or request.since)
        kept = self.store.list_sessions(
            state=state,
            agent=request.agent,
            since=request.since,
            limit=request.limit,
            states=None if everything else LIVE_STATES,
        )
        live = (await self.supervisor.handlers()["sessions"](request, caller))["sessions"]
        shown = {summary["id"] for summary in live}
        merged = [*live, *(s.to_json() for s in kept if s.id not in shown)]
        merged.sort(key=lambda s: s["id"], reverse=True)
        return {"sessions": merged[: request.limit] if request.limit else merged}

    async def session_events(self, request: SessionEvents, caller: Caller) -> dict[str, Any]:
        """A page of one session's events after ``since``, oldest first."""
        session_id = self.resolve(request.session)
        limit = request.limit or EVENTS_PAGE_DEFAULT
        events = await self.store.events(session_id, since=request.since, limit=limit)
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
            raise RequestError(
                "not_found", f"no session {ref!r} (give an id, an id prefix or a name)"
            )
        names = ", ".join(f"{s.id} ({s.name})" for s in matches[:AMBIGUOUS_SHOWN])
        more = " and more" if len(matches) > AMBIGUOUS_SHOWN else ""
        raise RequestError("bad_request", f"session {ref!r} is ambiguous: it matches {names}{more}")
