"""The fan-out benchmark: hived against its peers (``websockets.broadcast()`` on asyncio and on
uvloop, and Node's ``ws``).

    python -m bench.run --quick     N=1 and N=100, small bursts; prints fanout_ratio_n100=,
                                    n1_ratio= and paced_cpu_ratio_n100=
    python -m bench.run --full      N ∈ {1, 10, 100, 1000}, 3 interleaved pairs; writes RESULTS.md
    python -m bench.run --profile   hived under py-spy: the hot spots, into RESULTS.md
    python -m bench.run --idle      RSS per idle connection only (2000 idle), a few minutes

Every server is fed by the same agent (``bench/agents/flood.py``: 300-byte stdout lines), so
each figure covers "agent stdout line → event → N subscribers" on loopback. For each N, and in
each of the interleaved rounds (hived, then each peer that can run here, again…), a fresh server
gets a warm-up burst, a paced run (latency) and a burst (throughput and CPU); the
idle-connection figure has its own rounds. A peer that cannot run (no node, no uvloop) is left
out, and the output says why. See ``bench/RESULTS.md`` for the figures and what they mean.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs

from bench import ingest, profile, report, scenarios
from bench.report import Figure, Target, fmt, median
from bench.servers import SERVERS, BenchError, HivedServer, available_peers, node_version
from hived.core.config import ServerConfig

RESULTS: Final = Path(__file__).resolve().parent / "RESULTS.md"
WARMUP_EVENTS: Final = 200
MIB: Final = 1 << 20
HIGHER_IS_BETTER: Final = frozenset({"events/s"})
"""Units of the figures where more is better (for the rest, less is: time, CPU, memory)."""


def paced_rate(n: int) -> float:
    """Lines/s of the paced run: 1000/s, but at most 20k deliveries/s, below either's capacity.

    Latency is measured where neither server is saturated; saturation is the burst's business.
    """
    return min(1000.0, 20_000.0 / n)


@attrs.frozen
class Plan:
    ns: tuple[int, ...]
    burst_events: dict[int, int]
    """Lines per burst, by N: enough for hived's burst to last about a second, where the
    subscribers' 20 ms read batching (see bench.load_client) costs a few percent at most."""
    paced_s: float
    repeats: int
    idle_connections: int
    """Idle connections for the RSS figure; 0 skips it."""
    many_agents: bool = False
    """Run the many-agents figure (hived alone: 20 agents × 500 lines/s, 20 subscribers)."""
    ingest_lines: int = 0
    """Lines of the ingest memory figure (a burst nobody watches; hived alone); 0 skips it."""


QUICK: Final = Plan(
    ns=(1, 100),
    burst_events={1: 50_000, 100: 10_000},
    paced_s=2.0,
    repeats=3,
    idle_connections=0,
)
IDLE: Final = Plan(ns=(), burst_events={}, paced_s=0.0, repeats=3, idle_connections=2000)
"""Only the memory figure (a few minutes with every peer; hived's is also measured with
permessage-deflate agreed): what a change to a connection's state costs."""
AGENT_PATH: Final = Plan(
    ns=(1, 100), burst_events={1: 200_000, 100: 10_000}, paced_s=3.0, repeats=3, idle_connections=0
)
"""N=1 and N=100 only (about 2 min): what a change to the agent's path (the shim) costs."""
FULL: Final = Plan(
    ns=(1, 10, 100, 1000),
    burst_events={1: 200_000, 10: 50_000, 100: 10_000, 1000: 1_000},
    paced_s=5.0,
    repeats=3,
    idle_connections=2000,
    many_agents=True,
    ingest_lines=200_000,
)
MANY: Final = Plan(
    ns=(), burst_events={}, paced_s=0.0, repeats=3, idle_connections=0, many_agents=True
)
"""Only the many-agents figure (about 2 min)."""
INGEST: Final = Plan(
    ns=(), burst_events={}, paced_s=0.0, repeats=3, idle_connections=0, ingest_lines=200_000
)
"""Only the ingest memory figure (about 2 min)."""
IDLE_DEFLATE: Final = "RSS per idle connection, deflate agreed"
MANY_AGENTS: Final = 20
MANY_RATE: Final = 500.0
MANY_SUBSCRIBERS: Final = 20
MANY_S: Final = 5.0


