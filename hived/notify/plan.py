"""When each destination gets a message, and what it lists (sans-IO: no trio, no clock).

How it works: the :class:`Planner` holds the pending notifications by rule (each rule has one
destination). A notification can go once it is *ready*: recorded (its birth is committed with
its event) and due (``due_at``, which is birth + ``after_s``). A rule sends when its oldest
ready notification has waited ``coalesce_s`` (so that what comes in a burst goes as one
message), no sooner than ``min_interval_s`` after its last message (the rate limit: what comes
meanwhile waits and goes with the next one), and no sooner than its retry time after a failure.
A message lists every ready notification of the rule, up to :data:`BATCH_MAX`. A notification
of a session someone is watching is not ready while they do (``watched``, see
:mod:`hived.notify.attention`).

A failed send comes back after a backoff (1 s, doubling, at most :data:`BACKOFF_MAX_S`); a
notification that failed :data:`ATTEMPTS_MAX` times is given up. :meth:`Planner.settle` takes a
notification out before it goes (answered, withdrawn…); one in flight is not called back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

import attrs

from hived.core.notifyconfig import NotifyRule
from hived.notify.rules import Birth

BATCH_MAX: Final = 100
"""Most notifications listed in one message; the rest go in the next one."""
ATTEMPTS_MAX: Final = 8
"""Sends tried before a notification is given up (about 4 minutes of backoff)."""
BACKOFF_MAX_S: Final = 300.0


@attrs.define
class Pending:
    birth: Birth
    attempts: int = 0
    recorded: bool = False
    """Its birth is committed: it survives a crash, so it may be delivered."""


@attrs.define
class _Rule:
    pending: dict[str, Pending] = attrs.Factory(dict)
    last_sent: float | None = None
    retry_at: float | None = None
    failures: int = 0
    sending: list[str] | None = None
    """The ids of the message in flight, if any."""


@attrs.frozen
class Send:
    """A message to send now: the rule and what it lists (oldest first)."""

    rule: str
    births: tuple[Birth, ...]


class Planner:
    """The pending notifications of every rule and when they go (see the module doc)."""

    def __init__(self, rules: Iterable[NotifyRule]) -> None:
        self._config: dict[str, NotifyRule] = {}
        self._rules: dict[str, _Rule] = {}
        self.reload(rules)

    def reload(self, rules: Iterable[NotifyRule]) -> None:
        """Take new rules; a removed rule's pending notifications stay until they go or are
        dropped by :meth:`orphans`."""
        self._config = {rule.name: rule for rule in rules}
        for name in self._config:
            self._rules.setdefault(name, _Rule())

    def add(self, birth: Birth, attempts: int = 0, recorded: bool = False) -> None:
        rule = self._rules.setdefault(birth.rule, _Rule())
        rule.pending[birth.id] = Pending(birth, attempts, recorded)

    def __len__(self) -> int:
        return sum(len(rule.pending) for rule in self._rules.values())

    def orphans(self) -> list[Birth]:
        """Take out the pending notifications of rules no longer configured."""
        gone: list[Birth] = []
        for name in [n for n in self._rules if n not in self._config]:
            rule = self._rules[name]
            if rule.sending is None:
                gone.extend(p.birth for p in rule.pending.values())
                del self._rules[name]
        return gone

    def settle(self, session: str, key: str) -> list[Birth]:
        """Take out the pending notifications of ``session`` with ``key`` (not one in flight)."""
        settled = []
        for rule in self._rules.values():
            for id_, pending in list(rule.pending.items()):
                birth = pending.birth
                if birth.key == key and birth.item.session == session:
                    if rule.sending is not None and id_ in rule.sending:
                        continue
                    settled.append(birth)
                    del rule.pending[id_]
        return settled

    def mark_recorded(self, recorded: Callable[[Birth], bool]) -> bool:
        """Flag the births that are now committed; whether any still is not."""
        waiting = False
        for rule in self._rules.values():
            for pending in rule.pending.values():
                if not pending.recorded:
                    pending.recorded = recorded(pending.birth)
                    waiting |= not pending.recorded
        return waiting

    def _send_at(
        self, name: str, rule: _Rule, now: float, watched: frozenset[str] = frozenset()
    ) -> float | None:
        config = self._config.get(name)
        if config is None or rule.sending is not None:
            return None
        ready = [
            p.birth.due_at
            for p in rule.pending.values()
            if p.recorded and p.birth.item.session not in watched
        ]
        if not ready:
            return None
        at = min(ready) + config.coalesce_s
        if rule.last_sent is not None:
            at = max(at, rule.last_sent + config.min_interval_s)
        if rule.retry_at is not None:
            at = max(at, rule.retry_at)
        return at

    def next_at(self, now: float, watched: frozenset[str] = frozenset()) -> float | None:
        """When :meth:`take` will next have something to send (None: not before a change)."""
        times = [self._send_at(name, rule, now, watched) for name, rule in self._rules.items()]
        found = [t for t in times if t is not None]
        return min(found) if found else None

    def waiting_on_watch(self, watched: frozenset[str]) -> bool:
        """Whether some notification is held back only because its session is watched."""
        return any(
            p.birth.item.session in watched
            for rule in self._rules.values()
            for p in rule.pending.values()
        )

    def take(self, now: float, watched: frozenset[str] = frozenset()) -> list[Send]:
        """The messages to send now (none about a ``watched`` session); each rule's stays in
        flight until :meth:`sent` or :meth:`failed`."""
        sends = []
        for name, rule in self._rules.items():
            at = self._send_at(name, rule, now, watched)
            if at is None or at > now:
                continue
            ready = sorted(
                (
                    p.birth
                    for p in rule.pending.values()
                    if p.recorded and p.birth.due_at <= now and p.birth.item.session not in watched
                ),
                key=lambda b: (b.born_at, b.id),
            )[:BATCH_MAX]
            if ready:
                rule.sending = [b.id for b in ready]
                sends.append(Send(name, tuple(ready)))
        return sends

    def sent(self, send: Send, now: float) -> None:
        rule = self._rules[send.rule]
        for birth in send.births:
            rule.pending.pop(birth.id, None)
        rule.sending, rule.last_sent, rule.retry_at, rule.failures = None, now, None, 0

    def failed(self, send: Send, now: float) -> list[Birth]:
        """A send failed: back off; the notifications that have used up their attempts."""
        rule = self._rules[send.rule]
        rule.sending = None
        rule.failures += 1
        rule.retry_at = now + min(2.0 ** (rule.failures - 1), BACKOFF_MAX_S)
        given_up = []
        for birth in send.births:
            pending = rule.pending.get(birth.id)
            if pending is None:
                continue
            pending.attempts += 1
            if pending.attempts >= ATTEMPTS_MAX:
                given_up.append(birth)
                del rule.pending[birth.id]
        return given_up
