"""The server's statistics, as the admin channel reads them: frozen snapshots, taken on demand.

:meth:`~hived.server.listener.Server.stats` gives ``status`` its :class:`ServerStats`, and
:meth:`~hived.server.connection.Connection.stats` gives the ``connections`` request one
:class:`ConnectionStats` per open connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs

SUBSCRIPTIONS_SHOWN: Final = 64
"""Topics listed per connection: one subscribed to thousands of topics must not make its
``connections`` entry big (a page holds at least one entry, however big)."""


@attrs.frozen
class ServerStats:
    """The listener's figures for ``status``."""

    connections: int
    """Open WebSocket connections."""
    by_role: Mapping[str, int]
    """Open WebSocket connections per role (``unauthenticated`` before ``hello``)."""
    accepted_total: int
    """TCP connections accepted since the start (plain HTTP included)."""
    websockets_total: int
    tls: bool
    listen: tuple[str, ...]
    draining: bool


@attrs.frozen
class ConnectionStats:
    """A snapshot of one connection, as the ``connections`` request lists it."""

    id: int
    peer: str
    """The client's address, ``host:port``."""
    channel: str
    """``/v1/ws`` or ``/v1/admin``."""
    token_name: str | None
    """The name of the token it authenticated with; None while it has not yet."""
    role: str | None
    since: str
    """When the WebSocket opened (ISO 8601, UTC)."""
    frames_in: int
    bytes_in: int
    frames_out: int
    """WebSocket frames sent; a frame may carry several messages."""
    messages_out: int
    bytes_out: int
    queue_depth: int
    """Frames the hub has queued for it that the sender has not sent yet."""
    subscriptions: tuple[str, ...]
    """The first :data:`SUBSCRIPTIONS_SHOWN` of its topics, sorted."""
    subscriptions_total: int
    """How many topics it is subscribed to."""
