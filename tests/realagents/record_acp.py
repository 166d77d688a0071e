"""Record real ACP transcripts against the model stand-ins, into ``tests/fixtures/acp/*.jsonl``.

How it works: each scenario runs a real ACP agent (``claude-agent-acp`` and ``opencode acp``
against the Anthropic stand-in, ``codex-acp`` against the OpenAI one; see acp_env.py) with a
fresh HOME, speaks ACP by
hand (no hived code, so a transcript is evidence about the agent, not about the driver it tests),
and writes every line in order as ``{"dir": "out"|"in", "line": ...}``: ``out`` is what the agent
printed, ``in`` what was written to its stdin. A scenario that starts a second process (resume,
load) writes a ``{"dir": "in", "line": {"note": ...}}`` between the two. Waits poll a queue with
deadlines; every process group is killed at the end.

Usage: ``python -m tests.realagents.record_acp [SCENARIO ...]`` (default: all); scenario names
are ``<agent>_<case>``, with agent ``claude``, ``codex`` or ``opencode``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.realagents import anthropic_standin, openai_standin
from tests.realagents.acp_env import (
    AcpAgent,
    claude_acp,
    claude_acp_bin,
    codex_acp,
    codex_acp_bin,
    opencode_acp,
    opencode_bin,
)
from tests.realagents.line_client import LineClient, Transcript

log = logging.getLogger("record_acp")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "acp"
STEP_TIMEOUT_S = 60.0
CAPABILITIES = {"fs": {"readTextFile": False, "writeTextFile": False}, "terminal": False}


class Client(LineClient):
    """A raw ACP client for one agent process; records every line."""

    def __init__(self, agent: AcpAgent, transcript: Transcript) -> None:
        super().__init__(
            agent.argv,
            agent.env,
            agent.workdir,
            transcript,
            name="the agent",
            step_timeout_s=STEP_TIMEOUT_S,
            refuse_unmatched=True,
        )
        self.session_id = ""

    def update(self, kind: str) -> dict[str, Any]:
        return self.wait(
            lambda o: (
                o.get("method") == "session/update"
                and o["params"]["update"].get("sessionUpdate") == kind
            )
        )

    def permission(self) -> dict[str, Any]:
        return self.wait(lambda o: o.get("method") == "session/request_permission")

    def initialize(self) -> dict[str, Any]:
        params = {
            "protocolVersion": 1,
            "clientCapabilities": CAPABILITIES,
            "clientInfo": {"name": "hived-recorder", "version": "0.1.0"},
        }
        return self.response(self.request("initialize", params))

    def open(self, method: str, cwd: Path, session_id: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"cwd": str(cwd), "mcpServers": []}
        if session_id is not None:
            params["sessionId"] = session_id
        response = self.response(self.request(method, params))
        self.session_id = response["result"].get("sessionId", session_id)
        return response

    def prompt(self, text: str) -> int:
        params = {"sessionId": self.session_id, "prompt": [{"type": "text", "text": text}]}
        return self.request("session/prompt", params)

    def turn(self, text: str, option_kind: str | None = None) -> dict[str, Any]:
        """A whole turn; a permission request is answered with the option of ``option_kind``."""
        rid = self.prompt(text)
        while True:
            obj = self.wait(
                lambda o: (
                    (o.get("id") == rid and "method" not in o)
                    or o.get("method") == "session/request_permission"
                )
            )
            if obj.get("method") != "session/request_permission":
                return obj
            assert option_kind is not None, f"unexpected permission request: {obj}"
            option = next(o for o in obj["params"]["options"] if o["kind"] == option_kind)
            self.reply(
                obj["id"], {"outcome": {"outcome": "selected", "optionId": option["optionId"]}}
            )


@contextlib.contextmanager
def running(agent: AcpAgent, out: Transcript) -> Iterator[Client]:
    client = Client(agent, out)
    try:
        yield client
    finally:
        client.close()


def case_permission_allow(agent: AcpAgent, out: Transcript) -> None:
    with running(agent, out) as c:
        c.initialize()
        c.open("session/new", agent.workdir)
        c.turn(agent.hello)
        c.turn(agent.tool, "allow_once")
    assert (agent.workdir / agent.made).exists(), "the allowed command did not run"


def case_permission_deny(agent: AcpAgent, out: Transcript) -> None:
    with running(agent, out) as c:
        c.initialize()
        c.open("session/new", agent.workdir)
        c.turn(agent.tool, "reject_once")
    assert not (agent.workdir / agent.made).exists(), "the rejected command ran"


def case_interrupt(agent: AcpAgent, out: Transcript) -> None:
    with running(agent, out) as c:
        c.initialize()
        c.open("session/new", agent.workdir)
        rid = c.prompt(agent.slow)
        c.update("agent_message_chunk")
        c.update("agent_message_chunk")
        c.notify("session/cancel", {"sessionId": c.session_id})
        c.response(rid)
        c.turn(agent.hello)  # the session goes on after a cancelled turn


def case_interrupt_pending(agent: AcpAgent, out: Transcript) -> None:
    with running(agent, out) as c:
        c.initialize()
        c.open("session/new", agent.workdir)
        rid = c.prompt(agent.tool)
        request = c.permission()
        c.notify("session/cancel", {"sessionId": c.session_id})
        c.reply(request["id"], {"outcome": {"outcome": "cancelled"}})
        c.response(rid)
    assert not (agent.workdir / agent.made).exists(), "the cancelled command ran"


def _second_run(agent: AcpAgent, out: Transcript, method: str) -> None:
    first: Transcript = []
    with running(agent, first) as c:
        c.initialize()
        c.open("session/new", agent.workdir)
        c.turn(agent.hello)
        session_id = c.session_id
    out.append(
        {"dir": "in", "line": {"note": f"a second process, {method}", "sessionId": session_id}}
    )
    with running(agent, out) as c:
        c.initialize()
        c.open(method, agent.workdir, session_id)
        c.turn(agent.again)


def case_resume(agent: AcpAgent, out: Transcript) -> None:
    _second_run(agent, out, "session/resume")


def case_load(agent: AcpAgent, out: Transcript) -> None:
    _second_run(agent, out, "session/load")


CASES: dict[str, Callable[[AcpAgent, Transcript], None]] = {
    "permission_allow": case_permission_allow,
    "permission_deny": case_permission_deny,
    "interrupt": case_interrupt,
    "interrupt_pending": case_interrupt_pending,
    "resume": case_resume,
    "load": case_load,
}
AGENTS = ("claude", "codex", "opencode")
SCENARIOS = [f"{a}_{c}" for a in AGENTS for c in CASES]


def record(name: str) -> Path:
    which, case = name.split("_", 1)
    out: Transcript = []
    with tempfile.TemporaryDirectory(prefix="acp-rec-") as tmp:
        if which in ("claude", "opencode"):
            make = claude_acp if which == "claude" else opencode_acp
            with anthropic_standin.StandIn() as standin:
                CASES[case](make(standin.port, Path(tmp)), out)
                prompts = [
                    anthropic_standin.prompt_text(r["messages"])
                    for r in standin.messages_requests()
                ]
                histories = [len(r["messages"]) for r in standin.messages_requests()]
        else:
            with openai_standin.StandIn() as standin:
                CASES[case](codex_acp(standin.port, Path(tmp)), out)
                bodies = standin.responses_requests()
                prompts = [openai_standin.latest_user_text(b) for b in bodies]
                histories = [len(b.get("input") or []) for b in bodies]
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path = FIXTURES / f"{name}.jsonl"
    with path.open("w") as f:
        for entry in out:
            f.write(json.dumps(entry) + "\n")
    prompts = [p[-30:] for p in prompts]
    log.info(
        "%s: %d lines; model requests (end of prompt, messages): %s",
        name,
        len(out),
        list(zip(prompts, histories, strict=True)),
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=SCENARIOS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for binary in (claude_acp_bin(), codex_acp_bin(), opencode_bin()):
        if not binary.exists():
            raise SystemExit(f"no ACP agent at {binary}: run tests/realagents/install_acp.sh")
    for name in args.scenarios:
        record(name)


if __name__ == "__main__":
    main()
