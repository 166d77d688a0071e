"""Drive the real Claude Code through scripted scenarios and record what it prints.

    python -m tests.realagents.record_claude [--out tests/fixtures/claude] [SCENARIO ...]

Each scenario starts the stand-in and ``claude`` in stream-json mode, writes user messages and
control responses to its stdin, reads its stdout, and writes the transcript to
``<out>/<scenario>.jsonl``: one ``{"dir": "out"|"in", "line": {...}}`` per line, in order.
Lines the CLI prints that are not JSON are kept as ``{"dir": "out", "raw": "..."}``; a scenario
that starts several processes puts ``{"dir": "meta", "process": N, "argv": [...]}`` before each
one's lines. ``<scenario>.requests.json`` summarises what the stand-in received, and
``index.json`` keeps each scenario's notes (exit codes, timings, costs) and the CLI's stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from tests.realagents.anthropic_standin import StandIn
from tests.realagents.claude_env import REPO, claude_argv, claude_bin, claude_env

OUT_DIR: Final = REPO / "tests" / "fixtures" / "claude"
LINE_TIMEOUT_S: Final = 30.0

Line = dict[str, Any]


def user_message(text: str) -> Line:
    """A prompt as stream-json input."""
    return {
        "type": "user",
        "session_id": "",
        "uuid": str(uuid.uuid4()),
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
        "parent_tool_use_id": None,
    }


def control_response(request_id: str, response: dict[str, Any]) -> Line:
    """A success answer to one of the agent's control requests."""
    return {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    }


def is_type(kind: str, subtype: str | None = None) -> Callable[[Line], bool]:
    def match(line: Line) -> bool:
        return line.get("type") == kind and (subtype is None or line.get("subtype") == subtype)

    return match


def is_control(subtype: str) -> Callable[[Line], bool]:
    def match(line: Line) -> bool:
        return line.get("type") == "control_request" and line["request"].get("subtype") == subtype

    return match


