"""The client library (and hivectl, its main user) against a scripted stand-in for hived.

:class:`FakeHived` listens on a loopback port and runs one script per connection, so a test
says exactly what the daemon does and when: answer, send events, close with a code, refuse the
token on the next connection. The real daemon is exercised in tests/e2e/.
"""

from __future__ import annotations

import functools
import io
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio_websocket

from hived import client as client_module
from hived.cli import hivectl
from hived.client import (
    AuthError,
    Closed,
    ConnectionLost,
    FellBehind,
    Subscription,
    connect,
    transport,
)
from hived.client import subscription as subscription_module
from hived.client.pages import request_all

DEADLINE_S = 10.0
TOKEN = "secret"


@attrs.define(eq=False)
class Peer:
    """One connection as the fake daemon sees it."""

    number: int
    stream: trio.abc.Stream
    request: trio_websocket.WebSocketRequest
    ws: trio_websocket.WebSocketConnection | None = None
    received: list[dict[str, Any]] = attrs.field(factory=list)
    close_code: int | None = None
    """The code of the client's close frame, once it closed."""
    gone: trio.Event = attrs.field(factory=trio.Event)

    async def welcome(self) -> None:
        self.ws = await self.request.accept()
        await self.send(
            {
                "type": "welcome",
                "server": "hived",
                "version": "0",
                "role": "admin",
                "heartbeat_interval_s": 20.0,
                "connection": self.number,
            }
        )

    async def send(self, *messages: dict[str, Any]) -> None:
        """One frame: a lone message, or an array (as hived coalesces)."""
        assert self.ws is not None
        value: Any = messages[0] if len(messages) == 1 else list(messages)
        await self.ws.send_message(orjson.dumps(value).decode())

    async def next_request(self, type_: str | None = None) -> dict[str, Any]:
        assert self.ws is not None
        while True:
            message = orjson.loads(await self.ws.get_message())
            self.received.append(message)
            if type_ is None or message["type"] == type_:
                return dict(message)

    async def reply(self, request: dict[str, Any], result: Any) -> None:
        await self.send({"type": "result", "id": request["id"], "result": result})

    async def close(self, code: int, reason: str = "") -> None:
        assert self.ws is not None
        await self.ws.aclose(code, reason)

    async def drop(self) -> None:
        """End the TCP connection without a close frame (the client sees 1006)."""
        await trio.aclose_forcefully(self.stream)

    async def serve_requests(self, results: dict[str, Any] | None = None) -> None:
        """Answer every request: from ``results`` by type, else ``{}``; until it closes."""
        while True:
            request = await self.next_request()
            await self.reply(request, (results or {}).get(request["type"], {}))


Script = Callable[[Peer], Awaitable[None]]


@attrs.define(eq=False)
class FakeHived:
    """Runs ``scripts[n]`` for the n-th connection (the last one for any after it)."""

    scripts: list[Script]
    port: int = 0
    peers: list[Peer] = attrs.field(factory=list)
    changed: trio.Event = attrs.field(factory=trio.Event)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, stream)
            peer = Peer(len(self.peers) + 1, stream, request)
            self.peers.append(peer)
            self.changed.set()
            self.changed = trio.Event()
            script = self.scripts[min(peer.number, len(self.scripts)) - 1]
            try:
                await script(peer)
            except trio_websocket.ConnectionClosed as exc:  # the client went away
                peer.close_code = exc.reason.code if exc.reason is not None else None
            peer.gone.set()
            nursery.cancel_scope.cancel()

    async def wait_peers(self, count: int) -> None:
        while len(self.peers) < count:
            await self.changed.wait()


