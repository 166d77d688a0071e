"""Budgets against the real daemon: a session that reaches its budget publishes why, notifies,
and stops or takes no new prompt; a fake ACP agent and a real Codex (codex-app) reaching their
budget in the middle of a turn are interrupted there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest
import trio

from hived.client import Client, RemoteError, connect
from tests.e2e.harness import CLAUDE_ARGS, PYTHON, SECRETS, Launcher, agent_toml
from tests.e2e.receivers import http_receiver
from tests.e2e.test_notify import all_done, outbox_when
from tests.e2e.test_real_claude import Watch, last_turn
from tests.realagents.codex_env import codex_binary, codex_env
from tests.realagents.openai_standin import StandIn

pytestmark = pytest.mark.e2e

# The fake Claude costs 0.0042 USD a turn (examples/agents/fake_claude.py).
CAPPED = agent_toml(
    "capped", *CLAUDE_ARGS, fmt="claude",
    extra='restart = "no"\nmax_cost_usd = 0.004\nbudget_action = "stop"\n',
)  # fmt: skip
PAUSED = agent_toml(
    "paused", *CLAUDE_ARGS, fmt="claude", extra='restart = "no"\nmax_cost_usd = 0.01\n'
)


def budget_rule(url: str) -> str:
    return (
        '[[notify]]\nname = "spend"\nevents = ["budget"]\ncoalesce_s = 0.1\n'
        f'min_interval_s = 0\n[notify.webhook]\nurl = "{url}"\n'
    )


async def state_of(client: Client, session: str) -> dict[str, Any]:
    summaries = (await client.request("sessions", all=True))["sessions"]
    return dict(next(s for s in summaries if s["id"] == session))


async def test_a_session_that_reaches_its_budget_says_why_notifies_and_stops(
    hived: Launcher,
) -> None:
    async with http_receiver() as receiver:
        port, config = hived.config(body=CAPPED + budget_rule(receiver.url("/spend")))
        daemon = await hived.start(config, port=port)
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            started = await client.request("session.start", agent="capped", prompt="hello")
            session = started["session"]
            watch = Watch(await client.subscribe(f"session/{session}", since=0))
            budget = await watch.kind("budget")
            assert budget["data"] == {
                "limit": "max_cost_usd",
                "used": 0.0042,
                "max": 0.004,
                "action": "stop",
                "message": "cost 0.0042 USD reached max_cost_usd 0.004: the session is stopped",
            }
            await watch.until(
                "the stop", lambda e: e["kind"] == "state" and e["data"]["state"] == "EXITED"
            )
            rows = await outbox_when(daemon, lambda r: all_done(r, 1), "the notification")
        assert rows[0]["status"] == "delivered"
        [posted] = receiver.to("/spend")
        [item] = posted.json()["items"]
        assert item["event"] == "budget"
        assert item["title"] == (
            "capped-1 cost 0.0042 USD reached max_cost_usd 0.004: the session is stopped"
        )


async def test_a_spent_session_takes_no_prompt_and_a_start_over_the_cap_is_refused(
    hived: Launcher,
) -> None:
    port, config = hived.config(body=PAUSED)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        with pytest.raises(RemoteError, match=r"max_cost_usd 0\.02 is over the cap of template"):
            await client.request("session.start", agent="paused", max_cost_usd=0.02)
        started = await client.request(
            "session.start", agent="paused", prompt="hello", max_cost_usd=0.004
        )
        session = started["session"]
        watch = Watch(await client.subscribe(f"session/{session}", since=0))
        await watch.kind("result")
        budget = await watch.kind("budget")
        assert budget["data"]["max"] == 0.004
        assert budget["data"]["action"] == "interrupt"
        with pytest.raises(RemoteError, match="has reached its budget"):
            await client.request("session.input", session=session, text="more please")
        assert (await state_of(client, session))["state"] == "WAITING"
        # A session without a budget of its own has the template's cap: 3 turns reach it.
        second = await client.request("session.start", agent="paused", prompt="hello")
        other = Watch(await client.subscribe(f"session/{second['session']}", since=0))
        for _ in range(2):
            await other.kind("result")
            await client.request("session.input", session=second["session"], text="go on")
        await other.kind("result")
        assert (await other.kind("budget"))["data"]["used"] == pytest.approx(0.0126)


FAKE_ACP: Final = """
import json, sys
def send(message):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\\n")
    sys.stdout.flush()
