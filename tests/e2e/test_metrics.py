"""``GET /metrics`` against the real daemon: it parses with prometheus_client's own parser, its
counters match what the test did, and it asks for a token unless open on loopback."""

from __future__ import annotations

import itertools

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from hived.client import Client, ConnectionLost, connect
from tests.e2e.harness import SECRETS, Launcher, RunningDaemon, http_get
from tests.e2e.receivers import http_receiver
from tests.e2e.test_notify import all_done, outbox_when, start_waiting, webhook_rule

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(daemon: RunningDaemon, role: str | None = "viewer") -> Samples:
    auth = "" if role is None else f"Authorization: Bearer {SECRETS[role]}\r\n"
    status, headers, body = await http_get(daemon.port, "/metrics", auth)
    assert status == 200, body
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def flood(client: Client, count: int) -> str:
    """Send ``count`` pings at once; how the connection was lost."""
    lost = "not lost"
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(client.request, "ping")
    except* ConnectionLost as group:
        lost = str(group.exceptions[0])
    return lost


async def test_metrics_parse_and_count_what_happened(hived: Launcher) -> None:
    async with http_receiver() as receiver:
        (hived.tmp_path / "hook.key").write_bytes(b"k")
        port, config = hived.config(
            server="rate_limit_burst = 300\nrate_limit_per_s = 2.0\n", body=webhook_rule(receiver)
        )
        daemon = await hived.start(config, port=port)
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            await start_waiting(client, "asker")
            await outbox_when(daemon, lambda r: all_done(r, 1), "the delivery")
            # One client closed with 4029 (rate limited) and one normally (1000).
            async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as flooder:
                assert "closed with 4029" in await flood(flooder, 500)
            async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False):
                pass
            async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
                with trio.fail_after(10):
                    while True:
                        if len((await admin.request("connections"))["connections"]) == 2:
                            break
                        await trio.sleep(0.05)
                samples = await scrape(daemon)
                status = await admin.request("status")
    assert value(samples, "hived_connections", channel="/v1/ws") == 1
    assert value(samples, "hived_connections", channel="/v1/admin") == 1
    assert value(samples, "hived_connections_closed_total", code="4029") == 1
    assert value(samples, "hived_connections_closed_total", code="1000") >= 1
    assert value(samples, "hived_connections_closed_total", code="4008") == 0
    assert value(samples, "hived_sessions", state="WAITING", template="claude") == 1
    assert value(samples, "hived_notifications_born_total") == 1
    assert value(samples, "hived_notifications_total", rule="hook", outcome="delivered") == 1
    assert value(samples, "hived_notify_messages_total") == 1
    assert value(samples, "hived_notifications_pending") == 0
    published = value(samples, "hived_events_published_total")
    assert 0 < published <= status["hub"]["events_published"]
    assert value(samples, "hived_events_delivered_total") > 0
    assert value(samples, "hived_subscribers") >= 1
    assert value(samples, "hived_store_size_bytes") > 0
    commits = value(samples, "hived_store_commits_total")
    assert commits >= 1
    # The commit-time histogram: one observation per batch committed, in cumulative buckets.
    assert value(samples, "hived_store_commit_seconds_count") == commits
    assert value(samples, "hived_store_commit_seconds_sum") > 0
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (name, labels), count in samples.items()
        if name == "hived_store_commit_seconds_bucket"
    )
    assert [le for le, _ in buckets][:2] == [0.0005, 0.001]
    assert buckets[-1] == (float("inf"), commits)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))
    assert value(samples, "hived_session_cost_usd", template="claude") >= 0


async def test_metrics_need_a_token_unless_open_on_loopback(hived: Launcher) -> None:
    daemon = await hived.start()
    status, headers, _ = await http_get(daemon.port, "/metrics")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="hived"'
    status, _, _ = await http_get(
        daemon.port, "/metrics", f"Authorization: Bearer {SECRETS['agent']}\r\n"
    )
    assert status == 401
    await daemon.kill()
    port, config = hived.config(server="metrics_open_on_loopback = true\n")
    opened = await hived.start(config, port=port)
    samples = await scrape(opened, role=None)
    assert value(samples, "hived_subscribers") == 0
