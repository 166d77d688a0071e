"""Bytes on the wire per encoding, and what compression costs an idle connection (issue 18, part 3).

Two measures:

1. **Bytes and speed per event**, on the real agent transcripts in tests/fixtures (Claude Code's
   stream-json and Codex's JSONL, recorded from the real programs): each line becomes the event
   message hived publishes for it (``{"type": "event", ..., "data": <the agent's object>}``, made
   by :func:`hived.core.events.encode_event`), and the frame each encoding would send is made by
   the server's own code (:func:`hived.server.frames.message_frame`): JSON, JSON with
   permessage-deflate, MessagePack, MessagePack with deflate. Bytes per event include the frame
   header; events/s is how many such frames one core makes (the work is done once per event,
   whatever the number of subscribers).
2. **Idle memory per connection**, compression on and off: the real daemon (``hived run``),
   ``CONNECTIONS`` clients of the ``websockets`` library offering deflate and MessagePack, each
   sending one compressible request (so that the server inflates once) and then idle; the
   daemon's RSS before and after, per connection.

Run: ``make bench-wire`` (``python -m bench.wire_bytes``). Loopback only; every loop is bounded.
"""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path
from typing import Final

import orjson
import trio
from websockets.trio.client import connect
from websockets.typing import Subprotocol

from bench.servers import TOKEN, HivedServer, process_rss_bytes
from hived.core.events import Event, encode_event
from hived.server.frames import message_frame

REPO: Final = Path(__file__).resolve().parents[1]
TRANSCRIPTS: Final = sorted(
    [
        *(REPO / "tests/fixtures/claude").glob("*.jsonl"),
        *(REPO / "tests/fixtures/codex").glob("*.jsonl"),
    ]
)
ENCODINGS: Final = {
    "json": (False, 0),
    "json+deflate": (False, 15),
    "msgpack": (True, 0),
    "msgpack+deflate": (True, 15),
}
MIN_DEFLATE_BYTES: Final = 256
"""``server.compression_min_bytes``' default."""
ROUNDS: Final = 5
CONNECTIONS: Final = 500
SETTLE_S: Final = 1.0


def transcript_events() -> list[str]:
    """The event text of every line of the transcripts, as hived publishes it."""
    texts = []
    seq = 0
    for path in TRANSCRIPTS:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            seq += 1
            event = Event(
                topic="session/01JDX4V9N2ABCDEFGHJKMNPQRS",
                seq=seq,
                ts="2026-12-05T07:00:00.123Z",
                kind=str(data.get("type", "agent_event")),
                session="01JDX4V9N2ABCDEFGHJKMNPQRS",
                data=data,
            )
            texts.append(encode_event(event))
    return texts


def bytes_and_speed(texts: list[str]) -> None:
    print(f"transcripts: {len(TRANSCRIPTS)} files, {len(texts)} events")
    print(f"{'encoding':<16} {'bytes/event':>12} {'vs json':>8} {'events/s':>10}")
    json_bytes = 0.0
    for name, (binary, bits) in ENCODINGS.items():
        frames = [message_frame(t, binary, bits, MIN_DEFLATE_BYTES) for t in texts]
        per_event = sum(map(len, frames)) / len(frames)
        if name == "json":
            json_bytes = per_event
        rates = []
        for _ in range(ROUNDS):
            # Fresh str objects: the caches must not answer for the encoders.
            fresh = [t.encode().decode() for t in texts]
            started = time.perf_counter()
            for text in fresh:
                message_frame(text, binary, bits, MIN_DEFLATE_BYTES)
            rates.append(len(fresh) / (time.perf_counter() - started))
        print(
            f"{name:<16} {per_event:>12.0f} {per_event / json_bytes:>7.2f}x "
            f"{statistics.median(rates):>10.0f}"
        )


async def idle_connections(pid: int, url: str) -> float:
    """RSS per connection of ``CONNECTIONS`` idle clients, in KiB."""
    before = process_rss_bytes(pid)
    request = orjson.dumps({"type": "ping", "id": 1, "pad": "idle client " * 100}).decode()
    async with trio.open_nursery() as nursery:
        opened = trio.Semaphore(0)
        done = trio.Event()

        async def client() -> None:
            async with connect(
                url,
                additional_headers={"Authorization": f"Bearer {TOKEN}"},
                subprotocols=[Subprotocol("hived.v1.json")],
                compression="deflate",
                ping_interval=None,
                proxy=None,
            ) as ws:
                await ws.recv()  # welcome
                await ws.send(request)
                await ws.recv()  # its result
                opened.release()
                await done.wait()

        for _ in range(CONNECTIONS):
            nursery.start_soon(client)
        with trio.fail_after(120):
            for _ in range(CONNECTIONS):
                await opened.acquire()
        await trio.sleep(SETTLE_S)
        after = process_rss_bytes(pid)
        done.set()
    return (after - before) / CONNECTIONS / 1024


class _Hived(HivedServer):
    def __init__(self, compression: str) -> None:
        super().__init__()
        self.compression = compression

    def config_text(self) -> str:
        return (
            super()
            .config_text()
            .replace("[server]\n", f'[server]\ncompression = "{self.compression}"\n', 1)
        )


def idle_memory() -> None:
    print(f"idle RSS per connection ({CONNECTIONS} clients offering deflate, one request each)")
    for compression in ("off", "deflate"):
        with _Hived(compression) as server:
            assert server.proc is not None
            url = f"ws://127.0.0.1:{server.port}/v1/ws"
            kib = trio.run(idle_connections, server.proc.pid, url)
        print(f"compression = {compression!r:<10} {kib:6.1f} KiB/connection")


def main() -> None:
    gc.collect()
    bytes_and_speed(transcript_events())
    idle_memory()


if __name__ == "__main__":
    main()
