"""History at scale: search, the usage ledger and the index's cost, on a store of millions.

Usage: ``python -m bench.bench_history [--events N] [--sessions S] [--persist N] [--runs R]
[--json] [--keep DIR]`` (``make bench-history``: 2,000,000 events over 2,000 sessions).

- **build**: ``--events`` events over ``--sessions`` sessions, as agents make them (prompts,
  messages, thinking, tool calls with commands and file paths, tool results, stderr, a state
  change with the running usage at each turn's end), 20 sessions at a time over 30 days, are
  recorded through :meth:`Store.record` with the writer and the index follower running, as in
  the daemon. Timed: until every event is committed, then until the follower has indexed
  them all (the second figure is also what an upgrade of an existing store costs).
- **search**: common one- and two-word queries (and a few with filters), limit 50, each run
  ``--repeat`` times through :meth:`Store.search` (a worker thread on a read connection, as a
  request does); p50, p95 and max in ms. Target: p95 < 50 ms.
- **usage**: the ledger by day (and by template, session, cwd) over the whole store. Target
  < 200 ms.
- **size**: the database file, and the bytes of the search index and the ledger in it
  (SQLite's ``dbstat``).
- **retention**: one retention step (the oldest 1000 events and their index entries, one
  transaction under the writer's lock): how long a batch of new events may wait for it.
- **persist**: bench/bench_store.py's measure (``--persist`` events of realistic text handed to
  :meth:`Store.record` in bursts of 1000, clock stopped when the last is committed), in
  pairs, the follower off then on, ``--runs`` pairs, medians. Target: on within 15 % of off.
  With the follower on, also how long after the last commit it took to index everything.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from hived.core.config import StateConfig
from hived.core.events import Event, Usage, encode_event, session_topic, utc_timestamp
from hived.core.sessions import SessionSummary, State
from hived.store import PRUNE_CHUNK, Store, sql
from hived.store.search import SearchFilters

CONCURRENT: Final = 20
"""Sessions running at once while the store is built."""
DAYS: Final = 30
TURN_EVENTS: Final = 20
"""Events per turn: a turn ends with a state change that announces the session's usage."""
BURST: Final = 1000
LIMIT: Final = 50
START_S: Final = 1_794_000_000.0
"""2026-11-06: the store's first event."""

WORDS: Final = [
    "the",
    "a",
    "to",
    "of",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "this",
    "be",
    "as",
    "are",
    "at",
    "by",
    "not",
    "or",
    "from",
    "we",
    "can",
    "will",
    "you",
    "if",
    "but",
    "all",
    "so",
    "was",
    "have",
    "has",
    "use",
    "new",
    "now",
    "then",
    "when",
    "run",
    "file",
    "test",
    "tests",
    "code",
    "error",
    "fix",
    "function",
    "class",
    "module",
    "import",
    "return",
    "value",
    "type",
    "config",
    "session",
    "agent",
    "build",
    "deploy",
    "check",
    "update",
    "change",
    "add",
    "remove",
    "read",
    "write",
    "path",
    "line",
    "lines",
    "output",
    "input",
    "request",
    "response",
    "server",
    "client",
    "data",
    "table",
    "index",
    "query",
    "search",
    "database",
    "migration",
    "schema",
    "user",
    "token",
    "cache",
    "memory",
    "time",
    "start",
    "stop",
    "retry",
    "timeout",
    "failed",
    "passed",
    "warning",
    "debug",
    "log",
    "logs",
    "event",
    "events",
    "stream",
    "commit",
    "branch",
    "merge",
    "review",
    "refactor",
    "rename",
    "helper",
    "handler",
    "method",
    "field",
    "option",
    "default",
    "argument",
    "command",
    "shell",
    "script",
    "install",
    "package",
    "version",
    "release",
    "docs",
    "readme",
    "api",
    "endpoint",
    "route",
    "json",
    "yaml",
    "toml",
    "parse",
    "format",
    "encode",
    "decode",
    "bytes",
    "string",
    "list",
    "dict",
    "map",
    "set",
    "key",
    "keys",
]
COMMANDS: Final = (
    "pytest -q tests/{m}",
    "git diff --stat",
    "git log --oneline -5",
    "ruff check {m}",
    "make test",
    "npm test -- {m}",
    "alembic upgrade head",
    "grep -rn {w} src/",
    "ls -la src/{m}",
    "cargo build --release",
    "python -m {m}",
    "docker compose up -d {w}",
)
MODULES: Final = (
    "store",
    "server",
    "client",
    "auth",
    "config",
    "hub",
    "session",
    "parser",
    "router",
    "migrations",
    "models",
    "views",
    "utils",
    "cache",
    "search",
    "ledger",
)
TEMPLATES: Final = ("claude", "codex", "gemini", "aider")
ONE_WORD: Final = (
    "migration",
    "error",
    "test",
    "config",
    "timeout",
    "database",
    "pytest",
    "schema",
    "refactor",
    "token",
)
TWO_WORDS: Final = (
    "database migration",
    "test failed",
    "fix error",
    "config file",
    "search index",
    "cache timeout",
    "alembic upgrade",
    "git diff",
    "session token",
    "parse json",
)


