"""Figures from repeated runs: medians, hived/peer ratios, the table, the targets, RESULTS.md.

How it works: every measurement is run in interleaved rounds (hived, then each peer, again…),
so a slow moment of this shared machine hits every side alike; a figure is the median of each
side, and a ratio the median of the per-round ratios of hived to one peer. The table gives
hived's ratio to the *best* peer of each figure (by median). The table and the target checks
are plain text, printed by ``bench.run`` and written between markers into ``bench/RESULTS.md``
so that the analysis written around them (and other benchmarks' sections) survive a re-run.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import attrs


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def pair_ratio(hived: Sequence[float], peer: Sequence[float]) -> float:
    """The median of hived/peer over interleaved pairs."""
    ratios = [h / p for h, p in zip(hived, peer, strict=False) if p > 0]
    return median(ratios)


@attrs.frozen
class Figure:
    """One measured quantity at one N: hived's runs, each peer's, and hived's ratio to them.

    ``peers`` maps a peer's name to its runs, in the order of the table's columns; the *best*
    peer is the one with the best median (the highest when ``higher_is_better``, else the
    lowest), and :attr:`ratio` is hived's against it.
    """

    name: str
    unit: str
    n: int
    hived: tuple[float, ...]
    peers: Mapping[str, tuple[float, ...]]
    higher_is_better: bool = False

    @property
    def best(self) -> str | None:
        """The peer with the best median, None when no peer ran."""
        ran = [name for name, runs in self.peers.items() if runs]
        if not ran:
            return None
        pick = max if self.higher_is_better else min
        return pick(ran, key=lambda name: median(self.peers[name]))

    def ratio_to(self, peer: str) -> float:
        return pair_ratio(self.hived, self.peers.get(peer, ()))

    @property
    def ratio(self) -> float:
        """hived's ratio to the best peer (NaN when no peer ran)."""
        best = self.best
        return math.nan if best is None else self.ratio_to(best)

    def row(self) -> str:
        peers = " | ".join(fmt(median(runs)) for runs in self.peers.values())
        return (
            f"| {self.name} | {self.n} | {fmt(median(self.hived))} | {peers} "
            f"| {self.best or '–'} | {fmt(self.ratio, 2)} | {len(self.hived)} |"
        )


def fmt(value: float, digits: int | None = None) -> str:
    if math.isnan(value):
        return "–"
    if digits is not None:
        return f"{value:.{digits}f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@attrs.frozen
class Target:
    """A target of the issue, checked against a figure."""

    what: str
    value: float
    limit: float
    at_least: bool

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def line(self) -> str:
        sign = "≥" if self.at_least else "≤"
        verdict = "met" if self.met else "NOT met"
        return f"- {self.what}: {fmt(self.value, 2)} (target {sign} {self.limit:g}) — {verdict}"


def table(figures: Sequence[Figure]) -> str:
    peers = list(figures[0].peers) if figures else []
    head = (
        "| figure | N | hived (median) | "
        + "".join(f"{name} (median) | " for name in peers)
        + "best peer | hived/best | runs |\n"
        + "| --- | ---: | ---: | "
        + "---: | " * len(peers)
        + "--- | ---: | ---: |"
    )
    return "\n".join([head, *(f.row() for f in figures)])


def versions() -> str:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    libs = ", ".join(
        f"{d} {version(d)}"
        for d in ("hived", "trio", "trio-websocket", "websockets", "orjson", "uvloop")
    )
    return f"Python {platform.python_version()}; {libs}"


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({model}); "
        f"load average at the end {load}"
    )


def write_results(path: Path, generated: str, section: str = "fanout") -> None:
    """Replace the generated ``section`` of ``path`` (or add it; or start the file with it)."""
    begin = f"<!-- {section}:begin (written by python -m bench.run) -->"
    end = f"<!-- {section}:end -->"
    block = f"{begin}\n{generated.rstrip()}\n{end}\n"
    if path.exists():
        text = path.read_text()
        if begin in text and end in text:
            before, rest = text.split(begin, 1)
            after = rest.split(end, 1)[1].lstrip("\n")
            path.write_text(before + block + ("\n" + after if after else ""))
            return
        path.write_text(text.rstrip() + "\n\n" + block)
        return
    path.write_text("# hived benchmarks\n\n" + block)
