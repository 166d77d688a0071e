"""The real Codex CLI, driven through the real daemon, against the local Responses stand-in.

The binary is the pinned one tests/realagents/install_codex.sh puts in ``.agents/`` (``.ci/run``
installs it); the model is tests/realagents/openai_standin.py. A ``codex-app`` session (``codex
app-server``) takes three prompts in a row with a command approved from hivectl in between, a
declined one, an interrupt that ends the turn and not the session; after the daemon is killed,
the app-server goes on under its shim; after a graceful stop, a resume continues the same
thread. A ``codex`` (exec) session runs its one prompt
with stdin closed.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from hived.client import connect
from tests.e2e.harness import SECRETS, Launcher
from tests.e2e.test_real_claude import Watch, hivectl, last_turn, summary, summary_when
from tests.realagents.codex_env import CodexEnv, codex_binary, codex_env
from tests.realagents.openai_standin import StandIn

BINARY = codex_binary()

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not BINARY.exists(),
        reason=f"{BINARY} not found: tests/realagents/install_codex.sh installs it "
        "(.ci/run does), or set HIVED_CODEX_BIN",
    ),
]


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


def templates(env: CodexEnv) -> str:
    env_toml = ", ".join(f"{key} = {json.dumps(value)}" for key, value in sorted(env.env.items()))
    cwd = json.dumps(str(env.workdir))
    return (
        f"[agents.codexapp]\ncommand = {json.dumps(list(env.app_server_argv))}\n"
        f'format = "codex-app"\nrestart = "no"\nstop_timeout_s = 5.0\ncwd = {cwd}\n'
        f"env = {{ {env_toml} }}\n\n"
        f"[agents.codexexec]\ncommand = {json.dumps(list(env.exec_argv))}\n"
        f'format = "codex"\nrestart = "no"\ncwd = {cwd}\nenv = {{ {env_toml} }}\n'
    )


async def test_a_real_codex_app_server_session_through_hived(
    hived: Launcher, standin: StandIn, tmp_path: Path
) -> None:
    env = codex_env(standin.port, tmp_path / "codex")
    port, config = hived.config(body=templates(env))
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        started = await client.request("session.start", agent="codexapp", prompt="say hello")
        session = started["session"]
        watch = Watch(await client.subscribe(f"session/{session}", since=0))

        hello = await watch.until("the reply", lambda e: e["kind"] == "message")
        assert "Hello from the stand-in." in hello["data"]["text"]
        first = await watch.kind("result")
        assert last_turn(first)["ok"] is True

        # The second prompt runs a command that needs approval: allowed from hivectl.
        await client.request("session.input", session=session, text="please touch a file")
        request = await watch.kind("permission_request")
        assert request["data"]["request_kind"] == "permission"
        assert "touch approved.txt" in json.dumps(request["data"]["input"])
        waiting = await summary(client, session)
        assert (waiting["state"], waiting["reason"]) == ("WAITING", "permission_request")
        allowed = await trio.to_thread.run_sync(
            hivectl, port, "approve", session, request["data"]["request_id"]
        )
        assert allowed.returncode == 0, allowed.stderr
        second = await watch.kind("result")
        assert last_turn(second)["ok"] is True
        assert (env.workdir / "approved.txt").exists()

        # The third prompt's command is declined: the turn goes on without it.
        await client.request("session.input", session=session, text="now write a file")
        request = await watch.kind("permission_request")
        await client.request(
            "session.approve",
            session=session,
            request_id=request["data"]["request_id"],
            allow=False,
        )
        await watch.kind("result")
        assert not (env.workdir / "written.txt").exists()

        # An interrupt ends the turn; the session takes the next prompt.
        await client.request("session.input", session=session, text="go slow please")
        await watch.until("the slow turn", lambda e: e["kind"] == "state"
                          and e["data"]["state"] == "WORKING")  # fmt: skip
        await client.request("session.interrupt", session=session)
        interrupted = await watch.kind("result")
        assert last_turn(interrupted) == {"ok": False, "error": "interrupted", "message": None}
        after = await summary(client, session)
        assert after["state"] == "WAITING"
        assert after["usage"]["turns"] == 4
        assert after["usage"]["cache_read_tokens"] > 0
        thread = after["agent_session_id"]
        assert thread
    await daemon.kill()

    # After a crash: the app-server goes on under its shim and takes the next prompt.
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        taken_up = await summary_when(client, session, lambda s: s["state"] == "WAITING")
        assert taken_up["pid"] == after["pid"]
        watch = Watch(await client.subscribe(f"session/{session}"))
        await client.request("session.input", session=session, text="say hello")
        await watch.until(
            "the next turn's result",
            lambda e: e["kind"] == "result" and last_turn(e)["ok"] is True,
        )
    daemon.send_signal(signal.SIGTERM)  # a stop that ends the agent
    assert await daemon.wait_exit() == 0

    # The session ended with that daemon: one command, and the same thread goes on.
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        watch = Watch(await client.subscribe(f"session/{session}"))
        resumed = await trio.to_thread.run_sync(hivectl, port, "resume", session, "say hello")
        assert resumed.returncode == 0, resumed.stderr
        result = await watch.kind("result")
        assert last_turn(result)["ok"] is True
        again = await summary(client, session)
        assert again["agent_session_id"] == thread
        assert again["usage"]["turns"] == 6
        said = json.dumps(standin.responses_requests()[-1])
        assert "please touch a file" in said
        await client.request("session.stop", session=session)


async def test_a_real_codex_exec_run_gets_its_prompt_and_a_closed_stdin(
    hived: Launcher, standin: StandIn, tmp_path: Path
) -> None:
    env = codex_env(standin.port, tmp_path / "codex")
    port, config = hived.config(body=templates(env))
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        started = await client.request("session.start", agent="codexexec", prompt="say hello")
        watch = Watch(await client.subscribe(f"session/{started['session']}", since=0))
        result = await watch.kind("result")
        assert result["data"]["is_error"] is False
        exited: dict[str, Any] = await watch.until(
            "the run's end", lambda e: e["kind"] == "state" and e["data"]["state"] == "EXITED"
        )
        assert exited["data"]["exit_code"] == 0
        usage = exited["data"]["summary"]["usage"]
        assert usage["turns"] == 1
        assert usage["input_tokens"] + usage["cache_read_tokens"] > 0
