"""The requests the listener answers itself: ``subscribe``, ``unsubscribe``, ``ping``,
``connections`` and ``connection.kick`` — what needs the caller's connection, or all of them.

They are registered on the router the listener is given (:meth:`OwnRequests.register`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from hived.core.errors import RequestError
from hived.core.pages import int_cursor, page
from hived.core.protocol import (
    Caller,
    CloseCode,
    ConnectionKick,
    Connections,
    Subscribe,
    Unsubscribe,
)
from hived.core.protocol import Request as WireRequest
from hived.hub import Hub, SubscribeResult
from hived.server.connection import Connection
from hived.server.router import Router
from hived.server.stats import ConnectionStats

log = logging.getLogger(__name__)


class OwnRequests:
    """Answers the listener's own requests from its table of open ``connections`` (by id)."""

    def __init__(
        self,
        hub: Hub,
        connections: dict[int, Connection],
        snapshot: Callable[[int | None], Iterable[ConnectionStats]],
    ) -> None:
        self._hub = hub
        self._connections = connections
        self._snapshot = snapshot

    def register(self, router: Router) -> None:
        router.add("subscribe", self._subscribe)
        router.add("unsubscribe", self._unsubscribe)
        router.add("ping", self._ping)
        router.add("connections", self._list_connections)
        router.add("connection.kick", self._kick)

    def connection_of(self, caller: Caller) -> Connection:
        """The caller's connection (RequestError once it is closed)."""
        connection = self._connections.get(caller.connection)
        if connection is None:
            raise RequestError("not_found", f"connection {caller.connection} is closed")
        return connection

    async def _subscribe(self, request: WireRequest, caller: Caller) -> SubscribeResult:
        assert isinstance(request, Subscribe)
        sub = self.connection_of(caller).subscriber
        return await self._hub.subscribe(sub, request.topic, request.since, request.epoch)

    async def _unsubscribe(self, request: WireRequest, caller: Caller) -> dict[str, Any]:
        assert isinstance(request, Unsubscribe)
        self._hub.unsubscribe(self.connection_of(caller).subscriber, request.topic)
        return {"topic": request.topic}

    async def _ping(self, request: WireRequest, caller: Caller) -> dict[str, Any]:
        return {}

    async def _list_connections(self, request: WireRequest, caller: Caller) -> dict[str, Any]:
        """A page of the open connections by id: at most ``limit`` and 256 KiB of them (10,000
        connections take about 2.5 MB); ``next`` (the last id shown, as a string) asks for the
        ones after it."""
        assert isinstance(request, Connections)
        after = int_cursor("connections.cursor", request.cursor)
        listed = (attrs.asdict(stats) for stats in self._snapshot(after))
        shown, last = page(listed, request.limit, lambda connection: connection["id"])
        return {"connections": shown, "next": None if last is None else str(last)}

    async def _kick(self, request: WireRequest, caller: Caller) -> dict[str, Any]:
        assert isinstance(request, ConnectionKick)
        target = self._connections.get(request.connection)
        if target is None:
            raise RequestError("not_found", f"no open connection {request.connection}")
        reason = request.reason or f"closed by {caller.token_name}"
        log.info(
            "connection %d: kicked by %s (connection %d)",
            target.id,
            caller.token_name,
            caller.connection,
        )
        target.request_close(CloseCode.NORMAL, reason)
        return {"connection": target.id}
