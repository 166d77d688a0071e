"""``make soak``: the real daemon under ordinary churn for ten minutes, watched for leaks and loss.

What runs, all on loopback against ``hived run`` with a config and state of its own:

- **agents printing**: sessions of a fake agent that prints ``p 1`` … ``p N`` and exits, each
  restarted (``session.restart``) as soon as it is done;
- **clients churning**: viewers that connect, subscribe to ``sessions`` and to an agent's topic
  with ``since`` (resuming where they left), read for a moment and leave;
- **hooks**: observed sessions posting tool hooks and ``Stop`` at ``HOOKS_PER_S``;
- **restarts**: the daemon is stopped (SIGTERM) and started again on the same state, splitting
  the run into ``--restarts + 1`` lives.

The sessions (agents and observed) are a fixed few in each life, restarted rather than made
anew: what hived keeps per *new* session — a topic's ring (all rings together at most 64 MiB),
up to 1000 ended sessions of each kind — is bounded, but fills for longer than a soak, and its
growth would read as a leak. Connections, hook requests, events and runs are what churn.

Each life is measured twice at a *quiet point* (no agent running, no client connected: the
same state each time): after a warm-up (a fifth of the life) and at its end. The run fails when
RSS grows by more than ``--rss-growth`` (10 %) between the two, when the open file descriptors
grow, when a resuming client sees a seq again or misses one, when an agent's topic, replayed
from 0 at the end with a client of default limits, lacks a line or has one twice, or when a
hook is not taken. Every wait has a deadline; every loop ends with the run.

``python -m bench.soak --duration-s 20`` is the short run the test suite makes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Final

import attrs
import trio
from websockets.trio.client import connect as ws_connect

from bench.servers import free_port, process_rss_bytes
from hived.client import ClientError, connect

PYTHON: Final = sys.executable
SECRETS: Final = {role: f"soak-{role}-secret-0123456789" for role in ("admin", "viewer", "agent")}
DEADLINE_S: Final = 30.0
LINES: Final = 500
"""Lines each agent prints."""
AGENTS_AT_ONCE: Final = 2
OBSERVED: Final = 20
"""Observed sessions the hooks keep going."""
CLIENTS: Final = 6
HOOKS_PER_S: Final = 20.0
FDS_SLACK: Final = 12
"""Descriptors a life may gain between its two quiet points without a leak: the store opens
its readers (up to 4, a few descriptors each) as replays need them."""

PRINTER_CODE: Final = """
import sys, time
count = int(sys.argv[1])
for i in range(1, count + 1):
    sys.stdout.write(f"p {i} " + "." * 150 + "\\n")
    if i % 50 == 0:
        sys.stdout.flush()
        time.sleep(0.05)
sys.stdout.flush()
"""


def config_text(port: int, state: Path) -> str:
    tokens = "".join(
        f'[[tokens]]\nname = "{role}"\nrole = "{role}"\n'
        f'sha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"\n\n'
        for role, secret in SECRETS.items()
    )
    command = json.dumps([PYTHON, "-c", PRINTER_CODE])
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\nheartbeat_interval_s = 5.0\n\n'
        f"[state]\ndir = {json.dumps(str(state))}\nsync_interval_ms = 100\n\n"
        f"[daemon]\nshutdown_timeout_s = 10.0\n\n{tokens}"
        f'[agents.printer]\ncommand = {command}\nformat = "text"\nargs_allowed = "[0-9]+"\n'
        f'restart = "no"\nstop_timeout_s = 2.0\n'
    )


@attrs.define
class Life:
    """One daemon's life: its pid and what it measured at its quiet points."""

    pid: int
    rss_warm: int = 0
    rss_end: int = 0
    rings_warm: int = 0
    """The hub's ring bytes then: a cache bounded by design (64 MiB), which a run that makes
    new topics fills as it goes; it is taken out of the RSS compared."""
    rings_end: int = 0
    fds_warm: int = 0
    fds_end: int = 0


