"""Replay speed: events/s delivered to a client subscribing with ``since=0`` to a 100k topic.

    python -m bench.bench_replay [--events N] [--runs R]

The real daemon (as the fan-out benchmark starts it) runs the flooding agent for N lines, so its
session topic holds N text events plus the session's state events, all in the SQLite store.
Then a fresh raw WebSocket client (``websockets``, in this process) subscribes with ``since=0``
and counts events until it has every one; the figure is events ÷ (last event − subscribe
sent). The ring in front of the store holds only the newest events, so this measures the store
read path, the hub's replay and the connection writer together. Prints one line per run and the
median, and writes the ``replay`` section of bench/RESULTS.md with ``--write``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

from bench.report import write_results
from bench.servers import TOKEN, HivedServer

RESULTS = Path(__file__).with_name("RESULTS.md")
DEADLINE_S = 120.0


async def _last_seq(url: str, topic: str) -> int:
    async with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        await ws.recv()  # welcome
        await ws.send(orjson.dumps({"type": "subscribe", "id": 1, "topic": topic}).decode())
        while True:
            for message in _messages(await ws.recv()):
                if message.get("type") == "result":
                    return int(message["result"]["last_seq"])


def _messages(frame: str | bytes) -> list[dict[str, Any]]:
    decoded = orjson.loads(frame)
    return decoded if isinstance(decoded, list) else [decoded]


async def _replay(url: str, topic: str, total: int) -> float:
    async with connect(
        url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, max_size=None
    ) as ws:
        await ws.recv()  # welcome
        started = time.perf_counter()
        await ws.send(
            orjson.dumps({"type": "subscribe", "id": 1, "topic": topic, "since": 0}).decode()
        )
        received = 0
        while received < total:
            for message in _messages(await asyncio.wait_for(ws.recv(), DEADLINE_S)):
                received += message.get("type") == "event"
        return total / (time.perf_counter() - started)


def measure(events: int, runs: int) -> list[float]:
    server = HivedServer()
    server.start()
    try:
        session = server.start_session([str(events), "--wait"])
        server.send_input(session, "go")
        topic = f"session/{session}"
        url = f"ws://127.0.0.1:{server.port}/v1/ws"
        deadline = time.monotonic() + DEADLINE_S
        last = 0
        while last < events:  # the agent's lines, all published (and queued for the store)
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {last} of {events} events were published")
            last = asyncio.run(_last_seq(url, topic))
            time.sleep(0.2)
        return [asyncio.run(_replay(url, topic, last)) for _ in range(runs)]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    rates = measure(args.events, args.runs)
    for rate in rates:
        print(f"replay since=0 of {args.events} events: {rate:,.0f} events/s")
    median = statistics.median(rates)
    print(f"replay_events_per_s={median:.0f}")
    if args.write:
        write_results(
            RESULTS,
            f"### Replay\n\nA client subscribing with `since=0` to a {args.events:,}-event session "
            f"topic (store → hub → one connection), median of {len(rates)}: "
            f"**{median:,.0f} events/s** (runs: {', '.join(f'{r:,.0f}' for r in rates)}).\n",
            section="replay",
        )


if __name__ == "__main__":
    main()
