"""A daemon killed with SIGKILL: what its store kept, and what it left behind.

The promise (DESIGN §7 and §11): a client that subscribes with ``since=0`` after a crash and a
restart gets every event, with the seq and data a live client saw before the crash (the events
the old daemon had published but not yet stored are made again from the agent's spool, with
the same seqs), with no gap and no duplicate; the agent, which outlived the daemon under its
shim, is taken up and goes on. An agent whose shim died too is an orphan: its session is LOST
and the agent stopped at the restart — unless its pid now names another process. A store file
that cannot be read stops the daemon from starting, and is left as it was.

The agent here floods a burst of lines, then keeps printing a line every few milliseconds, so
that the kill falls in the middle of a stream. The live subscriber is our client library; the replay
is read with the independent ``websockets`` library, frame by frame, so that a duplicate the
server sends is seen (our client would drop it).
"""

from __future__ import annotations

import os
import signal
import sqlite3
from contextlib import closing, suppress
from pathlib import Path
from typing import Any, Final

import attrs
import orjson
import pytest
import trio

from hived.client import ConnectionLost, Subscription, connect
from tests.e2e.harness import (
    DEADLINE_S,
    PYTHON,
    SECRETS,
    Launcher,
    process_alive,
    websockets_client,
)

pytestmark = pytest.mark.e2e

BURST_LINES: Final = 3000
SYNC_INTERVAL_MS: Final = 50
"""The harness's ``state.sync_interval_ms``."""
MARGIN_S: Final = 1.0
"""Added to the sync window: a commit is an fsync, on a machine shared with other tests."""
WINDOW_S: Final = SYNC_INTERVAL_MS / 1000 + MARGIN_S
"""An event that arrived this long before the kill must have been stored."""

STREAMER_CODE: Final = """
import sys, time

def say(line):
    try:
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()
    except OSError:
        pass  # the daemon is gone: live on as an orphan

pad = "." * 280
for i in range(int(sys.argv[1])):
    sys.stdout.write(f"burst {i} {pad}\\n")
sys.stdout.flush()
give_up = time.monotonic() + 60
i = 0
while time.monotonic() < give_up:
    i += 1
    say(f"trickle {i}")
    time.sleep(0.005)
"""
"""An agent that prints ``argv[1]`` lines at once, then a line every 5 ms for a minute (so that
an orphan left by a failed test ends by itself)."""

Event = dict[str, Any]


def streamer_toml() -> str:
    code = orjson.dumps(STREAMER_CODE).decode()  # a JSON string is a TOML basic string
    return (
        f'[agents.streamer]\ncommand = ["{PYTHON}", "-c", {code}, "{BURST_LINES}"]\n'
        f'format = "text"\nrestart = "no"\nstop_timeout_s = 3.0\n'
    )


def sleeper_toml() -> str:
    code = orjson.dumps("import time\nprint('ready', flush=True)\ntime.sleep(60)").decode()
    return f'[agents.sleeper]\ncommand = ["{PYTHON}", "-c", {code}]\nformat = "text"\n'


@attrs.define
class LiveRecorder:
    """Every event a live subscription delivered, with when it arrived (trio's clock)."""

    sub: Subscription
    received: list[tuple[float, Event]] = attrs.field(factory=list)
    burst_done_at: float | None = None
    """When the last line of the agent's burst arrived."""
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def run(self) -> None:
        last_burst_line = f"burst {BURST_LINES - 1} "
        with suppress(ConnectionLost):  # the daemon is killed under it
            async for event in self.sub:
                self.received.append((trio.current_time(), event))
                if event["data"].get("line", "").startswith(last_burst_line):
                    self.burst_done_at = trio.current_time()
                self.changed.set()
                self.changed = trio.Event()

    async def until(self, what: str, condition: Any) -> None:
        """Wait, under the deadline, until ``condition(self)`` holds."""
        with trio.move_on_after(DEADLINE_S):
            while not condition(self):
                await self.changed.wait()
            return
        raise AssertionError(f"timed out waiting for {what}; {len(self.received)} events seen")


async def session_summary(url: str, session_id: str) -> dict[str, Any]:
    async with connect(url, SECRETS["viewer"], reconnect=False) as client:
        result = await client.request("sessions", all=True)
    matches = [s for s in result["sessions"] if s["id"] == session_id]
    assert len(matches) == 1, result
    return dict(matches[0])


async def replay_from_zero(url: str, topic: str) -> tuple[dict[str, Any], list[Event]]:
    """Subscribe with ``since=0`` over a raw connection: the result, and every event up to its
    ``last_seq`` in arrival order, as the server sent them (duplicates included)."""
    messages: list[dict[str, Any]] = []
    result: dict[str, Any] | None = None
    async with websockets_client(url, SECRETS["viewer"]) as ws:
        await ws.send(
            orjson.dumps({"type": "subscribe", "id": 1, "topic": topic, "since": 0}).decode()
        )
        with trio.fail_after(DEADLINE_S):
            while (
                result is None or max((m["seq"] for m in messages), default=0) < result["last_seq"]
            ):
                frame = await ws.recv()
                assert isinstance(frame, str)
                parsed = orjson.loads(frame)
                for message in parsed if isinstance(parsed, list) else [parsed]:
                    if message["type"] == "event":
                        messages.append(message)
                    elif message["type"] == "result" and message["id"] == 1:
                        result = message["result"]
                    else:
                        assert message["type"] == "welcome", message
    return result, messages


