"""The notifier service in trio, with a fake destination and trio's clock (autojump): births
from the hub's live publishes, retries with backoff, answers before ``after_s``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio
import trio.testing

from hived.core.errors import RequestError
from hived.core.notifyconfig import NotifyRule
from hived.hub import Hub
from hived.notify.attention import Attention
from hived.notify.message import Message
from hived.notify.rules import Who
from hived.notify.send import DeliveryError, post
from hived.notify.service import NotifyService
from tests.test_notify_rules import ASK, rules_of


class FakeDestination:
    def __init__(self) -> None:
        self.sent: list[tuple[float, Message]] = []
        self.failures = 0
        """Fail this many sends first."""

    async def __call__(self, rule: NotifyRule, message: Message) -> None:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise DeliveryError("HTTP 503")
        self.sent.append((trio.current_time(), message))


@pytest.fixture
def destination() -> FakeDestination:
    return FakeDestination()


@pytest.fixture
async def hub(destination: FakeDestination) -> AsyncIterator[Hub]:
    rules = rules_of(
        '[[notify]]\nname = "h"\nafter_s = 30\ncoalesce_s = 1\nmin_interval_s = 0\n'
        '[notify.webhook]\nurl = "http://127.0.0.1:9/h"\n'
    )
    service = NotifyService(
        rules,
        None,
        {"S1": Who("S1", "alpha", "claude")}.get,
        clock=trio.current_time,
        senders={"webhook": destination},
    )
    hub = Hub()
    hub.observer = service.observe
    async with trio.open_nursery() as nursery:
        await nursery.start(service.serve)
        yield hub
        nursery.cancel_scope.cancel()


async def test_an_unanswered_request_goes_once_after_after_s(
    hub: Hub, destination: FakeDestination, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    hub.publish("session/S1", "permission_request", ASK, "S1")
    await trio.sleep(120)
    [(at, message)] = destination.sent
    assert at - start == pytest.approx(31.0)  # after_s, then the coalescing window
    assert message.title == "alpha asks permission to use Bash"


async def test_an_answer_before_after_s_sends_nothing(
    hub: Hub, destination: FakeDestination, autojump_clock: trio.testing.MockClock
) -> None:
    hub.publish("session/S1", "permission_request", ASK, "S1")
    await trio.sleep(10)
    hub.publish("session/S1", "input", {"request_id": "r1", "by": "alice"}, "S1")
    await trio.sleep(120)
    assert destination.sent == []


async def test_a_failing_destination_is_retried_with_backoff(
    hub: Hub, destination: FakeDestination, autojump_clock: trio.testing.MockClock
) -> None:
    destination.failures = 3
    start = trio.current_time()
    hub.publish("session/S1", "permission_request", ASK, "S1")
    await trio.sleep(120)
    [(at, _)] = destination.sent
    assert at - start == pytest.approx(31.0 + 1 + 2 + 4)


async def test_a_watched_session_waits_until_nobody_watches(
    destination: FakeDestination, autojump_clock: trio.testing.MockClock
) -> None:
    open_connections = {7}
    attention = Attention(is_open=open_connections.__contains__)
    service = NotifyService(
        rules_of(
            '[[notify]]\nname = "h"\ncoalesce_s = 0\n[notify.webhook]\nurl = "http://127.0.0.1:9/h"\n'
        ),
        None,
        {"S1": Who("S1", "alpha", "claude")}.get,
        clock=trio.current_time,
        senders={"webhook": destination},
        attention=attention,
    )
    hub = Hub()
    hub.observer = service.observe
    async with trio.open_nursery() as nursery:
        await nursery.start(service.serve)
        attention.watch(7, "alice", "S1", focused=True)
        hub.publish("session/S1", "permission_request", ASK, "S1")
        await trio.sleep(60)
        assert destination.sent == []  # alice looks at it
        attention.watch(7, "alice", "S1", focused=False)  # her tab lost the focus
        await trio.sleep(1)
        assert len(destination.sent) == 1
        attention.watch(7, "alice", "S1", focused=True)
        hub.publish("session/S1", "permission_request", {**ASK, "request_id": "r2"}, "S1")
        await trio.sleep(60)
        open_connections.clear()  # her connection closed: the watch ends with it
        await trio.sleep(2)
        assert len(destination.sent) == 2
        assert attention.watches() == []
        nursery.cancel_scope.cancel()


async def test_a_destination_that_never_answers_fails_after_its_timeout() -> None:
    """A webhook or ntfy server that accepts and then says nothing costs ``timeout_s``, and
    the attempt fails with words for ``hivectl notifications`` (it is then retried)."""

    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}/hook"
        started = trio.current_time()
        with pytest.raises(DeliveryError, match=f"POST {url}: ReadTimeout"):
            await post(url, b"{}", {}, 0.3)
        assert 0.3 <= trio.current_time() - started < 5.0
        nursery.cancel_scope.cancel()


async def test_a_notifications_cursor_no_page_gave_is_a_bad_request() -> None:
    service = NotifyService([], None, {}.get)
    with pytest.raises(RequestError) as caught:
        await service.recent(10, "not a cursor")
    assert caught.value.code == "bad_request"
    assert str(caught.value).startswith("notifications.cursor: expected a cursor from a page")
    assert await service.recent(10, "12.5/a1") == ([], None)
