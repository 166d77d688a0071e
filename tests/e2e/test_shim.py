"""Agents outlive the daemon: each run is held by its shim (DESIGN §11).

A daemon killed with SIGKILL, at any point, leaves its agents running; the next daemon takes
them up, and everything they printed meanwhile arrives once, in order, with the topic's seq
going on. A graceful stop (SIGTERM) still ends every agent.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
import trio

from hived.client import Client, connect
from tests.e2e.harness import (
    AGENTS,
    DEADLINE_S,
    PYTHON,
    SECRETS,
    Launcher,
    RunningDaemon,
    agent_toml,
    process_alive,
)
from tests.e2e.test_crash import kill_shim
from tests.e2e.test_real_claude import Watch, store_committed
from tests.e2e.test_wire import RawWebSocket

pytestmark = pytest.mark.e2e

LINE = re.compile(r"^line (\d+) ")
FLOOD: Final = f"{PYTHON} {AGENTS / 'misbehave.py'}"


async def summary(client: Client, session: str) -> dict[str, Any]:
    listed = await client.request("sessions", all=True)
    return next(s for s in listed["sessions"] if s["id"] == session)


async def all_events(client: Client, session: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        since = events[-1]["seq"] if events else 0
        page = await client.request("session.events", session=session, since=since, limit=10000)
        if not page["events"]:
            return events
        events += page["events"]


async def wait_state(client: Client, session: str, *states: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with trio.move_on_after(60):
        while True:
            found = await summary(client, session)
            if found["state"] in states:
                return found
            await trio.sleep(0.05)
    raise AssertionError(f"session {session} never reached {states}: {found}")


def assert_lines_once_in_order(events: list[dict[str, Any]], count: int) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), "seq has a gap or a repeat"
    numbers = [int(m.group(1)) for e in events if e["kind"] == "text"
               if (m := LINE.match(e["data"]["line"]))]  # fmt: skip
    assert numbers == list(range(count)), (
        f"{len(numbers)} lines, {len(set(numbers))} distinct, first bad at "
        f"{next((i for i, n in enumerate(numbers) if n != i), None)}"
    )


async def restart(hived: Launcher, config: str, port: int, daemon: RunningDaemon) -> RunningDaemon:
    await daemon.kill()
    return await hived.start(config, port=port)


async def test_three_agents_mid_turn_outlive_a_kill_9_and_go_on(hived: Launcher) -> None:
    body = agent_toml(
        "ticker", "misbehave.py", "flood", "3000", "--rate", "400", extra='restart = "no"'
    )
    port, config = hived.config(body=body)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        tickers = [(await client.request("session.start", agent="ticker"))["session"]]
        tickers.append((await client.request("session.start", agent="ticker"))["session"])
        claude = await client.request("session.start", agent="claude", prompt="ask permission")
        watch = Watch(await client.subscribe(f"session/{claude['session']}", since=0))
        request = await watch.kind("permission_request")
        pids = {s: (await summary(client, s))["pid"] for s in [*tickers, claude["session"]]}
    # What the store has kept is what the next daemon knows was seen (the burst test below
    # kills without waiting); the request must be among it to be asked again.
    await store_committed(daemon.admin_url)
    daemon = await restart(hived, config, port, daemon)

    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        for session, pid in pids.items():
            now = await summary(client, session)
            assert now["pid"] == pid, "the same agent process goes on"
            if not process_alive(pid):  # a ticker may print its last line at any moment
                await wait_state(client, session, "EXITED")
        waiting = await wait_state(client, claude["session"], "WAITING")
        assert waiting["reason"] == "permission_request"
        # The request is asked again, and can be answered: the turn completes.
        events = await all_events(client, claude["session"])
        again = [e for e in events if e["kind"] == "permission_request"]
        assert again[-1]["data"]["request_id"] == request["data"]["request_id"]
        assert again[-1]["data"]["asked_again"] is True
        watch = Watch(await client.subscribe(f"session/{claude['session']}"))
        await client.request(
            "session.approve",
            session=claude["session"],
            request_id=request["data"]["request_id"],
            allow=True,
        )
        await watch.kind("result")
        for session in tickers:
            await wait_state(client, session, "EXITED")
            assert_lines_once_in_order(await all_events(client, session), 3000)
        await client.request("session.stop", session=claude["session"])


async def test_input_right_after_a_restart_waits_for_the_run_to_be_taken_up(
    hived: Launcher,
) -> None:
    # A long spool to rebuild the driver from: the next daemon takes a moment to take it up.
    script = f"{FLOOD} flood 100000 --jsonl; exec {PYTHON} {AGENTS / 'fake_text.py'}"
    body = f'[agents.bulky]\ncommand = ["sh", "-c", "{script}"]\nformat = "text"\n'
    port, config = hived.config(body=body)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = (await client.request("session.start", agent="bulky"))["session"]
        with trio.fail_after(60):
            while True:  # the flood, then the echo agent's greeting
                page = await client.request("session.events", session=session, since=100000)
                if any("fake_text ready" in str(e["data"]) for e in page["events"]):
                    break
                await trio.sleep(0.05)
    await store_committed(daemon.admin_url)
    daemon = await restart(hived, config, port, daemon)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        watch = Watch(await client.subscribe(f"session/{session}"))
        await client.request("session.input", session=session, text="still there?")
        await watch.until("the echo", lambda e: e["data"].get("line") == "you said: still there?")
        await client.request("session.stop", session=session)


async def test_kill_9_at_random_points_of_a_long_burst_loses_and_repeats_nothing(
    hived: Launcher,
) -> None:
    count, kills = 100_000, 20
    body = agent_toml(
        "burst", "misbehave.py", "flood", str(count), "--rate", "5000", extra='restart = "no"'
    )
    port, config = hived.config(body=body)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = (await client.request("session.start", agent="burst"))["session"]
    rng = random.Random(13)
    for _ in range(kills):
        await trio.sleep(rng.uniform(0.05, 0.8))  # a random point of the burst to kill at
        daemon = await restart(hived, config, port, daemon)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        await wait_state(client, session, "EXITED")
        assert_lines_once_in_order(await all_events(client, session), count)


async def test_a_graceful_stop_still_ends_every_agent(hived: Launcher) -> None:
    body = agent_toml("sleeper", "misbehave.py", "sleep", extra='restart = "no"')
    port, config = hived.config(body=body)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        sessions = [(await client.request("session.start", agent="sleeper"))["session"]]
        sessions.append((await client.request("session.start", agent="sleeper"))["session"])
        pids = [(await summary(client, s))["pid"] for s in sessions]
    daemon.send_signal(signal.SIGTERM)
    assert await daemon.wait_exit() == 0
    assert not any(process_alive(pid) for pid in pids)
    assert not list((hived.tmp_path / "state" / "shims").iterdir())
    with trio.fail_after(DEADLINE_S):
        daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        for session in sessions:
            assert (await summary(client, session))["state"] == "EXITED"


async def test_a_session_started_just_before_a_crash_is_taken_up_not_forgotten(
    hived: Launcher,
) -> None:
    body = agent_toml("sleeper", "misbehave.py", "sleep", extra='restart = "no"')
    port, config = hived.config(body=body)
    # Nothing reaches the disk by the clock within the test: only what must be there first.
    config = config.replace("sync_interval_ms = 50", "sync_interval_ms = 600000")
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = (await client.request("session.start", agent="sleeper"))["session"]
        pid = (await summary(client, session))["pid"]
    daemon = await restart(hived, config, port, daemon)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        taken_up = await wait_state(client, session, "RUNNING")
        assert taken_up["pid"] == pid
        assert process_alive(pid)
        await client.request("session.stop", session=session)
    assert not process_alive(pid)


SLOW_STOP: Final = """\
import signal, sys, time
def term(signum, frame):
    time.sleep(2)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
