"""The requests of one authenticated connection: parsed, checked, run, and answered.

How it works: the connection's reader hands each text frame to :meth:`Requests.dispatch`. A
frame that does not parse, a second ``hello`` and a request beyond the caller's role are
answered at once with an ``error`` frame. Any other request runs through the
:class:`~hived.server.router.Router` in a task of its own in the connection's nursery, so that a
slow one (``session.stop``) does not stop the reading; at most :data:`MAX_CONCURRENT_REQUESTS`
run at once, and the reader waits for a free slot beyond that, so a client cannot start
requests without bound. Each request ends in one frame — its ``result``, or an ``error`` for a
:class:`~hived.core.errors.RequestError` or an unexpected failure — handed to the connection's
reply callback, which queues it for the sender.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Final

import trio

from hived.core.errors import ProtocolError, RequestError
from hived.core.protocol import (
    ERROR_CODES,
    Caller,
    Hello,
    Request,
    error_frame,
    forbidden_reason,
    parse_frame,
    result_frame,
)
from hived.server.router import Router

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS: Final = 16
"""Requests one connection may have running at once; the reader waits for a free slot."""


class Requests:
    """The requests of one connection on ``channel``, run in ``nursery``; ``reply`` gets every
    answer as frame text. Made when the connection authenticates; every idle connection keeps
    one, hence the slots."""

    __slots__ = (
        "_channel",
        "_nursery",
        "_reply",
        "_router",
        "_running",
        "_slot_freed",
        "held_until",
    )

    def __init__(
        self, channel: str, router: Router, nursery: trio.Nursery, reply: Callable[[str], None]
    ) -> None:
        self._channel = channel
        self._router = router
        self._nursery = nursery
        self._reply = reply
        self._running = 0
        """Requests running now, at most :data:`MAX_CONCURRENT_REQUESTS`."""
        self._slot_freed: trio.Event | None = None
        """Set when a request ends, for the reader waiting for a free slot (made only then: a
        semaphore per connection, idle or not, costs more)."""
        self.held_until = -math.inf
        """When the reader last went on after waiting for a free slot; ``math.inf`` while it
        waits (what the client sent meanwhile, a pong too, is not read: the heartbeat does not
        count that time against the client, :mod:`hived.core.pongs`)."""

    async def dispatch(self, text: str, caller: Caller) -> None:
        """Answer the frame ``text`` from ``caller``, or start the request it holds; waits while
        :data:`MAX_CONCURRENT_REQUESTS` are running."""
        try:
            request = parse_frame(text)
        except ProtocolError as exc:
            # Never log the frame itself: it may hold a secret.
            log.debug("connection %d: bad frame: %s", caller.connection, exc.code)
            request_id = exc.request_id if isinstance(exc.request_id, int | str) else None
            self._reply(error_frame(request_id, exc.code, exc.message))
            return
        if isinstance(request, Hello):
            message = f"already authenticated as {caller.token_name}"
            self._reply(error_frame(request.id, "conflict", message))
            return
        refused = forbidden_reason(request.type, caller.role, self._channel)
        if refused is not None:
            self._reply(error_frame(request.id, "forbidden", refused))
            return
        if self._running >= MAX_CONCURRENT_REQUESTS:
            self.held_until = math.inf
            try:
                while self._running >= MAX_CONCURRENT_REQUESTS:
                    if self._slot_freed is None:
                        self._slot_freed = trio.Event()
                    await self._slot_freed.wait()
            finally:
                self.held_until = trio.current_time()
        self._running += 1
        self._nursery.start_soon(self._run, request, caller)

    async def _run(self, request: Request, caller: Caller) -> None:
        try:
            result = await self._router.handle(request, caller)
            frame = result_frame(request.id, result)
        except RequestError as exc:
            code = exc.code if exc.code in ERROR_CODES else "internal"
            frame = error_frame(request.id, code, exc.message)
        except Exception:
            log.exception("connection %d: %s failed", caller.connection, request.type)
            message = f"{request.type} failed inside hived (the daemon's log has the details)"
            frame = error_frame(request.id, "internal", message)
        finally:
            self._running -= 1
            if self._slot_freed is not None:
                self._slot_freed.set()
                self._slot_freed = None
        self._reply(frame)
