"""Record real Codex transcripts against the stand-in, into ``tests/fixtures/codex/*.jsonl``.

How it works: each scenario runs the real binary (``codex exec --json`` or ``codex app-server``)
against a fresh :class:`~tests.realagents.openai_standin.StandIn` and a fresh ``CODEX_HOME``,
speaks the protocol by hand (no hived code, so a transcript is evidence about Codex, not about
the driver it tests), and writes every line in order as ``{"dir": "out"|"in", "line": ...}``:
``out`` is what Codex printed, ``in`` what was written to its stdin. Waits poll a queue with
deadlines; every process is killed at the end.

Usage: ``python -m tests.realagents.record_codex [SCENARIO ...]`` (default: all).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.realagents.codex_env import REPO, CodexEnv, codex_binary, codex_env
from tests.realagents.line_client import LineClient, Transcript
from tests.realagents.openai_standin import StandIn

log = logging.getLogger("record_codex")

FIXTURES = REPO / "tests" / "fixtures" / "codex"
STEP_TIMEOUT_S = 30.0


class AppServer(LineClient):
    """A raw JSON-RPC line client for one ``codex app-server`` process; records every line."""

    def __init__(self, env: CodexEnv, transcript: Transcript) -> None:
        super().__init__(
            env.app_server_argv,
            env.env,
            env.workdir,
            transcript,
            name="codex app-server",
            step_timeout_s=STEP_TIMEOUT_S,
            refuse_unmatched=False,
        )

    def method(self, name: str) -> dict[str, Any]:
        return self.wait(lambda o: o.get("method") == name)


def handshake(app: AppServer) -> dict[str, Any]:
    rid = app.request(
        "initialize",
        {"clientInfo": {"name": "hived-recorder", "version": "0.1.0"}, "capabilities": None},
    )
    init = app.response(rid)
    app.notify("initialized")
    return init


def start_thread(app: AppServer, cwd: Path) -> str:
    rid = app.request("thread/start", {"cwd": str(cwd)})
    thread_id: str = app.response(rid)["result"]["thread"]["id"]
    return thread_id


def run_turn(
    app: AppServer,
    thread_id: str,
    text: str,
    on_request: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Start a turn and read until ``turn/completed``; ``on_request`` answers server requests."""
    rid = app.request(
        "turn/start",
        {"threadId": thread_id, "input": [{"type": "text", "text": text}]},
    )
    while True:
        obj = app.wait(lambda o: True)
        if obj.get("id") == rid and "method" not in obj:
            continue
        if "method" in obj and "id" in obj:
            result = on_request(obj) if on_request else None
            if result is None:
                app.send(
                    {
                        "jsonrpc": "2.0",
                        "id": obj["id"],
                        "error": {"code": -32601, "message": "not handled by the recorder"},
                    }
                )
            else:
                app.send({"jsonrpc": "2.0", "id": obj["id"], "result": result})
            continue
        if obj.get("method") == "turn/completed":
            return obj


