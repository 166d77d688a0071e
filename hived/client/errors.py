"""The client's errors, and what a failed connection or a close means as one of them."""

from __future__ import annotations

import os
from typing import Final

import trio_websocket

from hived.core.errors import HivedError
from hived.core.protocol import CloseCode

AUTH_CLOSE_CODES: Final = frozenset({CloseCode.NOT_AUTHENTICATED, CloseCode.ROLE_TOO_LOW})


class ClientError(HivedError):
    """The base of the client's own errors."""


class ConnectError(ClientError):
    """hived cannot be reached (nothing listening, TLS failure, handshake refused)."""


class AuthError(ClientError):
    """hived refused the token, or its role is too low for the channel."""


class ConnectionLost(ClientError):
    """The connection dropped while a request was waiting for its reply."""


class Closed(ConnectionLost):
    """hived closed the connection on purpose (close code 1000, e.g. ``connection.kick``).

    Final: a client should not reconnect after it (docs/protocol.md, close codes).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"connection closed by hived: {reason or 'no reason given'}")


class FellBehind(ClientError):
    """A subscription's caller read too slowly: its buffer filled, so it was ended.

    Every event before the overflow was delivered; subscribe again with ``since=last_seq``
    to go on from there.
    """

    def __init__(self, topic: str, last_seq: int | None) -> None:
        self.topic = topic
        self.last_seq = last_seq
        super().__init__(
            f"subscription to {topic} fell behind: its buffer of events was full and "
            f"unread; subscribe again with since={last_seq} to go on"
        )


class RemoteError(ClientError):
    """hived answered a request with an ``error`` message."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def raise_for_close(exc: trio_websocket.ConnectionClosed) -> None:
    """The final closes as their own errors; any other close is a drop to reconnect after."""
    reason = exc.reason
    if reason is None:
        return
    if reason.code in AUTH_CLOSE_CODES:
        raise AuthError(f"closed with {reason.code}: {reason.reason or ''}".strip()) from None
    if reason.code == CloseCode.NORMAL:
        raise Closed(reason.reason or "") from None


def describe(exc: BaseException) -> str:
    """Why a connection failed or ended, in a few words (``connection refused``)."""
    if isinstance(exc, trio_websocket.ConnectionClosed) and exc.reason is not None:
        return f"closed with {exc.reason.code} {exc.reason.reason or ''}".strip()
    if isinstance(exc, OSError):
        # trio's "all attempts to connect to HOST:PORT failed" carries the real errors in its
        # cause; the first one says what went wrong.
        cause = exc.__cause__
        if isinstance(cause, BaseExceptionGroup):
            found = [e for e in leaves(cause) if isinstance(e, OSError)]
            if found:
                exc = found[0]
        if exc.errno:
            return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__
