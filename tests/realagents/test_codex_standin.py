"""The real ``codex app-server``, driven by hived's Codex driver, against the OpenAI stand-in.

A small synchronous loop stands in for the session's task: a thread reads Codex's stdout into a
queue; the test feeds each line to :class:`CodexAppDriver`, writes whatever the driver asks to
stdin, and acts as the operator (answers approvals, interrupts). Every wait polls with a
deadline; the process group is killed at the end. Skipped when the pinned binary is not
installed (``tests/realagents/install_codex.sh``; ``HIVED_CODEX_BIN`` overrides the path).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hived.core.drivers.base import Answer, DriverLaunch, Step, TurnOutcome
from hived.core.drivers.codex_app import CodexAppDriver
from hived.core.events import AgentEvent
from tests.realagents.codex_env import CodexEnv, codex_binary, codex_env
from tests.realagents.openai_standin import StandIn

BINARY = codex_binary()
pytestmark = pytest.mark.skipif(
    not BINARY.exists(),
    reason=f"no Codex binary at {BINARY}: run tests/realagents/install_codex.sh "
    "(or set HIVED_CODEX_BIN)",
)

STEP_TIMEOUT_S = 15.0


class Session:
    """One ``codex app-server`` process and the driver that speaks for hived."""

    def __init__(self, env: CodexEnv, launch: DriverLaunch) -> None:
        self.driver = CodexAppDriver(launch)
        self.proc = subprocess.Popen(
            env.app_server_argv,
            env=env.env,
            cwd=env.workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.events: list[AgentEvent] = []
        self.outcomes: list[TurnOutcome] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace"))
        self.lines.put(None)

    def apply(self, step: Step) -> None:
        self.events.extend(step.events)
        if step.last_turn is not None:
            self.outcomes.append(step.last_turn)
        if step.stdin:
            assert self.proc.stdin is not None
            self.proc.stdin.write(step.stdin)
            self.proc.stdin.flush()

    def run_until(
        self,
        done: Callable[[], bool],
        on_event: Callable[[AgentEvent], None] | None = None,
        timeout_s: float = STEP_TIMEOUT_S,
    ) -> None:
        """Feed lines to the driver until ``done()``; ``on_event`` sees each new event."""
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; last events: {self.events[-5:]}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("codex app-server exited")
            seen = len(self.events)
            self.apply(self.driver.feed(line))
            if on_event is not None:
                for event in self.events[seen:]:
                    on_event(event)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._reader.join(timeout=5)


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture
def env(standin: StandIn, tmp_path: Path) -> CodexEnv:
    return codex_env(standin.port, tmp_path, BINARY)


def turns_ended(session: Session, count: int) -> Callable[[], bool]:
    return lambda: len(session.outcomes) >= count


def test_three_prompts_with_an_approval_accepted(env: CodexEnv, standin: StandIn) -> None:
    session = Session(env, DriverLaunch(cwd=str(env.workdir), prompt="say hello"))
    try:

        def approve(event: AgentEvent) -> None:
            if event.kind == "permission_request":
                session.apply(session.driver.answer(event.data["request_id"], Answer(allow=True)))

        session.apply(session.driver.start())
        session.run_until(turns_ended(session, 1))
        session.apply(session.driver.prompt("please touch a file"))
        session.run_until(turns_ended(session, 2), approve)
        session.apply(session.driver.prompt("say hello again"))
        session.run_until(turns_ended(session, 3))
    finally:
        session.close()

    assert session.outcomes == [TurnOutcome(ok=True)] * 3
    assert (env.workdir / "approved.txt").exists()
    kinds = [e.kind for e in session.events]
    assert kinds.count("permission_request") == 1
    assert kinds.count("result") == 3
    assert "tool_result" in kinds
    assert session.driver.pending == {}
    prompts = [
        item["content"][0]["text"]
        for body in standin.responses_requests()
        for item in body["input"][-1:]
        if item.get("role") == "user"
    ]
    assert prompts == ["say hello", "please touch a file", "say hello again"]
    usage = [e for e in session.events if e.kind == "result"][-1].data["usage"]
    assert usage["cache_read_tokens"] == 1024
    assert usage["input_tokens"] == 1200 - 1024


def test_an_interrupt_ends_the_slow_turn_and_the_session_goes_on(
    env: CodexEnv, standin: StandIn
) -> None:
    session = Session(env, DriverLaunch(cwd=str(env.workdir), prompt="a slow answer please"))
    try:
        session.apply(session.driver.start())
        session.run_until(lambda: standin.wait_requests(1, timeout_s=0) is True)
        session.apply(session.driver.interrupt())
        session.run_until(turns_ended(session, 1))
        session.apply(session.driver.prompt("say hello"))
        session.run_until(turns_ended(session, 2))
    finally:
        session.close()

    assert session.outcomes == [TurnOutcome(ok=False, error="interrupted"), TurnOutcome(ok=True)]
