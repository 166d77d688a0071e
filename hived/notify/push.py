"""Web Push to the dashboards where someone switched "notify me" on (DESIGN §12).

How it works: the daemon's VAPID key pair is made on the first start and kept in
``state.dir/vapid.pem`` (0600), with ``py-vapid``; the dashboard asks for its public key
(``push.key``), subscribes with it through the browser's push service, and hands the
subscription over (``push.subscribe``), which is kept in the store with the token that sent it.
A ``[notify.webpush]`` rule sends each message to every kept subscription: the payload is
encrypted for that browser by ``http_ece`` (RFC 8291, ``aes128gcm``, with a fresh ECDH key per
message), signed with VAPID (RFC 8292), and POSTed to its endpoint. A subscription the push
service says is gone (404, 410) is forgotten.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import http_ece  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02  # type: ignore[import-untyped]

from hived.core.errors import RequestError
from hived.core.notifyconfig import NotifyRule
from hived.notify.message import Message, push_payload
from hived.notify.send import DeliveryError, post_for_status

log = logging.getLogger(__name__)

VAPID_FILE: Final = "vapid.pem"
VAPID_SUBJECT: Final = "mailto:hived@localhost"
"""Who runs this sender, as VAPID asks; push services use it only to reach the operator."""
JWT_LIFETIME_S: Final = 12 * 3600
SUBSCRIPTIONS_MAX: Final = 1000
"""Most subscriptions kept; past this, the oldest are forgotten."""
GONE: Final = frozenset({404, 410})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_make_vapid(state_dir: Path) -> Any:
    """The daemon's VAPID key pair, made (and kept, mode 0600) on the first call."""
    path = state_dir / VAPID_FILE
    if path.exists():
        return Vapid02.from_file(str(path))
    vapid = Vapid02()
    vapid.generate_keys()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(vapid.private_pem())
    log.info("notify: made a VAPID key pair for Web Push in %s", path)
    return vapid


def public_key(vapid: Any) -> str:
    """The VAPID public key as browsers take it (``applicationServerKey``): base64url of the
    uncompressed P-256 point."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)


@attrs.frozen
class Subscription:
    endpoint: str
    p256dh: str
    auth: str
    token_name: str


def check_endpoint(endpoint: str) -> None:
    """An endpoint hived will POST to: ``https://``, or ``http://`` on the loopback only."""
    parts = urlsplit(endpoint)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return
        except ValueError:
            pass
    raise RequestError(
        "bad_request", f"subscription.endpoint: expected an https:// URL, got {endpoint!r}"
    )


def check_keys(p256dh: str, auth: str) -> None:
    try:
        point, secret = unb64url(p256dh), unb64url(auth)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise RequestError(
            "bad_request", "subscription.keys.p256dh: expected a base64url P-256 public key"
        ) from None
    if len(secret) != 16:
        raise RequestError("bad_request", "subscription.keys.auth: expected 16 bytes in base64url")


# -- the subscriptions table (run on the store writer's connection) ---------------------------


def save_subscription(conn: sqlite3.Connection, sub: Subscription) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO push_subscriptions (endpoint, p256dh, auth, token_name, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint) DO UPDATE SET p256dh = excluded.p256dh, "
            "auth = excluded.auth, token_name = excluded.token_name",
            (sub.endpoint, sub.p256dh, sub.auth, sub.token_name, time.time()),
        )
        conn.execute(
            "DELETE FROM push_subscriptions WHERE endpoint NOT IN (SELECT endpoint FROM "
            "push_subscriptions ORDER BY created_at DESC LIMIT ?)",
            (SUBSCRIPTIONS_MAX,),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def forget_subscription(conn: sqlite3.Connection, endpoint: str) -> bool:
    return (
        conn.execute("DELETE FROM push_subscriptions WHERE endpoint = ?", (endpoint,)).rowcount > 0
    )


def subscriptions(conn: sqlite3.Connection) -> list[Subscription]:
    rows = conn.execute(
        "SELECT endpoint, p256dh, auth, token_name FROM push_subscriptions ORDER BY created_at"
    ).fetchall()
    return [Subscription(*row) for row in rows]


# -- sending ----------------------------------------------------------------------------------


def encrypt(payload: bytes, sub: Subscription) -> bytes:
    """The payload encrypted for one browser (RFC 8291 ``aes128gcm``), by ``http_ece``."""
    body: bytes = http_ece.encrypt(
        payload,
        salt=os.urandom(16),
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=unb64url(sub.p256dh),
        auth_secret=unb64url(sub.auth),
        version="aes128gcm",
    )
    return body


def vapid_headers(vapid: Any, endpoint: str) -> dict[str, str]:
    parts = urlsplit(endpoint)
    claims = {
        "aud": f"{parts.scheme}://{parts.netloc}",
        "sub": VAPID_SUBJECT,
        "exp": int(time.time()) + JWT_LIFETIME_S,
    }
    return dict(vapid.sign(claims))


async def send_push(
    rule: NotifyRule, message: Message, vapid: Any, subs: list[Subscription]
) -> list[str]:
    """Send ``message`` to every subscription; the endpoints the push service says are gone.
    :class:`DeliveryError` when none took it (and some failed)."""
    assert rule.webpush is not None
    payload = push_payload(message)
    gone, errors, sent = [], [], 0
    for sub in subs:
        headers = {
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(rule.webpush.ttl_s),
            "Urgency": "high",
            **vapid_headers(vapid, sub.endpoint),
        }
        try:
            status = await post_for_status(sub.endpoint, encrypt(payload, sub), headers, 10.0)
        except DeliveryError as exc:
            errors.append(str(exc))
            continue
        if status in GONE:
            gone.append(sub.endpoint)
        elif 200 <= status < 300:
            sent += 1
        else:
            errors.append(f"POST {sub.endpoint}: HTTP {status}")
    if errors and not sent:
        raise DeliveryError("; ".join(errors[:3]))
    return gone
