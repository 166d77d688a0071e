"""A scripted stand-in for the OpenAI Responses API, for running the real Codex CLI offline.

How it works: a stdlib HTTP server on 127.0.0.1 answers ``POST /v1/responses`` with a Server-Sent
Events stream shaped like the real API's (``response.created``, ``response.output_item.added`` /
``.done`` for reasoning, assistant messages and function calls, ``response.output_text.delta``,
``response.completed`` with ``usage``). The reply is chosen from the request itself, the way a
model would: by keywords in the latest user message, and by whether the last input item is a
function call's output (then the turn goes on with a final message about that output). Every
request is logged and recorded so that tests can assert on what Codex sent; any other path gets a
JSON 404, logged too.

Keywords in the latest user prompt (first match wins):

- ``slow``: text deltas every :attr:`StandIn.slow_delta_s` for :attr:`StandIn.slow_total_s`
  (something to interrupt);
- ``error400`` / ``error500``: an HTTP error with the API's error body;
- ``touch``: a shell call ``touch approved.txt`` (needs approval under ``untrusted``);
- ``write``: a shell call that writes ``written.txt`` with ``printf``;
- anything else: a reasoning item and a short assistant message.

Run on its own with ``python -m tests.realagents.openai_standin [--port N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_USAGE: dict[str, int] = {
    "input_tokens": 1200,
    "cached_tokens": 1024,
    "output_tokens": 40,
    "reasoning_tokens": 16,
}
"""The usage of every reply unless a test sets its own (``StandIn.usage``)."""


def _text_of(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    parts = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
    return "\n".join(parts)


def latest_user_text(body: dict[str, Any]) -> str:
    """The text of the last ``role: user`` message in a request's ``input`` (the prompt)."""
    items = body.get("input")
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if isinstance(item, dict) and item.get("type") == "message" and item.get("role") == "user":
            return _text_of(item)
    return ""


def last_function_output(body: dict[str, Any]) -> str | None:
    """The output of a function call when it is the last input item (a turn to continue)."""
    items = body.get("input")
    if not isinstance(items, list) or not items:
        return None
    last = items[-1]
    if isinstance(last, dict) and last.get("type") in (
        "function_call_output",
        "custom_tool_call_output",
    ):
        output = last.get("output")
        return output if isinstance(output, str) else json.dumps(output)
    return None