def decide(decision: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def answer(req: dict[str, Any]) -> dict[str, Any] | None:
        if req["method"] in (
            "item/commandExecution/requestApproval",
            "item/fileChange/requestApproval",
        ):
            return {"decision": decision}
        if req["method"] in ("execCommandApproval", "applyPatchApproval"):
            return {"decision": "approved" if decision == "accept" else "denied"}
        return None

    return answer


def scenario_exec_basic(env: CodexEnv, standin: StandIn, out: list[dict[str, Any]]) -> None:
    argv = [*env.exec_argv, "say hello"]
    out.append({"dir": "in", "line": {"argv": ["codex", *argv[1:]], "stdin": "/dev/null"}})
    proc = subprocess.run(
        argv,
        env=env.env,
        cwd=env.workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=STEP_TIMEOUT_S,
        check=False,
    )
    for line in proc.stdout.decode().splitlines():
        out.append({"dir": "out", "line": json.loads(line)})
    out.append({"dir": "out", "line": {"exit_code": proc.returncode}})


def scenario_app_three_prompts_with_approval(
    env: CodexEnv, standin: StandIn, out: list[dict[str, Any]]
) -> None:
    app = AppServer(env, out)
    try:
        handshake(app)
        thread_id = start_thread(app, env.workdir)
        run_turn(app, thread_id, "say hello")
        run_turn(app, thread_id, "please touch a file", decide("accept"))
        run_turn(app, thread_id, "say hello again")
    finally:
        app.close()
    assert (env.workdir / "approved.txt").exists(), "the approved command did not run"


def scenario_app_decline(env: CodexEnv, standin: StandIn, out: list[dict[str, Any]]) -> None:
    app = AppServer(env, out)
    try:
        handshake(app)
        thread_id = start_thread(app, env.workdir)
        run_turn(app, thread_id, "please touch a file", decide("decline"))
    finally:
        app.close()
    assert not (env.workdir / "approved.txt").exists(), "the declined command ran"


def scenario_app_interrupt(env: CodexEnv, standin: StandIn, out: list[dict[str, Any]]) -> None:
    app = AppServer(env, out)
    try:
        handshake(app)
        thread_id = start_thread(app, env.workdir)
        app.request(
            "turn/start",
            {"threadId": thread_id, "input": [{"type": "text", "text": "a slow answer please"}]},
        )
        started = app.method("turn/started")
        app.method("item/agentMessage/delta")
        app.request(
            "turn/interrupt", {"threadId": thread_id, "turnId": started["params"]["turn"]["id"]}
        )
        app.method("turn/completed")
        # The session goes on after an interrupt: one more turn.
        run_turn(app, thread_id, "say hello")
    finally:
        app.close()


def scenario_app_api_error(env: CodexEnv, standin: StandIn, out: list[dict[str, Any]]) -> None:
    app = AppServer(env, out)
    try:
        handshake(app)
        thread_id = start_thread(app, env.workdir)
        run_turn(app, thread_id, "trigger error400 now")
        run_turn(app, thread_id, "trigger error500 now")
        run_turn(app, thread_id, "say hello")
    finally:
        app.close()


def scenario_app_resume(env: CodexEnv, standin: StandIn, out: list[dict[str, Any]]) -> None:
    first: list[dict[str, Any]] = []
    app = AppServer(env, first)
    try:
        handshake(app)
        thread_id = start_thread(app, env.workdir)
        run_turn(app, thread_id, "say hello")
    finally:
        app.close()
    out.append(
        {
            "dir": "in",
            "line": {"note": "a second app-server process resumes", "threadId": thread_id},
        }
    )
    app = AppServer(env, out)
    try:
        handshake(app)
        rid = app.request("thread/resume", {"threadId": thread_id, "cwd": str(env.workdir)})
        app.response(rid)
        run_turn(app, thread_id, "say hello again")
    finally:
        app.close()


SCENARIOS: dict[str, Callable[[CodexEnv, StandIn, list[dict[str, Any]]], None]] = {
    "exec_basic": scenario_exec_basic,
    "app_three_prompts_with_approval": scenario_app_three_prompts_with_approval,
    "app_decline": scenario_app_decline,
    "app_interrupt": scenario_app_interrupt,
    "app_api_error": scenario_app_api_error,
    "app_resume": scenario_app_resume,
}


def record(name: str, binary: Path) -> Path:
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="codex-rec-") as tmp, StandIn() as standin:
        standin.slow_total_s = 20.0
        env = codex_env(standin.port, Path(tmp), binary)
        SCENARIOS[name](env, standin, out)
        requests = standin.requests
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path = FIXTURES / f"{name}.jsonl"
    with path.open("w") as f:
        for entry in out:
            f.write(json.dumps(entry, sort_keys=False) + "\n")
    log.info("%s: %d lines, %d HTTP requests -> %s", name, len(out), len(requests), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    binary = codex_binary()
    if not binary.exists():
        sys.exit(f"no codex binary at {binary}: run tests/realagents/install_codex.sh")
    for name in args.scenarios:
        record(name, binary)


if __name__ == "__main__":
    main()
