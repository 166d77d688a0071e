"""The benchmark harness works: tiny runs of its machinery, checked for counts, not timings.

The pure parts (marker counting across split reads, client frames, percentiles, ratios, the
RESULTS.md section) are checked directly; then each server runs a burst, a paced run and a few
idle connections end to end through real subscriber processes. Every wait in the harness is
bounded by the clients' own deadlines and the servers' start and stop deadlines.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import ingest, report, scenarios
from bench.cluster import Cluster
from bench.load_client import BUCKET_NS, MARKER, Tally, masked_text_frame
from bench.profile import summarize
from bench.servers import PEERS, HivedServer, Server
from tests.redis_engine import needs_redis


def event(i: int, sent_ns: int) -> bytes:
    line = f"flood {i} {sent_ns} " + "." * 40
    return b'{"type":"event","seq":%d,"data":{"line":"%s"}}' % (i + 1, line.encode())


def stream_of(count: int) -> bytes:
    """What a server might send: a welcome, then ``count`` events, some as a JSON array."""
    events = [event(i, 1_000_000 + i) for i in range(count)]
    return b'{"type":"welcome"}' + b"[" + b",".join(events[:3]) + b"]" + b"".join(events[3:])


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


@pytest.mark.parametrize("latency", [False, True])
@pytest.mark.parametrize("size", [1, 2, 5, 7, 50, 4096])
def test_tally_counts_every_event_however_the_reads_split_them(latency: bool, size: int) -> None:
    tally = Tally(expect=10, latency=latency)
    for chunk in chunks(stream_of(10), size):
        tally.feed(chunk, now_ns=2_000_000)
    assert tally.count == 10
    assert tally.done
    assert tally.first_sent_ns == 1_000_000


def test_tally_in_latency_mode_measures_read_time_minus_send_time() -> None:
    tally = Tally(expect=4, latency=True, warmup=1)
    for i in range(4):
        tally.feed(event(i, sent_ns=1_000_000), now_ns=1_000_000 + (i + 1) * BUCKET_NS)
    assert tally.hist == Counter({2: 1, 3: 1, 4: 1})  # event 0 is the warm-up


def test_client_frame_is_masked_and_unmasks_to_the_payload() -> None:
    payload = b'{"type":"subscribe","id":1,"topic":"sessions"}'
    frame = masked_text_frame(payload)
    assert frame[0] == 0x81
    assert frame[1] == 0x80 | len(payload)
    mask, body = frame[2:6], frame[6:]
    assert body != payload
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == payload


def test_percentile_reads_the_histogram_in_milliseconds() -> None:
    hist = Counter({0: 50, 100: 49, 1000: 1})  # 0 ms, 1 ms, 10 ms buckets
    assert scenarios.percentile_ms(hist, 0.5) == pytest.approx(0.005)
    assert scenarios.percentile_ms(hist, 0.99) == pytest.approx(1.005)
    assert scenarios.percentile_ms(hist, 1.0) == pytest.approx(10.005)
    assert math.isnan(scenarios.percentile_ms(Counter(), 0.5))


def test_ratio_is_the_median_of_interleaved_pairs() -> None:
    figure = report.Figure(
        "burst", "events/s", 100, hived=(10.0, 30.0, 20.0), peers={"python": (1.0, 2.0, 4.0)}
    )
    assert figure.ratio == pytest.approx(10.0)  # pairs: 10, 15, 5
    assert "| burst | 100 | 20.0 | 2.00 | python | 10.00 | 3 |" in report.table([figure])


@pytest.mark.parametrize(
    ("higher_is_better", "best", "ratio"), [(True, "node", 2.0), (False, "python", 10.0)]
)
def test_the_ratio_is_to_the_best_peer_by_median(
    higher_is_better: bool, best: str, ratio: float
) -> None:
    peers = {"python": (1.0, 2.0, 2.0), "uvloop": (), "node": (5.0, 10.0, 10.0)}
    figure = report.Figure("x", "u", 1, (20.0, 20.0, 20.0), peers, higher_is_better)
    assert (figure.best, figure.ratio) == (best, pytest.approx(ratio))
    assert figure.ratio_to("python") == pytest.approx(10.0)
    assert "| x | 1 | 20.0 | 2.00 | – | 10.0 | " + best in report.table([figure])


def test_results_section_is_replaced_and_the_text_around_it_kept(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    report.write_results(path, "first table")
    path.write_text("# Title\n\nanalysis\n\n" + path.read_text().split("\n", 2)[2] + "\nmore\n")
    report.write_results(path, "second table")
    report.write_results(path, "hot spots", section="profile")
    text = path.read_text()
    assert "second table" in text
    assert "first table" not in text
    assert text.startswith("# Title\n\nanalysis\n")
    assert text.index("second table") < text.index("more") < text.index("hot spots")


def test_profile_summary_ranks_self_and_inclusive_time() -> None:
    raw = "main (a.py:1);send (b/c.py:2) 30\nmain (a.py:1);publish (d.py:3) 10\n"
    summary = summarize(raw)
    assert "40 samples" in summary
    assert "| 75.0 | `send (c.py)` |" in summary
    assert "| 100.0 | `main (a.py)` |" in summary


def test_flood_agent_prints_300_byte_lines_that_carry_the_marker() -> None:
    agent = Path(__file__).resolve().parents[1] / "bench" / "agents" / "flood.py"
    out = subprocess.run(
        [sys.executable, str(agent), "3"], capture_output=True, check=True, timeout=20
    ).stdout
    lines = out.splitlines(keepends=True)
    assert [len(line) for line in lines] == [300, 300, 300]
    for i, line in enumerate(lines):
        encoded = json.dumps({"line": line.decode().rstrip("\n")}, separators=(",", ":"))
        tally = Tally(expect=1, latency=True)
        tally.feed(encoded.encode(), now_ns=0)
        assert encoded.encode().count(MARKER) == 1
        assert tally.count == 1
        assert line.startswith(f"flood {i} ".encode())


def check_server(server: Server) -> None:
    burst = scenarios.burst(server, n=3, events=50)
    assert burst.delivered == 150
    assert burst.rate > 0
    assert burst.server_cpu_s >= 0

    paced = scenarios.paced(server, n=2, rate=500, duration_s=0.1)
    assert paced.delivered == paced.expected == 100
    assert 0 < paced.p50_ms <= paced.p99_ms

    idle = scenarios.idle(server, connections=12, warmup=2, settle_s=0)
    assert idle.connections == 12
    assert idle.rss_before > 0
    assert idle.rss_after > 0


@pytest.mark.parametrize("peer", list(PEERS))
def test_each_peer_delivers_every_event_to_every_subscriber(peer: str) -> None:
    """The asyncio, uvloop and Node peers; one that cannot run here is skipped, saying why
    (``make bench-node`` installs the Node peer's packages)."""
    why = PEERS[peer].unavailable()
    if why is not None:
        pytest.skip(f"the {peer} peer cannot run here: {why}")
    with PEERS[peer]() as server:
        check_server(server)


@pytest.mark.e2e
def test_hived_delivers_every_event_to_every_subscriber() -> None:
    """The fan-out scenarios, then on the same daemon the idle one with permessage-deflate
    agreed, the many-agents one (every subscriber on every agent's topic) and the ingest one (a
    burst nobody watches, the RSS through it)."""
    with HivedServer() as server:
        check_server(server)
        # Clients offering permessage-deflate: scenarios.idle fails unless hived agrees on each.
        idle = scenarios.idle(server, connections=4, warmup=1, settle_s=0, deflate=True)
        assert idle.connections == 4
        many = scenarios.many_agents(server, agents=3, rate=200, duration_s=0.2, n=2)
        assert (many.delivered, many.expected, many.complete) == (240, 240, 2)
        assert 0 < many.p50_ms <= many.p99_ms <= many.p999_ms <= many.max_ms
        result = ingest.ingest(server, lines=300, after_s=0.1)
        assert 0 < result.idle_bytes <= result.peak_bytes
        assert result.after_bytes > 0


@pytest.mark.e2e
@needs_redis
def test_a_cluster_delivers_every_event_from_node_b_to_subscribers_on_node_a() -> None:
    with Cluster() as server:
        check_server(server)


def test_a_short_soak_runs_clean() -> None:
    """``make soak`` in 20 s and two daemon lives: every event checked, nothing lost or
    doubled, no descriptor gained. A 10 s life is mostly warm-up, so its RSS bound here is
    looser than the 10 % the ten-minute run holds to."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "bench.soak"),
            *("--duration-s", "20", "--restarts", "1", "--rss-growth", "0.25"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("soak-json: ")]
    figures = json.loads(line.removeprefix("soak-json: "))
    assert figures["problems"] == []
    assert len(figures["lives"]) == 2
    assert figures["events_checked"] > 1000
    assert figures["connections"] > 20
    assert figures["hooks"] > 20
