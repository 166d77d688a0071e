"""The notifier service: births from live events into the outbox, and the delivery task.

How it works: the hub calls :meth:`NotifyService.observe` for every event it publishes live
(synchronously, after the event is queued for the store). A matching rule gives birth to a
notification (:mod:`hived.notify.rules`), whose ``INSERT`` is queued to the store writer right
behind its event, so both commit in one transaction: a crash loses both or neither. An answer
or a withdrawal settles the notifications it makes moot the same way (an ``UPDATE`` behind it).
Replays never reach ``observe``: they read the store, they do not publish.

:meth:`NotifyService.serve` takes up the pending notifications an earlier run left (born and
committed, never delivered: delivered now, once), then loops: ask the planner
(:mod:`hived.notify.plan`) what goes now, send each message in its own task, record the
outcome, sleep until the planner's next time or a wake-up. A notification is sent only once
its birth is committed, so a crash can never deliver one that the next run does not know of.
A crash between a send and the record of its outcome sends it again after the restart: that
window (one SQLite commit) is the one place where "exactly once" is "at least once".
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import attrs
import trio

from hived.core.config import Config
from hived.core.convert import expected
from hived.core.errors import RequestError
from hived.core.events import Event
from hived.core.messages import PushSubscribe, PushUnsubscribe
from hived.core.notifyconfig import NotifyRule
from hived.core.protocol import Caller, Request
from hived.notify import outbox, push
from hived.notify.attention import Attention
from hived.notify.message import Message, compose
from hived.notify.plan import Planner, Send
from hived.notify.rules import Birth, Item, Lookup, Rules, settles
from hived.notify.send import DeliveryError, send_email, send_ntfy, send_webhook

log = logging.getLogger(__name__)

T = TypeVar("T")

WATCH_POLL_S: Final = 1.0
"""How often a notification held back by a watch looks whether its watcher went away."""
RECORD_POLL_S: Final = 0.05
"""How often to look whether a birth is committed yet (the store commits every few 10 ms)."""
KEEP_S: Final = 30 * 86400.0
"""Settled notifications are forgotten this long after (at each start)."""
RELEVANT_KINDS: Final = frozenset(
    {"permission_request", "result", "state", "budget", "request_withdrawn", "input"}
)
"""The event kinds that can give birth to or settle a notification."""
RECENT_MAX: Final = 1000

Sender = Callable[[NotifyRule, Message], Awaitable[None]]
Handler = Callable[[Request, Caller], Awaitable[Any]]
SENDERS: Final[Mapping[str, Sender]] = {
    "webhook": send_webhook,
    "ntfy": send_ntfy,
    "email": send_email,
}


class Outbox(Protocol):
    """Where notifications are kept (:class:`hived.store.Store`)."""

    def add_statement(self, statement: str, params: tuple[Any, ...]) -> None: ...

    def committed(self, topic: str, seq: int) -> bool: ...

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...


@attrs.frozen
class NotifyStats:
    """Counters since the start, for ``status`` and ``/metrics``."""

    rules: int
    pending: int
    born: int
    delivered: int
    dropped: int
    failed: int
    messages: int
    send_errors: int

    def to_json(self) -> dict[str, int]:
        return attrs.asdict(self)


class NotifyService:
    """Rules, the planner and the delivery task (see the module docstring)."""

    def __init__(
        self,
        rules: Sequence[NotifyRule],
        store: Outbox | None,
        lookup: Lookup,
        *,
        clock: Callable[[], float] = time.time,
        senders: Mapping[str, Sender] = SENDERS,
        attention: Attention | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self._rules = Rules(rules)
        self._planner = Planner(rules)
        self._store = store
        self._lookup = lookup
        self._clock = clock
        self._senders = {"webpush": self._send_push, **senders}
        self._state_dir = state_dir
        self._vapid: Any = None
        self._wake = trio.Event()
        self.attention = attention or Attention()
        self.attention.changed = self._nudge
        self.born = self.delivered = self.dropped = self.failed = 0
        self.messages = self.send_errors = 0
        self.outcomes: dict[tuple[str, str], int] = {}
        """Notifications by (rule, outcome) since the start: delivered, dropped, failed."""

    # -- births and settlements (the hub's publish path: synchronous, never raises) ----------

    def observe(self, event: Event) -> None:
        """A live event was published (and queued for the store): births and settlements."""
        if event.kind not in RELEVANT_KINDS or event.session is None:
            return
        try:
            self._observe(event)
        except Exception:
            log.exception("notify: event %s#%d not looked at", event.topic, event.seq)

    def _observe(self, event: Event) -> None:
        now = self._clock()
        store = self._store
        changed = False
        for birth in self._rules.births(event, self._lookup, now):
            self._planner.add(birth, recorded=store is None)
            if store is not None:
                store.add_statement(outbox.INSERT, outbox.insert_params(birth))
            self.born += 1
            changed = True
            log.debug("notify: %s born for %s (%s)", birth.id, birth.rule, birth.item.title)
        assert event.session is not None
        for key, why in settles(event):
            for birth in self._planner.settle(event.session, key):
                if store is not None:
                    store.add_statement(outbox.DROP, (why, now, birth.id))
                self._count(birth.rule, "dropped")
                log.debug("notify: %s dropped (%s)", birth.id, why)
                changed = True
        if changed:
            self._wake.set()

    def _nudge(self) -> None:
        """Have the delivery task look again (a watch changed)."""
        self._wake.set()

    def _count(self, rule: str, outcome: str) -> None:
        key = (rule, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        if outcome == "dropped":
            self.dropped += 1
        elif outcome == "delivered":
            self.delivered += 1
        elif outcome == "failed":
            self.failed += 1

    # -- the service --------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take up what an earlier run left pending, then deliver until cancelled."""
        if self._state_dir is not None:
            self._vapid = await trio.to_thread.run_sync(push.load_or_make_vapid, self._state_dir)
        if self._store is not None:
            await self._store.run(outbox.prune, self._clock() - KEEP_S)
            left = await self._store.run(outbox.load_pending)
            for birth, attempts in left:
                self._planner.add(birth, attempts, recorded=True)
            if left:
                log.info("notify: %d notifications left pending by the last run", len(left))
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                await self._drop_orphans()
                waiting = self._planner.mark_recorded(self._recorded)
                now = self._clock()
                watched = self.attention.watched()
                for send in self._planner.take(now, watched):
                    nursery.start_soon(self._deliver, send)
                at = self._planner.next_at(now, watched)
                timeout_s = math.inf if at is None else max(0.0, at - now)
                if waiting:
                    timeout_s = min(timeout_s, RECORD_POLL_S)
                if self._planner.waiting_on_watch(watched):
                    timeout_s = min(timeout_s, WATCH_POLL_S)
                with trio.move_on_after(timeout_s):
                    await self._wake.wait()
                self._wake = trio.Event()

    def _recorded(self, birth: Birth) -> bool:
        return self._store is None or self._store.committed(birth.topic, birth.seq)

    async def _drop_orphans(self) -> None:
        gone = self._planner.orphans()
        if gone:
            await self._mark([b.id for b in gone], "dropped", "rule removed", attempted=False)
            for birth in gone:
                self._count(birth.rule, "dropped")

    async def _deliver(self, send: Send) -> None:
        rule = self._rules.by_name.get(send.rule)
        ids = [birth.id for birth in send.births]
        error: str | None = None
        if rule is None:
            error = "rule removed"
        else:
            try:
                await self._send(rule, compose(rule, [b.item for b in send.births]))
            except DeliveryError as exc:
                error = str(exc)
            except Exception as exc:
                log.exception("notify: %s: sending failed", send.rule)
                error = f"internal error: {exc!r}"
        now = self._clock()
        if error is None:
            self._planner.sent(send, now)
            log.info("notify: %s: sent %d notifications", send.rule, len(ids))
            for birth in send.births:
                self._count(birth.rule, "delivered")
            await self._mark(ids, "delivered", None, attempted=True)
        else:
            self.send_errors += 1
            given_up = self._planner.failed(send, now)
            log.warning("notify: %s: not sent (%s); will retry", send.rule, error)
            gone = {birth.id for birth in given_up}
            await self._mark([i for i in ids if i not in gone], "pending", error, attempted=True)
            if given_up:
                log.error("notify: %s: gave up %d notifications", send.rule, len(given_up))
                for birth in given_up:
                    self._count(birth.rule, "failed")
                await self._mark(sorted(gone), "failed", error, attempted=True)
        self._wake.set()

    async def _send(self, rule: NotifyRule, message: Message) -> None:
        sender = self._senders.get(rule.destination)
        if sender is None:
            raise DeliveryError(f"no sender for {rule.destination} destinations in this hived")
        self.messages += 1
        await sender(rule, message)

    async def _mark(
        self, ids: list[str], status: str, outcome: str | None, attempted: bool
    ) -> None:
        if self._store is not None and ids:
            with trio.CancelScope(shield=True):
                await self._store.run(outbox.mark, ids, status, outcome, self._clock(), attempted)

    async def _send_push(self, rule: NotifyRule, message: Message) -> None:
        if self._vapid is None or self._store is None:
            raise DeliveryError("Web Push needs the daemon's state.dir (for its VAPID keys)")
        subs = await self._store.run(push.subscriptions)
        if not subs:
            raise DeliveryError("no dashboard has switched notifications on (no subscription)")
        for endpoint in await push.send_push(rule, message, self._vapid, subs):
            log.info("notify: push subscription %s is gone; forgotten", endpoint)
            await self._store.run(push.forget_subscription, endpoint)

    # -- requests -----------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {
            "push.key": self._push_key,
            "push.subscribe": self._push_subscribe,
            "push.unsubscribe": self._push_unsubscribe,
        }

    def _push_ready(self) -> Outbox:
        if self._vapid is None or self._store is None:
            raise RequestError("conflict", "Web Push is not available on this daemon now")
        return self._store

    async def _push_key(self, request: Request, caller: Caller) -> dict[str, Any]:
        self._push_ready()
        return {"public_key": push.public_key(self._vapid)}

    async def _push_subscribe(self, request: Request, caller: Caller) -> dict[str, Any]:
        assert isinstance(request, PushSubscribe)
        store = self._push_ready()
        sub = request.subscription
        push.check_endpoint(sub.endpoint)
        push.check_keys(sub.keys.p256dh, sub.keys.auth)
        kept = push.Subscription(sub.endpoint, sub.keys.p256dh, sub.keys.auth, caller.token_name)
        await store.run(push.save_subscription, kept)
        log.info("notify: %s subscribed to Web Push", caller.token_name)
        return {"endpoint": sub.endpoint}

    async def _push_unsubscribe(self, request: Request, caller: Caller) -> dict[str, Any]:
        assert isinstance(request, PushUnsubscribe)
        store = self._push_ready()
        forgotten = await store.run(push.forget_subscription, request.endpoint)
        return {"endpoint": request.endpoint, "forgotten": forgotten}

    async def test(self, name: str) -> dict[str, Any]:
        """Send a test message through rule ``name`` now (no outbox, no rate limit)."""
        rule = self._rules.by_name.get(name)
        if rule is None:
            known = ", ".join(self._rules.by_name) or "none"
            raise RequestError("not_found", f"no notify rule {name!r} (rules: {known})")
        item = Item(event="test", title=f"test of notify rule {name} from hived")
        try:
            await self._send(rule, compose(rule, [item]))
        except DeliveryError as exc:
            return {"rule": name, "destination": rule.destination, "sent": False, "error": str(exc)}
        return {"rule": name, "destination": rule.destination, "sent": True, "error": None}

    async def recent(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the notifications born, newest first, with their outcome: at most
        ``limit`` (and 256 KiB) of them after ``cursor`` (a page's ``next``); and the next
        page's cursor, or None."""
        after = None if cursor is None else outbox.cursor_position(cursor)
        if cursor is not None and after is None:
            raise RequestError(
                "bad_request",
                f"notifications.cursor: {expected('a cursor from a page', cursor)}",
            )
        if self._store is None:
            return [], None
        return await self._store.run(outbox.recent, min(max(limit, 1), RECENT_MAX), after)

    def reload(self, config: Config) -> None:
        self._rules = Rules(config.notify)
        self._planner.reload(config.notify)
        self._wake.set()

    async def drain(self) -> None:
        """Nothing to hand back: what is pending stays in the outbox for the next run."""
        await trio.lowlevel.checkpoint()

    def stats(self) -> NotifyStats:
        return NotifyStats(
            rules=len(self._rules.rules),
            pending=len(self._planner),
            born=self.born,
            delivered=self.delivered,
            dropped=self.dropped,
            failed=self.failed,
            messages=self.messages,
            send_errors=self.send_errors,
        )
