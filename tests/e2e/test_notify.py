"""Notifications against the real daemon and receivers the tests start (DESIGN §12).

Exactly once from live events: a permission request left unanswered for ``after_s`` gives one
message per rule; one answered earlier gives none; a daemon killed between the birth and the
delivery delivers once after its restart (and the request it asks again gives no second birth);
a replay of the whole history gives none; fifty sessions waiting at once give one message per
destination. The outbox (``notifications``) is checked beside what the receivers got.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import signal
import ssl
import subprocess
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
import trustme

from hived.client import Client, RemoteError, connect
from tests.e2e.harness import DEADLINE_S, SECRETS, Launcher, RunningDaemon, free_port
from tests.e2e.receivers import HttpReceiver, http_receiver, smtp_receiver
from tests.e2e.test_hivectl import HIVECTL, as_json, env_for, hivectl, out

pytestmark = pytest.mark.e2e

HMAC_KEY = b"webhook-signing-key"


def webhook_rule(
    receiver: HttpReceiver, name: str = "hook", *, after_s: float = 0.0, extra: str = ""
) -> str:
    return (
        f'[[notify]]\nname = "{name}"\nafter_s = {after_s}\ncoalesce_s = 0.2\n'
        f'min_interval_s = 0.0\nlink = "http://127.0.0.1:7420/"\n{extra}\n'
        f'[notify.webhook]\nurl = "{receiver.url("/" + name)}"\nsecret_file = "hook.key"\n'
        "timeout_s = 5.0\n\n"
    )


def ntfy_rule(receiver: HttpReceiver, name: str = "phone", *, after_s: float = 0.0) -> str:
    return (
        f'[[notify]]\nname = "{name}"\nafter_s = {after_s}\ncoalesce_s = 0.2\n'
        f'min_interval_s = 0.0\nlink = "http://127.0.0.1:7420/"\n\n'
        f'[notify.ntfy]\nurl = "{receiver.url("/" + name)}"\npriority = 5\n\n'
    )


async def start_daemon(hived: Launcher, body: str) -> RunningDaemon:
    (hived.tmp_path / "hook.key").write_bytes(HMAC_KEY + b"\n")
    port, config = hived.config(body=body)
    return await hived.start(config, port=port)


async def outbox(daemon: RunningDaemon) -> list[dict[str, Any]]:
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
        result = await admin.request("notifications", limit=500)
    return list(result["notifications"])


async def outbox_when(
    daemon: RunningDaemon,
    condition: Callable[[list[dict[str, Any]]], bool],
    what: str,
    timeout_s: float = DEADLINE_S,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with trio.move_on_after(timeout_s):
        while True:
            rows = await outbox(daemon)
            if condition(rows):
                return rows
            await trio.sleep(0.05)
    seen = [(r["rule"], r["status"], r["attempts"], r["outcome"]) for r in rows]
    raise AssertionError(f"outbox: no {what} within {timeout_s} s: {seen}\n{daemon.log()}")


async def start_waiting(client: Client, name: str) -> str:
    """Start a fake Claude session that asks permission; its id once it waits."""
    started = await client.request(
        "session.start", agent="claude", prompt="this needs permission", name=name
    )
    session = str(started["session"])
    with trio.fail_after(DEADLINE_S):
        while True:
            summaries = (await client.request("sessions"))["sessions"]
            if any(s["id"] == session and s["state"] == "WAITING" for s in summaries):
                return session
            await trio.sleep(0.05)


async def request_id(client: Client, session: str) -> str:
    events = (await client.request("session.events", session=session))["events"]
    return next(e["data"]["request_id"] for e in events if e["kind"] == "permission_request")


def all_done(rows: list[dict[str, Any]], count: int) -> bool:
    return len(rows) == count and all(r["status"] != "pending" for r in rows)


async def test_an_unanswered_permission_request_notifies_once_per_rule(
    hived: Launcher,
) -> None:
    async with http_receiver() as receiver:
        body = webhook_rule(receiver, after_s=0.5) + ntfy_rule(receiver, after_s=0.5)
        daemon = await start_daemon(hived, body)
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            session = await start_waiting(client, "asker")
            rows = await outbox_when(daemon, lambda r: all_done(r, 2), "two outcomes")
        assert {(r["rule"], r["status"], r["session"]) for r in rows} == {
            ("hook", "delivered", session),
            ("phone", "delivered", session),
        }
        hook, phone = receiver.to("/hook"), receiver.to("/phone")
        assert len(hook) == len(phone) == 1
        posted = hook[0]
        assert posted.headers["x-hived-signature"] == (
            "sha256=" + hmac.new(HMAC_KEY, posted.body, hashlib.sha256).hexdigest()
        )
        message = posted.json()
        assert message["type"] == "hived.notification"
        assert message["count"] == 1
        [item] = message["items"]
        assert item["event"] == "permission"
        assert item["session"] == session
        assert item["name"] == "asker"
        assert item["title"] == "asker asks permission to use Bash"
        assert "details" not in item  # a summary: never the tool's input
        assert message["link"] == f"http://127.0.0.1:7420/?session={session}"
        assert phone[0].headers["title"] == "asker asks permission to use Bash"
        assert phone[0].headers["priority"] == "5"
        assert phone[0].headers["click"] == f"http://127.0.0.1:7420/?session={session}"
        assert phone[0].body == b"asker asks permission to use Bash"


async def test_a_request_answered_before_after_s_notifies_nobody(hived: Launcher) -> None:
    async with http_receiver() as receiver:
        daemon = await start_daemon(hived, webhook_rule(receiver, after_s=600.0))
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            session = await start_waiting(client, "asker")
            await outbox_when(daemon, lambda r: len(r) == 1, "a birth")
            request = await request_id(client, session)
            await client.request("session.approve", session=session, request_id=request, allow=True)
            rows = await outbox_when(daemon, lambda r: all_done(r, 1), "the drop")
        assert rows[0]["status"] == "dropped"
        assert rows[0]["outcome"] == "answered"
        assert receiver.requests == []


async def test_a_daemon_killed_between_birth_and_delivery_delivers_once_after_restart(
    hived: Launcher,
) -> None:
    async with http_receiver() as receiver:
        receiver.status = 503  # deliveries fail until the daemon is dead
        daemon = await start_daemon(hived, webhook_rule(receiver))
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            session = await start_waiting(client, "asker")
        await outbox_when(daemon, lambda r: len(r) == 1 and r[0]["attempts"] >= 1, "an attempt")
        daemon.send_signal(signal.SIGKILL)
        await daemon.wait_exit()
        assert receiver.to("/hook") == []
        receiver.status = 200
        daemon = await hived.start(daemon.config_path.read_text(), port=daemon.port)
        rows = await outbox_when(daemon, lambda r: all_done(r, 1), "the delivery")
        assert rows[0]["status"] == "delivered"
        assert len(receiver.to("/hook")) == 1
        # The agent outlived the daemon under its shim; the request it still waits on was asked
        # again (asked_again) and gave birth to nothing new.
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            events = (await client.request("session.events", session=session))["events"]
            assert any(e["data"].get("asked_again") for e in events)
            # A replay of the whole history, of every topic, gives birth to nothing either.
            for topic in ("sessions", f"session/{session}"):
                sub = await client.subscribe(topic, since=0)
                with trio.fail_after(DEADLINE_S):
                    async for event in sub:
                        if event["seq"] >= sub.last_seq:
                            break
        await store_and_outbox_settled(daemon)
        assert len(await outbox(daemon)) == 1
        assert len(receiver.to("/hook")) == 1


async def store_and_outbox_settled(daemon: RunningDaemon) -> None:
    """Until the store has written everything the daemon had queued."""
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
        with trio.fail_after(DEADLINE_S):
            while True:
                if not (await admin.request("status"))["store"]["pending"]:
                    return
                await trio.sleep(0.02)


async def test_fifty_sessions_waiting_at_once_give_one_message_per_destination(
    hived: Launcher,
) -> None:
    count = 50
    async with http_receiver() as receiver:
        # The first birth waits coalesce_s for the others; 50 fake agents start in ~3 s here.
        coalesce = "coalesce_s = 15.0\nmin_interval_s = 0.0\n"
        body = (
            f'[[notify]]\nname = "hook"\n{coalesce}\n[notify.webhook]\n'
            f'url = "{receiver.url("/hook")}"\nformat = "slack"\n\n'
            f'[[notify]]\nname = "phone"\n{coalesce}\n[notify.ntfy]\n'
            f'url = "{receiver.url("/phone")}"\n\n'
        )
        daemon = await start_daemon(hived, body)
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            # All fifty in flight at once on one connection: hived runs 16 and reads the rest
            # (and the client's pongs behind them) as slots free up, which must not count as a
            # missed pong (issue 19: the connection was dropped, 1006, on a loaded machine).
            async with trio.open_nursery() as nursery:
                for index in range(count):
                    nursery.start_soon(
                        partial(
                            client.request,
                            "session.start",
                            agent="claude",
                            prompt="this needs permission",
                            name=f"s{index}",
                        )
                    )
            # One poll for all of them (50 pollers would load the machine they wait on).
            with trio.fail_after(60):
                while True:
                    sessions = (await client.request("sessions"))["sessions"]
                    if sum(s["state"] == "WAITING" for s in sessions) == count:
                        break
                    await trio.sleep(0.2)
        rows = await outbox_when(
            daemon, lambda r: all_done(r, 2 * count), "every delivery", timeout_s=60.0
        )
        assert {r["status"] for r in rows} == {"delivered"}
        [hook] = receiver.to("/hook")
        [phone] = receiver.to("/phone")
        text = hook.json()["text"]
        title, *lines, more = text.splitlines()
        assert title == f"{count} notifications from {count} sessions"
        assert len(lines) == 20  # the first 20 spelled out, oldest first
        assert all(re.fullmatch(r"s\d+ asks permission to use Bash", line) for line in lines)
        assert len(set(lines)) == 20
        assert more == f"… and {count - 20} more"
        assert phone.headers["title"] == f"{count} notifications from {count} sessions"


async def test_notify_test_sends_through_one_rule(hived: Launcher) -> None:
    async with http_receiver() as receiver:
        daemon = await start_daemon(hived, ntfy_rule(receiver))
        async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
            result = await admin.request("notify.test", rule="phone")
            assert result == {"rule": "phone", "destination": "ntfy", "sent": True, "error": None}
            receiver.status = 500
            failed = await admin.request("notify.test", rule="phone")
            assert failed["sent"] is False
            assert "HTTP 500" in failed["error"]
            with pytest.raises(RemoteError, match="no notify rule 'nope' \\(rules: phone\\)"):
                await admin.request("notify.test", rule="nope")
        [first, _] = receiver.to("/phone", 200) + receiver.to("/phone", 500)
        assert first.body == b"test of notify rule phone from hived"


async def test_a_mail_goes_through_starttls_with_the_credentials_from_their_file(
    hived: Launcher,
) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    ca.cert_pem.write_to_path(str(hived.tmp_path / "smtp-ca.pem"))
    (hived.tmp_path / "smtp.credentials").write_text("hived:s3cret:with:colons\n")
    port = free_port()
    body = (
        '[[notify]]\nname = "mail"\ncoalesce_s = 0.2\nlink = "http://127.0.0.1:7420/"\n'
        f'[notify.email]\nhost = "127.0.0.1"\nport = {port}\nsender = "hived@example.com"\n'
        'to = ["alice@example.com", "bob@example.com"]\nca_file = "smtp-ca.pem"\n'
        'credentials_file = "smtp.credentials"\ntimeout_s = 10.0\n'
    )
    with smtp_receiver(server_tls, port) as mailbox:
        daemon = await start_daemon(hived, body)
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            session = await start_waiting(client, "asker")
            rows = await outbox_when(daemon, lambda r: all_done(r, 1), "the mail")
    assert rows[0]["status"] == "delivered"
    [mail] = mailbox.mails
    assert mailbox.tls == [True]
    assert mailbox.logins == [("hived", "s3cret:with:colons")]
    assert mail["From"] == "hived@example.com"
    assert mail["To"] == "alice@example.com, bob@example.com"
    assert mail["Subject"] == "[hived] asker asks permission to use Bash"
    assert mail.get_content().replace("\r\n", "\n") == (  # SMTP's line ends
        f"asker asks permission to use Bash\n\nhttp://127.0.0.1:7420/?session={session}\n"
    )


async def test_hivectl_lists_notifications_and_sends_a_test(hived: Launcher) -> None:
    async with http_receiver() as receiver:
        daemon = await start_daemon(hived, ntfy_rule(receiver))
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            await start_waiting(client, "asker")
        await outbox_when(daemon, lambda r: all_done(r, 1), "the delivery")
        listed = as_json(await hivectl(daemon, "notifications", "--json", role="viewer"))
        assert [(n["rule"], n["status"]) for n in listed] == [("phone", "delivered")]
        text = out(await hivectl(daemon, "notifications", "-n", "5", role="viewer"))
        header, row = text.splitlines()
        assert header.split() == ["ID", "RULE", "BORN", "STATUS", "WHAT", "OUTCOME"]
        assert row.split()[1] == "phone"
        assert "delivered" in row
        sent = await hivectl(daemon, "notify", "test", "phone")
        assert sent.returncode == 0, sent.stderr
        assert out(sent) == "sent a test message through phone (ntfy)\n"
        receiver.status = 502
        failed = await hivectl(daemon, "notify", "test", "phone")
        assert failed.returncode == 1
        assert "not sent through phone (ntfy): POST" in out(failed)
        missing = await hivectl(daemon, "notify", "test", "nope")
        assert missing.returncode == 1
        assert "not_found: no notify rule 'nope'" in missing.stderr.decode()


async def test_a_watched_session_is_told_of_only_once_nobody_watches(hived: Launcher) -> None:
    async with http_receiver() as receiver:
        daemon = await start_daemon(hived, webhook_rule(receiver))
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as watcher:
                started = await client.request("session.start", agent="claude", name="asker")
                session = started["session"]
                answer = await watcher.request("watch", session="asker", focused=True)
                assert answer == {"session": session, "focused": True}
                async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
                    [watch] = (await admin.request("status"))["attention"]
                assert (watch["session"], watch["focused"], watch["token_name"]) == (
                    session,
                    True,
                    "viewer-token",
                )
                await client.request("session.input", session=session, text="needs permission")
                await outbox_when(daemon, lambda r: len(r) == 1, "the birth")
                # Watched: it waits past its time (after_s 0, coalesce_s 0.2).
                with trio.move_on_after(2):
                    await outbox_when(daemon, lambda r: all_done(r, 1), "a delivery")
                    raise AssertionError("delivered while someone watched")
                assert receiver.requests == []
            # The watcher's connection closed: the watch ended with it.
            rows = await outbox_when(daemon, lambda r: all_done(r, 1), "the delivery")
        assert rows[0]["status"] == "delivered"
        assert len(receiver.to("/hook")) == 1


async def test_a_reload_applies_new_rules_at_once(hived: Launcher) -> None:
    async with http_receiver() as receiver:
        daemon = await start_daemon(hived, ntfy_rule(receiver, "phone"))
        text = daemon.config_path.read_text()
        daemon.config_path.write_text(text.replace('name = "phone"', 'name = "pager"'))
        async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
            reloaded = await admin.request("config.reload")
            assert reloaded["changed"] == ["notify"]
            with pytest.raises(RemoteError, match="no notify rule 'phone' \\(rules: pager\\)"):
                await admin.request("notify.test", rule="phone")
            assert (await admin.request("notify.test", rule="pager"))["sent"] is True
            daemon.config_path.write_text(text.replace("priority = 5", "priority = 9"))
            refused = await admin.request("config.reload")
        assert refused["reloaded"] is False
        assert refused["errors"] == [
            f"{daemon.config_path}: notify[0].ntfy.priority: expected a priority from 1 to 5, got 9"
        ]


async def attention(daemon: RunningDaemon) -> list[dict[str, Any]]:
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
        return list((await admin.request("status"))["attention"])


async def watched_by(daemon: RunningDaemon, session: str) -> dict[str, Any]:
    """The watch on ``session`` once ``status`` lists one."""
    with trio.fail_after(DEADLINE_S):
        while True:
            for watch in await attention(daemon):
                if watch["session"] == session:
                    return watch
            await trio.sleep(0.05)


async def test_hivectl_tail_watches_again_after_a_daemon_restart(hived: Launcher) -> None:
    port, config = hived.config()
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = (await client.request("session.start", agent="claude", name="watched"))["session"]
    tail = await trio.lowlevel.open_process(
        [HIVECTL, "tail", session, "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env_for(daemon, "viewer"),
    )
    try:
        first = await watched_by(daemon, session)
        assert (first["focused"], first["token_name"]) == (True, "viewer-token")
        daemon.send_signal(signal.SIGKILL)
        await daemon.wait_exit()
        daemon = await hived.start(config, port=port)
        # The new daemon knows nothing of the old connection's watch: tail said it again.
        again = await watched_by(daemon, session)
        assert (again["focused"], again["token_name"]) == (True, "viewer-token")
        assert tail.returncode is None
    finally:
        tail.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await tail.wait()
