"""The ``[[notify]]`` rules of the config file (DESIGN §12): who is told what, when, and where.

How it works: each ``[[notify]]`` table is one :class:`NotifyRule`: which events (``events``),
of which templates and sessions, after how long unanswered (``after_s``), how much detail, and
exactly one destination table (``webhook``, ``ntfy``, ``email`` or ``webpush``). The classes
are structured by the config's strict converter (:mod:`hived.core.config` registers the hooks
of the ``NewType`` s below); :func:`notify_checks` adds the rules that span keys. Secrets (an
HMAC key, SMTP credentials, an ntfy token) are never in the config: it names files that hold
them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Literal, NewType, get_args

import attrs

from hived.core.convert import expected

NotifyEvent = Literal["permission", "question", "turn_done", "failed", "fatal", "stalled", "budget"]
Detail = Literal["summary", "full"]
WebhookFormat = Literal["json", "slack", "discord"]

NOTIFY_EVENTS: Final[tuple[str, ...]] = get_args(NotifyEvent)
DESTINATIONS: Final = ("webhook", "ntfy", "email", "webpush")

HttpUrl = NewType("HttpUrl", str)
"""An ``http://`` or ``https://`` URL."""
Delay = NewType("Delay", float)
"""A duration in seconds, ≥ 0 (0: at once)."""
Priority = NewType("Priority", int)
"""An ntfy priority, 1 (min) to 5 (max)."""
Mailbox = NewType("Mailbox", str)
"""An e-mail address, ``user@host``."""

_URL_RE: Final = re.compile(r"https?://[^\s/?#]+(?:[/?#]\S*)?")
_MAILBOX_RE: Final = re.compile(r"[^\s@<>]+@[^\s@<>]+")


@attrs.frozen
class WebhookConfig:
    """``[notify.webhook]``: a JSON POST."""

    url: HttpUrl
    """Where to POST."""
    format: WebhookFormat = "json"
    """The body: hived's own ``json``, ``slack`` (``{"text": ...}``) or ``discord``
    (``{"content": ...}``)."""
    secret_file: str | None = None
    """A file holding an HMAC-SHA256 key: each POST then carries
    ``X-Hived-Signature: sha256=<hex of the HMAC of the body>``."""
    timeout_s: float = 10.0
    """How long one POST may take."""


@attrs.frozen
class NtfyConfig:
    """``[notify.ntfy]``: a message to an ntfy topic."""

    url: HttpUrl
    """The topic URL (``https://ntfy.sh/my-topic``, or a server of your own)."""
    priority: Priority = Priority(4)
    """ntfy's priority, 1 to 5."""
    token_file: str | None = None
    """A file holding an ntfy access token (sent as ``Authorization: Bearer``)."""
    timeout_s: float = 10.0
    """How long one POST may take."""


@attrs.frozen
class EmailConfig:
    """``[notify.email]``: a mail through an SMTP server."""

    host: str
    """The SMTP server."""
    sender: Mailbox
    """The ``From`` address."""
    to: tuple[Mailbox, ...]
    """The recipients (at least one)."""
    port: int = 587
    """The SMTP port (587: submission with STARTTLS)."""
    starttls: bool = True
    """Upgrade the connection with STARTTLS before logging in or sending (certificate checked
    against the system's CAs, or ``ca_file``)."""
    ca_file: str | None = None
    """A PEM file of CAs to trust for the server's certificate instead of the system's."""
    credentials_file: str | None = None
    """A file whose first line is ``user:password``; without it, no login."""
    timeout_s: float = 30.0
    """How long one delivery may take."""


@attrs.frozen
class WebPushConfig:
    """``[notify.webpush]``: Web Push to every dashboard that said "notify me"."""

    ttl_s: int = 3600
    """How long the push service keeps a message for a browser that is offline."""