print("up", flush=True)
while True:
    time.sleep(1)
"""


async def test_a_client_that_does_not_close_does_not_eat_the_agents_stop_grace(
    hived: Launcher,
) -> None:
    script = hived.tmp_path / "slow_stop.py"
    script.write_text(SLOW_STOP)
    body = (
        f'[agents.slow]\ncommand = ["{PYTHON}", "{script}"]\nformat = "text"\n'
        'restart = "no"\nstop_timeout_s = 5.0\n'
    )
    port, config = hived.config(body=body)
    # 9 s to stop: the agent gets 4 s of grace (the last 5 s are the reap budget after
    # SIGKILL). Were connections closed first, the silent client's closing handshake (5 s)
    # would leave it none: SIGKILL before its 2 s clean exit.
    config = config.replace("shutdown_timeout_s = 10.0", "shutdown_timeout_s = 9.0")
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = (await client.request("session.start", agent="slow"))["session"]
        watch = Watch(await client.subscribe(f"session/{session}", since=0))
        await watch.until("its handler in place", lambda e: e["data"].get("line") == "up")
    silent = await RawWebSocket.open(port, "/v1/ws", SECRETS["viewer"])
    opcode, payload = await silent.read_frame()
    assert (opcode, orjson.loads(payload)["type"]) == (0x1, "welcome")
    # From now on it answers nothing, not even the close.
    daemon.send_signal(signal.SIGTERM)
    assert await daemon.wait_exit() == 0
    await silent.stream.aclose()
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        ended = await summary(client, session)
    assert (ended["state"], ended["exit_code"]) == ("EXITED", 0), ended


async def test_daemon_restart_keeps_the_agents_and_their_output(hived: Launcher) -> None:
    body = agent_toml(
        "ticker", "misbehave.py", "flood", "4000", "--rate", "500", extra='restart = "no"'
    )
    port, config = hived.config(body=body)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = (await client.request("session.start", agent="ticker"))["session"]
        pid = (await summary(client, session))["pid"]
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
        assert await admin.request("daemon.restart") == {"restarting": True}
    daemon.notifications.clear()
    await daemon.wait_notified("READY=1")  # the same process, started again
    assert daemon.proc.poll() is None
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        now = await summary(client, session)
        assert (now["pid"], now["state"]) == (pid, "RUNNING")
        await wait_state(client, session, "EXITED")
        assert_lines_once_in_order(await all_events(client, session), 4000)


async def running_of(client: Client, agent: str, count: int) -> list[dict[str, Any]]:
    """Poll until ``count`` sessions of ``agent`` are RUNNING (and no more are live)."""
    found: list[dict[str, Any]] = []
    with trio.move_on_after(DEADLINE_S):
        while True:
            listed = (await client.request("sessions", all=True))["sessions"]
            found = [s for s in listed if s["agent"] == agent and s["state"] == "RUNNING"]
            if len(found) == count:
                return sorted(found, key=lambda s: s["id"])
            await trio.sleep(0.05)
    raise AssertionError(f"never {count} {agent} sessions RUNNING: {found}")


async def test_autostart_counts_the_sessions_a_restart_takes_up(hived: Launcher) -> None:
    """``autostart = 2``, one of the two stopped, then ``daemon.restart``: the survivor is
    taken up and one session is started beside it, not two more (each upgrade used to add
    ``autostart`` sessions)."""
    body = agent_toml("auto", "misbehave.py", "sleep", extra='restart = "no"\nautostart = 2')
    port, config = hived.config(body=body)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        stopped, kept = await running_of(client, "auto", 2)
        await client.request("session.stop", session=stopped["id"])
        await wait_state(client, stopped["id"], "EXITED")
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
        assert await admin.request("daemon.restart") == {"restarting": True}
    daemon.notifications.clear()
    await daemon.wait_notified("READY=1")
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        running = await running_of(client, "auto", 2)
        [survivor] = [s for s in running if s["id"] == kept["id"]]
        assert survivor["pid"] == kept["pid"]
        listed = (await client.request("sessions", all=True))["sessions"]
        assert sorted(s["state"] for s in listed if s["agent"] == "auto") == [
            "EXITED",
            "RUNNING",
            "RUNNING",
        ]


async def test_an_agent_whose_shim_dies_is_stopped_and_its_session_says_why(
    hived: Launcher,
) -> None:
    body = agent_toml("sleeper", "misbehave.py", "sleep", extra='restart = "no"')
    port, config = hived.config(body=body)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = (await client.request("session.start", agent="sleeper"))["session"]
        pid = (await summary(client, session))["pid"]
        await kill_shim(hived.tmp_path / "state", session)
        failed = await wait_state(client, session, "FAILED")
        assert failed["reason"] == "its shim died; the agent was stopped"
        await daemon.wait_for(lambda: not process_alive(pid), "the agent to be stopped")


async def test_an_agent_that_ended_while_no_daemon_ran_is_collected_from_its_files(
    hived: Launcher,
) -> None:
    body = agent_toml(
        "short", "misbehave.py", "flood", "2000", "--rate", "2000", extra='restart = "no"'
    )
    port, config = hived.config(body=body)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = (await client.request("session.start", agent="short"))["session"]
    await daemon.kill()
    run_dir = hived.tmp_path / "state" / "shims" / session
    with trio.fail_after(DEADLINE_S):
        while True:
            if (run_dir / "exit.json").exists():
                break
            await trio.sleep(0.05)
    # Its shim waited a day for a daemon, then exited, leaving its files (as a kill leaves them).
    await kill_shim(hived.tmp_path / "state", session)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        ended = await wait_state(client, session, "EXITED")
        assert ended["exit_code"] == 0
        assert_lines_once_in_order(await all_events(client, session), 2000)
    assert not run_dir.exists()


SYSTEMD: Final = Path("/run/systemd/system").is_dir() and shutil.which("systemd-run") is not None


@pytest.mark.skipif(
    not SYSTEMD or os.geteuid() != 0,
    reason="needs systemd as the init system and root (systemd-run of a service unit); "
    "this machine's init is not systemd",
)
async def test_a_watchdog_restart_under_systemd_keeps_the_agents(hived: Launcher) -> None:
    body = agent_toml("sleeper", "misbehave.py", "sleep", extra='restart = "no"')
    port, config = hived.config(body=body)
    config_path = hived.tmp_path / "hived.toml"
    config_path.write_text(config)
    unit = f"hived-watchdog-test-{port}"
    hived_bin = str(Path(sys.executable).parent / "hived")
    properties = ["Type=notify", "WatchdogSec=3", "Restart=on-failure", "RestartSec=0",
                  "KillMode=process", "TimeoutStopSec=30"]  # fmt: skip
    command = ["systemd-run", f"--unit={unit}", *(f"--property={p}" for p in properties)]
    await trio.run_process([*command, hived_bin, "run", "--config", str(config_path)])
    try:
        main_pid = await unit_main_pid(unit)
        client_url = f"ws://127.0.0.1:{port}/v1/ws"
        async with connect(client_url, SECRETS["operator"], reconnect=False) as client:
            session = (await client.request("session.start", agent="sleeper"))["session"]
            pid = (await summary(client, session))["pid"]
        os.kill(main_pid, signal.SIGSTOP)  # hung: no watchdog ping; systemd restarts it
        with trio.fail_after(60):
            while True:
                if await unit_main_pid(unit) not in (main_pid, 0):
                    break
                await trio.sleep(0.2)
        async with connect(client_url, SECRETS["operator"], reconnect=True) as client:
            taken_up = await wait_state(client, session, "RUNNING")
        assert taken_up["pid"] == pid
        assert process_alive(pid)
    finally:
        await trio.run_process(["systemctl", "stop", unit], check=False)


async def unit_main_pid(unit: str) -> int:
    shown = await trio.run_process(
        ["systemctl", "show", "--property=MainPID", "--value", unit], capture_stdout=True
    )
    return int(shown.stdout.strip() or 0)