class ClaudeRun:
    """One ``claude`` process: lines in, lines out, every one kept in ``transcript``."""

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: Path, stderr_path: Path | None = None
    ) -> None:
        self.transcript: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._lines: queue.Queue[Line | None] = queue.Queue()
        self.stderr_chunks: list[bytes] = []
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._err.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                line = json.loads(text)
            except ValueError:
                with self._lock:
                    self.transcript.append({"dir": "out", "raw": text})
                continue
            with self._lock:
                self.transcript.append({"dir": "out", "line": line})
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr_chunks.append(raw)

    def send(self, line: Line) -> None:
        assert self.proc.stdin is not None
        with self._lock:
            self.transcript.append({"dir": "in", "line": line})
        self.proc.stdin.write((json.dumps(line) + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, match: Callable[[Line], bool], timeout_s: float = LINE_TIMEOUT_S) -> Line:
        """The next stdout line that matches (earlier ones are only recorded)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching line within {timeout_s} s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise EOFError(f"claude exited (rc={self.proc.poll()}) before a matching line")
            if match(line):
                return line

    def drain(self, quiet_s: float) -> None:
        """Read lines until none comes for ``quiet_s`` (or stdout ends)."""
        while True:
            try:
                if self._lines.get(timeout=quiet_s) is None:
                    return
            except queue.Empty:
                return

    def close_stdin(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        self._err.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream and not stream.closed:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()

    def __enter__(self) -> ClaudeRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


class Recorder:
    """The stand-in, a HOME and a cwd shared by the runs of one scenario."""

    def __init__(self, binary: Path, workdir: Path, script: dict[str, Any] | None = None) -> None:
        self.binary = binary
        self.home = workdir / "home"
        self.cwd = workdir / "project"
        self.home.mkdir()
        self.cwd.mkdir()
        self.standin = StandIn(script).start()
        self.runs: list[ClaudeRun] = []
        self.argvs: list[list[str]] = []
        self.notes: dict[str, Any] = {}

    def run(
        self,
        *,
        resume: str | None = None,
        extra: tuple[str, ...] = (),
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> ClaudeRun:
        argv = claude_argv(self.binary, resume=resume, extra=extra)
        run_env = {**claude_env(self.standin.port, self.home), **(env or {})}
        run = ClaudeRun(argv, run_env, cwd or self.cwd)
        self.argvs.append(argv)
        self.runs.append(run)
        return run

    def wait_for_request(self, needle: str, timeout_s: float = LINE_TIMEOUT_S) -> None:
        """Poll until the stand-in has received a /v1/messages request whose prompt has needle."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for body in self.standin.messages_requests():
                if needle in json.dumps(body.get("messages", [])[-1:]):
                    return
            time.sleep(0.02)
        raise TimeoutError(f"the stand-in got no request with {needle!r} in {timeout_s} s")

    def close(self) -> None:
        for run in self.runs:
            run.kill()
        self.standin.stop()

    def transcript(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for index, run in enumerate(self.runs):
            if len(self.runs) > 1:
                lines.append({"dir": "meta", "process": index, "argv": self.argvs[index][1:]})
            lines.extend(run.transcript)
        return lines


def finish(run: ClaudeRun, rec: Recorder) -> None:
    """End a run as hived would when a session is over: close stdin, wait for the exit."""
    run.close_stdin()
    started = time.monotonic()
    rc = run.wait(15)
    rec.notes.setdefault("exits", []).append(
        {"how": "stdin closed", "rc": rc, "seconds": round(time.monotonic() - started, 2)}
    )


def allow(request: Line, **extra: Any) -> Line:
    body = {"behavior": "allow", "updatedInput": request["request"]["input"], **extra}
    return control_response(request["request_id"], body)


# --- scenarios -------------------------------------------------------------------------------


def two_turns(rec: Recorder) -> None:
    with rec.run() as run:
        run.send(user_message("hello"))
        first = run.expect(is_type("result"))
        run.send(user_message("once again"))
        second = run.expect(is_type("result"))
        rec.notes["costs"] = [first["total_cost_usd"], second["total_cost_usd"]]
        rec.notes["usages"] = [first["usage"], second["usage"]]
        finish(run, rec)


def permission_allow(rec: Recorder) -> None:
    with rec.run() as run:
        run.send(user_message("please runbash"))
        request = run.expect(is_control("can_use_tool"))
        run.send(allow(request))
        run.expect(is_type("result"))
        finish(run, rec)


def permission_deny(rec: Recorder) -> None:
    with rec.run() as run:
        run.send(user_message("please runbash"))
        request = run.expect(is_control("can_use_tool"))
        answer = {"behavior": "deny", "message": "Not now, thanks."}
        run.send(control_response(request["request_id"], answer))
        run.expect(is_type("result"))
        finish(run, rec)


def permission_always(rec: Recorder) -> None:
    """Allow with the offered permission_suggestions, then ask for the same tool again."""
    with rec.run() as run:
        run.send(user_message("please runbash"))
        request = run.expect(is_control("can_use_tool"))
        suggestions = request["request"].get("permission_suggestions") or []
        rules = [s for s in suggestions if s["type"] == "addRules"]
        run.send(allow(request, updatedPermissions=rules))
        run.expect(is_type("result"))
        settings = rec.cwd / ".claude" / "settings.local.json"
        rec.notes["settings.local.json"] = settings.read_text() if settings.exists() else None
        run.send(user_message("once more runbash"))
        while True:
            line = run.expect(lambda x: is_type("result")(x) or is_control("can_use_tool")(x))
            if line["type"] == "result":
                break
            rec.notes["asked_again"] = True
            run.send(allow(line))
        finish(run, rec)


def ask_user_question(rec: Recorder) -> None:
    with rec.run() as run:
        run.send(user_message("askme something"))
        request = run.expect(is_control("can_use_tool"))
        questions = request["request"]["input"]["questions"]
        answers = {q["question"]: q["options"][1]["label"] for q in questions}
        run.send(allow(request, updatedInput={"questions": questions, "answers": answers}))
        run.expect(is_type("result"))
        finish(run, rec)


def ask_user_question_deny(rec: Recorder) -> None:
    """The host declines to answer the question."""
    with rec.run() as run:
        run.send(user_message("askme something"))
        request = run.expect(is_control("can_use_tool"))
        answer = {"behavior": "deny", "message": "The user did not answer."}
        run.send(control_response(request["request_id"], answer))
        run.expect(is_type("result"))
        finish(run, rec)


def api_error(rec: Recorder) -> None:
    with rec.run() as run:
        run.send(user_message("failplease"))
        run.expect(is_type("result"), timeout_s=60)
        run.send(user_message("hello"))
        run.expect(is_type("result"))
        finish(run, rec)


def interrupt(rec: Recorder) -> None:
    with rec.run() as run:
        run.send(user_message("reply slowly"))
        rec.wait_for_request("slowly")
        run.send(
            {"type": "control_request", "request_id": "x", "request": {"subtype": "interrupt"}}
        )
        run.expect(is_type("result"))
        run.drain(1.0)
        run.send(user_message("hello"))
        run.expect(is_type("result"))
        finish(run, rec)


def interrupt_pending_permission(rec: Recorder) -> None:
    """Interrupt while a can_use_tool request is pending: is it withdrawn?"""
    with rec.run() as run:
        run.send(user_message("please runbash"))
        run.expect(is_control("can_use_tool"))
        run.send(
            {"type": "control_request", "request_id": "int-1", "request": {"subtype": "interrupt"}}
        )
        run.expect(is_type("result"))
        run.drain(1.0)
        finish(run, rec)


def unknown_control(rec: Recorder) -> None:
    """An unknown control request subtype sent to the agent, then a normal turn."""
    with rec.run() as run:
        run.send(
            {
                "type": "control_request",
                "request_id": "u-1",
                "request": {"subtype": "no_such_thing"},
            }
        )
        run.expect(is_type("control_response"))
        run.send(user_message("hello"))
        run.expect(is_type("result"))
        finish(run, rec)


def initialize(rec: Recorder) -> None:
    """The SDK's own first request, as the TypeScript SDK sends it."""
    with rec.run() as run:
        run.send(
            {
                "type": "control_request",
                "request_id": "init-1",
                "request": {"subtype": "initialize", "hooks": {}},
            }
        )
        run.expect(is_type("control_response"))
        run.send(user_message("hello"))
        run.expect(is_type("result"))
        finish(run, rec)


def resume(rec: Recorder) -> None:
    with rec.run() as first:
        first.send(user_message("hello"))
        result = first.expect(is_type("result"))
        finish(first, rec)
    session_id = result["session_id"]
    rec.notes["session_id"] = session_id
    with rec.run(resume=session_id) as second:
        second.send(user_message("once again"))
        second.expect(is_type("result"))
        finish(second, rec)
    last = rec.standin.messages_requests()[-1]
    rec.notes["resumed_request_roles"] = [m["role"] for m in last["messages"]]


def resume_elsewhere(rec: Recorder) -> None:
    """--resume from another cwd (same HOME): the transcript lives under the first cwd's slug."""
    with rec.run() as first:
        first.send(user_message("hello"))
        result = first.expect(is_type("result"))
        finish(first, rec)
    other = rec.cwd.parent / "elsewhere"
    other.mkdir()
    with rec.run(resume=result["session_id"], cwd=other) as second:
        try:
            second.send(user_message("once again"))
            second.expect(is_type("result"))
        except (EOFError, BrokenPipeError) as exc:
            rec.notes["second"] = f"{type(exc).__name__}: {exc}"
        finish(second, rec)
        rec.notes["stderr"] = b"".join(second.stderr_chunks).decode("utf-8", "replace")[-1000:]


def resume_other_home(rec: Recorder) -> None:
    """--resume with a HOME that does not hold the first run's transcript."""
    with rec.run() as first:
        first.send(user_message("hello"))
        result = first.expect(is_type("result"))
        finish(first, rec)
    other = rec.cwd.parent / "other-home"
    other.mkdir()
    with rec.run(resume=result["session_id"], env={"HOME": str(other)}) as second:
        try:
            second.send(user_message("once again"))
            second.expect(is_type("result"))
        except (EOFError, BrokenPipeError) as exc:
            rec.notes["second"] = f"{type(exc).__name__}: {exc}"
        finish(second, rec)
        rec.notes["stderr"] = b"".join(second.stderr_chunks).decode("utf-8", "replace")[-1000:]


def api_overloaded(rec: Recorder) -> None:
    """HTTP 529 on every try, with CLAUDE_CODE_MAX_RETRIES=2 so the retries end soon."""
    with rec.run(env={"CLAUDE_CODE_MAX_RETRIES": "2"}) as run:
        run.send(user_message("overloaded"))
        run.expect(is_type("result"), timeout_s=90)
        finish(run, rec)


def prices(rec: Recorder) -> None:
    """One million tokens of one kind per turn: each turn's cost is the model's price for it."""
    kinds = (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    )
    for kind in kinds:
        usage = {k: 1_000_000 if k == kind else 0 for k in kinds}
        rule = {
            "keyword": f"price-{kind}",
            "reply": {"blocks": [{"type": "text", "text": kind}], "usage": usage},
        }
        rec.standin.script["rules"].insert(0, rule)
    with rec.run() as run:
        previous = 0.0
        for kind in kinds:
            run.send(user_message(f"price-{kind}"))
            result = run.expect(is_type("result"))
            rec.notes[f"usd_per_mtok.{kind}"] = round(result["total_cost_usd"] - previous, 6)
            previous = result["total_cost_usd"]
        finish(run, rec)


def sigterm(rec: Recorder) -> None:
    with rec.run() as run:
        run.send(user_message("reply slowly"))
        rec.wait_for_request("slowly")
        started = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        rc = run.wait(15)
        run.drain(0.5)
        rec.notes["sigterm"] = {"rc": rc, "seconds": round(time.monotonic() - started, 2)}


def sigterm_idle(rec: Recorder) -> None:
    with rec.run() as run:
        run.send(user_message("hello"))
        run.expect(is_type("result"))
        started = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        rc = run.wait(15)
        run.drain(0.5)
        rec.notes["sigterm"] = {"rc": rc, "seconds": round(time.monotonic() - started, 2)}


SCENARIOS: Final[dict[str, Callable[[Recorder], None]]] = {
    f.__name__: f
    for f in (
        two_turns,
        permission_allow,
        permission_deny,
        permission_always,
        ask_user_question,
        ask_user_question_deny,
        api_error,
        interrupt,
        interrupt_pending_permission,
        unknown_control,
        initialize,
        resume,
        resume_elsewhere,
        resume_other_home,
        api_overloaded,
        prices,
        sigterm,
        sigterm_idle,
    )
}


def summarize_request(request: dict[str, Any]) -> dict[str, Any]:
    body = request.get("body")
    summary: dict[str, Any] = {"method": request["method"], "path": request["path"]}
    if isinstance(body, dict):
        summary["model"] = body.get("model")
        summary["stream"] = body.get("stream")
        summary["tools"] = len(body.get("tools") or [])
        summary["last_message"] = (body.get("messages") or [None])[-1]
    return summary


def record(name: str, binary: Path, out_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"claude-{name}-") as tmp:
        rec = Recorder(binary, Path(tmp))
        error = None
        try:
            SCENARIOS[name](rec)
        except (TimeoutError, EOFError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            rec.close()
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / f"{name}.jsonl").open("w") as f:
            for entry in rec.transcript():
                f.write(json.dumps(entry) + "\n")
        requests = [summarize_request(r) for r in rec.standin.requests()]
        (out_dir / f"{name}.requests.json").write_text(json.dumps(requests, indent=1) + "\n")
        stderr = b"".join(b"".join(r.stderr_chunks) for r in rec.runs).decode("utf-8", "replace")
        return {"scenario": name, "error": error, "notes": rec.notes, "stderr": stderr[-2000:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("scenarios", nargs="*", help=f"some of: {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}: expected some of {list(SCENARIOS)}")
    binary = claude_bin()
    if not binary.exists():
        print(f"{binary}: not found; run tests/realagents/install_claude.sh", file=sys.stderr)
        return 1
    index_path = args.out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    failed = 0
    for name in args.scenarios or list(SCENARIOS):
        report = record(name, binary, args.out)
        failed += report["error"] is not None
        print(json.dumps(report), flush=True)
        index[name] = {k: v for k, v in report.items() if k != "scenario"}
    index_path.write_text(json.dumps(dict(sorted(index.items())), indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
