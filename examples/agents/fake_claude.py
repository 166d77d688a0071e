#!/usr/bin/env python3
"""A fake Claude Code for hived's demo and tests: speaks stream-json on stdin and stdout.

Run it as Claude would be run under hived::

    python3 fake_claude.py -p --output-format stream-json --input-format stream-json --verbose \\
        --permission-prompt-tool stdio [--session-id ID]

Each user message read on stdin is one turn, printed one JSON object per line with the field
names real Claude Code uses (see docs/drivers.md): ``system``/``init``, an assistant text, an
assistant ``tool_use`` (Bash), the user ``tool_result``, a closing assistant text, and a
``result``. Every turn uses the same: ``TURN_INPUT_TOKENS`` in, ``TURN_OUTPUT_TOKENS`` out,
``TURN_COST_USD``, ``TURN_NUM_TURNS`` turns. As the real CLI does, a result's ``usage`` is the
turn's and its ``total_cost_usd`` is the process's running total.

A prompt containing the word "permission" asks before running the tool: a ``control_request``
``can_use_tool`` is printed and the turn waits for the matching ``control_response`` (allow: the
tool runs; deny: a failed ``tool_result`` and an assistant text saying it was denied). A
``control_request`` ``interrupt`` is answered with a success ``control_response`` (after a
``control_cancel_request`` withdrawing the permission request it was waiting on, if any) and,
during a turn, ends it with a ``result`` of subtype ``error_during_execution`` with no ``result``
text and a ``terminal_reason`` (``aborted_tools`` or ``aborted_streaming``), as Claude Code
2.1.336 does; other control requests get an error response. A prompt given as an argument runs
as the first turn.

Exits 0 on end of input and, at once, on SIGTERM. ``FAKE_CLAUDE_DELAY_MS`` (default 0) pauses
between output lines so that tests can watch the session work. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import sys
import threading
import time
import uuid
from collections import deque
from typing import Any

TURN_INPUT_TOKENS = 120
TURN_OUTPUT_TOKENS = 45
TURN_COST_USD = 0.0042
TURN_NUM_TURNS = 2
TOOL_COMMAND = "echo hello from fake claude"
TOOL_OUTPUT = "hello from fake claude"
VERSION = "2.1.118"
PERMISSION_WORD = re.compile(r"\bpermission\b", re.IGNORECASE)


class Interrupted(Exception):
    """The current turn was interrupted by a control request."""


class EndOfInput(Exception):
    """stdin was closed."""


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed at once."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def new_uuid() -> str:
    return str(uuid.uuid4())


def read_stdin(lines: queue.Queue[dict[str, Any] | None]) -> None:
    """Reader thread: every JSON object from stdin into ``lines``; ``None`` at end of input."""
    for raw in sys.stdin.buffer:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            print(f"fake_claude: ignoring a line that is not JSON: {text[:80]!r}", file=sys.stderr)
            continue
        if isinstance(obj, dict):
            lines.put(obj)
    lines.put(None)


def prompt_text(message: dict[str, Any]) -> str:
    """The text of a stream-json user message (its content: a string or text blocks)."""
    content = message.get("message", {}).get("content", "")
    if isinstance(content, str):
        return content
    return " ".join(
        block.get("text", "")
        for block in content
        if isinstance(block, dict) and block.get("type") == "text"
    )


class FakeClaude:
    def __init__(self, args: argparse.Namespace) -> None:
        self.session_id: str = args.session_id or args.resume or new_uuid()
        self.model: str = args.model or "claude-opus-4-1"
        self.permission_mode: str = args.permission_mode or "default"
        self.reads_prompts = args.input_format == "stream-json"
        self.delay_s = int(os.environ.get("FAKE_CLAUDE_DELAY_MS", "0") or 0) / 1000
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.pending: deque[dict[str, Any]] = deque()
        self.eof = False
        self.responses: dict[str, dict[str, Any]] = {}
        """control_response lines read so far, by request id."""
        self.asking: str | None = None
        """The id of the permission request the turn waits on."""
        self.cost_usd = 0.0
        """The process's cost so far (results report it cumulatively, as the real CLI does)."""

    # -- reading stdin ------------------------------------------------------------------------

    def next_line(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next stdin object, ``None`` when ``timeout`` passes; EndOfInput once stdin closed."""
        if self.eof:
            raise EndOfInput
        try:
            obj = self.lines.get(timeout=timeout) if timeout != 0 else self.lines.get_nowait()
        except queue.Empty:
            return None
        if obj is None:
            self.eof = True
            raise EndOfInput
        return obj

    def handle_during_turn(self, obj: dict[str, Any]) -> None:
        """A line read mid-turn: an interrupt ends the turn; prompts wait for their turn."""
        if obj.get("type") == "control_response":
            response = obj.get("response")
            if isinstance(response, dict):
                self.responses[str(response.get("request_id"))] = response
        elif obj.get("type") == "control_request":
            request = obj.get("request")
            self.answer_control(obj)
            if isinstance(request, dict) and request.get("subtype") == "interrupt":
                raise Interrupted
        elif obj.get("type") == "user":
            self.pending.append(obj)

    def answer_control(self, obj: dict[str, Any]) -> None:
        request = obj.get("request")
        request_id = obj.get("request_id", "")
        if not isinstance(request, dict) or request.get("subtype") != "interrupt":
            subtype = request.get("subtype") if isinstance(request, dict) else None
            response: dict[str, Any] = {
                "subtype": "error",
                "request_id": request_id,
                "error": f"Unsupported control request subtype: {subtype}",
                "error_code": "unsupported_request",
            }
        else:
            if self.asking is not None:
                emit({"type": "control_cancel_request", "request_id": self.asking})
            response = {"subtype": "success", "request_id": request_id, "response": {}}
        emit({"type": "control_response", "response": response})

    def step(self, obj: dict[str, Any]) -> None:
        """Print one line of the turn, then pause and look at stdin for interrupts."""
        emit(obj)
        deadline = time.monotonic() + self.delay_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.next_line(timeout=max(remaining, 0))
            except EndOfInput:
                # Like the real CLI: the turn in progress still ends with its result.
                time.sleep(max(deadline - time.monotonic(), 0))
                return
            if line is None:
                return
            self.handle_during_turn(line)

    def wait_permission(self, request_id: str) -> dict[str, Any]:
        """Block until the control_response for ``request_id``; its inner response."""
        while request_id not in self.responses:
            obj = self.next_line()
            if obj is not None:
                self.handle_during_turn(obj)
        inner = self.responses.pop(request_id).get("response")
        return inner if isinstance(inner, dict) else {}

    # -- the lines ----------------------------------------------------------------------------

    def assistant(self, block: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "assistant",
            "message": {
                "id": "msg_" + uuid.uuid4().hex[:24],
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [block],
                "stop_reason": None,
                "usage": {
                    "input_tokens": 4,
                    "output_tokens": 10,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": new_uuid(),
        }

    def tool_result(self, tool_use_id: str, content: str, is_error: bool) -> dict[str, Any]:
        return {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {
                        "tool_use_id": tool_use_id,
                        "type": "tool_result",
                        "content": content,
                        "is_error": is_error,
                    }
                ],
            },
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": new_uuid(),
            "tool_use_result": {
                "stdout": "" if is_error else content,
                "stderr": "",
                "interrupted": False,
                "isImage": False,
            },
        }

    def result(
        self,
        started: float,
        text: str | None,
        subtype: str = "success",
        denials: list[Any] | None = None,
    ) -> dict[str, Any]:
        duration_ms = int((time.monotonic() - started) * 1000)
        self.cost_usd += TURN_COST_USD
        if subtype == "success":
            terminal_reason = "completed"
        else:
            terminal_reason = "aborted_tools" if self.asking else "aborted_streaming"
        line = self.result_line(duration_ms, subtype, denials)
        if text is not None:
            line["result"] = text
        return line | {"terminal_reason": terminal_reason}

    def result_line(
        self, duration_ms: int, subtype: str, denials: list[Any] | None
    ) -> dict[str, Any]:
        return {
            "type": "result",
            "subtype": subtype,
            "is_error": subtype != "success",
            "duration_ms": duration_ms,
            "duration_api_ms": duration_ms,
            "num_turns": TURN_NUM_TURNS,
            "session_id": self.session_id,
            "total_cost_usd": round(self.cost_usd, 10),
            "usage": {
                "input_tokens": TURN_INPUT_TOKENS,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": TURN_OUTPUT_TOKENS,
            },
            "modelUsage": {
                self.model: {
                    "inputTokens": TURN_INPUT_TOKENS,
                    "outputTokens": TURN_OUTPUT_TOKENS,
                    "cacheReadInputTokens": 0,
                    "cacheCreationInputTokens": 0,
                    "costUSD": round(self.cost_usd, 10),
                }
            },
            "permission_denials": denials or [],
        }

    # -- a turn -------------------------------------------------------------------------------

    def turn(self, prompt: str) -> None:
        started = time.monotonic()
        try:
            self.run_turn(prompt, started)
        except Interrupted:
            emit(self.result(started, None, subtype="error_during_execution"))
        finally:
            self.asking = None

    def run_turn(self, prompt: str, started: float) -> None:
        self.step(
            {
                "type": "system",
                "subtype": "init",
                "cwd": os.getcwd(),
                "session_id": self.session_id,
                "tools": ["Bash", "Edit", "Read"],
                "mcp_servers": [],
                "model": self.model,
                "permissionMode": self.permission_mode,
                "claude_code_version": VERSION,
                "uuid": new_uuid(),
            }
        )
        self.step(self.assistant({"type": "text", "text": "I'll run a command for that."}))
        tool_use_id = "toolu_" + uuid.uuid4().hex[:24]
        tool_input = {"command": TOOL_COMMAND, "description": "Say hello"}
        self.step(
            self.assistant(
                {"type": "tool_use", "id": tool_use_id, "name": "Bash", "input": tool_input}
            )
        )
        if PERMISSION_WORD.search(prompt):
            request_id = new_uuid()
            emit(
                {
                    "type": "control_request",
                    "request_id": request_id,
                    "request": {
                        "subtype": "can_use_tool",
                        "tool_name": "Bash",
                        "input": tool_input,
                        "tool_use_id": tool_use_id,
                        "permission_suggestions": [],
                    },
                }
            )
            self.asking = request_id
            answer = self.wait_permission(request_id)
            self.asking = None
            if answer.get("behavior") != "allow":
                why = str(answer.get("message") or "no reason given")
                self.step(self.tool_result(tool_use_id, why, is_error=True))
                denied = f"The permission to run Bash was denied: {why}"
                self.step(self.assistant({"type": "text", "text": denied}))
                denial = {"tool_name": "Bash", "tool_use_id": tool_use_id, "tool_input": tool_input}
                emit(self.result(started, denied, denials=[denial]))
                return
        self.step(self.tool_result(tool_use_id, TOOL_OUTPUT, is_error=False))
        done = f"Done: the command printed {TOOL_OUTPUT!r}."
        self.step(self.assistant({"type": "text", "text": done}))
        emit(self.result(started, done))

    def serve(self, first_prompt: str | None) -> None:
        threading.Thread(target=read_stdin, args=(self.lines,), daemon=True).start()
        if first_prompt:
            self.turn(first_prompt)
            if not self.reads_prompts:
                return
        while True:
            obj = self.pending.popleft() if self.pending else self.next_line()
            if obj is None:
                continue
            if obj.get("type") == "user":
                self.turn(prompt_text(obj))
            elif obj.get("type") == "control_request":
                self.answer_control(obj)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A fake Claude Code that speaks stream-json.")
    parser.add_argument("prompt", nargs="?")
    parser.add_argument("-p", "--print", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--include-partial-messages", action="store_true")
    for flag in (
        "--output-format",
        "--input-format",
        "--session-id",
        "--resume",
        "--model",
        "--permission-mode",
        "--permission-prompt-tool",
        "--max-turns",
        "--allowedTools",
        "--disallowedTools",
        "--append-system-prompt",
    ):
        parser.add_argument(flag)
    args, _ignored = parser.parse_known_args(argv)
    return args


def main() -> None:
    # Like the real CLI: SIGTERM ends the process quickly and cleanly.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: os._exit(0))
    args = parse_args(sys.argv[1:])
    try:
        FakeClaude(args).serve(args.prompt)
    except (EndOfInput, KeyboardInterrupt):
        pass
    except BrokenPipeError:
        # Nobody reads our output any more: leave quietly.
        os._exit(0)
    # Not sys.exit: the stdin reader thread may hold stdin's lock, and an interpreter shutdown
    # under it aborts (SIGABRT, "could not acquire lock for <stdin>").
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
