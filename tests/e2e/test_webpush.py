"""Web Push against the real daemon and a push service the test runs: the test plays the
browser (its own P-256 keys and auth secret, as PushManager makes them), subscribes with the
daemon's VAPID key, and decrypts what the daemon sends with those keys (http_ece, RFC 8291);
the VAPID signature is checked against the daemon's public key (RFC 8292)."""

from __future__ import annotations

import json
import os
from typing import Any

import http_ece  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hived.client import RemoteError, connect
from hived.notify.push import b64url, unb64url
from tests.e2e.harness import SECRETS, Launcher
from tests.e2e.receivers import Received, http_receiver
from tests.e2e.test_notify import all_done, outbox_when, start_waiting

pytestmark = pytest.mark.e2e

RULE = '[[notify]]\nname = "dash"\ncoalesce_s = 0.1\nmin_interval_s = 0\n[notify.webpush]\nttl_s = 60\n'


class Browser:
    """What a browser keeps for one push subscription."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)

    def subscription(self) -> dict[str, Any]:
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }

    def decrypt(self, body: bytes) -> Any:
        plain = http_ece.decrypt(
            body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        return json.loads(plain)


def check_vapid(received: Received, public_key: str, audience: str) -> None:
    """The Authorization header is ``vapid t=JWT,k=KEY``, signed by the daemon's key (ES256)."""
    scheme, _, params = received.headers["authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(part.split("=", 1) for part in params.split(","))
    assert fields["k"] == public_key
    head, claims, signature = fields["t"].split(".")
    raw = unb64url(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(public_key))
    key.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    assert json.loads(unb64url(claims))["aud"] == audience


async def test_a_waiting_session_is_pushed_encrypted_to_each_subscribed_browser(
    hived: Launcher,
) -> None:
    async with http_receiver() as service:
        port, config = hived.config(body=RULE)
        daemon = await hived.start(config, port=port)
        phone, laptop = Browser(service.url("/push/phone")), Browser(service.url("/push/laptop"))
        async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as viewer:
            public_key = (await viewer.request("push.key"))["public_key"]
            assert len(unb64url(public_key)) == 65  # an uncompressed P-256 point
            for browser in (phone, laptop):
                await viewer.request("push.subscribe", subscription=browser.subscription())
            bad = {**phone.subscription(), "endpoint": "http://push.example/x"}
            with pytest.raises(RemoteError, match="expected an https:// URL"):
                await viewer.request("push.subscribe", subscription=bad)
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            session = await start_waiting(client, "asker")
            await outbox_when(daemon, lambda r: all_done(r, 1), "the push")
        for browser, path in ((phone, "/push/phone"), (laptop, "/push/laptop")):
            [pushed] = service.to(path)
            assert pushed.headers["content-encoding"] == "aes128gcm"
            assert pushed.headers["ttl"] == "60"
            check_vapid(pushed, public_key, service.url("").rstrip("/"))
            assert browser.decrypt(pushed.body) == {
                "title": "asker asks permission to use Bash",
                "body": "asker asks permission to use Bash",
                "session": session,
                "tag": "dash",
            }
        # The daemon's VAPID key stays across a restart (browsers subscribed with it).
        await daemon.kill()
        daemon = await hived.start(config, port=port)
        async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as viewer:
            assert (await viewer.request("push.key"))["public_key"] == public_key


async def test_a_subscription_the_push_service_calls_gone_is_forgotten(hived: Launcher) -> None:
    async with http_receiver() as service:
        port, config = hived.config(body=RULE)
        daemon = await hived.start(config, port=port)
        browser = Browser(service.url("/push/old"))
        async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as viewer:
            await viewer.request("push.subscribe", subscription=browser.subscription())
        service.status = 410
        async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
            first = await admin.request("notify.test", rule="dash")
            assert first["sent"] is True  # taken as delivered: the browser unsubscribed
            second = await admin.request("notify.test", rule="dash")
        assert second == {
            "rule": "dash",
            "destination": "webpush",
            "sent": False,
            "error": "no dashboard has switched notifications on (no subscription)",
        }
        assert len(service.to("/push/old", 410)) == 1
