"""The server's one heartbeat task: each connection beats on its own schedule; and a client
that answers pings is never dropped because hived itself was busy (issue 19)."""

from __future__ import annotations

import logging
import socket
import weakref

import attrs
import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, TextMessage
from wsproto.events import Request as Upgrade

from hived.core.pongs import STALL_S
from hived.core.protocol import Caller, Request
from hived.server.heartbeat import Heartbeat
from tests.test_server import SECRETS, Harness, make_config, receive, send


@attrs.define
class Beats:
    """A connection that records when it beat, is due ``every`` s later, ends after ``count``."""

    every: float
    count: int
    times: list[float] = attrs.Factory(list)
    lates: list[bool] = attrs.Factory(list)

    def beat(self, now: float, late: bool) -> float | None:
        self.times.append(now)
        self.lates.append(late)
        return None if len(self.times) >= self.count else now + self.every


async def test_each_connection_beats_on_its_own_schedule_until_it_ends(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    heartbeat = Heartbeat()
    nursery.start_soon(heartbeat.run)
    await trio.testing.wait_all_tasks_blocked()  # asleep with nothing due
    start = trio.current_time()
    late, soon = Beats(every=3.0, count=3), Beats(every=5.0, count=2)
    heartbeat.add(late, start + 10.0)
    heartbeat.add(soon, start + 1.0)  # earlier than the sleep under way: wakes it sooner
    await trio.sleep(100)
    assert [t - start for t in soon.times] == pytest.approx([1.0, 6.0])
    assert [t - start for t in late.times] == pytest.approx([10.0, 13.0, 16.0])
    assert len(heartbeat) == 0


async def test_a_connection_that_is_gone_is_not_kept_nor_called(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    heartbeat = Heartbeat()
    nursery.start_soon(heartbeat.run)
    gone, kept = Beats(every=1.0, count=1), Beats(every=1.0, count=1)
    heartbeat.add(gone, trio.current_time() + 5.0)
    heartbeat.add(kept, trio.current_time() + 5.0)
    seen = weakref.ref(gone)
    del gone
    assert seen() is None  # the schedule held it weakly
    await trio.sleep(10)
    assert len(kept.times) == 1
    assert len(heartbeat) == 0


async def test_a_beat_the_stalled_loop_made_late_is_told_so(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    heartbeat = Heartbeat()
    nursery.start_soon(heartbeat.run)
    beats = Beats(every=10.0, count=3)
    heartbeat.add(beats, trio.current_time() + 10.0)
    await trio.sleep(10.0 - 0.1)
    autojump_clock.jump(STALL_S + 0.2)  # the loop stalls across the first beat's due time
    await trio.sleep(30.0)
    assert beats.lates == [True, False, False]


# -- a connection's pong: never missed because hived itself was busy --------------------------


async def test_a_pong_behind_requests_waiting_for_a_slot_does_not_drop_the_client(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 19: fifty ``session.start`` at once over one connection. The reader runs 16 at once
    and waits for a free slot before it reads on, so the client's pong (sent in time) waited
    unread behind the other requests, and the connection was dropped (the client saw 1006)."""
    caplog.set_level(logging.INFO)
    harness = Harness(nursery, make_config(heartbeat_interval_s=2.0, heartbeat_timeout_s=2.0))

    async def slow_start(request: Request, caller: Caller) -> dict[str, str]:
        await trio.sleep(3.0)  # 16 at a time: the last of 50 is read at 9 s, answered at 12 s
        return {"state": "STARTING"}

    harness.router.add("session.start", slow_start)
    ws = await harness.welcomed()  # trio-websocket answers every ping in its own reader task
    for i in range(50):
        await send(ws, type="session.start", id=i, agent="claude")
    answered: set[int] = set()
    while len(answered) < 50:
        for reply in await receive(ws):
            assert reply["type"] == "result", reply
            answered.add(reply["id"])
    assert trio.current_time() == pytest.approx(12.0, abs=0.1)
    assert [c.id for c in harness.server.connections()] == [1]
    assert "no pong" not in caplog.text


async def test_a_pong_waiting_in_the_socket_through_a_stalled_loop_does_not_drop_the_client(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The pong is in the socket in time, then the event loop stalls past its due time: the
    heartbeat wakes in the same turn as the reader, before the reader has parsed the pong."""
    caplog.set_level(logging.INFO)
    harness = Harness(nursery, make_config(heartbeat_interval_s=20.0, heartbeat_timeout_s=10.0))
    client, server_side = socket.socketpair()
    client.setblocking(False)
    nursery.start_soon(
        harness.server.serve_connection,
        trio.SocketStream(trio.socket.from_stdlib_socket(server_side)),
    )
    ws = WSConnection(ConnectionType.CLIENT)
    auth = [(b"authorization", f"Bearer {SECRETS['viewer']}".encode())]
    client.send(ws.send(Upgrade(host="hived.test", target="/v1/ws", extra_headers=auth)))

    async def next_event() -> object:
        while True:
            for event in ws.events():
                return event
            await trio.lowlevel.wait_readable(client)
            ws.receive_data(client.recv(65_536))

    assert isinstance(await next_event(), AcceptConnection)
    assert isinstance(await next_event(), TextMessage)  # welcome
    for _ in range(3):
        ping = await next_event()
        assert isinstance(ping, Ping)
        client.send(ws.send(ping.response()))  # in the socket, in time
        autojump_clock.jump(15.0)  # then the loop stalls past the pong's due time
    await trio.sleep(1.0)
    assert [c.id for c in harness.server.connections()] == [1]
    assert "no pong" not in caplog.text
    client.close()
