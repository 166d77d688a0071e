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
from hived.core.sessions import SessionSummary, State, is_live
from hived.hub import Hub
from hived.store import Store
from hived.supervisor import Supervisor

Handler = Callable[[Any, Caller], Awaitable[Any]]

EVENTS_PAGE_DEFAULT: Final = 100


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
        found = {
            s.id: s
            for s in self.store.list_sessions(state=state, agent=request.agent, since=request.since)
        }
        live = await self.supervisor.handlers()["sessions"](request, caller)
        for summary in live["sessions"]:
            found.pop(summary["id"], None)
        summaries = [s.to_json() for s in found.values()]
        if not (request.all or state or request.since):
            summaries = [s for s in summaries if is_live(State(s["state"]))]
        merged = sorted([*live["sessions"], *summaries], key=lambda s: s["id"], reverse=True)
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
        kept = self.store.list_sessions()
        for matches in (
            [s for s in kept if s.id == ref],
            [s for s in kept if s.name == ref][:1],
            [s for s in kept if s.id.startswith(ref.upper())],
        ):
            if len(matches) == 1:
                return matches[0].id
            if matches:
                names = ", ".join(f"{s.id} ({s.name})" for s in matches[:10])
                raise RequestError(
                    "bad_request", f"session {ref!r} is ambiguous: it matches {names}"
                )
        raise RequestError("not_found", f"no session {ref!r} (give an id, an id prefix or a name)")