@attrs.define
class Collected:
    """Runs by (figure name, N, side); ``peers`` are the peers that ran."""

    peers: list[str]
    runs: dict[tuple[str, int, str], list[float]] = attrs.Factory(lambda: defaultdict(list))
    units: dict[str, str] = attrs.Factory(dict)
    notes: list[str] = attrs.Factory(list)
    many: list[scenarios.ManyAgentsResult] = attrs.Factory(list)
    ingests: list[ingest.IngestResult] = attrs.Factory(list)

    def add(self, name: str, unit: str, n: int, side: str, value: float) -> None:
        self.units[name] = unit
        self.runs[name, n, side].append(value)

    def figure(self, name: str, n: int) -> Figure:
        unit = self.units[name]
        return Figure(
            name=f"{name} ({unit})",
            unit=unit,
            n=n,
            hived=tuple(self.runs[name, n, "hived"]),
            peers={peer: tuple(self.runs[name, n, peer]) for peer in self.peers},
            higher_is_better=unit in HIGHER_IS_BETTER,
        )

    def figures(self) -> list[Figure]:
        keys = sorted({(name, n) for name, n, _ in self.runs}, key=lambda k: (k[1], k[0]))
        return [self.figure(name, n) for name, n in keys]


def log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def measure_fanout(side: str, n: int, plan: Plan, out: Collected) -> None:
    with SERVERS[side]() as server:
        scenarios.burst(server, 1, WARMUP_EVENTS)
        paced = scenarios.paced(server, n, paced_rate(n), plan.paced_s)
        burst = scenarios.burst(server, n, plan.burst_events[n])
    if burst.delivered != n * burst.events or paced.delivered != paced.expected:
        out.notes.append(
            f"{side} N={n}: delivered {burst.delivered}/{n * burst.events} (burst), "
            f"{paced.delivered}/{paced.expected} (paced)"
        )
    out.add("burst delivered", "events/s", n, side, burst.rate)
    out.add("burst server CPU", "s", n, side, burst.server_cpu_s)
    out.add("burst busiest client CPU", "% of wall", n, side, 100 * burst.client_cpu_max)
    out.add("paced p50", "ms", n, side, paced.p50_ms)
    out.add("paced p99", "ms", n, side, paced.p99_ms)
    out.add("paced server CPU", "s", n, side, paced.server_cpu_s)
    log(
        f"  {side:5} N={n:<4} burst {burst.rate:>10,.0f} ev/s  cpu {burst.server_cpu_s:5.2f} s  "
        f"client {100 * burst.client_cpu_max:3.0f}%  paced@{paced.rate:g}/s "
        f"p50 {paced.p50_ms:6.2f} p99 {paced.p99_ms:7.2f} ms"
    )


def measure_idle(side: str, connections: int, out: Collected) -> None:
    with SERVERS[side]() as server:
        result = scenarios.idle(server, connections)
    out.add("RSS per idle connection", "KiB", connections, side, result.bytes_per_connection / 1024)
    log(f"  {side:5} idle {connections}: {result.bytes_per_connection / 1024:6.1f} KiB/connection")
    if side != "hived":
        return
    # Clients that offer permessage-deflate, as browsers do (hived agrees by default; the
    # peers are run without compression, so only hived has this figure).
    with SERVERS[side]() as server:
        result = scenarios.idle(server, connections, deflate=True)
    kib = result.bytes_per_connection / 1024
    out.add(IDLE_DEFLATE, "KiB", connections, side, kib)
    log(f"  {side:5} idle {connections}, deflate agreed: {kib:6.1f} KiB/connection")


def interleaved(repeats: int, sides: list[str], run: Callable[[str], None]) -> None:
    for _ in range(repeats):
        for side in sides:
            run(side)


def collect(plan: Plan) -> Collected:
    peers, missing = available_peers()
    out = Collected(peers)
    for name, why in missing.items():
        log(f"peer {name} left out: {why}")
        out.notes.append(f"peer {name} left out: {why}")
    sides = ["hived", *peers]
    for n in plan.ns:
        log(f"N={n}: {plan.repeats} interleaved rounds of {', '.join(sides)}")
        run = functools.partial(measure_fanout, n=n, plan=plan, out=out)
        interleaved(plan.repeats, sides, run)
    if plan.idle_connections:
        log(f"idle: {plan.idle_connections} connections, {plan.repeats} interleaved rounds")
        run_idle = functools.partial(measure_idle, connections=plan.idle_connections, out=out)
        interleaved(plan.repeats, sides, run_idle)
    if plan.many_agents:
        log(f"many agents: {plan.repeats} runs of hived")
        for _ in range(plan.repeats):
            measure_many(out)
    if plan.ingest_lines:
        log(f"ingest: {plan.repeats} runs of hived, {plan.ingest_lines} lines")
        for _ in range(plan.repeats):
            measure_ingest(plan.ingest_lines, out)
    return out


