"""Ingest memory: a burst of agent output with no subscriber, and the daemon's RSS through it.

    python -m bench.ingest [--lines N] [--runs R] [--after-s S]

The real daemon (as the fan-out benchmark starts it, store included) runs the flooding agent for
N lines (200,000 by default) with nobody subscribed: everything goes agent → shim → hived → hub
→ store. The figures, from ``/proc`` every 20 ms: the RSS when idle before the burst (after a
warm-up burst of 200 lines came and went), its peak during the burst, and its value ``--after-s``
seconds after the last event was committed (the store's ``status`` says when: its events count
reaches the lines published). Issue 18's targets: a peak under 80 MiB, and back within 20 MiB of
the idle figure within 10 s. Prints one line per run and the medians; ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Final

import attrs

from bench import scenarios
from bench.servers import BenchError, HivedServer

SAMPLE_S: Final = 0.02
STATUS_EVERY_S: Final = 0.25
DEADLINE_S: Final = 300.0
MIB: Final = 1 << 20
AFTER_S: Final = 10.0
"""How long after the last commit the RSS is read: the issue's "within 10 s"."""


@attrs.frozen
class IngestResult:
    lines: int
    idle_bytes: int
    peak_bytes: int
    after_bytes: int
    """The RSS ``after_s`` after the last event was committed."""
    burst_s: float
    """From ``go`` to the last event committed."""


def committed(server: HivedServer) -> int:
    """Events the store holds (committed), from the daemon's ``status``."""
    return int(server.status()["store"]["events"])


def ingest(server: HivedServer, lines: int, after_s: float) -> IngestResult:
    """One burst of ``lines`` with no subscriber; the RSS before, at its peak and after."""
    scenarios.burst(server, 1, 200)  # the warm-up: imports, caches, a connection's first use
    time.sleep(1.0)
    session = server.start_session([str(lines), "--wait"])
    time.sleep(0.5)  # the agent and its shim start (their RSS is not the daemon's)
    before = committed(server)
    idle = server.rss_bytes()
    peak = idle
    started = time.monotonic()
    server.send_input(session, "go")
    deadline = started + DEADLINE_S
    next_status = started
    while True:
        now = time.monotonic()
        if now > deadline:
            raise BenchError(f"the store did not commit {lines} events in {DEADLINE_S:g} s")
        peak = max(peak, server.rss_bytes())
        if now >= next_status:
            next_status = now + STATUS_EVERY_S
            if committed(server) - before >= lines:
                break
        time.sleep(SAMPLE_S)
    done = time.monotonic()
    while time.monotonic() < done + after_s:
        peak = max(peak, server.rss_bytes())
        time.sleep(SAMPLE_S)
    return IngestResult(lines, idle, peak, server.rss_bytes(), done - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hived's RSS through a burst nobody watches")
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--after-s", type=float, default=AFTER_S)
    args = parser.parse_args(argv)
    results = []
    for _ in range(args.runs):
        with HivedServer() as server:
            result = ingest(server, args.lines, args.after_s)
        results.append(result)
        print(line(result), flush=True)
    idle, peak, after = (
        statistics.median(getattr(r, field) for r in results) / MIB
        for field in ("idle_bytes", "peak_bytes", "after_bytes")
    )
    print(f"median: idle {idle:.1f} MiB, peak {peak:.1f} MiB, {args.after_s:g} s after {after:.1f}")
    return 0


def line(r: IngestResult) -> str:
    return (
        f"{r.lines} lines in {r.burst_s:.1f} s: RSS idle {r.idle_bytes / MIB:.1f} MiB, "
        f"peak {r.peak_bytes / MIB:.1f} MiB, after {r.after_bytes / MIB:.1f} MiB"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        sys.stderr.write(f"bench: {exc}\n")
        sys.exit(1)
