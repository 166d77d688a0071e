"""Who may connect and what they may do: tokens, roles, the Bearer header, the Origin rule.

How it works: a token is a random secret handed to a person or a program; the config keeps only
its SHA-256 and a role. :class:`TokenTable` hashes a presented secret and compares the digest
with every configured one in constant time, so neither the answer nor its timing tells how close
a guess was. Roles are ordered agent < viewer < operator < admin; the channels add their own
floor (``/v1/ws`` needs viewer, ``/v1/admin`` needs admin), and hook posting takes any role. The
Origin rule protects browsers' users from other web pages: a request without ``Origin`` (not a
browser) or from the daemon's own origin is allowed, any other origin only when configured.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit

import attrs

from hived.core.config import TokenConfig

SECRET_BYTES: Final = 32
"""Random bytes in a new token secret."""

CLIENT_CHANNEL: Final = "/v1/ws"
ADMIN_CHANNEL: Final = "/v1/admin"

ROLE_RANK: Final[Mapping[str, int]] = {"agent": 0, "viewer": 1, "operator": 2, "admin": 3}
"""Role order: a role may do what every lower role may do."""

_CHANNEL_FLOOR: Final[Mapping[str, str]] = {CLIENT_CHANNEL: "viewer", ADMIN_CHANNEL: "admin"}


def new_secret() -> str:
    """A fresh token secret: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    """SHA-256 of a secret's UTF-8 bytes, 64 lower-case hex digits: what the config keeps."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _as_tuple(tokens: Iterable[TokenConfig]) -> tuple[TokenConfig, ...]:
    return tuple(tokens)


@attrs.frozen
class TokenTable:
    """The configured tokens, for looking up a presented secret. Rebuilt on every reload."""

    tokens: tuple[TokenConfig, ...] = attrs.field(converter=_as_tuple)

    def lookup(self, secret: str) -> TokenConfig | None:
        """The token whose hash matches ``secret``, or None.

        Every configured hash is compared, in constant time, whether or not one already matched.
        """
        if not secret:
            return None
        digest = hash_secret(secret).encode()
        found = None
        for token in self.tokens:
            if hmac.compare_digest(digest, token.sha256.lower().encode()) and found is None:
                found = token
        return found

    @property
    def names(self) -> frozenset[str]:
        """The token names; a connection whose token name is no longer here lost its token."""
        return frozenset(token.name for token in self.tokens)


def role_at_least(role: str, required: str) -> bool:
    """True when ``role`` ranks at or above ``required`` (unknown roles rank below everything)."""
    return ROLE_RANK.get(role, -1) >= ROLE_RANK.get(required, len(ROLE_RANK))


def may_open(channel: str, role: str) -> bool:
    """May a token of ``role`` open the WebSocket ``channel`` (``/v1/ws`` or ``/v1/admin``)?"""
    floor = _CHANNEL_FLOOR.get(channel)
    return floor is not None and role_at_least(role, floor)


def may_post_hooks(role: str) -> bool:
    """May a token of ``role`` post hook payloads? Any role may, ``agent`` included."""
    return role in ROLE_RANK


def parse_bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None.

    The scheme is case-insensitive; surrounding whitespace is ignored; a value with no token,
    another scheme, or spaces inside the token gives None.
    """
    if value is None:
        return None
    parts = value.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1]


_SCHEME_FAMILY: Final[Mapping[str, str]] = {
    "http": "http",
    "ws": "http",
    "https": "https",
    "wss": "https",
}
_DEFAULT_PORT: Final[Mapping[str, int]] = {"http": 80, "https": 443}


def _origin_key(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """``(scheme family, host, port)`` with default ports filled in; None when malformed."""
    family = _SCHEME_FAMILY.get(scheme.lower())
    if family is None or not netloc or "@" in netloc:
        return None
    try:
        parts = urlsplit(f"//{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return family, host.lower(), _DEFAULT_PORT[family] if port is None else port


def _parse_origin(origin: str) -> tuple[str, str, int] | None:
    scheme, sep, rest = origin.strip().partition("://")
    if not sep or "/" in rest.rstrip("/"):
        return None
    return _origin_key(scheme, rest.rstrip("/"))


def origin_allowed(
    origin: str | None, host: str | None, scheme: str, allowed: Sequence[str]
) -> bool:
    """May a request with this ``Origin`` header reach the daemon?

    ``host`` is the request's ``Host`` header and ``scheme`` how it arrived (``http``/``ws`` or
    ``https``/``wss``). No Origin: allowed (not a browser). The daemon's own origin: allowed,
    comparing scheme families (``ws`` is ``http``, ``wss`` is ``https``) and ports with the
    default ports filled in. Any other origin: allowed only when it is in ``allowed``.
    """
    if origin is None:
        return True
    key = _parse_origin(origin)
    if key is None:
        return False
    if host is not None and key == _origin_key(scheme, host.strip()):
        return True
    return any(key == _parse_origin(entry) for entry in allowed)