def measure_many(out: Collected) -> None:
    """The many-agents figure, with the default config (a subscriber queue of 4096)."""
    with HivedServer(subscriber_queue=ServerConfig().subscriber_queue) as server:
        scenarios.burst(server, 1, WARMUP_EVENTS)
        result = scenarios.many_agents(server, MANY_AGENTS, MANY_RATE, MANY_S, MANY_SUBSCRIBERS)
    out.many.append(result)
    log(
        f"  hived many agents: delivered {result.delivered}/{result.expected}, p50 "
        f"{result.p50_ms:.2f} p99 {result.p99_ms:.2f} p99.9 {result.p999_ms:.2f} max "
        f"{result.max_ms:.2f} ms, client {100 * result.client_cpu_max:.0f}%"
    )


def measure_ingest(lines: int, out: Collected) -> None:
    with HivedServer() as server:
        result = ingest.ingest(server, lines, ingest.AFTER_S)
    out.ingests.append(result)
    log(f"  hived ingest: {ingest.line(result)}")


def spread(runs: tuple[float, ...]) -> float:
    """How far apart a figure's runs are: the largest less the smallest."""
    return max(runs) - min(runs) if runs else float("nan")


def targets(out: Collected, plan: Plan) -> list[Target]:
    """Issue 18's targets (ratios to the best peer of each figure) and the earlier ones."""
    found: list[Target] = []
    for n in plan.ns:
        burst = out.figure("burst delivered", n)
        found.append(
            Target(
                f"burst ratio to the best peer at N={n}", burst.ratio, 1.0 if n == 1 else 4.0, True
            )
        )
        cpu = out.figure("paced server CPU", n)
        found.append(
            Target(f"paced server CPU ratio to the best peer at N={n}", cpu.ratio, 1.0, False)
        )
        p99 = out.figure("paced p99", n)
        found.append(Target(f"paced p99 ratio to the best peer at N={n}", p99.ratio, 1.2, False))
        if n <= 100 and p99.best is not None:
            peer_spread = spread(p99.peers[p99.best])
            hived_spread = spread(p99.hived)
            found.append(
                Target(
                    f"paced p99 spread at N={n}, hived {fmt(hived_spread)} ms ÷ "
                    f"{p99.best}'s {fmt(peer_spread)} ms",
                    hived_spread / peer_spread if peer_spread > 0 else float("inf"),
                    2.0,
                    False,
                )
            )
        if n == 10 and paced_rate(n) == 1000:
            p99_ms = median(p99.hived)
            found.append(
                Target("hived line → subscriber p99 ms, 1k lines/s, N=10", p99_ms, 5.0, False)
            )
    if plan.idle_connections:
        rss = out.figure("RSS per idle connection", plan.idle_connections)
        found.append(Target("hived KiB per idle connection", median(rss.hived), 10.0, False))
        rss = out.figure(IDLE_DEFLATE, plan.idle_connections)
        found.append(
            Target("hived KiB per idle connection, deflate agreed", median(rss.hived), 10.0, False)
        )
    if out.many:
        many = out.many
        found += [
            Target("many agents p99 ms", median([r.p99_ms for r in many]), 10.0, False),
            Target("many agents p99.9 ms", median([r.p999_ms for r in many]), 30.0, False),
            Target(
                "many agents: runs with every event delivered to every subscriber",
                sum(r.delivered == r.expected and r.complete == r.subscribers for r in many),
                len(many),
                True,
            ),
        ]
    if out.ingests:
        peak = median([r.peak_bytes / MIB for r in out.ingests])
        back = median([(r.after_bytes - r.idle_bytes) / MIB for r in out.ingests])
        found += [
            Target("ingest: peak RSS MiB", peak, 80.0, False),
            Target(f"ingest: RSS MiB above idle {ingest.AFTER_S:g} s after", back, 20.0, False),
        ]
    return found


def many_table(results: list[scenarios.ManyAgentsResult]) -> str:
    rows = [
        ("p50 (ms)", [r.p50_ms for r in results]),
        ("p99 (ms)", [r.p99_ms for r in results]),
        ("p99.9 (ms)", [r.p999_ms for r in results]),
        ("max (ms)", [r.max_ms for r in results]),
        ("server CPU (s)", [r.server_cpu_s for r in results]),
        ("busiest client CPU (% of wall)", [100 * r.client_cpu_max for r in results]),
        ("events delivered / expected", [r.delivered / r.expected for r in results]),
    ]
    lines = [
        f"Many agents: {MANY_AGENTS} agents × {MANY_RATE:g} lines/s for {MANY_S:g} s, "
        f"{MANY_SUBSCRIBERS} subscribers on all {MANY_AGENTS} topics, default config "
        "(hived alone; line → subscriber latency over every delivery).",
        "",
        "| figure | median | runs |",
        "| --- | ---: | --- |",
    ]
    lines += [f"| {name} | {fmt(median(v))} | {', '.join(fmt(x) for x in v)} |" for name, v in rows]
    return "\n".join(lines)


