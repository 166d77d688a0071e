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

from hived.server.ws import WebSocketClosed, accept

log = logging.getLogger(__name__)

ECHO_PATH: Final = "/v1/echo"
"""The test build's echo WebSocket (no token; only with ``echo=True``)."""
ECHO_CLOSE_S: Final = 5.0


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
    ended = trio.Event()

    async def echo(message: str | bytes) -> None:
        with contextlib.suppress(WebSocketClosed):
            if isinstance(message, str):
                await ws.send(message)
            else:
                await ws.send_binary(message)

    ws.deliver(echo, lambda _: ended.set())
    await ended.wait()
    await ws.close(1000, None, ECHO_CLOSE_S)
    await ws.finish(ECHO_CLOSE_S)
    nursery.cancel_scope.cancel()
