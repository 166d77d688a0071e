"""Request routing: wire ``type`` → the async handler that answers it.

The daemon registers each component's handlers (the supervisor's ``session.*``, the admin
requests); the server registers its own (``subscribe``, ``connections``…). A connection looks
up the handler after it has parsed the frame and checked the caller's role.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hived.core.errors import RequestError
from hived.core.protocol import REQUEST_TYPES, Caller, Request

Handler = Callable[[Request, Caller], Awaitable[Any]]
"""Answers one request; returns the ``result`` payload or raises ``RequestError``."""


class Router:
    """The handlers by wire type; one per type."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(self, wire_type: str, handler: Handler) -> None:
        """Register the handler of ``wire_type``; a second one for a type is a mistake."""
        if wire_type not in REQUEST_TYPES:
            raise ValueError(f"unknown request type {wire_type!r}")
        if wire_type in self._handlers:
            raise ValueError(f"a handler for {wire_type!r} is already registered")
        self._handlers[wire_type] = handler

    def wrap(self, wire_type: str, wrapper: Callable[[Handler], Handler]) -> Handler:
        """Put ``wrapper(handler)`` in place of the handler of ``wire_type`` (the cluster's
        hooks); returns the handler it wrapped."""
        handler = self._handlers[wire_type]
        self._handlers[wire_type] = wrapper(handler)
        return handler

    def __contains__(self, wire_type: object) -> bool:
        return wire_type in self._handlers

    async def handle(self, request: Request, caller: Caller) -> Any:
        """Run the handler of ``request``'s type; ``RequestError("not_found")`` when none is."""
        handler = self._handlers.get(request.type)
        if handler is None:
            raise RequestError("not_found", f"{request.type} is not served by this daemon")
        return await handler(request, caller)
