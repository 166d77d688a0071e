"""A scripted stand-in for the Anthropic Messages API, on 127.0.0.1, for the real Claude Code.

How it works: a stdlib ``ThreadingHTTPServer`` answers ``POST /v1/messages``. The reply is chosen
from a script: the first rule whose ``keyword`` occurs in the text of the latest user prompt (the
latest user message that carries text, with ``<system-reminder>`` sections removed) and whose
``tool_result`` flag says whether the last message carries a ``tool_result`` (so a tool-use turn
continues with a final text). With ``stream: true`` the reply goes out as the Messages API's SSE
events; otherwise as one JSON message. ``count_tokens`` gets a rough figure; any other path gets a
JSON 404. Every request is recorded (in memory, and logged) so a test can assert what the agent
sent.

A rule's reply (all keys optional)::

    {"blocks": [{"type": "text", "text": "Hi there"},
                {"type": "thinking", "thinking": "..."},
                {"type": "tool_use", "name": "Bash", "input": {"command": "echo hi"}},
                {"type": "text", "repeat": "tick ", "times": 100}],
     "usage": {"input_tokens": 10, "output_tokens": 5,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
     "stop_reason": "end_turn",            # default: tool_use if a block is one, else end_turn
     "delta_interval_s": 0.2,              # pause before each delta (a slow reply)
     "error": {"status": 400, "type": "invalid_request_error", "message": "..."}}

Run it alone: ``python -m tests.realagents.anthropic_standin --port N [--script FILE]``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final

log = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"
DEFAULT_USAGE: Final[dict[str, int]] = {
    "input_tokens": 10,
    "output_tokens": 5,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)

# The scenarios the recorder and the tests use. Keywords are unusual words so that nothing the
# CLI adds to a prompt matches one by accident.
DEFAULT_SCRIPT: Final[dict[str, Any]] = {
    "rules": [
        {
            "keyword": "hello",
            "reply": {
                "blocks": [{"type": "text", "text": "Hi there"}],
                "usage": {
                    "input_tokens": 100,
                    "output_tokens": 20,
                    "cache_creation_input_tokens": 1000,
                    "cache_read_input_tokens": 2000,
                },
            },
        },
        {
            "keyword": "again",
            "reply": {
                "blocks": [{"type": "text", "text": "Hi again"}],
                "usage": {
                    "input_tokens": 200,
                    "output_tokens": 40,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 3000,
                },
            },
        },
        {
            "keyword": "runbash",
            "reply": {
                "blocks": [
                    {"type": "thinking", "thinking": "The user wants me to create a file."},
                    {"type": "text", "text": "I will run it."},
                    {
                        "type": "tool_use",
                        "name": "Bash",
                        "input": {
                            "command": "touch made-by-claude.txt",
                            "description": "Create a file",
                        },
                    },
                ],
                "usage": {"input_tokens": 50, "output_tokens": 30},
            },
        },
        {
            "keyword": "runbash",
            "tool_result": True,
            "reply": {
                "blocks": [{"type": "text", "text": "The command ran."}],
                "usage": {"input_tokens": 60, "output_tokens": 10},
            },
        },
        {
            "keyword": "askme",
            "reply": {
                "blocks": [
                    {
                        "type": "tool_use",
                        "name": "AskUserQuestion",
                        "input": {
                            "questions": [
                                {
                                    "question": "Which colour do you prefer?",
                                    "header": "Colour",
                                    "options": [
                                        {"label": "Red", "description": "A warm colour"},
                                        {"label": "Blue", "description": "A cool colour"},
                                    ],
                                    "multiSelect": False,
                                }
                            ]
                        },
                    }
                ],
                "usage": {"input_tokens": 40, "output_tokens": 25},
            },
        },
        {
            "keyword": "askme",
            "tool_result": True,
            "reply": {
                "blocks": [{"type": "text", "text": "Thanks for answering."}],
                "usage": {"input_tokens": 45, "output_tokens": 8},
            },
        },
        {
            "keyword": "failplease",
            "reply": {
                "error": {
                    "status": 400,
                    "type": "invalid_request_error",
                    "message": "standin: this request is refused on purpose",
                }
            },
        },
        {
            "keyword": "overloaded",
            "reply": {
                "error": {"status": 529, "type": "overloaded_error", "message": "Overloaded"}
            },
        },
        {
            "keyword": "slowly",
            "reply": {
                "blocks": [{"type": "text", "repeat": "tick ", "times": 100}],
                "delta_interval_s": 0.2,
                "usage": {"input_tokens": 30, "output_tokens": 100},
            },
        },
    ],
    "default": {"blocks": [{"type": "text", "text": "OK"}]},
}


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event as the Messages API writes it."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """The text of the latest user message that carries text, without system reminders."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts = [content]
        else:
            texts = [
                b.get("text", "")
                for b in content or []
                if isinstance(b, dict) and b.get("type") == "text"
            ]
        text = _REMINDER.sub("", "\n".join(texts)).strip()
        if text:
            return text
    return ""