def ingest_table(results: list[ingest.IngestResult]) -> str:
    rows = [
        ("RSS idle (MiB)", [r.idle_bytes / MIB for r in results]),
        ("RSS peak (MiB)", [r.peak_bytes / MIB for r in results]),
        (f"RSS {ingest.AFTER_S:g} s after (MiB)", [r.after_bytes / MIB for r in results]),
        ("burst → last commit (s)", [r.burst_s for r in results]),
    ]
    lines = [
        f"Ingest: a burst of {results[0].lines} lines nobody subscribed to (hived alone).",
        "",
        "| figure | median | runs |",
        "| --- | ---: | --- |",
    ]
    lines += [f"| {name} | {fmt(median(v))} | {', '.join(fmt(x) for x in v)} |" for name, v in rows]
    return "\n".join(lines)


def render(out: Collected, plan: Plan, elapsed_s: float) -> str:
    runs = f"{plan.repeats} interleaved rounds; {elapsed_s:.0f} s in all."
    if plan.ns:
        runs = (
            f"Paced rates (lines/s): {', '.join(f'N={n}: {paced_rate(n):g}' for n in plan.ns)}; "
            f"{plan.paced_s:g} s each. Burst lines: "
            + ", ".join(f"N={n}: {plan.burst_events[n]}" for n in plan.ns)
            + f". {runs}"
        )
    tables = [report.table(out.figures())] if out.runs else []
    if out.many:
        tables.append(many_table(out.many))
    if out.ingests:
        tables.append(ingest_table(out.ingests))
    lines = [
        "\n\n".join(tables),
        "",
        "Targets:",
        *(t.line() for t in targets(out, plan)),
        "",
        runs,
        "",
        f"Versions: {report.versions()}; {node_version()}.",
        f"Machine: {report.machine()}.",
    ]
    if out.notes:
        lines += ["", "Notes:", *(f"- {note}" for note in out.notes)]
    return "\n".join(lines) + "\n"


def quick_lines(out: Collected, plan: Plan) -> str:
    """``fanout_ratio_n100=`` (against the python peer, as ever), ``n1_ratio=`` (burst at N=1)
    and ``paced_cpu_ratio_n100=`` (against the best peer), for the N that ran."""
    lines = []
    if 100 in plan.ns and "python" in out.peers:
        ratio = out.figure("burst delivered", 100).ratio_to("python")
        lines.append(f"fanout_ratio_n100={ratio:.2f}")
    if 1 in plan.ns:
        lines.append(f"n1_ratio={out.figure('burst delivered', 1).ratio:.2f}")
    if 100 in plan.ns:
        lines.append(f"paced_cpu_ratio_n100={out.figure('paced server CPU', 100).ratio:.2f}")
    return "".join(line + "\n" for line in lines)


def run_profiles() -> str:
    """hived under py-spy: bursts at N=1 and N=100, paced runs at N=100 and N=1000."""
    parts = ["### Where hived spends its time (py-spy)\n"]
    for n, events in ((100, 50_000), (1, 200_000)):
        log(f"profiling a burst at N={n}")
        parts.append(f"#### Burst, N={n}\n\n" + profile.profile_burst(n, events))
    for n in (100, 1000):
        log(f"profiling a paced run at N={n}")
        parts.append(f"#### Paced, N={n}\n\n" + profile.profile_paced(n, paced_rate(n), 5.0))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hived fan-out benchmark against a peer")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="N=100 only, < 2 min")
    mode.add_argument("--full", action="store_true", help="every N; writes bench/RESULTS.md")
    mode.add_argument("--profile", action="store_true", help="hived under py-spy; RESULTS.md")
    mode.add_argument("--idle", action="store_true", help="RSS per idle connection only")
    mode.add_argument("--agent-path", action="store_true", help="N=1 and N=100 only, ~2 min")
    mode.add_argument("--many", action="store_true", help="the many-agents figure only, ~2 min")
    mode.add_argument("--ingest", action="store_true", help="the ingest memory only, ~2 min")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)

    if args.profile:
        text = run_profiles()
        sys.stdout.write(text)
        if not args.no_write:
            report.write_results(RESULTS, text, section="profile")
            log(f"wrote {RESULTS}")
        return 0
    plan = (
        QUICK
        if args.quick
        else IDLE
        if args.idle
        else AGENT_PATH
        if args.agent_path
        else MANY
        if args.many
        else INGEST
        if args.ingest
        else FULL
    )
    started = time.monotonic()
    out = collect(plan)
    text = render(out, plan, time.monotonic() - started)
    sys.stdout.write("\n" + text)
    sys.stdout.write(quick_lines(out, plan))
    if args.full and not args.no_write:
        report.write_results(RESULTS, "### Figures\n\n" + text)
        log(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"bench: {exc}")
        sys.exit(1)