class Text:
    """Realistic agent text, made fast: words drawn from a vocabulary with a skew."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        weights = [1 / (rank + 1) ** 0.8 for rank in range(len(WORDS))]
        self.pool = self.rng.choices(WORDS, weights, k=200_000)
        self.at = 0

    def words(self, count: int) -> str:
        at = self.at
        if at + count > len(self.pool):
            at = self.rng.randrange(0, len(self.pool) - count)
        self.at = at + count
        return " ".join(self.pool[at : at + count])

    def path(self) -> str:
        module = self.rng.choice(MODULES)
        return f"src/{self.rng.choice(MODULES)}/{module}_{self.rng.randrange(40)}.py"

    def command(self) -> str:
        template = self.rng.choice(COMMANDS)
        return template.format(m=self.rng.choice(MODULES), w=self.rng.choice(WORDS))


def turn(text: Text) -> list[tuple[str, dict[str, Any]]]:
    """One turn's events (kind, data) but its closing state change."""
    rng = text.rng
    events: list[tuple[str, dict[str, Any]]] = [
        ("input", {"text": text.words(rng.randrange(8, 30))}),
        ("thinking", {"thinking": text.words(rng.randrange(20, 60))}),
        ("message", {"text": text.words(rng.randrange(15, 50))}),
    ]
    while len(events) < TURN_EVENTS - 2:
        roll = rng.random()
        if roll < 0.4:
            tool_id = f"toolu_{rng.randrange(10**9)}"
            if rng.random() < 0.5:
                tool = {"name": "Bash", "input": {"command": text.command()}}
            else:
                tool = {
                    "name": "Edit",
                    "input": {
                        "file_path": text.path(),
                        "old_string": text.words(8),
                        "new_string": text.words(10),
                    },
                }
            events.append(("tool_use", {"id": tool_id, **tool}))
            events.append(
                (
                    "tool_result",
                    {
                        "tool_use_id": tool_id,
                        "content": [{"type": "text", "text": text.words(rng.randrange(10, 80))}],
                        "is_error": rng.random() < 0.1,
                    },
                )
            )
        elif roll < 0.8:
            events.append(("message", {"text": text.words(rng.randrange(10, 60))}))
        else:
            events.append(("stderr", {"line": "warning: " + text.words(rng.randrange(4, 12))}))
    events = events[: TURN_EVENTS - 1]
    events.append(("result", {"subtype": "success", "result": text.words(12), "num_turns": 1}))
    return events


def session_ids(count: int) -> list[str]:
    return [f"01JBENCH{n:018d}" for n in range(count)]