@attrs.define
class Soak:
    """The run's state and figures."""

    port: int
    workdir: Path
    lives: list[Life] = attrs.field(factory=list)
    proc: trio.Process | None = None
    connections: int = 0
    """Client connections made (each subscribed and read)."""
    hooks: int = 0
    runs: dict[str, int] = attrs.field(factory=dict)
    """The runs of each agent session (each to be replayed at the end)."""
    cursors: dict[str, int] = attrs.field(factory=dict)
    """The last seq a client saw per topic (the next client resumes there)."""
    problems: list[str] = attrs.field(factory=list)
    events_checked: int = 0
    quiet: bool = False
    agents_running: int = 0
    agents_done: trio.Event = attrs.field(factory=trio.Event)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def admin_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/admin"

    # -- the daemon ------------------------------------------------------------------------

    async def start(self) -> None:
        log = (self.workdir / "hived.log").open("ab")
        hived = Path(PYTHON).parent / "hived"
        argv = [str(hived)] if hived.exists() else [PYTHON, "-m", "hived.cli.hived"]
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "HIVED_TOKEN")}
        self.proc = await trio.lowlevel.open_process(
            [*argv, "run", "--config", str(self.workdir / "hived.toml")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        with trio.fail_after(DEADLINE_S):
            while True:
                with contextlib.suppress(OSError, ClientError):
                    async with connect(self.ws_url, SECRETS["viewer"], reconnect=False) as c:
                        await c.request("ping")
                        break
                await trio.sleep(0.05)
        self.lives.append(Life(self.proc.pid))

    async def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(DEADLINE_S):
            code = await self.proc.wait()
        if code != 0:
            self.problems.append(f"hived exited {code} on SIGTERM")

    async def measure(self, life: Life, *, end: bool) -> None:
        """Wait for a quiet point (no agent running, no client but ours), then measure."""
        self.quiet = True
        with trio.fail_after(DEADLINE_S * 2):
            if self.agents_running:
                self.agents_done = trio.Event()
                await self.agents_done.wait()
            async with connect(self.admin_url, SECRETS["admin"], reconnect=False) as admin:
                while True:  # only this one open
                    status = await admin.request("status")
                    if status["connections"]["connections"] == 1:
                        break
                    await trio.sleep(0.05)
                await trio.sleep(0.5)  # the closed connections' tasks finish and are collected
                rss = process_rss_bytes(life.pid)
                fds = len(os.listdir(f"/proc/{life.pid}/fd"))
                rings = int(status["hub"]["ring_bytes"])
        if end:
            life.rss_end, life.fds_end, life.rings_end = rss, fds, rings
        else:
            life.rss_warm, life.fds_warm, life.rings_warm = rss, fds, rings
        self.quiet = False

    # -- the load --------------------------------------------------------------------------

    async def run_agents(self, nursery: trio.Nursery, until: float) -> None:
        """A few sessions, each restarted as soon as it has printed all its lines."""
        for _ in range(AGENTS_AT_ONCE):
            async with connect(self.admin_url, SECRETS["admin"], reconnect=False) as client:
                self.connections += 1
                started = await client.request("session.start", agent="printer", args=[str(LINES)])
            self.runs[started["session"]] = 1
            self.agents_running += 1
            nursery.start_soon(self._cycle_agent, started["session"], until)

    async def _cycle_agent(self, session: str, until: float) -> None:
        while True:
            await self._wait_ended(session)
            self.agents_running -= 1
            if not self.agents_running:
                self.agents_done.set()
            while True:  # not while a quiet point is being measured
                if trio.current_time() >= until:
                    return
                if not self.quiet:
                    break
                await trio.sleep(0.1)
            self.agents_running += 1
            async with connect(self.admin_url, SECRETS["admin"], reconnect=False) as client:
                self.connections += 1
                await client.request("session.restart", session=session)
            self.runs[session] += 1

    async def _wait_ended(self, session: str) -> None:
        with trio.fail_after(DEADLINE_S * 2):
            while True:
                with contextlib.suppress(OSError, ClientError):
                    async with connect(self.ws_url, SECRETS["viewer"], reconnect=False) as c:
                        listed = await c.request("sessions", all=True)
                        [summary] = [s for s in listed["sessions"] if s["id"] == session]
                        if summary["state"] in ("EXITED", "FAILED", "LOST", "FATAL"):
                            if summary["state"] != "EXITED":
                                self.problems.append(f"agent {session}: {summary['state']}")
                            return
                await trio.sleep(0.2)

    async def churn(self, until: float, rng: random.Random) -> None:
        while trio.current_time() < until:
            if self.quiet:
                await trio.sleep(0.1)
                continue
            topics = ["sessions"] + [f"session/{s}" for s in list(self.runs)[-AGENTS_AT_ONCE:]]
            topic = rng.choice(topics)
            since = self.cursors.get(topic, 0)
            with contextlib.suppress(OSError, ClientError):
                async with connect(self.ws_url, SECRETS["viewer"], reconnect=False) as client:
                    self.connections += 1
                    sub = await client.subscribe(topic, since=since)
                    expect = since + 1
                    with trio.move_on_after(rng.uniform(0.1, 0.8)):
                        async for event in sub:
                            if event["seq"] != expect:
                                seen = event["seq"]
                                self.problems.append(f"{topic}: seq {seen} after {expect - 1}")
                            expect = event["seq"] + 1
                            self.cursors[topic] = max(self.cursors.get(topic, 0), event["seq"])
            await trio.sleep(rng.uniform(0.0, 0.2))

    async def post_hooks(self, until: float) -> None:
        agent_ids = [str(uuid.uuid4()) for _ in range(OBSERVED)]
        for agent_id in agent_ids:
            await self._hook(agent_id, "SessionStart")
        while trio.current_time() < until:
            if self.quiet:
                await trio.sleep(0.1)
                continue
            for hook in ("PreToolUse", "PostToolUse", "Stop"):
                await self._hook(random.choice(agent_ids), hook)
                await trio.sleep(1 / HOOKS_PER_S)

    async def _hook(self, agent_id: str, hook: str) -> None:
        status = await self._post_hook(agent_id, hook)
        self.hooks += 1
        if status != 200:
            self.problems.append(f"hook {hook}: HTTP {status}")

    async def _post_hook(self, agent_id: str, hook: str) -> int:
        body = json.dumps({"session_id": agent_id, "hook_event_name": hook, "cwd": "/tmp"})
        head = (
            f"POST /v1/hooks/claude HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {SECRETS['agent']}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        with trio.fail_after(DEADLINE_S):
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            async with stream:
                await stream.send_all(head.encode() + body.encode())
                data = b""
                while chunk := await stream.receive_some():
                    data += chunk
        return int(data.split(b" ", 2)[1])

    # -- the end ---------------------------------------------------------------------------

    async def check_topics(self) -> None:
        """Replay every agent's topic from 0 with a client of default limits: ``p 1`` … ``p N``
        once each, in order, seqs 1..M; and the ``sessions`` topic's seqs 1..M."""
        for topic, runs in [("sessions", 0)] + [(f"session/{s}", n) for s, n in self.runs.items()]:
            events = await self._replay(topic)
            seqs = [e["seq"] for e in events]
            if seqs != list(range(1, len(seqs) + 1)):
                self.problems.append(f"{topic}: replay seqs are not 1..{len(seqs)} once each")
            printed = [
                int(e["data"]["line"].split()[1])
                for e in events
                if e["kind"] == "text" and e["data"].get("line", "").startswith("p ")
            ]
            if printed != list(range(1, LINES + 1)) * runs:
                self.problems.append(
                    f"{topic}: {len(printed)} lines where {runs} runs printed {LINES * runs}, "
                    f"or not 1..{LINES} once each per run"
                )
            self.events_checked += len(events)

    async def _replay(self, topic: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with ws_connect(
            self.ws_url,
            additional_headers={"Authorization": f"Bearer {SECRETS['viewer']}"},
            proxy=None,
        ) as ws:
            await ws.recv()  # welcome
            await ws.send(json.dumps({"type": "subscribe", "id": 1, "topic": topic, "since": 0}))
            last_seq: int | None = None
            with trio.fail_after(DEADLINE_S):
                while last_seq is None or (events[-1]["seq"] if events else 0) < last_seq:
                    frame = json.loads(await ws.recv())
                    for message in frame if isinstance(frame, list) else [frame]:
                        if message["type"] == "event":
                            events.append(message)
                        elif message["type"] == "result":
                            last_seq = message["result"]["last_seq"]
        return events


async def soak(duration_s: float, restarts: int, rss_growth: float, workdir: Path) -> Soak:
    port = free_port()
    (workdir / "hived.toml").write_text(config_text(port, workdir / "state"))
    run = Soak(port, workdir)
    rng = random.Random(19)
    life_s = duration_s / (restarts + 1)
    for index in range(restarts + 1):
        await run.start()
        life = run.lives[-1]
        end = trio.current_time() + life_s
        warm_at = trio.current_time() + life_s / 5
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run.run_agents, nursery, end)
            nursery.start_soon(run.post_hooks, end)
            for _ in range(CLIENTS):
                nursery.start_soon(run.churn, end, random.Random(rng.random()))
            await trio.sleep_until(warm_at)
            await run.measure(life, end=False)
        await run.measure(life, end=True)
        warm, last = life.rss_warm - life.rings_warm, life.rss_end - life.rings_end
        if last > warm * (1 + rss_growth):
            run.problems.append(
                f"life {index + 1}: RSS less the rings grew {warm / 2**20:.1f} → "
                f"{last / 2**20:.1f} MiB (over {rss_growth:.0%})"
            )
        if life.fds_end > life.fds_warm + FDS_SLACK:
            run.problems.append(f"life {index + 1}: fds grew {life.fds_warm} → {life.fds_end}")
        if index < restarts:
            await run.stop()
    await run.check_topics()
    await run.stop()
    return run


def report(run: Soak, duration_s: float) -> str:
    lines = [f"soak: {duration_s:g} s, {len(run.lives)} daemon lives"]
    for i, life in enumerate(run.lives, 1):
        lines.append(
            f"  life {i}: RSS after warm-up {life.rss_warm / 2**20:.1f} MiB (rings "
            f"{life.rings_warm / 2**20:.1f}), at its end {life.rss_end / 2**20:.1f} MiB (rings "
            f"{life.rings_end / 2**20:.1f}); fds {life.fds_warm} → {life.fds_end}"
        )
    lines.append(
        f"  connections served {run.connections}, hooks {run.hooks}, agent runs "
        f"{sum(run.runs.values())}, events checked {run.events_checked}"
    )
    lines += [f"  PROBLEM: {p}" for p in run.problems[:20]]
    lines.append("soak: " + ("FAILED" if run.problems else "ok"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--rss-growth", type=float, default=0.10)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its log)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="hived-soak-"))
    started = time.monotonic()
    try:
        run = trio.run(soak, args.duration_s, args.restarts, args.rss_growth, workdir)
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
    print(report(run, time.monotonic() - started))
    figures = {
        "lives": [attrs.asdict(life) for life in run.lives],
        "connections": run.connections,
        "hooks": run.hooks,
        "agent_runs": sum(run.runs.values()),
        "events_checked": run.events_checked,
        "problems": run.problems,
    }
    print("soak-json: " + json.dumps(figures))
    return 1 if run.problems else 0


if __name__ == "__main__":
    sys.exit(main())