@asynccontextmanager
async def fake_hived(*scripts: Script) -> AsyncIterator[FakeHived]:
    fake = FakeHived(list(scripts))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, fake.serve_connection, 0, host="127.0.0.1")
        )
        fake.port = listeners[0].socket.getsockname()[1]
        yield fake
        nursery.cancel_scope.cancel()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnect after a millisecond, not the real backoff."""
    monkeypatch.setattr(client_module, "BACKOFF_FIRST_S", 0.001)


def event(topic: str, seq: int, **data: Any) -> dict[str, Any]:
    return {
        "type": "event",
        "topic": topic,
        "seq": seq,
        "ts": "2026-11-26T08:00:00.000Z",
        "kind": "text",
        "session": None,
        "data": data,
    }


async def subscribe_answered(peer: Peer, last_seq: int, recovered: bool = True) -> dict[str, Any]:
    request = await peer.next_request("subscribe")
    await peer.reply(
        request, {"topic": request["topic"], "recovered": recovered, "last_seq": last_seq}
    )
    return request


async def receive(subscription: Subscription) -> dict[str, Any]:
    with trio.fail_after(DEADLINE_S):
        return await subscription.receive()


async def refuse_token(peer: Peer) -> None:
    await peer.request.reject(401, body=b"unknown token")


# -- final ends: raised by requests and by subscriptions ------------------------------------


async def test_a_subscription_raises_auth_error_when_the_token_is_refused_on_reconnect() -> None:
    async def first(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.send(event("sessions", 1))
        await peer.close(1001, "hived is stopping")

    async with fake_hived(first, refuse_token) as fake, connect(fake.url, TOKEN) as client:
        subscription = await client.subscribe("sessions")
        assert (await receive(subscription))["seq"] == 1
        with pytest.raises(AuthError, match="401"):
            await receive(subscription)
        with pytest.raises(AuthError):
            await client.request("ping")


async def test_a_request_waiting_when_the_token_is_revoked_gets_auth_error() -> None:
    async def revoke_during_a_request(peer: Peer) -> None:
        await peer.welcome()
        await peer.next_request("sessions")
        await peer.close(4001, "token removed")

    async with fake_hived(revoke_during_a_request) as fake, connect(fake.url, TOKEN) as client:
        with trio.fail_after(DEADLINE_S), pytest.raises(AuthError, match="4001"):
            await client.request("sessions")
    assert len(fake.peers) == 1


async def test_a_reply_that_arrived_before_the_close_is_kept() -> None:
    async def stop(peer: Peer) -> None:
        await peer.welcome()
        request = await peer.next_request("daemon.stop")
        await peer.reply(request, {"stopping": True})
        await peer.close(1001, "daemon stopping")

    async with fake_hived(stop) as fake, connect(fake.url, TOKEN, reconnect=False) as client:
        with trio.fail_after(DEADLINE_S):
            assert await client.request("daemon.stop") == {"stopping": True}


async def test_a_refusal_while_resubscribing_ends_the_subscription_not_the_client() -> None:
    async def first(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.drop()

    async def revoked_before_resubscribe_answers(peer: Peer) -> None:
        await peer.welcome()
        await peer.next_request("subscribe")
        await peer.close(4001, "token removed")

    async with (
        fake_hived(first, revoked_before_resubscribe_answers) as fake,
        connect(fake.url, TOKEN) as client,
    ):
        subscription = await client.subscribe("sessions")
        with pytest.raises(AuthError, match="4001"):
            await receive(subscription)
    assert fake.peers[1].received[0]["since"] == 0


async def test_a_drop_without_reconnect_is_raised_by_the_subscription() -> None:
    async def stop(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.close(1001, "hived is stopping")

    async with fake_hived(stop) as fake, connect(fake.url, TOKEN, reconnect=False) as client:
        subscription = await client.subscribe("sessions")
        with pytest.raises(ConnectionLost, match="1001"):
            await receive(subscription)


async def test_leaving_the_client_ends_its_subscriptions_quietly() -> None:
    async def quiet(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.serve_requests()

    async with fake_hived(quiet) as fake:
        async with connect(fake.url, TOKEN) as client:
            subscription = await client.subscribe("sessions")
        with trio.fail_after(DEADLINE_S):
            assert [e async for e in subscription] == []
        assert subscription.error is None


async def test_leaving_the_client_closes_with_1000_without_waiting_out_the_close_timeout() -> None:
    async def serve(peer: Peer) -> None:
        await peer.welcome()
        await peer.serve_requests()

    async with fake_hived(serve) as fake:
        async with connect(fake.url, TOKEN) as client:
            assert await client.request("ping") == {}
            left_at = trio.current_time()
        took_s = trio.current_time() - left_at
        with trio.fail_after(DEADLINE_S):
            await fake.peers[0].gone.wait()
    assert fake.peers[0].close_code == 1000
    assert took_s < transport.CLOSE_TIMEOUT_S / 2


# -- close 1000 is final; the other closes and drops reconnect ------------------------------


async def kicked(peer: Peer) -> None:
    await peer.welcome()
    await subscribe_answered(peer, last_seq=0)
    await peer.close(1000, "rotating tokens")


async def test_a_close_with_1000_is_final_and_says_why() -> None:
    async with fake_hived(kicked) as fake, connect(fake.url, TOKEN) as client:
        subscription = await client.subscribe("sessions")
        with pytest.raises(Closed, match="connection closed by hived: rotating tokens") as closed:
            await receive(subscription)
        assert closed.value.reason == "rotating tokens"
        with pytest.raises(Closed):
            await client.request("ping")
    assert len(fake.peers) == 1


@pytest.mark.parametrize(
    ("code", "reason"),
    [(1001, "hived is stopping"), (4008, "too slow"), (1011, "internal error"), (None, "drop")],
)
async def test_other_closes_and_drops_reconnect_and_resume(code: int | None, reason: str) -> None:
    async def first(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.send(event("sessions", 1), event("sessions", 2))
        if code is None:
            await peer.drop()
        else:
            await peer.close(code, reason)

    async def second(peer: Peer) -> None:
        await peer.welcome()
        request = await subscribe_answered(peer, last_seq=3)
        assert request["since"] == 2
        await peer.send(event("sessions", 2), event("sessions", 3))
        await peer.serve_requests()

    async with fake_hived(first, second) as fake, connect(fake.url, TOKEN) as client:
        subscription = await client.subscribe("sessions")
        seqs = [(await receive(subscription))["seq"] for _ in range(3)]
        assert await client.request("ping") == {}
    assert seqs == [1, 2, 3]
    assert len(fake.peers) == 2


# -- a slow consumer never stalls the connection --------------------------------------------


async def test_a_subscription_nobody_reads_ends_with_fell_behind_and_requests_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "SUBSCRIPTION_BUFFER", 3)
    monkeypatch.setattr(subscription_module, "SUBSCRIPTION_BUFFER", 3)

    async def flood(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.send(*(event("sessions", seq) for seq in range(1, 11)))
        await peer.serve_requests()

    async with fake_hived(flood) as fake, connect(fake.url, TOKEN) as client:
        subscription = await client.subscribe("sessions")
        with trio.fail_after(DEADLINE_S):
            assert await client.request("ping") == {}  # the reader was not held up
        buffered = [(await receive(subscription))["seq"] for _ in range(3)]
        with pytest.raises(FellBehind, match="since=3") as behind:
            await receive(subscription)
    assert buffered == [1, 2, 3]
    assert (behind.value.topic, behind.value.last_seq) == ("sessions", 3)


async def test_unsubscribing_a_subscription_that_fell_behind_leaves_the_connection_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "SUBSCRIPTION_BUFFER", 3)
    monkeypatch.setattr(subscription_module, "SUBSCRIPTION_BUFFER", 3)

    async def overfill(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.send(*(event("sessions", seq) for seq in range(1, 5)))
        await peer.serve_requests({"unsubscribe": {"topic": "sessions"}})

    async with fake_hived(overfill) as fake, connect(fake.url, TOKEN) as client:
        subscription = await client.subscribe("sessions")
        with trio.fail_after(DEADLINE_S):
            assert await client.request("ping") == {}  # answered after the events
            await client.unsubscribe(subscription)
            assert await client.request("ping") == {}
        buffered = [(await receive(subscription))["seq"] for _ in range(3)]
        with pytest.raises(FellBehind):
            await receive(subscription)
    assert buffered == [1, 2, 3]
    assert [m["type"] for m in fake.peers[0].received] == [
        "subscribe",
        "ping",
        "unsubscribe",
        "ping",
    ]


# -- a daemon that lost its last events numbers new ones from where it is -------------------


@pytest.mark.parametrize("events_first", [False, True], ids=["result-first", "events-first"])
async def test_resume_below_the_last_seq_seen_delivers_the_new_events(events_first: bool) -> None:
    async def before_the_kill(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.send(*(event("session/a", seq, n="old") for seq in range(1, 6)))
        await peer.drop()

    async def after_the_restart(peer: Peer) -> None:
        await peer.welcome()
        request = await peer.next_request("subscribe")
        assert request["since"] == 5
        result = {"topic": "session/a", "recovered": False, "last_seq": 3}
        fresh = [event("session/a", seq, n="new") for seq in (4, 5, 6)]
        if events_first:  # the protocol allows the result after the events
            await peer.send(*fresh)
            await peer.reply(request, result)
        else:
            await peer.reply(request, result)
            await peer.send(*fresh)
        await peer.serve_requests()

    async with (
        fake_hived(before_the_kill, after_the_restart) as fake,
        connect(fake.url, TOKEN) as client,
    ):
        subscription = await client.subscribe("session/a")
        old = [await receive(subscription) for _ in range(5)]
        new = [await receive(subscription) for _ in range(3)]
        assert subscription.recovered is False
        assert subscription.last_seq == 6
    assert [(e["seq"], e["data"]["n"]) for e in old + new] == [
        *((seq, "old") for seq in range(1, 6)),
        *((seq, "new") for seq in (4, 5, 6)),
    ]


async def test_subscribing_since_a_seq_past_the_topic_goes_on_from_the_topic() -> None:
    async def behind(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=3, recovered=False)
        await peer.send(event("session/a", 4))
        await peer.serve_requests()

    async with fake_hived(behind) as fake, connect(fake.url, TOKEN) as client:
        subscription = await client.subscribe("session/a", since=10)
        assert (subscription.last_seq, subscription.recovered) == (3, False)
        assert (await receive(subscription))["seq"] == 4


async def test_a_resubscribe_at_the_same_seq_drops_what_was_already_seen() -> None:
    async def first(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.send(event("sessions", 1), event("sessions", 2))
        await peer.drop()

    async def overlapping_replay(peer: Peer) -> None:
        await peer.welcome()
        await peer.send(event("sessions", 2))  # a replay overlapping what arrived
        await subscribe_answered(peer, last_seq=2)
        await peer.send(event("sessions", 3))
        await peer.serve_requests()

    async with fake_hived(first, overlapping_replay) as fake, connect(fake.url, TOKEN) as client:
        subscription = await client.subscribe("sessions")
        seqs = [(await receive(subscription))["seq"] for _ in range(3)]
        assert subscription.recovered is True
    assert seqs == [1, 2, 3]


async def test_a_reconnect_watches_again_before_it_resubscribes() -> None:
    """hived ends a watch with its connection: the next one says it again, for the session
    the first answer resolved the name to."""

    async def first(peer: Peer) -> None:
        await peer.welcome()
        request = await peer.next_request("watch")
        assert (request["session"], request["focused"]) == ("asker", False)
        await peer.reply(request, {"session": "01ID", "focused": False})
        await subscribe_answered(peer, last_seq=0)
        await peer.drop()

    async def second(peer: Peer) -> None:
        await peer.welcome()
        request = await peer.next_request()
        assert (request["type"], request["session"], request["focused"]) == (
            "watch",
            "01ID",
            False,
        )
        await peer.reply(request, {"session": "01ID", "focused": False})
        await subscribe_answered(peer, last_seq=0)
        await peer.send(event("session/01ID", 1))
        await peer.serve_requests()

    async with fake_hived(first, second) as fake, connect(fake.url, TOKEN) as client:
        assert await client.watch("asker", focused=False) == {"session": "01ID", "focused": False}
        subscription = await client.subscribe("session/01ID")
        assert (await receive(subscription))["seq"] == 1  # sent after the second watch
    assert len(fake.peers) == 2


async def test_a_watch_the_new_daemon_refuses_is_forgotten_and_the_rest_goes_on() -> None:
    async def first(peer: Peer) -> None:
        await peer.welcome()
        await peer.reply(await peer.next_request("watch"), {"session": "01ID", "focused": True})
        await subscribe_answered(peer, last_seq=0)
        await peer.drop()

    async def forgotten(peer: Peer) -> None:
        await peer.welcome()
        request = await peer.next_request("watch")
        await peer.send(
            {"type": "error", "id": request["id"], "code": "not_found", "message": "no session"}
        )
        await subscribe_answered(peer, last_seq=0)
        await peer.send(event("sessions", 1))
        await peer.serve_requests()

    async def third(peer: Peer) -> None:
        await peer.welcome()
        request = await peer.next_request()
        assert request["type"] == "subscribe"  # no watch asked again
        await peer.reply(request, {"topic": "sessions", "recovered": True, "last_seq": 1})
        await peer.send(event("sessions", 2))
        await peer.serve_requests()

    async with fake_hived(first, forgotten, third) as fake, connect(fake.url, TOKEN) as client:
        await client.watch("01ID")
        subscription = await client.subscribe("sessions")
        assert (await receive(subscription))["seq"] == 1
        await fake.peers[1].drop()
        assert (await receive(subscription))["seq"] == 2
    assert len(fake.peers) == 3


# -- hivectl ----------------------------------------------------------------------------------


async def hivectl_main(fake: FakeHived, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """hivectl's main() in a thread of its own (it runs trio.run), against the fake."""
    monkeypatch.setenv("HIVED_URL", f"ws://127.0.0.1:{fake.port}")
    monkeypatch.setenv("HIVED_TOKEN", TOKEN)
    with trio.fail_after(DEADLINE_S):
        return await trio.to_thread.run_sync(hivectl.main, list(argv))


