"""The history requests: ``search``, ``usage``, ``session.export`` and ``session.forget``.

They read what the store keeps (:mod:`hived.store.search`, :mod:`hived.store.ledger`) and
answer in pages small enough for any client. ``session.export`` is a paged request on the
WebSocket (no HTTP route): a client asks page after page with the ``next`` cursor and joins the
``text`` of each, so a browser builds a download from the same channel it already holds, with
the same token and the same limits; docs/protocol.md has the shape. ``session.forget`` deletes
ended sessions with everything kept of them: from the store, from the hub's rings and from the
supervisor's memory of this run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import orjson

from hived.agents.supervisor import Supervisor
from hived.core.errors import RequestError
from hived.core.events import SESSIONS_TOPIC, session_topic
from hived.core.messages import Search, SessionExport, SessionForget, UsageLedger
from hived.core.pages import byte_page, int_cursor, label
from hived.core.protocol import Caller
from hived.core.sessions import ENDED_STATES, SessionSummary
from hived.core.transcript import markdown_event, markdown_head
from hived.hub import Hub
from hived.records import Records
from hived.store import Store
from hived.store.search import QueryError, SearchFilters
from hived.store.sessions import normalize_time

log = logging.getLogger(__name__)

Handler = Callable[[Any, Caller], Awaitable[Any]]

SEARCH_LIMIT_DEFAULT: Final = 50
EXPORT_PAGE_EVENTS: Final = 2000
"""Most events in one ``session.export`` page."""
EXPORT_PAGE_MAX_BYTES: Final = 262_144
"""A ``session.export`` page stops before this many bytes of events (it holds at least one)."""
FORGET_MAX: Final = 1000
"""Most sessions one ``session.forget`` with ``ended_before`` deletes (ask again for more)."""


def _time(value: str | None) -> str | None:
    return None if value is None else normalize_time(value)


@attrs.define
class Archive:
    """Answers the history requests from the store, the hub and the supervisor."""

    store: Store
    hub: Hub
    supervisor: Supervisor
    records: Records

    def handlers(self) -> dict[str, Handler]:
        return {
            "search": self.search,
            "usage": self.usage,
            "session.export": self.export,
            "session.forget": self.forget,
        }

    async def search(self, request: Search, caller: Caller) -> dict[str, Any]:
        """A page of hits, newest first (at most ``limit`` and 256 KiB of them); ``next`` is the
        cursor of the next page, or null."""
        filters = SearchFilters(
            session=None if request.session is None else self.records.resolve(request.session),
            agent=request.agent,
            kinds=request.kinds,
            since=_time(request.since),
            until=_time(request.until),
        )
        limit = request.limit or SEARCH_LIMIT_DEFAULT
        try:
            hits, after = await self.store.search(
                request.query, filters, limit, int_cursor("search.cursor", request.cursor)
            )
        except QueryError as exc:
            raise RequestError("bad_request", f"search.query: {exc}") from None
        index = self.store.stats().index
        return {
            "query": request.query,
            "hits": hits,
            "next": None if after is None else str(after),
            "index": {"state": index.state, "behind": index.behind},
        }

    async def usage(self, request: UsageLedger, caller: Caller) -> dict[str, Any]:
        """The ledger (the contract in docs/protocol.md): as many rows as 256 KiB holds (the
        costliest, or the latest days), how many there are, and the total of them all."""
        ledger = await self.store.usage(request.by, _time(request.since), _time(request.until))
        if request.by == "day":
            latest, _ = byte_page(ledger["rows"][::-1])
            rows = latest[::-1]
        else:
            rows, _ = byte_page(ledger["rows"])
        return {
            "by": request.by,
            "since": request.since,
            "until": request.until,
            "rows": rows,
            "rows_total": len(ledger["rows"]),
            "total": ledger["total"],
        }

    async def export(self, request: SessionExport, caller: Caller) -> dict[str, Any]:
        """One page of a transcript: ``text`` to append, ``next`` to ask for the rest."""
        session_id = self.records.resolve(request.session)
        after = request.cursor or 0
        frames = await self.store.read(
            session_topic(session_id),
            after,
            self.store.last_seqs().get(session_topic(session_id), 0),
            EXPORT_PAGE_EVENTS,
            EXPORT_PAGE_MAX_BYTES,
        )
        if request.format == "jsonl":
            text = "".join(frame + "\n" for _, frame in frames)
        else:
            # Each block ends with a blank line, so that pages join as they are.
            blocks = []
            if not after:
                summary = self._summary(session_id)
                blocks.append(markdown_head(summary.to_json() if summary else {"id": session_id}))
            for _, frame in frames:
                block = markdown_event(orjson.loads(frame))
                if block is not None:
                    blocks.append(block + "\n")
            text = "\n".join(blocks) + ("\n" if blocks else "")
        last = self.store.last_seqs().get(session_topic(session_id), 0)
        more = bool(frames) and frames[-1][0] < last
        return {
            "session": session_id,
            "format": request.format,
            "events": len(frames),
            "text": text,
            "next": frames[-1][0] if more else None,
        }

    def _summary(self, session_id: str) -> SessionSummary | None:
        held = [s for s in self.supervisor.summaries() if s.id == session_id]
        return held[0] if held else self.store.get_session(session_id)

    async def forget(self, request: SessionForget, caller: Caller) -> dict[str, Any]:
        """Delete one ended session, or every one ended before a time, with all kept of them."""
        if (request.session is None) == (request.ended_before is None):
            raise RequestError(
                "bad_request", "session.forget: give exactly one of session and ended_before"
            )
        if request.session is not None:
            summary = self._summary(self.records.resolve(request.session))
            if summary is None:
                raise RequestError("not_found", f"no session {request.session!r}")
            if summary.state not in ENDED_STATES:
                raise RequestError(
                    "conflict",
                    f"session {summary.name} is {summary.state}: stop it before forgetting it",
                )
            targets = [summary]
        else:
            before = normalize_time(request.ended_before or "")
            ended = self.store.list_sessions(states=ENDED_STATES)
            targets = [s for s in ended if (s.ended_at or s.started_at or "") < before]
            targets = targets[:FORGET_MAX]
        forgotten = []
        for summary in targets:
            events = await self._forget_one(summary, caller)
            forgotten.append({"session": summary.id, "name": label(summary.name), "events": events})
        return {"forgotten": forgotten}

    async def _forget_one(self, summary: SessionSummary, caller: Caller) -> int:
        self.supervisor.release(summary.id)
        events = await self.store.forget(summary.id)
        at = self.store.forgotten(summary.id) or ""
        self.hub.forget(session_topic(summary.id), at)
        self.hub.forget(SESSIONS_TOPIC, None)
        log.info(
            "session %s (%s) forgotten by %s: %d events",
            summary.id,
            summary.name,
            caller.token_name,
            events,
        )
        return events
