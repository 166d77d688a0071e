"""Which published events give birth to a notification, and which ones settle it (sans-IO).

How it works: :func:`classify` tells what a published event is, for notifications: a request
waiting on a person (``permission`` or ``question``, keyed by its request id), a turn done, a
session that FAILED, went FATAL or STALLED, or a budget reached. :class:`Rules` matches that
against every ``[[notify]]`` rule and makes one :class:`Birth` per matching rule.
:func:`settles` tells which waiting notifications an event makes moot: an answer or a
withdrawal of the request, a new prompt after a turn, output after a stall.

Only live events ever reach this module (the hub calls its observer from ``publish``, never
from a replay); an event that asks again what a restarted daemon found still waiting carries
``asked_again`` and gives birth to nothing: its notification was born the first time.
No trio and no clock here: the caller passes ``now``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs

from hived.core.events import SESSIONS_TOPIC, Event
from hived.core.notifyconfig import NotifyRule

TEXT_MAX_CHARS: Final = 200
"""Longest text taken from an agent's event into a summary line."""
STATE_EVENTS: Final[Mapping[str, str]] = {
    "FAILED": "failed",
    "FATAL": "fatal",
    "STALLED": "stalled",
}
"""A session state (on the ``sessions`` topic) → the notification event it is."""


@attrs.frozen
class Who:
    """The session an event is about, as a notification names it."""

    id: str
    name: str
    template: str


Lookup = Callable[[str], Who | None]
"""Finds a session by id (the supervisor's table)."""


@attrs.frozen
class Item:
    """What a notification says about one event; kept in the outbox as JSON."""

    event: str
    """``permission``, ``question``, ``turn_done``, ``failed``, ``fatal``, ``stalled``,
    ``budget`` or ``test``."""
    title: str
    """One line for people: who, and what it waits for."""
    session: str | None = None
    name: str | None = None
    template: str | None = None
    request_id: str | None = None
    tool: str | None = None
    details: Mapping[str, Any] | None = None
    """The full request (``detail = "full"`` only)."""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Item:
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@attrs.frozen
class Birth:
    """A notification as born: recorded in the outbox with the event that caused it."""

    id: str
    rule: str
    key: str
    """What settles it: the request id, ``turn``, ``stalled``, or the event's own place."""
    topic: str
    seq: int
    born_at: float
    due_at: float
    item: Item


@attrs.frozen
class Kind:
    """What an event is, for notifications (see :func:`classify`)."""

    event: str
    key: str
    title: str
    request_id: str | None = None
    tool: str | None = None
    details: Mapping[str, Any] | None = None


def _short(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= TEXT_MAX_CHARS else line[: TEXT_MAX_CHARS - 1] + "…"


def classify(event: Event) -> Kind | None:
    """What ``event`` is worth telling, or None. ``title`` lacks the session's name."""
    data = event.data
    kind = event.kind
    if kind == "permission_request":
        if data.get("asked_again"):
            return None
        request_id = str(data.get("request_id"))
        asks = data.get("request_kind") in ("question", "elicitation")
        what = "question" if asks else "permission"
        name = data.get("tool_name")
        tool = name if isinstance(name, str) else None
        if what == "permission":
            title = f"asks permission to use {tool}" if tool else "asks permission"
        else:
            title = "asks a question"
        return Kind(what, request_id, title, request_id, tool, data)
    if kind == "result" and event.topic != SESSIONS_TOPIC:
        failed = data.get("is_error") is True
        return Kind("turn_done", "turn", "ended its turn with an error" if failed else "is done")
    if kind == "state" and event.topic == SESSIONS_TOPIC:
        state_event = STATE_EVENTS.get(str(data.get("state")))
        if state_event is None:
            return None
        reason = data.get("reason")
        title = f"is {data.get('state')}" + (f": {_short(reason)}" if reason else "")
        key = "stalled" if state_event == "stalled" else f"{event.topic}#{event.seq}"
        return Kind(state_event, key, title)
    if kind == "budget" and event.topic != SESSIONS_TOPIC:
        return Kind("budget", f"budget#{event.seq}", _short(data.get("message", "budget reached")))
    return None


def settles(event: Event) -> list[tuple[str, str]]:
    """The ``(key, outcome)`` of the waiting notifications of ``event.session`` that this
    event makes moot."""
    data = event.data
    kind = event.kind
    if event.topic == SESSIONS_TOPIC:
        if kind == "state" and data.get("previous") == "STALLED":
            return [("stalled", "output came")]
        return []
    if kind == "request_withdrawn":
        return [(str(data.get("request_id")), "withdrawn")]
    if kind == "input":
        request_id = data.get("request_id")
        if request_id is not None:
            return [(str(request_id), "answered")]
        if data.get("text") is not None:
            return [("turn", "prompted")]
    return []


def new_id() -> str:
    """A notification id: 16 random hex digits."""
    return secrets.token_hex(8)


class Rules:
    """The ``[[notify]]`` rules, matched against live events."""

    def __init__(self, rules: Sequence[NotifyRule]) -> None:
        self.rules = tuple(rules)
        self.by_name = {rule.name: rule for rule in rules}

    def births(
        self, event: Event, lookup: Lookup, now: float, make_id: Callable[[], str] = new_id
    ) -> list[Birth]:
        """One birth per rule that ``event`` matches (none for most events)."""
        if not self.rules or event.session is None:
            return []
        kind = classify(event)
        if kind is None:
            return []
        who = lookup(event.session)
        born = []
        for rule in self.rules:
            if kind.event not in rule.events:
                continue
            if rule.templates and (who is None or who.template not in rule.templates):
                continue
            if rule.sessions and (who is None or who.name not in rule.sessions):
                continue
            item = Item(
                event=kind.event,
                # A name may be long (a client chose it): the title's one line stays short.
                title=f"{_short(who.name) if who else event.session} {kind.title}",
                session=event.session,
                name=None if who is None else who.name,
                template=None if who is None else who.template,
                request_id=kind.request_id,
                tool=kind.tool,
                details=_details(kind.details) if rule.detail == "full" else None,
            )
            born.append(
                Birth(
                    id=make_id(),
                    rule=rule.name,
                    key=kind.key,
                    topic=event.topic,
                    seq=event.seq,
                    born_at=now,
                    due_at=now + rule.after_s,
                    item=item,
                )
            )
        return born


def _details(data: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if data is None:
        return None
    keep = ("tool_name", "input", "request_kind", "questions", "message", "description")
    return {k: data[k] for k in keep if k in data}