async def subscribe_result(url: str, **request: Any) -> dict[str, Any]:
    """The result of one subscribe over a raw connection of the ``websockets`` library."""
    async with websockets_client(url, SECRETS["viewer"]) as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "id": 1, **request}).decode())
        with trio.fail_after(DEADLINE_S):
            while True:
                parsed = orjson.loads(await ws.recv())
                for message in parsed if isinstance(parsed, list) else [parsed]:
                    if message["type"] == "result" and message["id"] == 1:
                        return dict(message["result"])


async def test_a_resume_into_events_lost_in_a_crash_says_so_even_after_their_seqs_are_reused(
    hived: Launcher,
) -> None:
    port, config = hived.config()
    # Only what must be on disk at once is: the sessions' records at their start.
    config = config.replace(f"sync_interval_ms = {SYNC_INTERVAL_MS}", "sync_interval_ms = 600000")
    first = await hived.start(config, port=port)
    async with connect(first.ws_url, SECRETS["operator"], reconnect=False) as client:
        sessions = await client.subscribe("sessions", since=0)
        epoch = sessions.epoch
        assert isinstance(epoch, int)
        marks: list[int] = []
        for _ in range(2):
            # The second start commits what the first published (with its own record).
            await client.request("session.start", agent="text")
            with trio.fail_after(DEADLINE_S):
                async for event in sessions:
                    if state_of(event) == "RUNNING":
                        marks.append(event["seq"])
                        break
        kept_seq, seen = marks
    first.proc.kill()
    assert await first.wait_exit() == -9

    second = await hived.start(config, port=port)
    async with connect(second.ws_url, SECRETS["operator"], reconnect=False) as client:
        with trio.fail_after(DEADLINE_S):
            while (await subscribe_result(second.ws_url, topic="sessions"))["last_seq"] < seen + 2:
                await client.request("session.start", agent="text")
    # The seqs the first daemon sent and lost now name other events: no resume into them.
    lost = await subscribe_result(second.ws_url, topic="sessions", since=seen, epoch=epoch)
    assert (lost["recovered"], lost["reset"]) == (False, True), (lost, seen)
    assert lost["epoch"] == epoch + 1
    assert lost["last_seq"] >= seen + 2
    # A position the first daemon had kept resumes exactly.
    kept = await subscribe_result(second.ws_url, topic="sessions", since=kept_seq, epoch=epoch)
    assert (kept["recovered"], kept["reset"]) == (True, False), kept


def state_of(event: Event) -> str | None:
    return event["data"].get("state") if event["kind"] == "state" else None


async def test_sigkill_loses_nothing_and_the_agent_goes_on_under_the_next_daemon(
    hived: Launcher,
) -> None:
    port, config = hived.config(body=streamer_toml())
    assert f"sync_interval_ms = {SYNC_INTERVAL_MS}\n" in config
    first = await hived.start(config, port=port)
    async with (
        connect(first.ws_url, SECRETS["operator"], reconnect=False) as client,
        trio.open_nursery() as nursery,
    ):
        started = await client.request("session.start", agent="streamer")
        session_id = started["session"]
        topic = f"session/{session_id}"
        live = LiveRecorder(await client.subscribe(topic, since=0))
        nursery.start_soon(live.run)

        def trickled_a_while(rec: LiveRecorder) -> bool:
            # Long enough after the burst that the kill falls in the trickle, and the burst
            # is older than the sync window.
            done = rec.burst_done_at
            return done is not None and trio.current_time() - done > WINDOW_S + 0.5

        await live.until(f"{BURST_LINES} burst lines and more", trickled_a_while)
        pid = (await session_summary(first.ws_url, session_id))["pid"]
        assert isinstance(pid, int)
        assert process_alive(pid)

        killed_at = trio.current_time()
        first.proc.kill()
        assert await first.wait_exit() == -9
    try:
        await check_restart(hived, config, port, session_id, pid, live, killed_at)
    finally:
        if process_alive(pid):
            os.killpg(pid, signal.SIGKILL)


