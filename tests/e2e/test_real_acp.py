"""Real ACP agents from npm, driven through the real daemon, against the local model stand-ins.

The agents are the pinned ones tests/realagents/install_acp.sh puts in ``.agents/acp``:
``claude-agent-acp`` (Claude Code through Zed's ACP adapter, against the Anthropic stand-in),
``codex-acp`` (Codex through Zed's ACP adapter, against the OpenAI stand-in) and ``opencode acp``
(ACP spoken natively, against the Anthropic stand-in); acp_env.py says how each is pointed at its
stand-in. For each, one ``acp`` session goes through a plain prompt, a
command that needs permission allowed with ``hivectl approve``, the same denied with ``hivectl
deny``, an interrupt, its usage in ``hivectl sessions --json``; then the daemon is killed with
SIGKILL and started again (the agent goes on under its shim and is taken up), stopped
gracefully (which ends the agent), started again, and ``hivectl resume SESSION PROMPT`` goes on
with the conversation: the model stand-in sees the earlier turns.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from hived.client import connect
from tests.e2e.harness import SECRETS, Launcher
from tests.e2e.test_real_claude import Watch, hivectl, last_turn, summary, summary_when
from tests.realagents import anthropic_standin, openai_standin
from tests.realagents.acp_env import (
    OPENCODE_SCRIPT,
    AcpAgent,
    claude_acp,
    claude_acp_bin,
    codex_acp,
    codex_acp_bin,
    opencode_acp,
    opencode_bin,
)

pytestmark = pytest.mark.e2e

REQUEST_DEADLINE_S = 30.0


def _missing(binary: Path, *needs: str) -> str | None:
    if not binary.exists():
        return f"{binary} not found: tests/realagents/install_acp.sh installs it (make agents does)"
    for tool in needs:
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH ({binary} runs with it)"
    return None


class Agent:
    """One ACP agent under test: its stand-in, how to run it, and what the stand-in saw."""

    def __init__(self, which: str, tmp: Path) -> None:
        self.which = which
        self.anthropic = which in ("claude", "opencode")
        if self.anthropic:
            script = OPENCODE_SCRIPT if which == "opencode" else None
            self.claude = anthropic_standin.StandIn(script).start()
            self.port = self.claude.port
            make = claude_acp if which == "claude" else opencode_acp
            self.acp: AcpAgent = make(self.port, tmp)
        else:
            self.openai = openai_standin.StandIn().start()
            self.port = self.openai.port
            self.acp = codex_acp(self.port, tmp)

    def model_requests(self) -> list[dict[str, Any]]:
        if self.anthropic:
            return self.claude.messages_requests()
        return self.openai.responses_requests()

    def close(self) -> None:
        if self.anthropic:
            self.claude.stop()
        else:
            self.openai.close()

    def template(self) -> str:
        env_toml = ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(self.acp.env.items()))
        return (
            f"[agents.acp]\ncommand = {json.dumps(list(self.acp.argv))}\n"
            f'format = "acp"\nrestart = "no"\nstop_timeout_s = 5.0\n'
            f"cwd = {json.dumps(str(self.acp.workdir))}\nenv = {{ {env_toml} }}\n"
        )


AGENTS = [
    pytest.param(
        "claude",
        marks=pytest.mark.skipif(
            bool(_missing(claude_acp_bin(), "node")),
            reason=_missing(claude_acp_bin(), "node") or "",
        ),
    ),
    pytest.param(
        "codex",
        marks=pytest.mark.skipif(
            bool(_missing(codex_acp_bin())), reason=_missing(codex_acp_bin()) or ""
        ),
    ),
    pytest.param(
        "opencode",
        marks=pytest.mark.skipif(
            bool(_missing(opencode_bin())), reason=_missing(opencode_bin()) or ""
        ),
    ),
]


@pytest.fixture(params=AGENTS)
def agent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Agent]:
    running = Agent(request.param, tmp_path / "agent")
    try:
        yield running
    finally:
        running.close()


async def until(what: str, condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (something outside hived: a stand-in's requests) under a deadline."""
    with trio.move_on_after(REQUEST_DEADLINE_S):
        while True:
            if condition():
                return
            await trio.sleep(0.02)
    raise AssertionError(f"no {what} within {REQUEST_DEADLINE_S} s")