def update(**fields):
    send({"method": "session/update", "params": {"sessionId": "acp-1", "update": fields}})
turn = None
for line in sys.stdin:
    message = json.loads(line)
    method = message.get("method")
    if method == "initialize":
        send({"id": message["id"], "result": {"protocolVersion": 1, "agentCapabilities": {}}})
    elif method == "session/new":
        send({"id": message["id"], "result": {"sessionId": "acp-1"}})
    elif method == "session/prompt":
        turn = message["id"]
        update(sessionUpdate="agent_message_chunk", content={"type": "text", "text": "on it"})
        update(sessionUpdate="usage_update", used=900, size=1000,
               cost={"amount": 0.5, "currency": "USD"})
    elif method == "session/cancel" and turn is not None:
        send({"id": turn, "result": {"stopReason": "cancelled"}})
        turn = None
"""
"""A fake ACP agent whose turn reports its cost (0.5 USD) as it goes and never ends by itself:
only a ``session/cancel`` ends it."""


async def test_a_fake_agent_reaching_its_budget_mid_turn_is_interrupted(hived: Launcher) -> None:
    argv = json.dumps([PYTHON, "-c", FAKE_ACP])
    template = (
        f'[agents.acpfake]\ncommand = {argv}\nformat = "acp"\nrestart = "no"\nmax_cost_usd = 0.1\n'
    )
    port, config = hived.config(body=template)
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        started = await client.request("session.start", agent="acpfake", prompt="go")
        session = started["session"]
        watch = Watch(await client.subscribe(f"session/{session}", since=0))
        budget = await watch.kind("budget")
        assert budget["data"] == {
            "limit": "max_cost_usd",
            "used": 0.5,
            "max": 0.1,
            "action": "interrupt",
            "message": "cost 0.5000 USD reached max_cost_usd 0.1: the turn is interrupted",
        }
        # The turn ends only because hived cancelled it.
        result = await watch.kind("result")
        assert last_turn(result) == {"ok": False, "error": "interrupted", "message": None}
        with trio.fail_after(10):
            while True:
                if (await state_of(client, session))["state"] == "WAITING":
                    break
                await trio.sleep(0.05)
        with pytest.raises(RemoteError, match="has reached its budget"):
            await client.request("session.input", session=session, text="more")


CODEX = codex_binary()


@pytest.mark.skipif(
    not CODEX.exists(),
    reason=f"{CODEX} not found: tests/realagents/install_codex.sh installs it (.ci/run does)",
)
async def test_a_real_codex_reaching_its_token_budget_mid_turn_is_interrupted(
    hived: Launcher, tmp_path: Path
) -> None:
    with StandIn() as standin:
        # The reply after the command takes 30 s: the turn is under way when the budget is hit.
        standin.after_tool_delta_s = 10.0
        env = codex_env(standin.port, tmp_path / "codex")
        env_toml = ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(env.env.items()))
        template = (
            f"[agents.codexapp]\ncommand = {json.dumps(list(env.app_server_argv))}\n"
            f'format = "codex-app"\nrestart = "no"\nstop_timeout_s = 5.0\n'
            f"cwd = {json.dumps(str(env.workdir))}\nenv = {{ {env_toml} }}\nmax_tokens = 1\n"
        )
        port, config = hived.config(body=template)
        daemon = await hived.start(config, port=port)
        async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
            # The model's first answer asks to run a command; its usage arrives once the command
            # ran, while the model's next answer streams: the budget interrupts the turn there.
            started = await client.request(
                "session.start", agent="codexapp", prompt="please touch a file"
            )
            watch = Watch(await client.subscribe(f"session/{started['session']}", since=0))
            asked = await watch.kind("permission_request")
            await client.request(
                "session.approve",
                session=started["session"],
                request_id=asked["data"]["request_id"],
                allow=True,
            )
            budget = await watch.kind("budget")
            assert budget["data"]["limit"] == "max_tokens"
            assert budget["data"]["action"] == "interrupt"
            result = await watch.kind("result")
            assert last_turn(result) == {"ok": False, "error": "interrupted", "message": None}
            with trio.fail_after(10):
                while True:
                    if (await state_of(client, started["session"]))["state"] == "WAITING":
                        break
                    await trio.sleep(0.05)