def build_events(
    events: int, sessions: int, seed: int = 7
) -> Iterator[tuple[Event | SessionSummary, str]]:
    """The store's events in the order they are published (and each session's summary when it
    starts and ends, with ``""`` as its frame)."""
    text = Text(seed)
    ids = session_ids(sessions)
    per_session = events // sessions
    turns = max(per_session // TURN_EVENTS, 1)
    span_s = DAYS * 86_400
    step_s = span_s / events
    now = START_S
    seqs: dict[str, int] = {}
    for block in range(0, sessions, CONCURRENT):
        running = []
        for n, sid in enumerate(ids[block : block + CONCURRENT]):
            summary = SessionSummary(
                id=sid,
                name=f"bench-{block + n}",
                agent=TEMPLATES[(block + n) % len(TEMPLATES)],
                state=State.RUNNING,
                started_at=utc_timestamp(now),
                cwd=f"/srv/work/{MODULES[(block + n) % len(MODULES)]}",
            )
            running.append(summary)
            yield summary, ""
        for t in range(turns):
            for index, summary in enumerate(running):
                topic = session_topic(summary.id)
                for kind, data in turn(text):
                    now += step_s
                    seq = seqs[topic] = seqs.get(topic, 0) + 1
                    event = Event(topic, seq, utc_timestamp(now), kind, summary.id, data)
                    yield event, encode_event(event)
                usage = Usage(
                    input_tokens=(t + 1) * 1200 + index,
                    output_tokens=(t + 1) * 450,
                    cache_read_tokens=(t + 1) * 9000,
                    cost_usd=round((t + 1) * 0.0123, 6),
                    turns=t + 1,
                )
                last = t == turns - 1
                running[index] = summary = attrs.evolve(
                    summary,
                    usage=usage,
                    state=State.EXITED if last else State.WAITING,
                    ended_at=utc_timestamp(now) if last else None,
                )
                seq = seqs[topic] = seqs[topic] + 1
                data = {"state": str(summary.state), "summary": summary.to_json()}
                state = Event(topic, seq, utc_timestamp(now), "state", summary.id, data)
                yield state, encode_event(state)
                if last:
                    yield summary, ""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def feed(store: Store, items: Iterator[tuple[Event | SessionSummary, str]]) -> int:
    """Record everything as a busy hub would (bursts, a checkpoint between); events recorded."""
    count = 0
    for item, frame in items:
        if isinstance(item, SessionSummary):
            store.record_session(item)
            continue
        store.record(item, frame)
        count += 1
        if count % BURST == 0:
            await store.wait_writable()
            await trio.lowlevel.checkpoint()
    return count


async def wait_indexed(store: Store) -> None:
    while True:
        index = store.stats().index
        if index.behind == 0 and index.followed_upto >= index.last_id and index.last_id:
            return
        await trio.sleep(0.05)


async def build(folder: Path, events: int, sessions: int) -> dict[str, Any]:
    store = Store.open(StateConfig(dir=str(folder)))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        start = time.perf_counter()
        count = await feed(store, build_events(events, sessions))
        await store.drain()
        committed_s = time.perf_counter() - start
        indexed_at_commit = store.stats().index.followed_upto
        await wait_indexed(store)
        indexed_s = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    store.close()
    return {
        "events": count,
        "sessions": sessions,
        "build_committed_s": committed_s,
        "build_indexed_s": indexed_s,
        "indexed_when_committed": indexed_at_commit,
        "catch_up_per_s": (count - indexed_at_commit) / max(indexed_s - committed_s, 1e-9),
    }


async def timed(repeat: int, fn: Any, *args: Any) -> list[float]:
    took = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn(*args)
        took.append((time.perf_counter() - start) * 1000)
    return took


def figures(took: list[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(took),
        "p95_ms": percentile(took, 0.95),
        "max_ms": max(took),
    }


async def query(store: Store, folder: Path, repeat: int) -> dict[str, Any]:
    """Search, usage and size figures of the built store."""
    result: dict[str, Any] = {}
    for name, queries in (("one_word", ONE_WORD), ("two_words", TWO_WORDS)):
        took: list[float] = []
        hits: list[int] = []
        for q in queries:
            found, _ = await store.search(q, SearchFilters(), LIMIT)
            hits.append(len(found))
            took += await timed(repeat, store.search, q, SearchFilters(), LIMIT)
        result[f"search_{name}"] = figures(took) | {
            "queries": len(queries),
            "full_pages": sum(h == LIMIT for h in hits),
        }
    sid = session_ids(1)[0]
    filtered = {
        "session": SearchFilters(session=sid),
        "kind": SearchFilters(kinds=("tool_use",)),
        "template": SearchFilters(agent="codex"),
        "last_day": SearchFilters(since=utc_timestamp(START_S + (DAYS - 1) * 86_400)),
        "first_day": SearchFilters(until=utc_timestamp(START_S + 86_400)),
    }
    for name, filters in filtered.items():
        took = []
        for q in ONE_WORD[:5]:
            took += await timed(max(repeat // 2, 1), store.search, q, filters, LIMIT)
        result[f"search_filter_{name}"] = figures(took)
    for by in ("day", "template", "session", "cwd"):
        took = await timed(repeat, store.usage, by, None, None)
        rows = len((await store.usage(by, None, None))["rows"])
        result[f"usage_{by}"] = figures(took) | {"rows": rows}
    conn = store._writer
    sizes = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    total = sum(sizes.values())
    fts = sum(size for name, size in sizes.items() if name.startswith("events_fts"))
    ledger = sum(size for name, size in sizes.items() if name.startswith("usage_"))
    events = sum(
        size
        for name, size in sizes.items()
        if name.startswith("events") and not name.startswith("events_fts")
    )
    result["size"] = {
        "file_bytes": (folder / "hived.db").stat().st_size,
        "pages_bytes": total,
        "events_bytes": events,
        "index_bytes": fts,
        "ledger_bytes": ledger,
        "index_overhead": fts / max(total - fts - ledger, 1),
    }
    return result


def retention_step(store: Store) -> dict[str, float]:
    """One retention step (the oldest PRUNE_CHUNK events, their index entries with them), as
    retention runs it under the writer's lock: how long a batch of new events may wait."""
    took = []
    for _ in range(3):
        start = time.perf_counter()
        sql.prune_events(store._writer, None, PRUNE_CHUNK)
        took.append((time.perf_counter() - start) * 1000)
    return {"events": PRUNE_CHUNK, "median_ms": statistics.median(took), "max_ms": max(took)}


async def persist_run(count: int, index_on: bool) -> dict[str, float]:
    """bench_store's persist measure with realistic events; the follower off or on."""
    items = [
        (e, f)
        for e, f in build_events(count, max(count // 1000, 8), seed=11)
        if isinstance(e, Event)
    ]
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(StateConfig(dir=folder))
        if not index_on:
            store._indexer.serve = trio.sleep_forever  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            await nursery.start(store.serve)
            start = time.perf_counter()
            for at in range(0, len(items), BURST):
                for event, frame in items[at : at + BURST]:
                    store.record(event, frame)
                await trio.lowlevel.checkpoint()
            await store.drain()
            elapsed = time.perf_counter() - start
            lag = 0.0
            if index_on:
                await wait_indexed(store)
                lag = time.perf_counter() - start - elapsed
            nursery.cancel_scope.cancel()
    return {"persisted_per_s": len(items) / elapsed, "index_lag_s": lag}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    off: list[float] = []
    on: list[float] = []
    lags: list[float] = []
    for _ in range(args.runs):
        off.append((await persist_run(args.persist, False))["persisted_per_s"])
        run = await persist_run(args.persist, True)
        on.append(run["persisted_per_s"])
        lags.append(run["index_lag_s"])
    if args.runs:
        result["persist"] = {
            "events": args.persist,
            "off_per_s": statistics.median(off),
            "on_per_s": statistics.median(on),
            "change": statistics.median(on) / statistics.median(off) - 1,
            "off_runs": off,
            "on_runs": on,
            "index_lag_s": statistics.median(lags),
        }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        if not (folder / "hived.db").exists():
            result["build"] = await build(folder, args.events, args.sessions)
        store = Store.open(StateConfig(dir=str(folder)))
        try:
            result |= await query(store, folder, args.repeat)
            result["retention_step"] = retention_step(store)
        finally:
            store.close()
    return result


def report(result: dict[str, Any]) -> str:
    lines = []
    build = result.get("build")
    if build:
        lines.append(
            f"build: {build['events']:,} events over {build['sessions']:,} sessions: committed in "
            f"{build['build_committed_s']:.0f} s, indexed in {build['build_indexed_s']:.0f} s "
            f"(catch-up {build['catch_up_per_s']:,.0f} events/s)"
        )
    for key, value in result.items():
        if key.startswith(("search_", "usage_")):
            extra = f"  rows {value['rows']}" if "rows" in value else ""
            lines.append(
                f"{key:<28} p50 {value['p50_ms']:7.1f} ms  p95 {value['p95_ms']:7.1f} ms  "
                f"max {value['max_ms']:7.1f} ms{extra}"
            )
    size = result["size"]
    lines.append(
        f"size: file {size['file_bytes'] / 2**20:,.0f} MiB; "
        f"events {size['events_bytes'] / 2**20:,.0f} MiB, "
        f"index {size['index_bytes'] / 2**20:,.0f} MiB (+{size['index_overhead']:.0%}), "
        f"ledger {size['ledger_bytes'] / 2**20:,.1f} MiB"
    )
    step = result["retention_step"]
    lines.append(
        f"retention step of {step['events']} events (with their index entries): "
        f"median {step['median_ms']:.0f} ms, max {step['max_ms']:.0f} ms"
    )
    persist = result.get("persist")
    if persist is None:
        return "\n".join(lines)
    lines.append(
        f"persist {persist['events']:,} events: follower off {persist['off_per_s']:,.0f}/s, on "
        f"{persist['on_per_s']:,.0f}/s ({persist['change']:+.1%}); indexed "
        f"{persist['index_lag_s']:.1f} s after the last commit"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=2_000_000, help="events in the store")
    parser.add_argument("--sessions", type=int, default=2_000, help="sessions in the store")
    parser.add_argument("--persist", type=int, default=200_000, help="events per persist run")
    parser.add_argument("--runs", type=int, default=5, help="persist pairs (median)")
    parser.add_argument("--repeat", type=int, default=10, help="runs of each query")
    parser.add_argument("--keep", metavar="DIR", help="build the store in DIR (reused if there)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = trio.run(main_async, args)
    print(json.dumps(result) if args.json else report(result))


if __name__ == "__main__":
    main()
