"""The fake agents of examples/agents, run as real subprocesses and driven by hived's drivers."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import trio
import trio.lowlevel

from hived.core.drivers import get_format
from hived.core.drivers.base import Answer, Driver, DriverLaunch
from hived.core.drivers.claude import interrupt_request
from hived.core.events import AgentEvent, Usage

AGENTS = Path(__file__).resolve().parent.parent / "examples" / "agents"
DEADLINE_S = 15
CLAUDE_FLAGS = [
    "-p",
    "--output-format",
    "stream-json",
    "--input-format",
    "stream-json",
    "--verbose",
    "--permission-prompt-tool",
    "stdio",
]


def load_agent(name: str) -> ModuleType:
    """A fake agent's module, for its constants (it runs nothing on import)."""
    spec = importlib.util.spec_from_file_location(f"fake_agent_{name}", AGENTS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAKE_CLAUDE = load_agent("fake_claude")
FAKE_CODEX = load_agent("fake_codex")
FAKE_TEXT = load_agent("fake_text")


class Agent:
    """A running agent: line-wise stdout, stdin, and its hived driver."""

    def __init__(self, proc: trio.Process, format: str) -> None:
        self.proc = proc
        self.driver: Driver = driver_of(format)
        self.usage: Usage | None = None
        """The driver's last running total."""
        self._buffer = bytearray()

    async def readline(self) -> bytes | None:
        """The next stdout line without its newline; ``None`` at end of output."""
        assert self.proc.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.proc.stdout.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line

    async def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(data)

    async def prompt(self, text: str) -> None:
        await self.send(self.driver.prompt(text).stdin)

    async def answer(self, request_id: str, answer: Answer) -> None:
        await self.send(self.driver.answer(request_id, answer).stdin)

    async def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.aclose()

    async def events_until(self, kind: str) -> list[AgentEvent]:
        """Parsed events up to and including the first of ``kind``."""
        events: list[AgentEvent] = []
        while True:
            line = await self.readline()
            assert line is not None, f"output ended before a {kind!r} event: {events}"
            step = self.driver.feed(line.decode("utf-8", "replace"))
            self.usage = step.usage or self.usage
            new = list(step.events)
            events.extend(new)
            if any(event.kind == kind for event in new):
                return events


def driver_of(format: str) -> Driver:
    return get_format(format).make(DriverLaunch(cwd=str(AGENTS)))


def read_all(format: str, stdout: bytes) -> list[AgentEvent]:
    driver = driver_of(format)
    return [e for raw in stdout.splitlines() for e in driver.feed(raw.decode()).events]


@asynccontextmanager
async def running(
    script: str, *args: str, format: str, env: Mapping[str, str] | None = None, **kwargs: Any
) -> AsyncIterator[Agent]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(AGENTS / script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        **kwargs,
    )
    try:
        with trio.fail_after(DEADLINE_S):
            yield Agent(proc, format)
    finally:
        with trio.CancelScope(shield=True):
            if proc.poll() is None:
                proc.kill()
            await proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    await stream.aclose()


async def run(script: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(DEADLINE_S):
        return await trio.run_process(
            [sys.executable, str(AGENTS / script), *args], capture_stdout=True, check=False
        )


def kinds(events: list[AgentEvent]) -> list[str]:
    return [event.kind for event in events]


# -- fake claude -------------------------------------------------------------------------------


async def test_fake_claude_turn_is_init_text_tool_use_tool_result_text_result() -> None:
    async with running("fake_claude.py", *CLAUDE_FLAGS, format="claude") as agent:
        await agent.prompt("run the tests")
        events = await agent.events_until("result")
    assert kinds(events) == ["init", "message", "tool_use", "tool_result", "message", "result"]
    tool_use, tool_result = events[2], events[3]
    assert tool_use.data["name"] == "Bash"
    assert tool_use.data["input"]["command"] == FAKE_CLAUDE.TOOL_COMMAND
    assert tool_result.data["tool_use_id"] == tool_use.data["id"]
    assert tool_result.data["content"] == FAKE_CLAUDE.TOOL_OUTPUT
    assert tool_result.data["is_error"] is False
    assert [e.state for e in events] == ["WORKING"] * 5 + ["WAITING"]
    assert all("parse_error" not in e.data for e in events)


async def test_fake_claude_result_reports_usage_and_cost() -> None:
    async with running("fake_claude.py", *CLAUDE_FLAGS, format="claude") as agent:
        await agent.prompt("hello")
        result = (await agent.events_until("result"))[-1]
        first = agent.usage
        await agent.prompt("again")
        await agent.events_until("result")
        second = agent.usage
    assert result.data["subtype"] == "success"
    assert first is not None
    assert second is not None
    assert first.input_tokens == FAKE_CLAUDE.TURN_INPUT_TOKENS
    assert first.output_tokens == FAKE_CLAUDE.TURN_OUTPUT_TOKENS
    assert first.cost_usd == FAKE_CLAUDE.TURN_COST_USD
    assert first.turns == 1
    assert first.duration_ms >= 0
    model_usage = result.data["modelUsage"]["claude-opus-4-1"]
    assert model_usage["costUSD"] == FAKE_CLAUDE.TURN_COST_USD
    # As the real CLI's, the fake's total_cost_usd runs on: the driver takes it, not its sum.
    assert second.cost_usd == 2 * FAKE_CLAUDE.TURN_COST_USD
    assert (second.input_tokens, second.turns) == (2 * FAKE_CLAUDE.TURN_INPUT_TOKENS, 2)


async def test_fake_claude_keeps_the_pinned_session_id_and_opens_each_turn_with_init() -> None:
    sid = "5b9c6f0e-1111-4222-8333-444455556666"
    flags = [*CLAUDE_FLAGS, "--session-id", sid, "--model", "claude-sonnet-4-5"]
    async with running("fake_claude.py", *flags, format="claude") as agent:
        await agent.prompt("one")
        first = await agent.events_until("result")
        await agent.prompt("two")
        second = await agent.events_until("result")
    assert first[0].kind == "init"
    assert second[0].kind == "init"
    assert first[0].data["model"] == "claude-sonnet-4-5"
    assert {e.agent_session_id for e in first + second} == {sid}


async def test_fake_claude_permission_allowed_runs_the_tool() -> None:
    async with running("fake_claude.py", *CLAUDE_FLAGS, format="claude") as agent:
        await agent.prompt("ask for permission first")
        before = await agent.events_until("permission_request")
        request = before[-1]
        assert request.state == "WAITING"
        assert request.data["tool_name"] == "Bash"
        assert request.data["tool_use_id"] == before[-2].data["id"]
        await agent.answer(str(request.data["request_id"]), Answer(allow=True))
        after = await agent.events_until("result")
    assert kinds(before) == ["init", "message", "tool_use", "permission_request"]
    assert kinds(after) == ["tool_result", "message", "result"]
    assert after[0].data["is_error"] is False
    assert after[0].data["content"] == FAKE_CLAUDE.TOOL_OUTPUT
    assert after[-1].data["permission_denials"] == []


async def test_fake_claude_permission_denied_says_so() -> None:
    async with running("fake_claude.py", *CLAUDE_FLAGS, format="claude") as agent:
        await agent.prompt("this needs Permission")
        request = (await agent.events_until("permission_request"))[-1]
        request_id = str(request.data["request_id"])
        await agent.answer(request_id, Answer(allow=False, message="not today"))
        after = await agent.events_until("result")
    assert kinds(after) == ["tool_result", "message", "result"]
    assert after[0].data["is_error"] is True
    assert "denied" in after[1].data["text"]
    assert "not today" in after[1].data["text"]
    assert after[-1].data["permission_denials"][0]["tool_name"] == "Bash"


async def test_fake_claude_interrupt_while_waiting_for_permission_ends_the_turn() -> None:
    async with running("fake_claude.py", *CLAUDE_FLAGS, format="claude") as agent:
        await agent.prompt("permission please")
        request = (await agent.events_until("permission_request"))[-1]
        interrupt = agent.driver.interrupt().stdin
        await agent.send(interrupt)
        after = await agent.events_until("result")
    # As the real CLI: the request is withdrawn first, then the interrupt answered.
    assert kinds(after) == ["agent_event", "request_withdrawn", "agent_event", "result"]
    assert after[1].data["request_id"] == request.data["request_id"]
    response = after[2].data["response"]
    request_id = orjson.loads(interrupt)["request_id"]
    assert response == {"subtype": "success", "request_id": request_id, "response": {}}
    assert after[3].data["subtype"] == "error_during_execution"
    assert after[3].data["terminal_reason"] == "aborted_tools"
    assert after[3].data["last_turn"]["error"] == "interrupted"
    assert after[3].state == "WAITING"


async def test_fake_claude_with_a_delay_can_be_interrupted_mid_turn() -> None:
    env = {"FAKE_CLAUDE_DELAY_MS": "5000"}
    async with running("fake_claude.py", *CLAUDE_FLAGS, format="claude", env=env) as agent:
        await agent.prompt("take your time")
        first = await agent.events_until("init")
        await agent.send(agent.driver.interrupt().stdin)
        after = await agent.events_until("result")
    assert first[-1].state == "WORKING"
    assert "tool_result" not in kinds(after)
    assert after[-1].data["subtype"] == "error_during_execution"


async def test_fake_claude_answers_an_interrupt_between_turns() -> None:
    async with running("fake_claude.py", *CLAUDE_FLAGS, format="claude") as agent:
        interrupt = interrupt_request()
        await agent.send(interrupt)
        line = await agent.readline()
    assert line is not None
    event = agent.driver.feed(line.decode()).events[0]
    assert event.kind == "agent_event"
    assert event.data["response"]["request_id"] == orjson.loads(interrupt)["request_id"]


async def test_fake_claude_exits_0_at_end_of_input_after_finishing_the_turn() -> None:
    async with running("fake_claude.py", *CLAUDE_FLAGS, format="claude") as agent:
        await agent.prompt("last one")
        await agent.close_stdin()
        events = await agent.events_until("result")
        assert await agent.readline() is None
        assert await agent.proc.wait() == 0
    assert kinds(events)[-1] == "result"


async def test_fake_claude_exits_0_on_sigterm() -> None:
    env = {"FAKE_CLAUDE_DELAY_MS": "10000"}
    async with running("fake_claude.py", *CLAUDE_FLAGS, format="claude", env=env) as agent:
        await agent.prompt("slow")
        await agent.events_until("init")
        agent.proc.send_signal(signal.SIGTERM)
        assert await agent.proc.wait() == 0


async def test_fake_claude_prompt_argument_runs_one_turn_and_exits() -> None:
    result = await run("fake_claude.py", "-p", "hi", "--output-format", "stream-json", "--verbose")
    assert result.returncode == 0
    events = read_all("claude", result.stdout)
    assert kinds(events) == ["init", "message", "tool_use", "tool_result", "message", "result"]


# -- fake codex and fake text ------------------------------------------------------------------


async def test_fake_codex_reads_through_the_codex_parser() -> None:
    result = await run("fake_codex.py", "exec", "--json", "list the files")
    assert result.returncode == 0
    driver = driver_of("codex")
    steps = [driver.feed(raw.decode()) for raw in result.stdout.splitlines()]
    events = [e for step in steps for e in step.events]
    assert kinds(events) == ["init", "agent_event", "tool_use", "tool_result", "message", "result"]
    assert events[0].agent_session_id
    assert events[2].data["input"] == {"command": FAKE_CODEX.COMMAND}
    assert events[3].data["exit_code"] == 0
    assert events[3].data["content"] == FAKE_CODEX.COMMAND_OUTPUT
    assert "list the files" in events[4].data["text"]
    assert events[-1].state == "WAITING"
    assert steps[-1].usage == Usage(
        input_tokens=FAKE_CODEX.INPUT_TOKENS - FAKE_CODEX.CACHED_INPUT_TOKENS,
        cache_read_tokens=FAKE_CODEX.CACHED_INPUT_TOKENS,
        output_tokens=FAKE_CODEX.OUTPUT_TOKENS,
        turns=1,
    )


async def test_fake_text_greets_echoes_and_exits_0_at_end_of_input() -> None:
    async with running("fake_text.py", format="text") as agent:
        assert await agent.readline() == FAKE_TEXT.GREETING.encode()
        await agent.prompt("hi there")
        assert await agent.readline() == b"you said: hi there"
        await agent.close_stdin()
        assert await agent.proc.wait() == 0


async def test_fake_text_exits_0_on_sigterm() -> None:
    async with running("fake_text.py", format="text") as agent:
        assert await agent.readline() == FAKE_TEXT.GREETING.encode()
        agent.proc.send_signal(signal.SIGTERM)
        assert await agent.proc.wait() == 0


# -- misbehave ---------------------------------------------------------------------------------


def ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


async def test_misbehave_ignore_term_leaves_itself_and_a_grandchild_ignoring_sigterm() -> None:
    async with running(
        "misbehave.py", "ignore-term", format="text", start_new_session=True
    ) as agent:
        line = await agent.readline()
        assert line is not None
        word, pid, grandchild = line.decode().split()
        try:
            assert word == "pid"
            assert int(pid) == agent.proc.pid
            assert ignores_sigterm(int(pid))
            assert ignores_sigterm(int(grandchild))
            # An ignored signal is discarded when sent: both are still there afterwards.
            os.killpg(agent.proc.pid, signal.SIGTERM)
            assert agent.proc.poll() is None
            os.kill(int(grandchild), 0)
        finally:
            os.killpg(agent.proc.pid, signal.SIGKILL)
        assert await agent.proc.wait() == -signal.SIGKILL


async def test_misbehave_exit_exits_with_the_code() -> None:
    assert (await run("misbehave.py", "exit", "7")).returncode == 7


async def test_misbehave_flood_prints_n_lines_of_300_bytes() -> None:
    result = await run("misbehave.py", "flood", "2000")
    lines = result.stdout.split(b"\n")
    assert lines[-1] == b""
    assert len(lines) - 1 == 2000
    assert lines[1999].startswith(b"line 1999 ")
    assert {len(line) + 1 for line in lines[:-1]} == {300}


async def test_misbehave_flood_jsonl_prints_json_objects() -> None:
    result = await run("misbehave.py", "flood", "500", "--jsonl")
    events = read_all("jsonl", result.stdout)
    assert len(events) == 500
    assert {e.kind for e in events} == {"agent_event"}
    assert events[-1].data["i"] == 499


async def test_misbehave_bigline_prints_one_line_of_that_size_then_after() -> None:
    size = 1024 * 1024
    result = await run("misbehave.py", "bigline", str(size))
    assert result.stdout.split(b"\n") == [b"x" * size, b"after", b""]


async def test_misbehave_garbage_is_invalid_utf8_ending_without_a_newline() -> None:
    result = await run("misbehave.py", "garbage")
    assert result.returncode == 0
    assert not result.stdout.endswith(b"\n")
    lines = result.stdout.split(b"\n")
    assert any(b"\xff" in raw for raw in lines)
    for format in ("text", "claude"):
        driver = driver_of(format)
        events = [e for raw in lines for e in driver.feed(raw.decode("utf-8", "replace")).events]
        assert len(events) == len(lines)


async def test_misbehave_sleep_says_ready_then_waits_to_be_killed() -> None:
    async with running("misbehave.py", "sleep", format="text") as agent:
        assert await agent.readline() == b"ready"
        assert agent.proc.poll() is None
        agent.proc.kill()
        assert await agent.proc.wait() == -signal.SIGKILL
