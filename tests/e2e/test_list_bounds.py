"""List replies bounded in bytes, through the real daemon, read by a client of the
``websockets`` library with its default 1 MiB frame limit (issue #19, item 6).

One daemon holds lists that would each take more than 1 MiB in one reply: sessions with
300 kB names (their summaries in ``status`` and ``sessions``, their name in every search hit and
notification). The client is never cut (a frame over 1 MiB would close it with 1009) and,
following ``next``, gets every item once; hivectl follows it too. ``connections`` is paged here
over 60 connections each subscribed to 64 long topics (about 300 kB: an entry lists 64 topics
at most); a list of it over 1 MiB takes about 4,600 plain connections or 220 such ones, which
cost this test 10 to 20 s on a loaded machine, so tests/test_server.py pages 10,000 entries at
the handler instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson
import trio
from websockets.trio.client import ClientConnection

from tests.e2e.harness import (
    DEADLINE_S,
    PYTHON,
    SECRETS,
    Launcher,
    RunningDaemon,
    until,
    websockets_client,
)
from tests.e2e.test_hivectl import as_json, hivectl

SESSIONS: Final = 4
NAME_BYTES: Final = 300_000
"""Four names of 300 kB: 1.2 MB of summaries and of notifications, 2.4 MB of hits."""
CONNECTIONS: Final = 60
TOPICS: Final = tuple(f"session/01J{n:02d}" + "T" * 59 for n in range(64))
"""What each of them subscribes to: about 5 kB per connection in ``connections``."""
MIB: Final = 1 << 20
FAILING: Final = (
    "[agents.failing]\n"
    f'command = ["{PYTHON}", "-c", \'print("needle one"); print("needle two"); raise SystemExit(3)\']\n'
    'format = "text"\nrestart = "no"\n\n'
    # Born when a session fails, and kept pending (never sent) for the test to list.
    '[[notify]]\nname = "failures"\nevents = ["failed"]\nafter_s = 3600.0\n'
    '[notify.webhook]\nurl = "http://127.0.0.1:9/never"\n'
)
UPGRADE: Final = (
    "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    f"Authorization: Bearer {SECRETS['viewer']}\r\n\r\n"
).encode()


def client_frame(message: dict[str, Any]) -> bytes:
    """A masked client text frame (RFC 6455 §5.2) of under 126 bytes, with a zero mask key."""
    payload = orjson.dumps(message)
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class Asker:
    """Requests over one ``websockets`` connection, noting the largest frame received."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = iter(range(1, 1_000_000))
        self.largest = 0

    async def __call__(self, type_: str, **fields: Any) -> Any:
        request_id = next(self.ids)
        await self.ws.send(orjson.dumps({"type": type_, "id": request_id, **fields}).decode())
        while True:
            frame = await self.ws.recv()
            self.largest = max(self.largest, len(frame))
            data = orjson.loads(frame)
            for reply in data if isinstance(data, list) else [data]:
                if reply.get("id") == request_id:
                    assert reply["type"] == "result", reply
                    return reply["result"]

    async def every(self, type_: str, key: str, cursor: str, **fields: Any) -> list[Any]:
        """Every item of a paged list, following ``next``; at least two pages are asserted."""
        items: list[Any] = []
        pages = 0
        after = None
        while True:
            page = await self(type_, **fields, **({} if after is None else {cursor: after}))
            items += page[key]
            pages += 1
            after = page["next"]
            if after is None:
                assert pages > 1, f"{type_}: one page of {len(orjson.dumps(items))} bytes"
                return items


async def receive_until(stream: trio.SocketStream, done: Callable[[bytes], bool]) -> None:
    received = b""
    while not done(received):
        chunk = await stream.receive_some()
        assert chunk, received
        assert b'"type":"error"' not in chunk, chunk
        received += chunk


async def open_connections(daemon: RunningDaemon, count: int) -> list[trio.SocketStream]:
    """``count`` viewer WebSockets, opened by hand, each subscribed to every one of TOPICS."""
    streams: list[trio.SocketStream] = []
    limiter = trio.CapacityLimiter(32)

    async def open_one() -> None:
        async with limiter:
            stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
            streams.append(stream)
            subscribes = (
                client_frame({"type": "subscribe", "id": n, "topic": topic})
                for n, topic in enumerate(TOPICS)
            )
            # A client sends nothing more before the server's handshake (RFC 6455 §4.1).
            await stream.send_all(UPGRADE)
            await receive_until(stream, lambda got: b'"welcome"' in got)
            await stream.send_all(b"".join(subscribes))
            await receive_until(stream, lambda got: got.count(b'"type":"result"') == len(TOPICS))

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(open_one)
    return streams


async def test_long_lists_come_in_pages_a_default_websockets_client_reads_whole(
    hived: Launcher,
) -> None:
    port, config = hived.config(body=FAILING)
    # The hand-made connections never answer pings: a heartbeat that outlasts the test.
    config = config.replace("heartbeat_interval_s = 2.0", "heartbeat_interval_s = 300.0")
    daemon = await hived.start(config, port=port)
    async with websockets_client(daemon.admin_url, SECRETS["admin"]) as ws:
        ask = Asker(ws)
        names = [f"s{n}-" + "x" * NAME_BYTES for n in range(SESSIONS)]
        started = {
            (await ask("session.start", agent="failing", name=name))["session"] for name in names
        }

        async def settled() -> bool:
            status = await ask("status")
            store = status["store"]
            born = status["notifications"]["born"]
            return born == SESSIONS and store["pending"] == 0 and store["index"]["behind"] == 0

        await until("every session failed, noted and indexed", settled)
        streams = await open_connections(daemon, CONNECTIONS)

        status = await ask("status")
        assert status["sessions_total"] == SESSIONS
        assert 0 < len(status["sessions"]) < SESSIONS

        sessions = await ask.every("sessions", "sessions", "before", all=True)
        assert {s["id"] for s in sessions} == started
        assert len(sessions) == SESSIONS

        hits = await ask.every("search", "hits", "cursor", query="needle")
        assert len({(h["session"], h["seq"]) for h in hits}) == len(hits)
        assert {h["session"] for h in hits} == started
        assert len(hits) == 2 * SESSIONS

        notifications = await ask.every("notifications", "notifications", "cursor")
        assert sorted(n["session"] for n in notifications) == sorted(started)

        connections = await ask.every("connections", "connections", "cursor")
        ids = [c["id"] for c in connections]
        assert ids == sorted(set(ids))
        assert len(ids) == CONNECTIONS + 1
        viewers = [c for c in connections if c["role"] == "viewer"]
        assert len(viewers) == CONNECTIONS
        assert all(c["subscriptions_total"] == len(TOPICS) for c in viewers)

        # Each list but the connections was over 1 MiB, and no frame was.
        for listed in (sessions, hits, notifications):
            assert len(orjson.dumps(listed)) > MIB
        assert ask.largest < MIB

        # hivectl follows next too (its client takes big frames: what matters is it sees all).
        runs: dict[str, Any] = {}

        async def run(*args: str) -> None:
            runs[args[0]] = await hivectl(daemon, *args)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "connections", "--json")
            nursery.start_soon(run, "notifications", "--json", "-n", "1000")
            nursery.start_soon(run, "search", "needle", "--json", "-n", "100")
        assert len(as_json(runs["connections"])) >= CONNECTIONS + 2  # its own, and the others'
        assert len(as_json(runs["notifications"])) == SESSIONS
        found = runs["search"]
        assert len(found.stdout.splitlines()) == 2 * SESSIONS, found.stderr
        for stream in streams:
            await stream.aclose()
