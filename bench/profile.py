"""Profile hived under a burst with py-spy, and summarize where its time goes.

How it works: ``py-spy record --format raw`` samples the daemon while a burst runs and writes
collapsed stacks (``frame;frame;... count``). The summary ranks functions by *self* samples (the
frame on top of the stack: where the CPU is actually spent) and by *inclusive* samples (anywhere
on the stack: which call paths cost the most). py-spy needs ptrace; where the kernel or the
container refuses it, the summary says so instead.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bench import scenarios
from bench.servers import PYTHON, HivedServer, Server

PY_SPY: Final = Path(PYTHON).parent / "py-spy"
SAMPLE_RATE_HZ: Final = 200
TOP: Final = 15


def short(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (module.py)``; py-spy's frame format."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({file.rsplit('/', 1)[-1] or '?'})"


def summarize(raw: str, top: int = TOP) -> str:
    """Markdown tables of the hottest functions in py-spy's raw (collapsed) output."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_samples[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "py-spy recorded no samples.\n"
    out = [f"{total} samples.\n", "| self % | function |", "| ---: | --- |"]
    out += [f"| {100 * c / total:.1f} | `{f}` |" for f, c in self_samples.most_common(top)]
    out += ["", "| inclusive % | function |", "| ---: | --- |"]
    out += [f"| {100 * c / total:.1f} | `{f}` |" for f, c in inclusive.most_common(top)]
    return "\n".join(out) + "\n"


def profile_burst(n: int, events: int, gil: bool = False) -> str:
    """A burst of ``events`` lines to ``n`` subscribers on hived, under py-spy; the summary.
    With ``gil``, only the thread holding the GIL is sampled: the writer thread's share is
    then how much of the GIL it takes from the event loop."""

    def run(server: Server) -> str:
        result = scenarios.burst(server, n, events)
        return (
            f"Burst of {events} lines to {n} subscribers: "
            f"{result.rate:,.0f} events/s delivered while sampled."
        )

    return profile_hived(run, gil)


def profile_paced(n: int, rate: float, duration_s: float) -> str:
    """``rate`` lines/s to ``n`` subscribers on hived, under py-spy; the summary."""

    def run(server: Server) -> str:
        result = scenarios.paced(server, n, rate, duration_s)
        return (
            f"Paced run, {rate:g} lines/s for {duration_s:g} s to {n} subscribers: "
            f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
            f"server CPU {result.server_cpu_s:.2f} s while sampled."
        )

    return profile_hived(run)


def profile_hived(run: Callable[[Server], str], gil: bool = False) -> str:
    """Run ``run`` against a warmed-up hived under py-spy; what it says, and the hot spots."""
    if not PY_SPY.exists():
        return f"py-spy is not installed ({PY_SPY}); `pip install py-spy` to profile.\n"
    with HivedServer() as server, tempfile.TemporaryDirectory() as tmp:
        scenarios.burst(server, 1, 200)  # warm up before sampling
        out = Path(tmp) / "hived.txt"
        spy = subprocess.Popen(
            [
                *(str(PY_SPY), "record", "--format", "raw", "--rate", str(SAMPLE_RATE_HZ)),
                *("--output", str(out), "--pid", str(server.pid)),
                *(["--gil"] if gil else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            time.sleep(1.0)  # py-spy attaches
            if spy.poll() is not None:
                message = spy.stdout.read() if spy.stdout else ""
                return f"py-spy could not attach to hived: {message.strip()}\n"
            said = run(server)
        finally:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
            if spy.stdout is not None:
                spy.stdout.close()
        if not out.exists():
            return "py-spy wrote no profile.\n"
        what = "only the thread holding the GIL" if gil else "idle time left out"
        return f"{said} py-spy at {SAMPLE_RATE_HZ} Hz, {what}.\n\n" + summarize(out.read_text())
