"""``GET /metrics``: the daemon's figures in the Prometheus text format (DESIGN §12).

How it works: one ``prometheus_client`` registry with one collector of hived's own, which reads
the figures the services already keep (hub, listener, supervisor, store, notifier) at each
scrape; nothing is counted twice and nothing on the hot paths changes (the store's writer
observes its commit-time histogram once per batch, not per event). Counters that survive
only this run of the daemon say so in their help. docs/metrics.md lists every metric.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Final

import attrs
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hived.agents.supervisor import Supervisor
from hived.core.protocol import CloseCode
from hived.hub import Hub
from hived.notify.service import NotifyService
from hived.server.listener import Server
from hived.store import Store

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
CHANNELS: Final = ("/v1/ws", "/v1/admin")
TOKEN_KINDS: Final = ("input", "output", "cache_read", "cache_write", "reasoning")


@attrs.frozen
class Sources:
    """What the collector reads."""

    hub: Hub
    server: Server
    supervisor: Supervisor
    store: Store
    notify: NotifyService


class HivedCollector(Collector):
    """Reads every figure at scrape time (see the module docstring)."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        src = self._sources
        yield from self._connections(src.server)
        hub = src.hub.stats()
        yield _gauge("hived_subscribers", "Subscribers the hub feeds now.", hub.subscribers)
        yield _counter(
            "hived_events_published", "Events published by the hub.", hub.events_published
        )
        yield _counter(
            "hived_events_delivered",
            "Event and reply messages sent to WebSocket clients.",
            src.server.messages_out_total(),
        )
        yield from self._sessions(src.supervisor)
        yield from self._store(src.store)
        yield from self._notifications(src.notify)

    def _connections(self, server: Server) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "hived_connections", "Open WebSocket connections.", labels=["channel"]
        )
        by_channel = Counter(c.channel for c in server.connections())
        for channel in CHANNELS:
            connections.add_metric([channel], by_channel.get(channel, 0))
        yield connections
        closes = CounterMetricFamily(
            "hived_connections_closed",
            "WebSocket connections ended, by close code (4008 too slow, 4029 rate limited).",
            labels=["code"],
        )
        ended = server.closes_by_code()
        for code in sorted({int(CloseCode.TOO_SLOW), int(CloseCode.RATE_LIMITED), *ended}):
            closes.add_metric([str(code)], ended.get(code, 0))
        yield closes

    def _sessions(self, supervisor: Supervisor) -> Iterator[Metric]:
        summaries = supervisor.summaries()
        sessions = GaugeMetricFamily(
            "hived_sessions",
            "Sessions held by this run, by state and template.",
            labels=["state", "template"],
        )
        for (state, agent), count in sorted(
            Counter((str(s.state), s.agent) for s in summaries).items()
        ):
            sessions.add_metric([state, agent], count)
        yield sessions
        tokens = GaugeMetricFamily(
            "hived_session_tokens",
            "Tokens used by the sessions this run holds, by template and kind.",
            labels=["template", "kind"],
        )
        cost = GaugeMetricFamily(
            "hived_session_cost_usd",
            "Cost in USD reported by the agents of the sessions this run holds, by template.",
            labels=["template"],
        )
        sums: dict[str, dict[str, float]] = {}
        for summary in summaries:
            usage = summary.usage
            row = sums.setdefault(summary.agent, dict.fromkeys((*TOKEN_KINDS, "cost"), 0.0))
            row["input"] += usage.input_tokens
            row["output"] += usage.output_tokens
            row["cache_read"] += usage.cache_read_tokens
            row["cache_write"] += usage.cache_write_tokens
            row["reasoning"] += usage.reasoning_tokens
            row["cost"] += usage.cost_usd
        for agent, row in sorted(sums.items()):
            for kind in TOKEN_KINDS:
                tokens.add_metric([agent, kind], row[kind])
            cost.add_metric([agent], row["cost"])
        yield tokens
        yield cost

    def _store(self, store: Store) -> Iterator[Metric]:
        stats = store.stats()
        yield _gauge("hived_store_size_bytes", "The database file and its WAL.", stats.size_bytes)
        yield _gauge("hived_store_events", "Events kept in the store.", stats.events)
        yield _gauge("hived_store_pending_events", "Events not yet committed.", stats.pending)
        yield _gauge(
            "hived_store_write_lag_seconds",
            "Age of the oldest item not yet committed.",
            stats.write_lag_ms / 1000,
        )
        yield _counter("hived_store_commits", "Transactions committed.", stats.commits)
        yield from store.commit_seconds.collect()
        yield _gauge(
            "hived_store_error", "1 while writes to the disk fail.", int(bool(stats.error))
        )

    def _notifications(self, notify: NotifyService) -> Iterator[Metric]:
        stats = notify.stats()
        yield _counter("hived_notifications_born", "Notifications born.", stats.born)
        yield _gauge("hived_notifications_pending", "Notifications not yet sent.", stats.pending)
        outcomes = CounterMetricFamily(
            "hived_notifications",
            "Notifications by rule and outcome (delivered, dropped, failed).",
            labels=["rule", "outcome"],
        )
        for (rule, outcome), count in sorted(notify.outcomes.items()):
            outcomes.add_metric([rule, outcome], count)
        yield outcomes
        yield _counter("hived_notify_messages", "Messages sent or tried.", stats.messages)
        yield _counter("hived_notify_send_errors", "Messages that failed.", stats.send_errors)


def _gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_, value=value)


def _counter(name: str, help_: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_ + " Since the daemon started.", value=value)


def make_metrics(sources: Sources) -> Callable[[], bytes]:
    """The body of ``GET /metrics``, made at each call."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HivedCollector(sources))
    return lambda: generate_latest(registry)