async def check_restart(
    hived: Launcher,
    config: str,
    port: int,
    session_id: str,
    pid: int,
    live: LiveRecorder,
    killed_at: float,
) -> None:
    """After the kill: the agent taken up, the replay whole, the session still running."""
    topic = f"session/{session_id}"
    # The agent outlived the daemon, under its shim.
    assert process_alive(pid), "the agent died with the daemon"

    # The live stream itself had no gap.
    live_events = [event for _, event in live.received]
    assert [e["seq"] for e in live_events] == list(range(1, len(live_events) + 1))
    must_keep = [event for arrived, event in live.received if arrived < killed_at - WINDOW_S]
    assert len(must_keep) > BURST_LINES, "the kill came too early to test anything"

    second = await hived.start(config, port=port)
    # The new daemon makes again, from the agent's spool, what the old one had not stored:
    # wait until its topic has come past what the live client saw.
    with trio.fail_after(DEADLINE_S):
        while True:
            result, replay = await replay_from_zero(second.ws_url, topic)
            if result["last_seq"] >= live_events[-1]["seq"]:
                break

    # No gap, no duplicate, in order, from 1 to last_seq.
    seqs = [event["seq"] for event in replay]
    # (The agent goes on printing: live events past last_seq may follow the replay.)
    assert seqs == list(range(1, len(seqs) + 1)), "replay seqs are not 1..N once each"
    assert len(seqs) >= result["last_seq"]
    assert result["recovered"] is True
    # Everything the live client saw, with the same seq and data: what the old daemon had not
    # stored yet is made again from the agent's spool (only its time stamp is new).
    by_seq = {event["seq"]: event for event in replay}
    missing = [e["seq"] for e in live_events if e["seq"] not in by_seq]
    assert not missing, f"{len(missing)} events seen live are lost: {missing[:10]}"
    differing = [
        e["seq"] for e in live_events if {**by_seq[e["seq"]], "ts": None} != {**e, "ts": None}
    ]
    assert not differing, f"replayed events differ from the live ones at seqs {differing[:10]}"
    stored_in_time = [e["seq"] for e in must_keep if by_seq[e["seq"]] != e]
    assert not stored_in_time, f"events older than the window not kept as sent: {stored_in_time}"
    assert not [e for e in replay if state_of(e) == "LOST"]

    # The same agent goes on under the new daemon, and its lines keep coming.
    summary = await session_summary(second.ws_url, session_id)
    assert (summary["state"], summary["pid"]) == ("RUNNING", pid)
    last = result["last_seq"]
    async with connect(second.ws_url, SECRETS["operator"], reconnect=False) as client:
        sub = await client.subscribe(topic, since=last)
        with trio.fail_after(DEADLINE_S):
            event = await sub.receive()
        assert event["seq"] == last + 1
        assert event["data"]["line"].startswith("trickle ")
        await client.request("session.stop", session=session_id)
    assert not process_alive(pid)


async def kill_shim(state: Path, session_id: str) -> None:
    """Kill the shim of a session's run, as a crash of it would."""
    meta = orjson.loads((state / "shims" / session_id / "shim.json").read_bytes())
    os.kill(meta["shim_pid"], signal.SIGKILL)


async def test_a_recorded_pid_that_now_names_another_process_is_left_alone(
    hived: Launcher,
) -> None:
    port, config = hived.config(body=sleeper_toml())
    first = await hived.start(config, port=port)
    async with connect(first.ws_url, SECRETS["operator"], reconnect=False) as client:
        session_id = (await client.request("session.start", agent="sleeper"))["session"]
        sub = await client.subscribe(f"session/{session_id}", since=0)
        with trio.fail_after(DEADLINE_S):
            while (await sub.receive())["data"].get("line") != "ready":
                pass
    pid = (await session_summary(first.ws_url, session_id))["pid"]
    assert isinstance(pid, int)
    db = Path(first.config_path.parent, "state", "hived.db")

    def recorded_start() -> int | None:
        with closing(sqlite3.connect(db)) as conn:
            row = conn.execute(
                "SELECT json_extract(record, '$.pid_start') FROM sessions WHERE id = ?",
                (session_id,),
            )
            value = row.fetchone()
        return None if value is None else value[0]

    await first.wait_for(lambda: recorded_start() is not None, "the pid's start time on disk")
    first.proc.kill()
    await first.wait_exit()
    # Its shim dies too: nobody holds the agent, an orphan.
    await kill_shim(db.parent, session_id)
    assert process_alive(pid)
    # As if the agent had exited and the kernel had given its pid to this other process: the
    # pid matches, its start time does not.
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "UPDATE sessions SET pid_start = pid_start - 1, record = json_set(record, "
            "'$.pid_start', json_extract(record, '$.pid_start') - 1) WHERE id = ?",
            (session_id,),
        )
    try:
        second = await hived.start(config, port=port)
        summary = await session_summary(second.ws_url, session_id)
        assert summary["state"] == "LOST"
        assert process_alive(pid), "hived signalled a process that only shares the pid"
    finally:
        if process_alive(pid):
            os.killpg(pid, signal.SIGKILL)


async def test_a_corrupt_store_file_refuses_to_start_and_is_left_as_it_was(
    hived: Launcher, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    db = state / "hived.db"
    garbage = b"this is not an SQLite database\x00\xff" * 512
    db.write_bytes(garbage)
    daemon = await hived.start(ready=False)
    assert await daemon.wait_exit() == 78, "a damaged store is EX_CONFIG: a restart cannot mend it"
    log = daemon.log()
    assert str(db) in log, log
    assert "Traceback" not in log, log
    assert db.read_bytes() == garbage
    assert not any("READY=1" in n for n in daemon.notifications)
