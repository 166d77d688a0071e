"""One measurement against one running server: a burst, a paced run, or idle connections.

How it works: the flood agent is started first and waits for a line on stdin (``--wait``); the
subscriber processes (:mod:`bench.load_client`) connect and subscribe to its session's topic and
say ``ready``; only then does the agent get its ``go``. So every subscriber sees every event live,
and no replay path is measured. Each function returns a frozen result; the figures are computed
from what the clients report (event counts, first and last receive times, latency histograms,
their CPU) and from /proc on the server process.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import attrs

from bench.load_client import BUCKET_NS
from bench.servers import PYTHON, REPO, TOKEN, BenchError, Server

IDLE_SETTLE_S: Final = 1.0
"""After the idle connections are up: time for the server's allocations to settle."""
MIN_DELIVERY_RATE: Final = 10_000
"""Deliveries/s assumed at worst, to size a client's deadline."""


def client_processes(connections: int) -> list[int]:
    """How ``connections`` are spread over subscriber processes: one up to 10, else four."""
    procs = 1 if connections <= 10 else 4
    return [connections // procs + (i < connections % procs) for i in range(procs)]


@attrs.frozen
class ClientReport:
    """The subscribers' side of a run, summed over their processes."""

    events: int
    complete: int
    connections: int
    first_sent_ns: int
    """When the agent wrote the first event (its embedded time): the burst's start."""
    last_ns: int
    """When the last event was read: the burst's end."""
    cpu_s: float
    max_process_cpu_s: float
    hist: Counter[int]

    @property
    def span_s(self) -> float:
        return max(self.last_ns - self.first_sent_ns, 1) / 1e9


@contextmanager
def subscribers(
    server: Server,
    connections: int,
    mode: str,
    topic: str | Sequence[str] | None,
    expect: int,
    timeout_s: float,
    deflate: bool = False,
) -> Iterator[list[subprocess.Popen[str]]]:
    """Subscriber processes, all connected and subscribed (to ``topic``, or to each of several);
    killed on the way out. With ``deflate`` (idle mode), every connection offers
    permessage-deflate, and the server must agree to it on each."""
    topics = [topic] if isinstance(topic, str) else list(topic or ())
    procs: list[subprocess.Popen[str]] = []
    try:
        for share in client_processes(connections):
            argv = [PYTHON, "-m", "bench.load_client", "--port", str(server.port)]
            argv += ["--token", TOKEN, "--connections", str(share), "--mode", mode]
            argv += ["--expect", str(expect), "--timeout", str(timeout_s)]
            if deflate:
                argv.append("--deflate")
            for name in topics:
                argv += ["--topic", name]
            procs.append(
                subprocess.Popen(
                    argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
                )
            )
        for proc in procs:
            reply = read_json(proc)  # bounded by the client's own --timeout
            if "ready" not in reply:
                raise BenchError(f"subscriber on {server.name}: {reply}")
            if deflate and reply.get("deflate") != reply["ready"]:
                raise BenchError(f"{server.name} did not agree to permessage-deflate: {reply}")
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


def read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        return {"error": f"exited with {proc.wait()} and no report"}
    reply: dict[str, Any] = json.loads(line)
    return reply


def collect(server: Server, procs: list[subprocess.Popen[str]]) -> ClientReport:
    reports = [read_json(proc) for proc in procs]
    for report in reports:
        if "error" in report:
            raise BenchError(f"subscriber on {server.name}: {report['error']}")
    hist: Counter[int] = Counter()
    for report in reports:
        hist.update({int(k): v for k, v in report["hist"].items()})
    counted = [r for r in reports if r["events"]]
    return ClientReport(
        events=sum(r["events"] for r in reports),
        complete=sum(r["complete"] for r in reports),
        connections=sum(r["connections"] for r in reports),
        first_sent_ns=min((r["first_sent_ns"] for r in counted), default=0),
        last_ns=max((r["last_ns"] for r in counted), default=0),
        cpu_s=sum(r["cpu_s"] for r in reports),
        max_process_cpu_s=max(r["cpu_s"] for r in reports),
        hist=hist,
    )


def percentile_ms(hist: Counter[int], q: float) -> float:
    """The ``q`` quantile (0..1) of a latency histogram of :data:`BUCKET_NS` buckets, in ms."""
    total = sum(hist.values())
    if not total:
        return float("nan")
    rank = q * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return (bucket + 0.5) * BUCKET_NS / 1e6
    return max(hist) * BUCKET_NS / 1e6


@attrs.frozen
class BurstResult:
    server: str
    subscribers: int
    events: int
    delivered: int
    rate: float
    """Events delivered per second, all subscribers together, from the agent's first line
    written to the last event read."""
    server_cpu_s: float
    client_cpu_max: float
    """The busiest subscriber process's CPU time as a share of the burst's duration."""


@attrs.frozen
class LatencyResult:
    server: str
    subscribers: int
    rate: float
    delivered: int
    expected: int
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    client_cpu_max: float


def run_flood(
    server: Server, n: int, mode: str, agent_args: list[str], expect: int, timeout_s: float
) -> tuple[ClientReport, float]:
    """Start the agent, subscribe ``n`` clients, say go, collect; the report and server CPU s."""
    session = server.start_session([*agent_args, "--wait"])
    with subscribers(server, n, mode, f"session/{session}", expect, timeout_s) as procs:
        cpu_before = server.cpu_s()
        server.send_input(session, "go")
        report = collect(server, procs)
        cpu_used = server.cpu_s() - cpu_before
    return report, cpu_used


def burst(server: Server, n: int, events: int) -> BurstResult:
    """``events`` lines as fast as the agent prints them, to ``n`` subscribers."""
    timeout_s = 30.0 + n * events / MIN_DELIVERY_RATE
    report, cpu = run_flood(server, n, "burst", [str(events)], events, timeout_s)
    return BurstResult(
        server=server.name,
        subscribers=n,
        events=events,
        delivered=report.events,
        rate=report.events / report.span_s,
        server_cpu_s=cpu,
        client_cpu_max=report.max_process_cpu_s / report.span_s,
    )


def paced(server: Server, n: int, rate: float, duration_s: float) -> LatencyResult:
    """``rate`` lines a second for ``duration_s`` to ``n`` subscribers; latency percentiles."""
    count = max(int(rate * duration_s), 1)
    timeout_s = 30.0 + duration_s * 3
    args = [str(count), "--rate", str(rate)]
    report, cpu = run_flood(server, n, "latency", args, count, timeout_s)
    return LatencyResult(
        server=server.name,
        subscribers=n,
        rate=rate,
        delivered=report.events,
        expected=count * n,
        p50_ms=percentile_ms(report.hist, 0.50),
        p99_ms=percentile_ms(report.hist, 0.99),
        server_cpu_s=cpu,
        client_cpu_max=report.max_process_cpu_s / report.span_s,
    )


@attrs.frozen
class IdleResult:
    server: str
    connections: int
    rss_before: int
    rss_after: int

    @property
    def bytes_per_connection(self) -> float:
        return (self.rss_after - self.rss_before) / self.connections


def idle(
    server: Server,
    connections: int,
    warmup: int = 20,
    settle_s: float = IDLE_SETTLE_S,
    deflate: bool = False,
) -> IdleResult:
    """RSS growth of the server per connection held open (and subscribed to ``sessions``).

    A few connections come and go first, so that one-time allocations (imports, caches) are
    not counted; the RSS is read ``settle_s`` after the connections are up. With ``deflate``
    every connection has permessage-deflate agreed (the warm-up ones too).
    """
    timeout_s = 60.0 + connections / 50
    with subscribers(server, warmup, "idle", "sessions", 0, timeout_s, deflate) as procs:
        release(procs)
    time.sleep(settle_s)
    before = server.rss_bytes()
    with subscribers(server, connections, "idle", "sessions", 0, timeout_s, deflate) as procs:
        time.sleep(settle_s)
        after = server.rss_bytes()
        release(procs)
    return IdleResult(server.name, connections, before, after)


def release(procs: list[subprocess.Popen[str]]) -> None:
    """Tell idle subscribers to close, and wait for their reports."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("done\n")
        proc.stdin.flush()
    for proc in procs:
        read_json(proc)


@attrs.frozen
class ManyAgentsResult:
    agents: int
    rate: float
    subscribers: int
    delivered: int
    expected: int
    complete: int
    """Subscribers that got every event (one cut with 4008 would not)."""
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    server_cpu_s: float
    client_cpu_max: float
    """The busiest subscriber process's CPU time as a share of the run."""


def many_agents(
    server: Server, agents: int, rate: float, duration_s: float, n: int
) -> ManyAgentsResult:
    """``agents`` flood agents at ``rate`` lines/s each for ``duration_s``, and ``n``
    subscribers on every one of their topics: line → subscriber latency over all of it."""
    count = max(int(rate * duration_s), 1)
    args = [str(count), "--rate", str(rate), "--wait"]
    sessions = [server.start_session(args) for _ in range(agents)]
    topics = [f"session/{session}" for session in sessions]
    expect = agents * count
    timeout_s = 60.0 + duration_s * 10
    with subscribers(server, n, "latency", topics, expect, timeout_s) as procs:
        cpu_before = server.cpu_s()
        for session in sessions:
            server.send_input(session, "go")
        report = collect(server, procs)
        cpu_used = server.cpu_s() - cpu_before
    return ManyAgentsResult(
        agents=agents,
        rate=rate,
        subscribers=n,
        delivered=report.events,
        expected=expect * n,
        complete=report.complete,
        p50_ms=percentile_ms(report.hist, 0.50),
        p99_ms=percentile_ms(report.hist, 0.99),
        p999_ms=percentile_ms(report.hist, 0.999),
        max_ms=percentile_ms(report.hist, 1.0),
        server_cpu_s=cpu_used,
        client_cpu_max=report.max_process_cpu_s / report.span_s,
    )
