"""The test build's echo WebSocket: every message sent back as it came.

A test build (``echo=True``: ``hived run`` with ``HIVED_TEST_ECHO=1`` in its environment, never
a config key) serves :data:`ECHO_PATH` with no token — what the Autobahn test suite drives
(docs/internals.md, "Autobahn").
"""

from __future__ import annotations

import contextlib
import logging
from typing import Final

import trio

from hived.server.ws import WebSocket, WebSocketClosed, accept

log = logging.getLogger(__name__)

ECHO_PATH: Final = "/v1/echo"
"""The test build's echo WebSocket (no token; only with ``echo=True``)."""
ECHO_CLOSE_S: Final = 5.0


class _Echo:
    """Sends each message back as it came; ``ended`` is set once no more will come."""

    __slots__ = ("_ws", "ended")

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self.ended = trio.Event()

    async def receive(self, message: str | bytes) -> None:
        with contextlib.suppress(WebSocketClosed):
            if isinstance(message, str):
                await self._ws.send(message)
            else:
                await self._ws.send_binary(message)

    def received_all(self, closed: WebSocketClosed) -> None:
        self.ended.set()


async def serve_echo(
    stream: trio.abc.Stream,
    received: bytes,
    peer: str,
    nursery: trio.Nursery,
    *,
    max_message_bytes: int,
    timeout_s: float,
    compression: bool,
) -> None:
    """Complete the handshake whose bytes ``received`` were read, then echo every message
    until the peer closes; the library's reader runs in ``nursery``, cancelled at the end."""
    try:
        ws = await accept(
            nursery,
            stream,
            received,
            max_message_size=max_message_bytes,
            timeout_s=timeout_s,
            compression=compression,
        )
    except WebSocketClosed as exc:
        log.debug("%s: echo handshake failed: %s", peer, exc)
        nursery.cancel_scope.cancel()
        return
    del received
    echo = _Echo(ws)
    ws.deliver(echo)
    await echo.ended.wait()
    await ws.close(1000, None, ECHO_CLOSE_S)
    await ws.finish(ECHO_CLOSE_S)
    nursery.cancel_scope.cancel()
