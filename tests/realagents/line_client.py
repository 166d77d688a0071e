"""A raw JSON-RPC client over an agent's stdio that records every line, for the recorders.

The recorders (record_acp.py, record_codex.py) speak each agent's protocol by hand, with no hived
code, so that a transcript is evidence about the agent and not about the driver it tests. This
is the part they share: start the process in its own group, read its stdout (each line a JSON
object, kept in the transcript as ``{"dir": "out", "line": ...}``) and stderr in threads, write
requests (kept as ``{"dir": "in", ...}``), wait for a matching line under a deadline, and end
the whole process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

Transcript = list[dict[str, Any]]


class LineClient:
    """One agent process spoken to in JSON-RPC lines; ``name`` says who exited in errors."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        transcript: Transcript,
        *,
        name: str,
        step_timeout_s: float,
        refuse_unmatched: bool,
    ) -> None:
        self.transcript = transcript
        self.name = name
        self.step_timeout_s = step_timeout_s
        self.refuse_unmatched = refuse_unmatched
        """Answer the agent's requests that a wait passes over with -32601."""
        self.proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: list[str] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            text = raw.decode(errors="replace").rstrip("\n")
            try:
                obj = json.loads(text)
            except ValueError:
                obj = {"_unparsed": text}
            self.transcript.append({"dir": "out", "line": obj})
            self.lines.put(obj)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace"))

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.transcript.append({"dir": "in", "line": obj})
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> int:
        self._next_id += 1
        self.send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        return self._next_id

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)

    def reply(self, request_id: Any, result: dict[str, Any]) -> None:
        self.send({"jsonrpc": "2.0", "id": request_id, "result": result})

    def wait(
        self, match: Callable[[dict[str, Any]], bool], timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The next line ``match`` accepts; the lines before it are only recorded (and the
        agent's requests among them refused, where :attr:`refuse_unmatched`)."""
        deadline = time.monotonic() + (timeout_s or self.step_timeout_s)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching line; stderr: " + "".join(self.stderr[-20:]))
            try:
                obj = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if obj is None:
                raise EOFError(f"{self.name} exited; stderr: " + "".join(self.stderr[-20:]))
            if match(obj):
                return obj
            if self.refuse_unmatched and "method" in obj and "id" in obj:
                error = {"code": -32601, "message": "not handled by the recorder"}
                self.send({"jsonrpc": "2.0", "id": obj["id"], "error": error})

    def response(self, request_id: int) -> dict[str, Any]:
        return self.wait(lambda o: o.get("id") == request_id and "method" not in o)

    def close(self) -> None:
        """End the process group: close stdin, then SIGTERM, then SIGKILL, each with a deadline."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue
        # Agents leave children (Claude Code under its adapter, Codex's shells): end them too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
