"""The checks at the door: an upgrade's method, Origin and header token; a hook's rate.

Both run before anything is served, on what the request head says, and refuse with an
:class:`~hived.core.http.HttpError` (405, 503, 403, 401, 429) that the listener answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from hived.core import limits
from hived.core.auth import TokenTable, may_open, origin_allowed, parse_bearer
from hived.core.config import HooksConfig, ServerConfig, TokenConfig
from hived.core.http import HttpError, Request, check_upgrade
from hived.server import routes

log = logging.getLogger(__name__)


def check_upgrade_request(
    stream: trio.abc.Stream,
    request: Request,
    peer: str,
    *,
    config: ServerConfig,
    tokens: TokenTable,
    draining: bool,
) -> TokenConfig | None:
    """Check an upgrade (Origin, then a header token): the header token, if any."""
    channel = request.path
    if request.method != "GET":
        raise HttpError(405, f"{channel} answers GET (a WebSocket handshake)", [("Allow", "GET")])
    if draining:
        raise HttpError(503, "the daemon is stopping; reconnect later")
    check_upgrade(request)
    scheme = "https" if isinstance(stream, trio.SSLStream) else "http"
    origin = request.header("origin")
    if not origin_allowed(origin, request.header("host"), scheme, config.allowed_origins):
        log.info("%s: refused Origin %r on %s", peer, origin, channel)
        raise HttpError(403, f"Origin {origin!r} is not allowed (server.allowed_origins)")
    token: TokenConfig | None = None
    if request.header("authorization") is not None:
        secret = parse_bearer(request.header("authorization"))
        token = None if secret is None else tokens.lookup(secret)
        if token is None:
            log.info("%s: refused an unknown token on %s", peer, channel)
            raise HttpError(401, "unknown token", routes.BEARER_CHALLENGE)
        if not may_open(channel, token.role):
            log.info("%s: refused token %s (%s) on %s", peer, token.name, token.role, channel)
            raise HttpError(403, f"role {token.role} may not open {channel}")
    return token


class HookGate:
    """Admits hook posts: each token's rate bucket (:mod:`hived.core.limits`), and the store's
    backpressure (``store_saturated``)."""

    def __init__(self, store_saturated: Callable[[], bool] | None) -> None:
        self._store_saturated = store_saturated
        self._buckets: dict[str, tuple[float, float]] = {}
        """Each token's hook rate bucket: (level, when)."""

    def clear(self) -> None:
        """Forget every bucket (a reload may have changed the rates and the tokens)."""
        self._buckets.clear()

    def admit(self, token: TokenConfig, hooks: HooksConfig) -> None:
        """Refuse a hook past its token's rate (429), or while the store is behind (503): a
        hook cannot wait, and would otherwise queue events past the store's bound."""
        now = trio.current_time()
        level, at = self._buckets.get(token.name, (limits.FULL, now))
        left = limits.take(level, at, now, hooks.rate_limit_per_s, hooks.rate_limit_burst)
        if left is None:
            raise HttpError(
                429,
                f"token {token.name} posts more than {hooks.rate_limit_burst} hooks at once or "
                f"{hooks.rate_limit_per_s:g}/s (hooks.rate_limit_burst, hooks.rate_limit_per_s)",
                [("Retry-After", "1")],
            )
        self._buckets[token.name] = (left, now)
        if self._store_saturated is not None and self._store_saturated():
            raise HttpError(
                503,
                "the event store is behind (a slow or full disk); try again later",
                [("Retry-After", "5")],
            )