class StandIn:
    """The server, its script and its record of requests. Use as a context manager."""

    def __init__(self, port: int = 0, usage: dict[str, int] | None = None) -> None:
        self.usage: dict[str, int] = dict(usage or DEFAULT_USAGE)
        """Usage reported by every reply (keys as :data:`DEFAULT_USAGE`); tests may change it."""
        self.slow_delta_s = 0.2
        self.slow_total_s = 20.0
        self.after_tool_delta_s = 0.0
        """A pause between the text deltas of the reply to a command's output (a turn that is
        still under way for a while after its command ran)."""
        self.requests: list[dict[str, Any]] = []
        """Every request: ``{"method", "path", "headers", "body"}`` (body parsed when JSON)."""
        self._lock = threading.Condition()
        self._counter = 0
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="openai-standin", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> StandIn:
        self._thread.start()
        log.info("openai stand-in: listening on %s", self.base_url)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            self._lock.notify_all()

    def responses_requests(self) -> list[dict[str, Any]]:
        """The recorded ``POST /v1/responses`` bodies, in order."""
        with self._lock:
            return [
                r["body"]
                for r in self.requests
                if r["path"].endswith("/responses") and r["method"] == "POST"
            ]

    def wait_requests(self, count: int, timeout_s: float = 10.0) -> bool:
        """Wait until ``count`` responses requests arrived; ``False`` at the deadline."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self.responses_requests()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def next_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            return f"{prefix}_{self._counter:04d}{uuid.uuid4().hex[:12]}"


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


class _Reply:
    """One scripted streamed response: the SSE events, built as the real API orders them."""

    def __init__(self, standin: StandIn, model: str) -> None:
        self.standin = standin
        self.id = standin.next_id("resp")
        self.model = model
        self.seq = 0
        self.output: list[dict[str, Any]] = []

    def event(self, kind: str, **fields: Any) -> bytes:
        ev = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return _sse(ev)

    def response(self, status: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": self.model,
            "output": list(self.output),
            "usage": usage,
        }

    def created(self) -> Iterator[bytes]:
        yield self.event("response.created", response=self.response("in_progress"))
        yield self.event("response.in_progress", response=self.response("in_progress"))

    def reasoning(self, summary: str) -> Iterator[bytes]:
        index = len(self.output)
        item = {"id": self.standin.next_id("rs"), "type": "reasoning", "summary": []}
        yield self.event("response.output_item.added", output_index=index, item=item)
        done = {**item, "summary": [{"type": "summary_text", "text": summary}]}
        self.output.append(done)
        yield self.event("response.output_item.done", output_index=index, item=done)

    def message(self, deltas: list[str], pause_s: float = 0.0) -> Iterator[bytes]:
        index = len(self.output)
        item_id = self.standin.next_id("msg")
        item: dict[str, Any] = {
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        yield self.event("response.output_item.added", output_index=index, item=item)
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        yield self.event("response.content_part.added", **where, part=part)
        for delta in deltas:
            if pause_s:
                time.sleep(pause_s)
            yield self.event("response.output_text.delta", **where, delta=delta)
        text = "".join(deltas)
        yield self.event("response.output_text.done", **where, text=text)
        part = {**part, "text": text}
        yield self.event("response.content_part.done", **where, part=part)
        done = {**item, "status": "completed", "content": [part]}
        self.output.append(done)
        yield self.event("response.output_item.done", output_index=index, item=done)

    def function_call(self, name: str, arguments: dict[str, Any]) -> Iterator[bytes]:
        index = len(self.output)
        item_id = self.standin.next_id("fc")
        call_id = self.standin.next_id("call")
        args = json.dumps(arguments)
        item = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": name,
            "arguments": "",
        }
        yield self.event("response.output_item.added", output_index=index, item=item)
        yield self.event(
            "response.function_call_arguments.delta",
            item_id=item_id,
            output_index=index,
            delta=args,
        )
        yield self.event(
            "response.function_call_arguments.done",
            item_id=item_id,
            output_index=index,
            arguments=args,
        )
        done = {**item, "status": "completed", "arguments": args}
        self.output.append(done)
        yield self.event("response.output_item.done", output_index=index, item=done)

    def completed(self) -> Iterator[bytes]:
        u = self.standin.usage
        usage = {
            "input_tokens": u["input_tokens"],
            "input_tokens_details": {"cached_tokens": u["cached_tokens"]},
            "output_tokens": u["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": u["reasoning_tokens"]},
            "total_tokens": u["input_tokens"] + u["output_tokens"],
        }
        yield self.event("response.completed", response=self.response("completed", usage))


def _shell_tool(body: dict[str, Any]) -> tuple[str, Any]:
    """The name of the shell tool Codex offered, and how it takes a command line."""
    names = {t.get("name") for t in body.get("tools", []) if isinstance(t, dict)}
    for name in ("shell_command", "exec_command", "shell"):
        if name in names:
            return name, name
    return "shell_command", "shell_command"


def _shell_args(tool: str, command: str, body: dict[str, Any]) -> dict[str, Any]:
    if tool == "shell":
        return {"command": ["bash", "-lc", command]}
    if tool == "exec_command":
        # Asking for escalation is what makes ``approval_policy = "on-request"`` ask the user.
        return {
            "cmd": command,
            "sandbox_permissions": "require_escalated",
            "justification": "Create a file in the workspace?",
        }
    return {"command": command}


def script(standin: StandIn, body: dict[str, Any]) -> tuple[int, Iterator[bytes] | dict[str, Any]]:
    """The reply to one ``/v1/responses`` request: an HTTP status and SSE chunks or a JSON body."""
    prompt = latest_user_text(body).lower()
    output = last_function_output(body)
    reply = _Reply(standin, str(body.get("model", "mock-model")))

    if output is None and "error400" in prompt:
        return 400, {
            "error": {
                "message": "Invalid request: the stand-in refuses this prompt (error400).",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_value",
            }
        }
    if output is None and "error500" in prompt:
        return 500, {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }

    def stream() -> Iterator[bytes]:
        yield from reply.created()
        if output is not None:
            first_line = output.strip().splitlines()[0] if output.strip() else ""
            yield from reply.message(
                ["Done. ", "The command said: ", first_line[:200]], standin.after_tool_delta_s
            )
        elif "slow" in prompt:
            count = max(1, int(standin.slow_total_s / standin.slow_delta_s))
            yield from reply.message([f"tick {i} " for i in range(count)], standin.slow_delta_s)
        elif "touch" in prompt or "write" in prompt:
            tool, _ = _shell_tool(body)
            command = (
                "touch approved.txt"
                if "touch" in prompt
                else "printf 'written by codex\\n' > written.txt"
            )
            yield from reply.reasoning("The user wants a file; I will run a command.")
            yield from reply.function_call(tool, _shell_args(tool, command, body))
        else:
            yield from reply.reasoning("A plain question; I answer it.")
            yield from reply.message(["Hello ", "from the ", "stand-in."])
        yield from reply.completed()

    return 200, stream()


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("openai stand-in: " + format, *args)

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding") == "zstd":
            return {"_raw_zstd_bytes": len(raw)}
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return {"_raw": raw.decode(errors="replace")}

    def _handle(self) -> None:
        body = self._read_body() if self.command == "POST" else None
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body": body,
        }
        self.standin.record(entry)
        path = self.path.split("?", 1)[0]
        if self.command == "POST" and path.endswith("/responses") and isinstance(body, dict):
            prompt = latest_user_text(body)
            log.info(
                "openai stand-in: %s %s prompt=%r inputs=%d",
                self.command,
                self.path,
                prompt[-60:],
                len(body.get("input", [])),
            )
            status, result = script(self.standin, body)
            if isinstance(result, dict):
                self._json(status, result)
            else:
                self._stream(result)
            return
        log.warning("openai stand-in: unknown %s %s: 404", self.command, self.path)
        self._json(404, {"error": {"message": f"no route {self.command} {self.path}"}})

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: Iterator[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log.info("openai stand-in: the client closed the stream early")
            self.close_connection = True

    do_POST = _handle
    do_GET = _handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with StandIn(args.port) as standin:
        print(standin.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