async def test_a_real_acp_agent_from_prompt_to_resume_after_a_crash(
    hived: Launcher, agent: Agent
) -> None:
    acp = agent.acp
    made = acp.workdir / acp.made
    port, config = hived.config(body=agent.template())
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        started = await client.request("session.start", agent="acp", prompt=acp.hello)
        session = started["session"]
        watch = Watch(await client.subscribe(f"session/{session}", since=0))
        init = await watch.kind("init")
        assert init["data"]["method"] == "session/new"
        first = await watch.kind("result")
        assert last_turn(first) == {"ok": True, "error": None, "message": None}

        # A command that needs permission, allowed from hivectl.
        await client.request("session.input", session=session, text=acp.tool)
        request = await watch.kind("permission_request")
        assert request["data"]["request_kind"] == "permission"
        assert "allow" in request["data"]["options"]
        waiting = await summary(client, session)
        assert (waiting["state"], waiting["reason"]) == ("WAITING", "permission_request")
        allowed = await trio.to_thread.run_sync(
            hivectl, port, "approve", session, request["data"]["request_id"]
        )
        assert allowed.returncode == 0, allowed.stderr
        done = await watch.until("the allowed tool's result", lambda e: e["kind"] == "tool_result")
        assert done["data"]["is_error"] is False
        assert last_turn(await watch.kind("result"))["ok"] is True
        assert made.exists()

        # The same command, denied from hivectl: it does not run.
        made.unlink()
        await client.request("session.input", session=session, text=acp.tool)
        request = await watch.kind("permission_request")
        denied = await trio.to_thread.run_sync(
            hivectl, port, "deny", session, request["data"]["request_id"]
        )
        assert denied.returncode == 0, denied.stderr
        after_deny = await watch.kind("result")
        if agent.anthropic:
            # Claude (and opencode's model) is told the user refused; the turn ends normally.
            assert last_turn(after_deny)["ok"] is True
        else:
            # codex-acp's only reject option ("abort") ends the turn itself.
            assert last_turn(after_deny)["error"] == "interrupted"
        assert not made.exists()

        # An interrupt, once the model is streaming its slow reply: the turn ends, not the session.
        asked = len(agent.model_requests())
        await client.request("session.input", session=session, text=acp.slow)
        await until("model request for the slow reply", lambda: len(agent.model_requests()) > asked)
        interrupted = await trio.to_thread.run_sync(hivectl, port, "interrupt", session)
        assert interrupted.returncode == 0, interrupted.stderr
        cut = await watch.kind("result")
        assert last_turn(cut)["error"] == "interrupted"

        # Usage, as hivectl shows it.
        listed = await trio.to_thread.run_sync(hivectl, port, "sessions", "--all", "--json")
        assert listed.returncode == 0, listed.stderr
        (shown,) = [s for s in json.loads(listed.stdout) if s["id"] == session]
        assert shown["state"] == "WAITING"
        assert shown["usage"]["turns"] == 4
        if agent.anthropic:  # codex-acp reports no tokens and no cost over ACP
            assert shown["usage"]["input_tokens"] > 0
            assert shown["usage"]["cache_read_tokens"] > 0
            assert shown["usage"]["cost_usd"] > 0
        agent_id = shown["agent_session_id"]
        assert agent_id == init["data"]["sessionId"]
    await daemon.kill()

    # A new daemon: the agent outlived the old one under its shim, and is taken up again.
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        taken_up = await summary_when(client, session, lambda s: s["state"] == "WAITING")
        assert taken_up["pid"] == shown["pid"]
    daemon.send_signal(signal.SIGTERM)  # a stop that ends the agent
    assert await daemon.wait_exit() == 0

    # The session ended with that daemon; one command resumes it, and its conversation goes on.
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        assert (await summary(client, session))["state"] == "EXITED"
        watch = Watch(await client.subscribe(f"session/{session}"))
        resumed = await trio.to_thread.run_sync(hivectl, port, "resume", session, acp.again)
        assert resumed.returncode == 0, resumed.stderr
        reopened = await watch.kind("init")
        assert reopened["data"]["method"] == "session/resume"
        again = await watch.kind("result")
        assert last_turn(again)["ok"] is True
        after = await summary(client, session)
        assert after["agent_session_id"] == agent_id
        assert after["usage"]["turns"] == 5
        if agent.anthropic:
            assert after["usage"]["cost_usd"] > shown["usage"]["cost_usd"]
        # The model saw the earlier turns in the resumed conversation.
        said = json.dumps(agent.model_requests()[-1])
        assert acp.tool in said
        assert acp.again in said
        seqs = [
            e["seq"]
            for e in (await client.request("session.events", session=session, limit=10000))[
                "events"
            ]
        ]
        assert seqs == list(range(1, len(seqs) + 1))
        await client.request("session.stop", session=session)
