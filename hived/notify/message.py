"""What a message says, and its bytes for each kind of destination (sans-IO).

One message per send lists every notification the planner coalesced; with one, its title is
that notification's own line. Bodies: hived's JSON (``format = "json"``), Slack's
``{"text"}`` and Discord's ``{"content"}`` for webhooks; ntfy's plain text with ``Title``,
``Priority``, ``Click`` and ``Tags`` headers; a plain-text mail; a JSON payload for Web Push
that the dashboard's service worker shows. Summaries never carry a tool's input unless the
rule asks for ``detail = "full"``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from email.header import Header
from email.message import EmailMessage
from typing import Any, Final
from urllib.parse import quote

import attrs
import orjson

from hived.core.notifyconfig import NotifyRule
from hived.notify.rules import Item

LINES_MAX: Final = 20
"""Most notifications spelled out in a message's text; the rest are counted."""
SIGNATURE_HEADER: Final = "X-Hived-Signature"


@attrs.frozen
class Message:
    rule: str
    title: str
    text: str
    link: str | None
    items: tuple[Item, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "hived.notification",
            "rule": self.rule,
            "title": self.title,
            "text": self.text,
            "link": self.link,
            "count": len(self.items),
            "items": [item.to_json() for item in self.items],
        }


def session_link(base: str | None, session: str | None) -> str | None:
    """The dashboard's address that opens ``session``."""
    if base is None:
        return None
    if session is None:
        return base
    return f"{base}{'&' if '?' in base else '?'}session={quote(session)}"


def compose(rule: NotifyRule, items: Sequence[Item]) -> Message:
    """The message for ``items`` (at least one), oldest first."""
    lines = [item.title for item in items[:LINES_MAX]]
    if len(items) > LINES_MAX:
        lines.append(f"… and {len(items) - LINES_MAX} more")
    if len(items) == 1:
        title = items[0].title
        link = session_link(rule.link, items[0].session)
    else:
        sessions = {item.session for item in items}
        title = f"{len(items)} notifications from {len(sessions)} sessions"
        link = rule.link
    return Message(rule.name, title, "\n".join(lines), link, tuple(items))


def webhook_body(rule: NotifyRule, message: Message) -> bytes:
    assert rule.webhook is not None
    text = message.text if len(message.items) == 1 else f"{message.title}\n{message.text}"
    if message.link:
        text += f"\n{message.link}"
    if rule.webhook.format == "slack":
        return orjson.dumps({"text": text})
    if rule.webhook.format == "discord":
        return orjson.dumps({"content": text[:2000]})
    return orjson.dumps(message.to_json())


def signature(key: bytes, body: bytes) -> str:
    """The ``X-Hived-Signature`` of ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def ntfy_request(rule: NotifyRule, message: Message) -> tuple[dict[str, str], bytes]:
    """Headers and body of the POST to the ntfy topic."""
    assert rule.ntfy is not None
    headers = {
        # HTTP headers are latin-1: ntfy reads RFC 2047 encoded words for the rest.
        "Title": _header_text(message.title),
        "Priority": str(rule.ntfy.priority),
        "Tags": "robot",
    }
    if message.link:
        headers["Click"] = message.link
    return headers, message.text.encode()


def _header_text(text: str) -> str:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return Header(text, "utf-8").encode()
    return text


def email_message(rule: NotifyRule, message: Message) -> EmailMessage:
    assert rule.email is not None
    mail = EmailMessage()
    mail["From"] = rule.email.sender
    mail["To"] = ", ".join(rule.email.to)
    mail["Subject"] = f"[hived] {message.title}"
    body = message.text
    if message.link:
        body += f"\n\n{message.link}"
    mail.set_content(body + "\n")
    return mail


def push_payload(message: Message) -> bytes:
    """What the dashboard's service worker gets: title, body, the session to open."""
    session = message.items[0].session if len(message.items) == 1 else None
    return orjson.dumps(
        {"title": message.title, "body": message.text, "session": session, "tag": message.rule}
    )
