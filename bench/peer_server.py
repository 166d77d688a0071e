"""The benchmark's peer: an asyncio server on the ``websockets`` library, using ``broadcast()``.

    python -m bench.peer_server [--loop asyncio|uvloop] [--port P] -- AGENT_COMMAND...

It is what a competent asyncio developer would write for the same job as hived's hot path, and
nothing more: run an agent, turn each stdout line into an event of the same JSON shape as hived's
(``type, topic, seq, ts, kind, session, data``; encoded once with orjson), and
``websockets.broadcast()`` it to every connection that subscribed. It answers just enough of
hived's protocol for the benchmark to drive both servers with the same code: ``subscribe``
(any topic: every subscriber gets every event), ``session.start {args}`` (runs AGENT_COMMAND
with ``args`` appended, answers ``{session, state}``) and ``session.input {session, text}``
(one line on the agent's stdin). No auth, no store, no replay, no bounds: the peer is a
measure of the transport, not a product.

``--loop uvloop`` runs it on uvloop's event loop (libuv) instead of asyncio's own.

Prints ``{"listening": PORT}`` on stdout once it accepts connections; stops on SIGTERM/SIGINT,
killing its agents.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import sys
import time
from typing import Any, Final

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve

READ_BYTES: Final = 64 * 1024


def utc_timestamp() -> str:
    """ISO 8601 UTC with milliseconds, as hived stamps events."""
    now = time.time()
    whole = int(now)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        + f".{int((now - whole) * 1000):03d}Z"
    )


class Peer:
    """The connections that subscribed, and the agents started."""

    def __init__(self, agent_command: list[str]) -> None:
        self.agent_command = agent_command
        self.subscribers: set[ServerConnection] = set()
        self.agents: dict[str, asyncio.subprocess.Process] = {}
        self.pumps: set[asyncio.Task[None]] = set()
        self.ids = itertools.count(1)

    async def handle(self, ws: ServerConnection) -> None:
        try:
            async for message in ws:
                request = orjson.loads(message)
                reply = await self.answer(ws, request)
                await ws.send(orjson.dumps(reply), text=True)
        finally:
            self.subscribers.discard(ws)

    async def answer(self, ws: ServerConnection, request: dict[str, Any]) -> dict[str, Any]:
        kind, rid = request.get("type"), request.get("id")
        if kind == "subscribe":
            self.subscribers.add(ws)
            return {"type": "result", "id": rid, "result": {"topic": request.get("topic")}}
        if kind == "session.start":
            session = await self.start(list(request.get("args", [])))
            return {"type": "result", "id": rid, "result": {"session": session, "state": "RUNNING"}}
        if kind == "session.input":
            agent = self.agents.get(str(request.get("session")))
            if agent is None or agent.stdin is None:
                return {"type": "error", "id": rid, "code": "not_found", "message": "no session"}
            agent.stdin.write(str(request.get("text", "")).encode() + b"\n")
            await agent.stdin.drain()
            return {"type": "result", "id": rid, "result": {"session": request.get("session")}}
        return {"type": "error", "id": rid, "code": "unknown_type", "message": str(kind)}

    async def start(self, args: list[str]) -> str:
        session = f"peer{next(self.ids):06d}"
        proc = await asyncio.create_subprocess_exec(
            *self.agent_command,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.agents[session] = proc
        task = asyncio.create_task(self.pump(session, proc))
        self.pumps.add(task)
        task.add_done_callback(self.pumps.discard)
        return session

    async def pump(self, session: str, proc: asyncio.subprocess.Process) -> None:
        """Agent stdout → one event per line → broadcast to every subscriber."""
        assert proc.stdout is not None
        topic = f"session/{session}"
        seq = 0
        partial = b""
        while chunk := await proc.stdout.read(READ_BYTES):
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for line in lines:
                seq += 1
                event = {
                    "type": "event",
                    "topic": topic,
                    "seq": seq,
                    "ts": utc_timestamp(),
                    "kind": "text",
                    "session": session,
                    "data": {"line": line.decode("utf-8", "replace")},
                }
                broadcast(self.subscribers, orjson.dumps(event), text=True)
        await proc.wait()
        del self.agents[session]

    def kill_agents(self) -> None:
        for proc in self.agents.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


async def main_async(port: int, agent_command: list[str]) -> None:
    peer = Peer(agent_command)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with serve(
            peer.handle, "127.0.0.1", port, ping_interval=None, compression=None, max_size=None
        ) as server:
            bound = next(iter(server.sockets)).getsockname()[1]
            sys.stdout.write(json.dumps({"listening": bound}) + "\n")
            sys.stdout.flush()
            await stop.wait()
    finally:
        peer.kill_agents()


def main() -> None:
    parser = argparse.ArgumentParser(description="asyncio + websockets.broadcast() fan-out peer")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("agent_command", nargs="+", help="the agent's argv (after --)")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop  # only here: the asyncio peer runs without it

        uvloop.run(main_async(args.port, args.agent_command))
    else:
        asyncio.run(main_async(args.port, args.agent_command))


if __name__ == "__main__":
    main()
