#!/usr/bin/env python3
"""A fake Codex CLI for hived's demo and tests: prints what ``codex exec --json PROMPT`` prints.

The prompt is the last argument; every other argument (``exec``, ``--json``, ``-m MODEL``, …) is
ignored. One turn: ``thread.started``, ``turn.started``, a ``command_execution`` item (started,
then completed with its output and exit code), an ``agent_message`` item, and ``turn.completed``
with usage (``INPUT_TOKENS``, ``CACHED_INPUT_TOKENS``, ``OUTPUT_TOKENS``); then it exits 0.
As the real ``codex exec`` does, it first reads stdin to its end when stdin is not a terminal
(the real one appends it to the prompt): with a pipe left open it never starts the turn.
``FAKE_CODEX_DELAY_MS`` (default 0) pauses between lines. Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from typing import Any

INPUT_TOKENS = 2400
CACHED_INPUT_TOKENS = 2048
OUTPUT_TOKENS = 61
COMMAND = "bash -lc ls"
COMMAND_OUTPUT = "README.md\n"


def main() -> None:
    signal.signal(signal.SIGTERM, lambda _signum, _frame: os._exit(0))
    prompt = sys.argv[-1] if len(sys.argv) > 1 else ""
    if not sys.stdin.isatty():
        piped = sys.stdin.read()
        if piped:
            prompt = f"{prompt}\n<stdin>\n{piped}</stdin>"
    delay_s = int(os.environ.get("FAKE_CODEX_DELAY_MS", "0") or 0) / 1000

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        time.sleep(delay_s)

    command = {"id": "item_0", "type": "command_execution", "command": COMMAND}
    emit({"type": "thread.started", "thread_id": str(uuid.uuid4())})
    emit({"type": "turn.started"})
    emit(
        {
            "type": "item.started",
            "item": {
                **command,
                "aggregated_output": "",
                "exit_code": None,
                "status": "in_progress",
            },
        }
    )
    emit(
        {
            "type": "item.completed",
            "item": {
                **command,
                "aggregated_output": COMMAND_OUTPUT,
                "exit_code": 0,
                "status": "completed",
            },
        }
    )
    answer = f"You asked: {prompt!r}. There is a README.md."
    emit(
        {
            "type": "item.completed",
            "item": {"id": "item_1", "type": "agent_message", "text": answer},
        }
    )
    emit(
        {
            "type": "turn.completed",
            "usage": {
                "input_tokens": INPUT_TOKENS,
                "cached_input_tokens": CACHED_INPUT_TOKENS,
                "output_tokens": OUTPUT_TOKENS,
            },
        }
    )


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        os._exit(0)