def ends_with_tool_result(messages: list[dict[str, Any]]) -> bool:
    """Whether the last message carries a ``tool_result`` block."""
    if not messages:
        return False
    content = messages[-1].get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def choose_reply(script: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The reply the script gives to a request body (a deep copy, safe to change)."""
    messages = body.get("messages") or []
    text = prompt_text(messages).lower()
    tool_result = ends_with_tool_result(messages)
    for rule in script.get("rules", []):
        if rule["keyword"].lower() in text and bool(rule.get("tool_result")) == tool_result:
            return copy.deepcopy(rule["reply"])
    return copy.deepcopy(script.get("default") or {"blocks": [{"type": "text", "text": "OK"}]})


def _chunks(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def reply_events(
    reply: dict[str, Any], model: str, ids: Iterator[int]
) -> Iterator[tuple[float, bytes]]:
    """The SSE events of a reply, each with the pause to take before sending it."""
    usage = {**DEFAULT_USAGE, **reply.get("usage", {})}
    pause = float(reply.get("delta_interval_s", 0.0))
    blocks = reply.get("blocks", [])
    stop_reason = reply.get("stop_reason") or (
        "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    )
    start_usage = {**usage, "output_tokens": 1}
    message: dict[str, Any] = {
        "id": f"msg_standin_{next(ids):04d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    yield 0.0, sse("message_start", {"type": "message_start", "message": message})
    for index, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            if "repeat" in block:
                parts = [block["repeat"]] * int(block.get("times", 1))
            else:
                parts = _chunks(block["text"])
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in parts]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _chunks(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": "c3RhbmRpbi1zaWduYXR1cmU="})
        elif kind == "tool_use":
            tool_id = block.get("id") or f"toolu_standin_{next(ids):04d}"
            start = {"type": "tool_use", "id": tool_id, "name": block["name"], "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": p}
                for p in _chunks(json.dumps(block["input"]), 16)
            ]
        else:
            raise ValueError(f"reply block type {kind!r}: expected text, thinking or tool_use")
        yield (
            0.0,
            sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            ),
        )
        for delta in deltas:
            yield (
                pause,
                sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                ),
            )
        yield 0.0, sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield (
        0.0,
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": usage,
            },
        ),
    )
    yield 0.0, sse("message_stop", {"type": "message_stop"})


def reply_message(reply: dict[str, Any], model: str, ids: Iterator[int]) -> dict[str, Any]:
    """A reply as the one JSON message a request without ``stream`` gets."""
    content: list[dict[str, Any]] = []
    for block in reply.get("blocks", []):
        if block["type"] == "text":
            text = (
                block["repeat"] * int(block.get("times", 1)) if "repeat" in block else block["text"]
            )
            content.append({"type": "text", "text": text})
        elif block["type"] == "thinking":
            content.append({"type": "thinking", "thinking": block["thinking"], "signature": "x"})
        else:
            tool_id = block.get("id") or f"toolu_standin_{next(ids):04d}"
            content.append(
                {"type": "tool_use", "id": tool_id, "name": block["name"], "input": block["input"]}
            )
    stop_reason = reply.get("stop_reason") or (
        "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    )
    return {
        "id": f"msg_standin_{next(ids):04d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {**DEFAULT_USAGE, **reply.get("usage", {})},
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one response per connection, so an SSE stream simply ends when the socket closes.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("standin: " + format, *args)

    def _record(self) -> dict[str, Any] | None:
        length = min(int(self.headers.get("content-length") or 0), MAX_BODY_BYTES)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        self.server.standin.record(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        return body if isinstance(body, dict) else None

    def _json(self, status: int, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("request-id", "req_standin")
        if 400 <= status < 500:
            self.send_header("x-should-retry", "false")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _not_found(self) -> None:
        log.warning("standin: unknown %s %s", self.command, self.path)
        self._json(
            404,
            {
                "type": "error",
                "error": {"type": "not_found_error", "message": f"{self.path}: not found"},
            },
        )

    def do_GET(self) -> None:
        self._record()
        self._not_found()

    def do_HEAD(self) -> None:
        self._record()
        self._not_found()

    def do_POST(self) -> None:
        body = self._record() or {}
        path = self.path.split("?", 1)[0]
        if path == "/v1/messages/count_tokens":
            self._json(200, {"input_tokens": len(json.dumps(body)) // 4})
        elif path == "/v1/messages":
            self._messages(body)
        else:
            self._not_found()

    def _messages(self, body: dict[str, Any]) -> None:
        standin = self.server.standin
        reply = choose_reply(standin.script, body)
        model = str(body.get("model") or "claude-standin")
        error = reply.get("error")
        if error:
            self._json(
                int(error.get("status", 400)),
                {
                    "type": "error",
                    "error": {
                        "type": error.get("type", "invalid_request_error"),
                        "message": error.get("message", "bad request"),
                    },
                    "request_id": "req_standin",
                },
            )
            return
        if not body.get("stream"):
            self._json(200, reply_message(reply, model, standin.ids))
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", "req_standin")
        self.end_headers()
        try:
            for pause, chunk in reply_events(reply, model, standin.ids):
                if pause and standin.stopping.wait(pause):
                    return
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log.info("standin: the client closed the stream early")
            standin.record(
                {"method": "-", "path": "(client closed the stream)", "headers": {}, "body": None}
            )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: StandIn


class StandIn:
    """The stand-in server, run in a thread: ``with StandIn() as s: ... s.port ... s.requests()``."""

    def __init__(self, script: dict[str, Any] | None = None, port: int = 0) -> None:
        self.script: dict[str, Any] = copy.deepcopy(script or DEFAULT_SCRIPT)
        self.ids = itertools.count(1)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._server = _Server((HOST, port), _Handler)
        self._server.standin = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="standin", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def record(self, request: dict[str, Any]) -> None:
        request["time"] = time.time()
        with self._lock:
            self._requests.append(request)
        log.info("standin: %s %s", request["method"], request["path"])

    def requests(self) -> list[dict[str, Any]]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def messages_requests(self) -> list[dict[str, Any]]:
        """The bodies of the ``POST /v1/messages`` requests received so far."""
        return [
            r["body"]
            for r in self.requests()
            if r["method"] == "POST" and r["path"].split("?", 1)[0] == "/v1/messages"
        ]

    def start(self) -> StandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--script", type=Path, help="JSON script (default: the built-in one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    script = json.loads(args.script.read_text()) if args.script else None
    standin = StandIn(script, args.port)
    print(f"listening on {standin.base_url}", file=sys.stderr, flush=True)
    try:
        standin._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stopping.set()
        standin._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
