"""The sans-IO part of notifications: which events give birth and which settle (rules), when a
destination gets a message and what it lists (plan), and the message bodies (message)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import attrs
import orjson
import pytest

from hived.core.config import parse_config
from hived.core.errors import ConfigError
from hived.core.events import Event
from hived.core.notifyconfig import NotifyRule
from hived.notify.message import compose, ntfy_request, signature, webhook_body
from hived.notify.plan import ATTEMPTS_MAX, Planner
from hived.notify.rules import Birth, Rules, Who, classify, settles

WHO = {"S1": Who("S1", "alpha", "claude"), "S2": Who("S2", "beta", "codex")}


def rules_of(text: str) -> tuple[NotifyRule, ...]:
    agents = '[agents.claude]\ncommand = ["c"]\n[agents.codex]\ncommand = ["x"]\n'
    return parse_config(agents + text).notify


def event(kind: str, data: Mapping[str, Any], session: str = "S1", topic: str = "") -> Event:
    return Event(topic or f"session/{session}", 7, "2026-12-05T00:00:00.000Z", kind, session, data)


ASK = {"request_id": "r1", "request_kind": "permission", "tool_name": "Bash", "input": {"c": 1}}
HOOK = '[notify.webhook]\nurl = "http://127.0.0.1:9/h"\n'


def births(rules: tuple[NotifyRule, ...], ev: Event, now: float = 100.0) -> list[Birth]:
    ids = iter(f"n{i}" for i in range(100))
    return Rules(rules).births(ev, WHO.get, now, lambda: next(ids))


# -- config ---------------------------------------------------------------------------------


def test_a_rule_has_exactly_one_destination_and_known_templates() -> None:
    with pytest.raises(ConfigError) as caught:
        rules_of(
            '[[notify]]\nname = "a"\ntemplates = ["nope"]\nevents = []\n\n'
            '[[notify]]\nname = "a"\n' + HOOK + '[notify.ntfy]\nurl = "http://127.0.0.1:9/t"\n'
        )
    assert caught.value.problems == (
        "hived.toml: notify[0]: expected exactly one of webhook, ntfy, email, webpush, got none",
        "hived.toml: notify[0].events: expected at least one of permission, question, "
        "turn_done, failed, fatal, stalled, budget",
        'hived.toml: notify[0].templates: no template "nope" (known: claude, codex)',
        'hived.toml: notify[1].name: "a" is already used by notify[0]',
        "hived.toml: notify[1]: expected exactly one of webhook, ntfy, email, webpush, "
        "got webhook, ntfy",
    )


def test_bad_values_in_a_rule_are_named_with_their_key() -> None:
    with pytest.raises(ConfigError) as caught:
        rules_of(
            '[[notify]]\nname = "a"\nafter_s = -1\ndetail = "all"\nevents = ["done"]\n'
            '[notify.email]\nhost = "h"\nsender = "me"\nto = ["you@x"]\nstarttls = "yes"\n'
        )
    assert caught.value.problems == (
        "hived.toml: notify[0].events[0]: expected one of permission, question, turn_done, "
        'failed, fatal, stalled, budget, got "done"',
        "hived.toml: notify[0].after_s: expected a duration ≥ 0, got -1",
        'hived.toml: notify[0].detail: expected one of summary, full, got "all"',
        'hived.toml: notify[0].email.sender: expected an e-mail address (user@host), got "me"',
        'hived.toml: notify[0].email.starttls: expected true or false, got "yes"',
    )


def test_unknown_keys_in_a_rule_and_its_destination_are_named() -> None:
    with pytest.raises(ConfigError) as caught:
        rules_of(
            '[[notify]]\nname = "a"\nafter = 5\n'
            '[notify.webhook]\nurl = "http://127.0.0.1:9/h"\nsecret = "x"\n'
        )
    assert sorted(caught.value.problems) == [
        "hived.toml: notify[0].after: unknown key; known keys here: name, events, templates, "
        "sessions, after_s, detail, coalesce_s, min_interval_s, link, webhook, ntfy, email, "
        "webpush",
        "hived.toml: notify[0].webhook.secret: unknown key; known keys here: url, format, "
        "secret_file, timeout_s",
    ]


# -- births and settlements -----------------------------------------------------------------


def test_a_permission_request_gives_one_birth_per_matching_rule() -> None:
    rules = rules_of(
        f'[[notify]]\nname = "all"\nafter_s = 30\n{HOOK}\n'
        f'[[notify]]\nname = "codex-only"\ntemplates = ["codex"]\n{HOOK}\n'
        f'[[notify]]\nname = "beta-only"\nsessions = ["beta"]\n{HOOK}\n'
        f'[[notify]]\nname = "turns"\nevents = ["turn_done"]\n{HOOK}\n'
        f'[[notify]]\nname = "full"\ndetail = "full"\n{HOOK}\n'
    )
    [all_, full] = births(rules, event("permission_request", ASK))
    assert (all_.rule, all_.key, all_.topic, all_.seq) == ("all", "r1", "session/S1", 7)
    assert (all_.born_at, all_.due_at) == (100.0, 130.0)
    assert all_.item.title == "alpha asks permission to use Bash"
    assert (all_.item.name, all_.item.template, all_.item.tool) == ("alpha", "claude", "Bash")
    assert all_.item.details is None
    assert full.item.details == {
        "tool_name": "Bash",
        "input": {"c": 1},
        "request_kind": "permission",
    }


def test_a_long_session_name_is_whole_in_the_item_and_cut_in_its_one_line_title() -> None:
    rules = rules_of(f'[[notify]]\nname = "all"\n{HOOK}\n')
    name = "long\nname " + "n" * 100_000
    [birth] = Rules(rules).births(
        event("permission_request", ASK),
        {"S1": Who("S1", name, "claude")}.get,
        100.0,
        lambda: "n1",
    )
    assert birth.item.name == name
    assert birth.item.title.startswith("long name nnn")
    assert birth.item.title.endswith("… asks permission to use Bash")
    assert len(birth.item.title) < 300


def test_a_request_asked_again_after_a_restart_gives_no_birth() -> None:
    rules = rules_of(f'[[notify]]\nname = "all"\n{HOOK}')
    assert births(rules, event("permission_request", {**ASK, "asked_again": True})) == []


@pytest.mark.parametrize(
    ("ev", "what", "key"),
    [
        (event("permission_request", {**ASK, "request_kind": "question"}), "question", "r1"),
        (event("result", {"is_error": False}), "turn_done", "turn"),
        (event("state", {"state": "FAILED"}, topic="sessions"), "failed", "sessions#7"),
        (event("state", {"state": "FATAL"}, topic="sessions"), "fatal", "sessions#7"),
        (event("state", {"state": "STALLED"}, topic="sessions"), "stalled", "stalled"),
        (
            event("budget", {"message": "cost 2.10 USD reached max_cost_usd 2.00"}),
            "budget",
            "budget#7",
        ),
    ],
)
def test_what_each_event_is_for_notifications(ev: Event, what: str, key: str) -> None:
    kind = classify(ev)
    assert kind is not None
    assert (kind.event, kind.key) == (what, key)


@pytest.mark.parametrize(
    "ev",
    [
        event("state", {"state": "FAILED"}),  # the session topic's copy: born from "sessions"
        event("state", {"state": "WAITING"}, topic="sessions"),
        event("message", {"text": "hi"}),
        event("result", {}, topic="sessions"),
    ],
)
def test_other_events_are_nothing_for_notifications(ev: Event) -> None:
    assert classify(ev) is None


def test_answers_withdrawals_prompts_and_output_settle_what_waits() -> None:
    assert settles(event("input", {"request_id": "r1", "approval": {}})) == [("r1", "answered")]
    assert settles(event("request_withdrawn", {"request_id": "r1"})) == [("r1", "withdrawn")]
    assert settles(event("input", {"text": "go on"})) == [("turn", "prompted")]
    back = event("state", {"state": "WORKING", "previous": "STALLED"}, topic="sessions")
    assert settles(back) == [("stalled", "output came")]
    assert settles(event("message", {"text": "x"})) == []


# -- the plan -------------------------------------------------------------------------------


def plan_rules(coalesce_s: float = 2.0, min_interval_s: float = 10.0) -> tuple[NotifyRule, ...]:
    return rules_of(
        f'[[notify]]\nname = "h"\ncoalesce_s = {coalesce_s}\nmin_interval_s = {min_interval_s}\n'
        + HOOK
    )


def born(
    id_: str, at: float, session: str = "S1", key: str = "r1", due: float | None = None
) -> Birth:
    [b] = births(plan_rules(), event("permission_request", {**ASK, "request_id": key}, session), at)
    return attrs.evolve(b, id=id_, due_at=at if due is None else due)


def test_a_burst_is_coalesced_and_the_next_waits_for_the_rate_limit() -> None:
    planner = Planner(plan_rules(coalesce_s=2.0, min_interval_s=10.0))
    for index in range(5):
        planner.add(born(f"n{index}", 100.0 + index * 0.3, f"S{index}", f"r{index}"), recorded=True)
    assert planner.next_at(100.0) == 102.0
    assert planner.take(101.9) == []
    [send] = planner.take(102.0)
    assert [b.id for b in send.births] == ["n0", "n1", "n2", "n3", "n4"]
    assert planner.next_at(102.0) is None  # in flight: nothing else goes meanwhile
    planner.sent(send, 102.5)
    planner.add(born("late", 103.0, "S9", "r9"), recorded=True)
    assert planner.next_at(103.0) == 112.5  # min_interval_s after the last message
    [later] = planner.take(112.5)
    assert [b.id for b in later.births] == ["late"]


def test_nothing_goes_before_it_is_recorded_or_due() -> None:
    planner = Planner(plan_rules(coalesce_s=0.0, min_interval_s=0.0))
    planner.add(born("a", 100.0), recorded=False)
    planner.add(born("b", 100.0, "S2", "r2", due=150.0), recorded=True)
    assert planner.take(120.0) == []
    assert planner.mark_recorded(lambda b: False) is True
    assert planner.mark_recorded(lambda b: True) is False
    [send] = planner.take(120.0)
    assert [b.id for b in send.births] == ["a"]


def test_a_settled_notification_never_goes_but_one_in_flight_is_not_called_back() -> None:
    planner = Planner(plan_rules(coalesce_s=0.0, min_interval_s=0.0))
    planner.add(born("a", 100.0, "S1", "r1"), recorded=True)
    planner.add(born("b", 100.0, "S2", "r2"), recorded=True)
    assert [b.id for b in planner.settle("S1", "r1")] == ["a"]
    [send] = planner.take(100.0)
    assert [b.id for b in send.births] == ["b"]
    assert planner.settle("S2", "r2") == []
    assert len(planner) == 1


def test_failures_back_off_and_give_up_after_the_last_attempt() -> None:
    planner = Planner(plan_rules(coalesce_s=0.0, min_interval_s=0.0))
    planner.add(born("a", 0.0), recorded=True)
    now, waits = 0.0, []
    for _ in range(ATTEMPTS_MAX - 1):
        [send] = planner.take(now)
        assert planner.failed(send, now) == []
        at = planner.next_at(now)
        assert at is not None
        waits.append(at - now)
        now = at
    [send] = planner.take(now)
    assert [b.id for b in planner.failed(send, now)] == ["a"]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert len(planner) == 0


def test_a_removed_rule_hands_back_its_pending_notifications() -> None:
    planner = Planner(plan_rules())
    planner.add(born("a", 0.0), recorded=True)
    planner.reload(())
    assert [b.id for b in planner.orphans()] == ["a"]
    assert planner.take(100.0) == []


# -- messages -------------------------------------------------------------------------------


def test_bodies_for_each_webhook_format_and_ntfy() -> None:
    rules = rules_of(
        f'[[notify]]\nname = "h"\nlink = "http://127.0.0.1:7420/"\n{HOOK}format = "slack"\n'
        '[[notify]]\nname = "d"\n[notify.webhook]\nurl = "http://127.0.0.1:9/d"\nformat = "discord"\n'
        '[[notify]]\nname = "p"\n[notify.ntfy]\nurl = "http://127.0.0.1:9/t"\npriority = 2\n'
    )
    one = [born("a", 0.0).item]
    two = [born("a", 0.0).item, born("b", 0.0, "S2", "r2").item]
    slack, discord, ntfy = rules
    assert orjson.loads(webhook_body(slack, compose(slack, one))) == {
        "text": "alpha asks permission to use Bash\nhttp://127.0.0.1:7420/?session=S1"
    }
    assert orjson.loads(webhook_body(discord, compose(discord, two))) == {
        "content": "2 notifications from 2 sessions\nalpha asks permission to use Bash\n"
        "beta asks permission to use Bash"
    }
    headers, body = ntfy_request(ntfy, compose(ntfy, two))
    assert headers == {"Title": "2 notifications from 2 sessions", "Priority": "2", "Tags": "robot"}
    assert body == b"alpha asks permission to use Bash\nbeta asks permission to use Bash"


def test_the_signature_is_the_hmac_sha256_of_the_body() -> None:
    assert (
        signature(b"k", b"body") == "sha256=" + hmac.new(b"k", b"body", hashlib.sha256).hexdigest()
    )