async def test_hivectl_tail_exits_4_when_the_token_is_refused_on_reconnect(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def first(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.send(event("sessions", 1))
        await peer.close(1001, "hived is stopping")

    async with fake_hived(first, refuse_token) as fake:
        code = await hivectl_main(fake, monkeypatch, "tail", "--json")
    captured = capsys.readouterr()
    assert code == hivectl.EXIT_AUTH
    assert [orjson.loads(line)["seq"] for line in captured.out.splitlines()] == [1]
    assert "refused" in captured.err
    assert "401" in captured.err


async def test_hivectl_tail_exits_1_with_the_reason_when_kicked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fake_hived(kicked, refuse_token) as fake:
        code = await hivectl_main(fake, monkeypatch, "tail")
    assert code == hivectl.EXIT_REMOTE
    assert capsys.readouterr().err == "hivectl: connection closed by hived: rotating tokens\n"
    assert len(fake.peers) == 1


async def test_hivectl_tail_takes_up_a_subscription_that_fell_behind(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(client_module, "SUBSCRIPTION_BUFFER", 3)
    monkeypatch.setattr(subscription_module, "SUBSCRIPTION_BUFFER", 3)

    async def flood_then_resume(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.send(*(event("sessions", seq) for seq in range(1, 7)))
        with trio.move_on_after(DEADLINE_S):
            request = await peer.next_request("subscribe")
            await peer.reply(request, {"topic": "sessions", "recovered": True, "last_seq": 6})
            await peer.send(*(event("sessions", seq) for seq in range(request["since"] + 1, 7)))
        await peer.close(1000, "done")

    async with fake_hived(flood_then_resume, refuse_token) as fake:
        code = await hivectl_main(fake, monkeypatch, "tail", "--json")
    captured = capsys.readouterr()
    assert code == hivectl.EXIT_REMOTE, captured.err
    assert [orjson.loads(line)["seq"] for line in captured.out.splitlines()] == list(range(1, 7))
    subscribes = [m for m in fake.peers[0].received if m["type"] == "subscribe"]
    # Resumed from the last seq printed (3 or 4: a reader already waiting takes one more).
    assert subscribes[0].get("since") is None
    assert subscribes[1]["since"] in (3, 4)


async def test_hivectl_send_reads_stdin_before_it_connects(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    peers_when_read: list[int] = []

    class Stdin(io.StringIO):
        def read(self, size: int | None = -1) -> str:
            peers_when_read.append(len(fake.peers))
            return super().read(size)

    async def take_input(peer: Peer) -> None:
        await peer.welcome()
        await peer.serve_requests({"session.input": {"session": "01ABC"}})

    monkeypatch.setattr("sys.stdin", Stdin("run the tests\n"))
    async with fake_hived(take_input) as fake:
        code = await hivectl_main(fake, monkeypatch, "send", "01ABC", "-")
    assert code == hivectl.EXIT_OK, capsys.readouterr().err
    assert peers_when_read == [0]
    sent = [m for m in fake.peers[0].received if m["type"] == "session.input"]
    assert [(m["session"], m["text"]) for m in sent] == [("01ABC", "run the tests\n")]


async def test_hivectl_shows_control_characters_from_hived_as_escapes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def hostile(peer: Peer) -> None:
        await peer.welcome()
        request = await peer.next_request("session.stop")
        await peer.send(
            {
                "type": "error",
                "id": request["id"],
                "code": "not_found",
                "message": "no session \x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J",
            }
        )

    async with fake_hived(hostile) as fake:
        code = await hivectl_main(fake, monkeypatch, "stop", "x")
    err = capsys.readouterr().err
    assert code == hivectl.EXIT_REMOTE
    assert err == "hivectl: not_found: no session \\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b[2J\n"


# -- hivectl: what it says and how it exits ---------------------------------------------------


async def test_hivectl_start_of_a_session_that_failed_at_once_prints_its_id_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = {"session": "01FAILED", "state": "FAILED", "reason": "command not found: nosuch"}

    async def fail_start(peer: Peer) -> None:
        await peer.welcome()
        await peer.serve_requests({"session.start": failed})

    async with fake_hived(fail_start) as fake:
        code = await hivectl_main(fake, monkeypatch, "start", "broken", "--name", "b1")
        captured = capsys.readouterr()
        assert (code, captured.out) == (hivectl.EXIT_REMOTE, "01FAILED\n")
        assert captured.err == "hivectl: b1 FAILED: command not found: nosuch\n"
        code = await hivectl_main(fake, monkeypatch, "start", "broken", "--json")
        captured = capsys.readouterr()
        assert code == hivectl.EXIT_REMOTE
        assert orjson.loads(captured.out) == failed


async def test_hivectl_start_sends_cwd_and_sessions_upper_cases_the_state(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def serve(peer: Peer) -> None:
        await peer.welcome()
        await peer.serve_requests(
            {
                "session.start": {"session": "01OK", "state": "STARTING"},
                "sessions": {"sessions": []},
            }
        )

    async with fake_hived(serve) as fake:
        started = await hivectl_main(fake, monkeypatch, "start", "claude", "--cwd", "/srv/app")
        listed = await hivectl_main(fake, monkeypatch, "sessions", "--state", "waiting")
    captured = capsys.readouterr()
    assert (started, listed) == (hivectl.EXIT_OK, hivectl.EXIT_OK), captured.err
    assert captured.out == "01OK\nno sessions\n"
    received = [m for peer in fake.peers for m in peer.received]
    assert [m["cwd"] for m in received if m["type"] == "session.start"] == ["/srv/app"]
    assert [m["state"] for m in received if m["type"] == "sessions"] == ["WAITING"]


SESSIONS = {
    "sessions": [
        {"id": "01JDXB0000", "name": "beta", "state": "RUNNING"},
        {"id": "01JDXA0001", "name": "alpha", "state": "WAITING"},
        {"id": "01JDXA0000", "name": "alpha", "state": "EXITED"},
    ]
}


async def serve_sessions(peer: Peer) -> None:
    await peer.welcome()
    await peer.serve_requests({"sessions": SESSIONS, "session.events": {"events": []}})


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        (
            "nosuch",
            "hivectl: not_found: no session 'nosuch' (give an id, an id prefix or a name)\n",
        ),
        (
            "01jdxa",
            "hivectl: bad_request: session '01jdxa' is ambiguous: it matches "
            "01JDXA0001 (alpha), 01JDXA0000 (alpha)\n",
        ),
    ],
)
async def test_hivectl_says_not_found_and_ambiguous_as_hived_does(
    ref: str, error: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fake_hived(serve_sessions) as fake:
        code = await hivectl_main(fake, monkeypatch, "logs", ref)
    assert code == hivectl.EXIT_REMOTE
    assert capsys.readouterr().err == error


async def test_hivectl_finds_a_lower_case_prefix_and_the_live_session_of_a_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fake_hived(serve_sessions) as fake:
        assert await hivectl_main(fake, monkeypatch, "logs", "01jdxb") == hivectl.EXIT_OK
        assert await hivectl_main(fake, monkeypatch, "logs", "alpha") == hivectl.EXIT_OK
    asked = [m["session"] for p in fake.peers for m in p.received if m["type"] == "session.events"]
    assert asked == ["01JDXB0000", "01JDXA0001"]


def test_hivectl_an_empty_session_argument_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        hivectl.main(["stop", ""])
    assert exited.value.code == hivectl.EXIT_USAGE
    assert "SESSION must not be empty" in capsys.readouterr().err


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_connection_says_connection_refused() -> None:
    url = f"ws://127.0.0.1:{free_loopback_port()}/v1/ws"
    with pytest.raises(client_module.ConnectError) as raised:
        async with connect(url, TOKEN):
            pass
    assert str(raised.value) == f"cannot connect to {url}: connection refused"


async def test_a_connect_timeout_says_how_long_it_waited(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    async def no_answer(host: str, port: int) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(trio, "open_tcp_stream", no_answer)
    url = "ws://127.0.0.1:9/v1/ws"
    with pytest.raises(client_module.ConnectError) as raised:
        async with connect(url, TOKEN):
            pass
    assert str(raised.value) == f"cannot connect to {url}: no answer within 10 s"


@pytest.mark.parametrize("json_mode", [False, True])
async def test_hivectl_tail_notes_a_reconnect_for_people_only(
    json_mode: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def first(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=0)
        await peer.send(event("sessions", 1), event("sessions", 2))
        await peer.close(1001, "hived is stopping")

    async def second(peer: Peer) -> None:
        await peer.welcome()
        await subscribe_answered(peer, last_seq=2)
        await peer.close(1000, "done")

    async with fake_hived(first, second) as fake:
        code = await hivectl_main(fake, monkeypatch, "tail", *(["--json"] if json_mode else []))
    err = capsys.readouterr().err
    assert code == hivectl.EXIT_REMOTE
    assert ("reconnected; resumed from seq 2\n" in err) is not json_mode


# -- hivectl hook never fails the agent ---------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "note"),
    [
        (["hook", "--bogus"], "ignoring unknown arguments: --bogus"),
        (["--url", "hook", "hook", "extra"], "ignoring unknown arguments: extra"),
        (["hook", "--token"], "posting nothing"),
    ],
)
def test_hivectl_hook_exits_0_on_bad_arguments(
    argv: list[str], note: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HIVED_TOKEN", "")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"{}")))
    assert hivectl.main(argv) == hivectl.EXIT_OK
    assert note in capsys.readouterr().err


def test_hivectl_hook_without_a_token_says_so_and_posts_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HIVED_TOKEN", raising=False)
    monkeypatch.setenv("HIVED_URL", f"ws://127.0.0.1:{free_loopback_port()}")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"{}")))
    assert hivectl.main(["hook"]) == hivectl.EXIT_OK
    assert capsys.readouterr().err == "hivectl hook: no token: set HIVED_TOKEN\n"


@pytest.mark.parametrize(("stable_s", "attempts"), [(3600.0, [0, 1, 2, 3]), (0.0, [0, 0, 0, 0])])
async def test_the_backoff_starts_afresh_only_after_a_connection_that_lived(
    monkeypatch: pytest.MonkeyPatch, stable_s: float, attempts: list[int]
) -> None:
    # A server that closes every connection at once (4029, rate limited) must not be retried
    # at the first delay forever: the backoff grows unless a connection lived STABLE_S.
    seen: list[int] = []

    def backoff_s(attempt: int) -> float:
        seen.append(attempt)
        return 0.001

    monkeypatch.setattr(client_module, "STABLE_S", stable_s)
    monkeypatch.setattr(client_module, "backoff_s", backoff_s)

    async def limited(peer: Peer) -> None:
        await peer.welcome()
        await peer.close(4029, "rate limited")

    async def serves(peer: Peer) -> None:
        await peer.welcome()
        await peer.serve_requests()

    async with fake_hived(limited, limited, limited, limited, serves) as fake:
        with trio.fail_after(DEADLINE_S):
            async with connect(fake.url, TOKEN) as client:
                await fake.wait_peers(5)
                assert await client.request("ping") == {}
    assert seen == attempts


class PagedServer:
    """A fake ``request`` answering a list in pages of at most ``per_page``, by ``cursor``."""

    def __init__(self, items: int, per_page: int) -> None:
        self.items = [{"id": n} for n in range(items)]
        self.per_page = per_page
        self.asked: list[dict[str, Any]] = []

    async def request(self, type_: str, **fields: Any) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        self.asked.append({"type": type_, **fields})
        start = 0 if fields.get("cursor") is None else int(fields["cursor"]) + 1
        count = min(self.per_page, fields.get("limit") or self.per_page)
        page = self.items[start : start + count]
        more = start + count < len(self.items)
        return {"connections": page, "next": str(page[-1]["id"]) if more else None}


async def test_request_all_follows_next_until_null() -> None:
    server = PagedServer(25, 10)
    items = await request_all(server.request, "connections", "connections")
    assert items == server.items
    assert [asked.get("cursor") for asked in server.asked] == [None, "9", "19"]


async def test_request_all_asks_for_no_more_than_it_still_wants() -> None:
    server = PagedServer(25, 10)
    items = await request_all(server.request, "connections", "connections", most=12)
    assert items == server.items[:12]
    assert [asked.get("limit") for asked in server.asked] == [12, 2]
