"""The cluster benchmark: an agent on node B, N subscribers on node A, beside one node.

    python -m bench.cluster            N=100, 3 interleaved pairs; writes bench/RESULTS.md
    python -m bench.cluster --quick    1 pair, shorter runs; prints only

Both sides run the flood agent (``bench/agents/flood.py``) and the same measurements as the
fan-out benchmark (:mod:`bench.scenarios`): a paced run (line → subscriber latency, p50/p99)
and a burst (events delivered per second, all subscribers together). "one node" is a plain
hived with the subscribers on it; "cluster" is two hived nodes sharing a ``redis-server`` this
benchmark starts on a free loopback port, the agent on node B and the subscribers on node A,
so every event goes B → engine (the mirror) → A (one stream read, the hub's fan-out). The two
sides alternate, in the same run. Targets (issue 17): cluster p99 under 3× one node's, cluster
throughput at least a third of it.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Final

from bench import report, scenarios
from bench.report import Target, fmt, median
from bench.run import WARMUP_EVENTS, paced_rate
from bench.servers import BenchError, HivedServer, Server, free_port

RESULTS: Final = Path(__file__).resolve().parent / "RESULTS.md"
SIDES: Final = ("one node", "cluster")
N: Final = 100
START_DEADLINE_S: Final = 20.0


class RedisProcess:
    """A ``redis-server`` on a free loopback port, no persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.tmp = tempfile.TemporaryDirectory(prefix="hived-bench-redis-")
        self.proc = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", self.tmp.name),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_DEADLINE_S
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError("redis-server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.tmp.cleanup()


class Node(HivedServer):
    """A hived node of the benchmark's cluster."""

    def __init__(self, node: str, url: str) -> None:
        super().__init__()
        self.node = node
        self.url = url

    def config_text(self) -> str:
        return (
            super().config_text()
            + f'\n[cluster]\nnode = "{self.node}"\nurl = "{self.url}"\nkey_prefix = "bench"\n'
        )


class Cluster(Server):
    """Node B runs the agent; the subscribers connect to node A (``port``)."""

    name = "cluster"

    def __init__(self) -> None:
        super().__init__()
        self.redis: RedisProcess | None = None
        self.a: Node | None = None
        self.b: Node | None = None

    def start(self) -> None:
        self.redis = RedisProcess()
        self.a, self.b = Node("a", self.redis.url), Node("b", self.redis.url)
        self.a.start()
        self.b.start()
        self.port = self.a.port

    @property
    def pid(self) -> int:
        assert self.a is not None
        return self.a.pid

    def cpu_s(self) -> float:
        """Both nodes' CPU: the event costs B (mirror) and A (follow and fan out)."""
        assert self.a is not None
        assert self.b is not None
        return self.a.cpu_s() + self.b.cpu_s()

    def start_session(self, args: list[str]) -> str:
        """Start the agent on B; return once A follows its topic from the engine."""
        assert self.a is not None
        assert self.b is not None
        session = self.b.start_session(args)
        topic = f"session/{session}"
        deadline = time.monotonic() + START_DEADLINE_S
        while "node" not in self.a.control.request("subscribe", topic=topic):
            self.a.control.request("unsubscribe", topic=topic)
            if time.monotonic() > deadline:
                raise BenchError(f"node a never saw {topic} in the engine")
            time.sleep(0.02)
        self.a.control.request("unsubscribe", topic=topic)
        return session

    def send_input(self, session: str, text: str) -> None:
        assert self.b is not None
        self.b.send_input(session, text)

    def stop(self) -> None:
        for part in (self.a, self.b):
            if part is not None:
                part.stop()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


def log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def measure(side: str, burst_events: int, paced_s: float, runs: dict[str, list[float]]) -> None:
    server: Server = HivedServer() if side == "one node" else Cluster()
    with server:
        scenarios.burst(server, 1, WARMUP_EVENTS)
        paced = scenarios.paced(server, N, paced_rate(N), paced_s)
        burst = scenarios.burst(server, N, burst_events)
    if burst.delivered != N * burst.events or paced.delivered != paced.expected:
        raise BenchError(
            f"{side}: delivered {burst.delivered}/{N * burst.events} (burst), "
            f"{paced.delivered}/{paced.expected} (paced)"
        )
    runs[f"{side} burst"].append(burst.rate)
    runs[f"{side} p50"].append(paced.p50_ms)
    runs[f"{side} p99"].append(paced.p99_ms)
    runs[f"{side} cpu"].append(burst.server_cpu_s)
    log(
        f"  {side:8} N={N} burst {burst.rate:>9,.0f} ev/s  cpu {burst.server_cpu_s:5.2f} s  "
        f"paced@{paced.rate:g}/s p50 {paced.p50_ms:6.2f} p99 {paced.p99_ms:7.2f} ms"
    )


def render(runs: dict[str, list[float]], repeats: int, burst_events: int, paced_s: float) -> str:
    rows = [
        ("burst delivered (events/s)", "burst"),
        ("paced p50 (ms)", "p50"),
        ("paced p99 (ms)", "p99"),
        ("burst server CPU, all nodes (s)", "cpu"),
    ]
    lines = [
        "| figure | N | one node (median) | cluster (median) | cluster/one node | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for title, key in rows:
        one, two = median(runs[f"one node {key}"]), median(runs[f"cluster {key}"])
        lines.append(
            f"| {title} | {N} | {fmt(one)} | {fmt(two)} | {fmt(two / one, 2)} | {repeats} |"
        )
    p99_ratio = median(runs["cluster p99"]) / median(runs["one node p99"])
    rate_ratio = median(runs["cluster burst"]) / median(runs["one node burst"])
    lines += [
        "",
        "Targets:",
        Target("cluster p99 / one node p99", p99_ratio, 3.0, at_least=False).line(),
        Target("cluster events/s / one node events/s", rate_ratio, 1 / 3, at_least=True).line(),
        "",
        f"Paced: {paced_rate(N):g} lines/s for {paced_s:g} s; burst: {burst_events} lines; "
        f"{repeats} interleaved pairs.",
        "",
        f"Versions: {report.versions()}; {_redis_version()}.",
        f"Machine: {report.machine()}.",
    ]
    return "\n".join(lines) + "\n"


def _redis_version() -> str:
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "redis-server unknown"
    return " ".join(out.split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hived: a cluster's delivery beside one node's")
    parser.add_argument("--quick", action="store_true", help="one pair, shorter; prints only")
    args = parser.parse_args(argv)
    repeats, burst_events, paced_s = (1, 3_000, 2.0) if args.quick else (3, 10_000, 5.0)
    runs: dict[str, list[float]] = defaultdict(list)
    log(f"N={N}: {repeats} interleaved pairs (one node, cluster)")
    for _ in range(repeats):
        for side in SIDES:
            measure(side, burst_events, paced_s, runs)
    text = render(runs, repeats, burst_events, paced_s)
    sys.stdout.write("\n" + text)
    if not args.quick:
        report.write_results(RESULTS, "### Figures\n\n" + text, section="cluster")
        log(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"bench: {exc}")
        sys.exit(1)