@attrs.frozen
class NotifyRule:
    """One ``[[notify]]`` rule."""

    name: str
    """The rule's name (``hivectl notify test NAME``); letters, digits, ``_ . -``."""
    events: tuple[NotifyEvent, ...] = ("permission", "question")
    """What is worth telling: ``permission`` or ``question`` waiting, ``turn_done``, ``failed``,
    ``fatal``, ``stalled``, ``budget``."""
    templates: tuple[str, ...] = ()
    """Only sessions of these templates (empty: all)."""
    sessions: tuple[str, ...] = ()
    """Only sessions of these names (empty: all)."""
    after_s: Delay = Delay(0.0)
    """Tell only once it has waited this long, still unanswered."""
    detail: Detail = "summary"
    """``summary``: who waits and on what tool, never its input; ``full`` adds the tool's input
    and the request's text."""
    coalesce_s: Delay = Delay(2.0)
    """What becomes due within this window goes out as one message."""
    min_interval_s: Delay = Delay(10.0)
    """At most one message to this destination this often; what comes meanwhile is coalesced
    into the next one."""
    link: HttpUrl | None = None
    """The dashboard's address, for a link to the session (``http://127.0.0.1:7420/``)."""
    webhook: WebhookConfig | None = None
    ntfy: NtfyConfig | None = None
    email: EmailConfig | None = None
    webpush: WebPushConfig | None = None

    @property
    def destination(self) -> str:
        """The kind of the rule's one destination."""
        return next(kind for kind in DESTINATIONS if getattr(self, kind) is not None)


def http_url(value: object, _: object) -> HttpUrl:
    if not isinstance(value, str) or not _URL_RE.fullmatch(value):
        raise ValueError(expected("an http:// or https:// URL", value))
    return HttpUrl(value)


def delay(value: object, _: object) -> Delay:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(expected("a number of seconds", value))
    if not 0 <= value < 1e9:
        raise ValueError(expected("a duration ≥ 0", value))
    return Delay(float(value))


def priority(value: object, _: object) -> Priority:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(expected("an integer", value))
    if not 1 <= value <= 5:
        raise ValueError(expected("a priority from 1 to 5", value))
    return Priority(value)


def mailbox(value: object, _: object) -> Mailbox:
    if not isinstance(value, str) or not _MAILBOX_RE.fullmatch(value):
        raise ValueError(expected("an e-mail address (user@host)", value))
    return Mailbox(value)


def notify_checks(
    rules: Sequence[NotifyRule], templates: Sequence[str], is_name: Callable[[str], bool]
) -> Iterator[tuple[str, str]]:
    """The rules that span keys: a unique valid name, one destination, known templates."""
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        where = f"notify[{index}]"
        if not is_name(rule.name):
            yield f"{where}.name", expected("letters, digits, _ . - (≤ 64)", rule.name)
        elif rule.name in seen:
            yield f"{where}.name", f'"{rule.name}" is already used by notify[{seen[rule.name]}]'
        seen.setdefault(rule.name, index)
        set_ = [kind for kind in DESTINATIONS if getattr(rule, kind) is not None]
        if len(set_) != 1:
            found = ", ".join(set_) or "none"
            yield where, f"expected exactly one of {', '.join(DESTINATIONS)}, got {found}"
        if not rule.events:
            yield f"{where}.events", "expected at least one of " + ", ".join(NOTIFY_EVENTS)
        for name in rule.templates:
            if name not in templates:
                known = ", ".join(templates) or "none"
                yield f"{where}.templates", f'no template "{name}" (known: {known})'
        for what in ("webhook", "ntfy", "email"):
            section = getattr(rule, what)
            if section is not None and not 0 < section.timeout_s <= 600:
                yield (
                    f"{where}.{what}.timeout_s",
                    expected("seconds, more than 0, up to 600", section.timeout_s),
                )
        if rule.email is not None:
            if not rule.email.to:
                yield f"{where}.email.to", "expected at least one address"
            if not 1 <= rule.email.port <= 65535:
                yield f"{where}.email.port", expected("a port from 1 to 65535", rule.email.port)
        if rule.webpush is not None and rule.webpush.ttl_s < 0:
            yield f"{where}.webpush.ttl_s", expected("an integer ≥ 0", rule.webpush.ttl_s)
