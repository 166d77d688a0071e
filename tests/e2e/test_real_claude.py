"""The real Claude Code, driven through the real daemon, against the local model stand-in.

The binary is the pinned one tests/realagents/install_claude.sh puts in ``.agents/`` (``.ci/run``
installs it); the model is tests/realagents/anthropic_standin.py, which replies from a script by
keyword. One session goes through what a person does with an agent: a prompt, a tool that asks
permission (allowed from hivectl, then denied), a question answered, an API error, an
interrupt; then the daemon is killed and started again: the agent goes on under its shim and
takes the next prompt; after a graceful stop, the session is resumed with one command: its
conversation goes on, and the cost hived shows is the agent's own last figure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from hived.client import Client, Subscription, connect
from tests.e2e.harness import DEADLINE_S, SECRETS, Launcher
from tests.realagents.anthropic_standin import StandIn
from tests.realagents.claude_env import MODEL, STREAM_JSON_ARGS, claude_bin, claude_env

BINARY = claude_bin()

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not BINARY.exists(),
        reason=f"{BINARY} not found: tests/realagents/install_claude.sh installs it "
        "(.ci/run does), or set HIVED_CLAUDE_BIN",
    ),
]

AGENT_DEADLINE_S = 60.0
"""The real CLI takes a second or two to start and retries an API error a few times."""


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


def claude_template(standin: StandIn, home: Path) -> str:
    env = claude_env(standin.port, home)
    argv = json.dumps([str(BINARY), *STREAM_JSON_ARGS, "--model", MODEL])
    env_toml = ", ".join(f"{key} = {json.dumps(value)}" for key, value in sorted(env.items()))
    return (
        f'[agents.real]\ncommand = {argv}\nformat = "claude"\nrestart = "no"\n'
        f"stop_timeout_s = 5.0\ncwd = {json.dumps(str(home / 'project'))}\n"
        f"env = {{ {env_toml} }}\n"
    )


class Watch:
    """The session's events as they come, read in order: each wait goes on after the event the
    last one matched."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.events: list[dict[str, Any]] = []
        self.read = 0
        """How many of :attr:`events` the waits are past."""

    async def until(self, what: str, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        with trio.move_on_after(AGENT_DEADLINE_S):
            while True:
                for index in range(self.read, len(self.events)):
                    if condition(self.events[index]):
                        self.read = index + 1
                        return self.events[index]
                self.read = len(self.events)
                self.events.append(await self.subscription.__anext__())
        raise AssertionError(f"no {what} within {AGENT_DEADLINE_S} s; saw {self.events[-20:]}")

    async def kind(self, kind: str) -> dict[str, Any]:
        return await self.until(kind, lambda e: e["kind"] == kind)


def last_turn(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event["data"]["last_turn"])


def hivectl(
    port: int, *args: str, token: str = SECRETS["operator"]
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HIVED_URL": f"ws://127.0.0.1:{port}", "HIVED_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "hived.cli.hivectl", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=DEADLINE_S,
        check=False,
    )


async def store_committed(admin_url: str) -> None:
    """Until the store has nothing left to write."""
    async with connect(admin_url, SECRETS["admin"], reconnect=False) as admin:
        with trio.move_on_after(DEADLINE_S):
            while True:
                store = (await admin.request("status"))["store"]
                if store["pending"] == 0 and store["write_lag_ms"] == 0:
                    return
                await trio.sleep(0.02)
    raise AssertionError(f"the store still has work after {DEADLINE_S} s: {store}")


async def summary_when(
    client: Client, session: str, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the session's summary until ``condition`` holds, under a deadline."""
    seen: dict[str, Any] = {}
    with trio.move_on_after(DEADLINE_S):
        while True:
            seen = await summary(client, session)
            if condition(seen):
                return seen
            await trio.sleep(0.05)
    raise AssertionError(f"session {session} never got there; last seen: {seen}")


async def summary(client: Client, session: str) -> dict[str, Any]:
    listed = await client.request("sessions", all=True)
    return next(s for s in listed["sessions"] if s["id"] == session)


async def test_a_real_claude_session_from_first_prompt_to_resume_after_a_crash(
    hived: Launcher, standin: StandIn, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    port, config = hived.config(body=claude_template(standin, home))
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        started = await client.request("session.start", agent="real", prompt="hello")
        session = started["session"]
        watch = Watch(await client.subscribe(f"session/{session}", since=0))

        # A plain turn: the agent's text, and its own cost figure.
        first = await watch.kind("result")
        assert last_turn(first) == {"ok": True, "error": None, "message": None}
        assert first["data"]["total_cost_usd"] == pytest.approx(0.00495)

        # A tool that needs permission, allowed from hivectl.
        await client.request("session.input", session=session, text="please runbash")
        request = await watch.kind("permission_request")
        assert (request["data"]["tool_name"], request["data"]["request_kind"]) == (
            "Bash",
            "permission",
        )
        allowed = await trio.to_thread.run_sync(
            hivectl, port, "approve", session, request["data"]["request_id"]
        )
        assert allowed.returncode == 0, allowed.stderr
        result = await watch.until(
            "the allowed tool's result", lambda e: e["kind"] == "tool_result"
        )
        assert result["data"]["is_error"] is False
        assert (home / "project" / "made-by-claude.txt").exists()
        await watch.kind("result")

        # The same tool, denied with a reason the model is told.
        (home / "project" / "made-by-claude.txt").unlink()
        await client.request("session.input", session=session, text="now runbash")
        request = await watch.kind("permission_request")
        await client.request(
            "session.approve",
            session=session,
            request_id=request["data"]["request_id"],
            allow=False,
            message="not on this box",
        )
        denied = await watch.until("the denied tool's result", lambda e: e["kind"] == "tool_result")
        assert denied["data"]["is_error"] is True
        assert "not on this box" in json.dumps(denied["data"]["content"])
        assert not (home / "project" / "made-by-claude.txt").exists()
        await watch.kind("result")

        # A question, answered with its answer.
        await client.request("session.input", session=session, text="askme something")
        question = await watch.kind("permission_request")
        assert question["data"]["request_kind"] == "question"
        asked = question["data"]["input"]["questions"][0]
        waiting = await summary(client, session)
        assert (waiting["state"], waiting["reason"]) == ("WAITING", "question")
        answer = asked["options"][1]["label"]
        await client.request(
            "session.answer",
            session=session,
            request_id=question["data"]["request_id"],
            answers={asked["question"]: answer},
        )
        answered = await watch.until(
            "the answer's tool_result", lambda e: e["kind"] == "tool_result"
        )
        assert answer in json.dumps(answered["data"]["content"])
        await watch.kind("result")

        # An API error is a failed turn, in the event and in the summary.
        await client.request("session.input", session=session, text="failplease")
        failed = await watch.kind("result")
        assert last_turn(failed)["ok"] is False
        assert last_turn(failed)["error"] == "api_error"
        assert (await summary(client, session))["last_turn"]["error"] == "api_error"

        # An interrupt ends the turn, not the session.
        await client.request("session.input", session=session, text="reply slowly")
        await watch.until("the slow reply", lambda e: e["kind"] == "init")
        await client.request("session.interrupt", session=session)
        interrupted = await watch.kind("result")
        assert last_turn(interrupted)["error"] == "interrupted"
        before_crash = await summary(client, session)
        assert before_crash["state"] == "WAITING"
        assert before_crash["usage"]["cost_usd"] == pytest.approx(
            interrupted["data"]["total_cost_usd"]
        )
        assert before_crash["usage"]["turns"] == 6
        agent_id = before_crash["agent_session_id"]
    await daemon.kill()

    # A new daemon: the agent outlived the old one under its shim, and goes on.
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        watch = Watch(await client.subscribe(f"session/{session}"))
        # It catches up on what the old daemon had not stored, then waits as it did.
        taken_up = await summary_when(client, session, lambda s: s["state"] == "WAITING")
        assert taken_up["pid"] == before_crash["pid"]
        await client.request("session.input", session=session, text="once again")
        # (What the old daemon published but had not stored is published again first.)
        again = await watch.until(
            "the next turn's result",
            lambda e: e["kind"] == "result" and e["data"].get("result") == "Hi again",
        )
        after = await summary(client, session)
        assert after["usage"]["cost_usd"] == pytest.approx(again["data"]["total_cost_usd"])
        assert after["usage"]["turns"] == 7
    daemon.send_signal(signal.SIGTERM)  # a stop that ends the agent
    assert await daemon.wait_exit() == 0

    # The session ended with that daemon; one command resumes its conversation.
    daemon = await hived.start(config, port=port)
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        assert (await summary(client, session))["state"] == "EXITED"
        watch = Watch(await client.subscribe(f"session/{session}"))
        resumed = await trio.to_thread.run_sync(hivectl, port, "resume", session, "hello")
        assert resumed.returncode == 0, resumed.stderr
        hello = await watch.kind("result")
        assert hello["data"]["result"] == "Hi there"
        after = await summary(client, session)
        assert after["agent_session_id"] == agent_id
        # The cost is the agent's own running total: it goes on across --resume.
        assert after["usage"]["cost_usd"] == pytest.approx(hello["data"]["total_cost_usd"])
        assert after["usage"]["turns"] == 8
        # The model saw the whole conversation: the resumed request carries the earlier turns.
        said = json.dumps(standin.messages_requests()[-1]["messages"])
        assert "askme something" in said
        assert "once again" in said
        seqs = [
            e["seq"]
            for e in (await client.request("session.events", session=session, limit=10000))[
                "events"
            ]
        ]
        assert seqs == list(range(1, len(seqs) + 1))
        await client.request("session.stop", session=session)
