"""The event store on its own: events persisted per second, and replay speed.

Usage: ``python -m bench.bench_store [--events N] [--replay N] [--runs R] [--json]``.

- **persist**: ``--events`` pre-encoded events of about 300 bytes each (frame text), spread over
  8 session topics, are handed to :meth:`Store.record` in bursts of 1000 (a checkpoint between
  bursts, as a busy hub would), with the writer running at the default ``sync_interval_ms``.
  The clock stops when the last one is committed: events/s is what reached the disk, durable.
  ``record`` alone is also timed (the cost the hub pays per event).
- **replay**: one topic of ``--replay`` committed events is read from ``since=0`` in pages of
  1024 (as the hub's replay asks) and in one read; events/s delivered as frame texts. The
  cost of rebuilding frames from columns is shown apart (the rest is SQLite's fetch).

Each figure is the median of ``--runs`` runs, each in a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any, Final

import trio

from hived.core.config import StateConfig
from hived.core.events import Event, encode_event, utc_timestamp
from hived.store import Store, sql

EVENT_BYTES: Final = 300
TOPICS: Final = 8
BURST: Final = 1000
PAGE: Final = 1024


def make_events(count: int, topics: int) -> list[tuple[Event, str]]:
    """``count`` events of about EVENT_BYTES of frame text, round-robin over ``topics``."""
    sessions = [f"01JBENCH{n:018d}" for n in range(topics)]
    probe = Event(f"session/{sessions[0]}", count, utc_timestamp(), "text", sessions[0], {})
    bare = len(encode_event(probe._replace(data={"line": count, "t": ""})))
    filler = "x" * max(0, EVENT_BYTES - bare)
    out = []
    for i in range(count):
        session = sessions[i % topics]
        seq = i // topics + 1
        event = Event(
            f"session/{session}", seq, utc_timestamp(), "text", session, {"line": i, "t": filler}
        )
        out.append((event, encode_event(event)))
    return out


async def persist_run(count: int) -> dict[str, float]:
    events = make_events(count, TOPICS)
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(StateConfig(dir=folder))
        async with trio.open_nursery() as nursery:
            await nursery.start(store.serve)
            record_s = 0.0
            start = time.perf_counter()
            for at in range(0, count, BURST):
                t0 = time.perf_counter()
                for event, frame in events[at : at + BURST]:
                    store.record(event, frame)
                record_s += time.perf_counter() - t0
                await trio.lowlevel.checkpoint()
            await store.drain()
            elapsed = time.perf_counter() - start
            stats = store.stats()
            nursery.cancel_scope.cancel()
    return {
        "persisted_per_s": count / elapsed,
        "record_us": record_s / count * 1e6,
        "commits": stats.commits,
        "bytes_per_event": stats.size_bytes / count,
        "frame_bytes": sum(len(f) for _, f in events) / count,
    }


async def replay_run(count: int) -> dict[str, float]:
    events = make_events(count, 1)
    topic = events[0][0].topic
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(StateConfig(dir=folder))
        for event, frame in events:
            store.record(event, frame)
        await store.drain()
        start = time.perf_counter()
        after = 0
        while after < count:
            frames = await store.read(topic, after, count, PAGE)
            after += len(frames)
        paged_s = time.perf_counter() - start
        start = time.perf_counter()
        frames = await store.read(topic, 0, count, count)
        whole_s = time.perf_counter() - start
        assert len(frames) == count
        rows = store._writer.execute(
            "SELECT seq, ts, kind, session, data FROM events WHERE topic = ? ORDER BY seq",
            (topic,),
        ).fetchall()
        start = time.perf_counter()
        sql.build_frames(topic, rows)
        rebuild_s = time.perf_counter() - start
        store.close()
    return {
        "replay_paged_per_s": count / paged_s,
        "replay_one_read_per_s": count / whole_s,
        "rebuild_us": rebuild_s / count * 1e6,
    }


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    persist = median([await persist_run(args.events) for _ in range(args.runs)])
    replay = median([await replay_run(args.replay) for _ in range(args.runs)])
    return {"events": args.events, "replay_events": args.replay, **persist, **replay}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000, help="events to persist per run")
    parser.add_argument("--replay", type=int, default=100_000, help="events in the replay topic")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = trio.run(main_async, args)
    if args.json:
        print(json.dumps(result))
        return
    print(f"store: {args.events} events of {result['frame_bytes']:.0f} bytes, {args.runs} runs")
    print(f"  persisted        {result['persisted_per_s']:>10,.0f} events/s (durable, committed)")
    print(f"  record()         {result['record_us']:>10.2f} µs/event (the hub's cost, with GC)")
    print(f"  commits          {result['commits']:>10.0f} per run")
    print(f"  on disk          {result['bytes_per_event']:>10.0f} bytes/event (db + WAL)")
    print(f"replay: a topic of {args.replay} events from since=0")
    print(f"  pages of {PAGE}    {result['replay_paged_per_s']:>10,.0f} events/s")
    print(f"  one read         {result['replay_one_read_per_s']:>10,.0f} events/s")
    print(f"  frame rebuild    {result['rebuild_us']:>10.2f} µs/event (of the above)")


if __name__ == "__main__":
    main()
