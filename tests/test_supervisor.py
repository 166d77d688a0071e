"""Supervisor tests with real agent processes (examples/agents), on the real clock.

Every wait is a condition polled under a ``trio.fail_after`` deadline: the virtual clock would
jump while real pipes are quiet. Timed behaviour uses short real durations instead.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio

from hived.agents.process import LINE_LIMIT_BYTES
from hived.agents.supervisor import Supervisor
from hived.core.config import AgentConfig, Config, StateConfig
from hived.core.drivers.base import DriverLaunch, TurnOutcome
from hived.core.drivers.lines import text_driver
from hived.core.errors import RequestError
from hived.core.events import SESSIONS_TOPIC, session_topic
from hived.core.protocol import (
    Caller,
    SessionApprove,
    SessionInput,
    SessionInterrupt,
    SessionRestart,
    Sessions,
    SessionStart,
    SessionStop,
)
from hived.core.sessions import SessionSummary, State
from hived.hub import Hub
from tests.e2e.harness import until
from tests.test_process import wait_gone

AGENTS = Path(__file__).resolve().parent.parent / "examples" / "agents"
FAKE_CLAUDE = (
    str(AGENTS / "fake_claude.py"),
    *("-p", "--output-format", "stream-json", "--input-format", "stream-json", "--verbose"),
)
FAKE_CODEX = (str(AGENTS / "fake_codex.py"), "exec", "--json")
FAKE_TEXT = (str(AGENTS / "fake_text.py"),)
MISBEHAVE = str(AGENTS / "misbehave.py")
CALLER = Caller(connection=1, token_name="tester", role="operator")


def agent(*args: str, **fields: Any) -> AgentConfig:
    """A template running ``python ARGS``."""
    return AgentConfig(command=(sys.executable, *args), **fields)  # type: ignore[arg-type]


def make_config(tmp_path: Path, **agents: AgentConfig) -> Config:
    return Config(state=StateConfig(dir=str(tmp_path)), agents=agents)


def cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


class Recorder:
    """A fake store: keeps every summary it is given."""

    def __init__(self) -> None:
        self.summaries: list[SessionSummary] = []

    def record_session(self, summary: SessionSummary) -> None:
        self.summaries.append(summary)

    async def keep_session(self, summary: SessionSummary) -> None:
        await trio.lowlevel.checkpoint()
        self.summaries.append(summary)


class Events:
    """What a subscriber of one topic receives, decoded."""

    def __init__(self, hub: Hub, topic: str) -> None:
        self.hub, self.topic = hub, topic
        self.sub = hub.subscriber(1_000_000)
        self.seen: list[dict[str, Any]] = []

    async def wait(self, condition: Callable[[], object], timeout_s: float = 10.0) -> None:
        with trio.fail_after(timeout_s):
            while not condition():
                self.seen += [orjson.loads(f) for f in await self.sub.receive_batch()]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.seen if e["kind"] == kind]

    async def wait_line(self, line: str, timeout_s: float = 10.0) -> None:
        """Until a ``text`` event carries ``line``."""
        await self.wait(lambda: line in self.lines(), timeout_s)

    def lines(self) -> list[str]:
        return [d["line"] for d in self.of("text")]

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.seen]

    def states(self) -> list[str]:
        return [d["state"] for d in self.of("state")]


@attrs.define
class Harness:
    sup: Supervisor
    hub: Hub

    async def call(self, wire_type: str, request: Any) -> Any:
        return await self.sup.handlers()[wire_type](request, CALLER)

    async def start(self, agent: str, **fields: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await self.call(
            "session.start", SessionStart(agent=agent, **fields)
        )
        return answer

    async def events(self, topic: str) -> Events:
        """Everything published on ``topic`` so far (kept in the hub's ring), then live."""
        events = Events(self.hub, topic)
        await self.hub.subscribe(events.sub, topic, 0)
        return events

    async def state_becomes(self, ref: str, *states: State, timeout_s: float = 10.0) -> None:
        """Until the session is in one of ``states`` (each change is published on sessions)."""
        lifecycle = await self.events(SESSIONS_TOPIC)
        await lifecycle.wait(lambda: self.sup.find(ref).state in states, timeout_s)


@asynccontextmanager
async def supervising(config: Config, recorder: Recorder | None = None) -> AsyncIterator[Harness]:
    hub = Hub(ring_size=4096)
    sup = Supervisor(config, hub, recorder)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.serve)
        try:
            yield Harness(sup, hub)
        finally:
            with trio.fail_after(15):
                await sup.drain()
            nursery.cancel_scope.cancel()


# -- a fake Claude, end to end ----------------------------------------------------------------


async def test_claude_session_turns_usage_permission_interrupt_and_stop(tmp_path: Path) -> None:
    claude = agent(*FAKE_CLAUDE, format="claude", env={"FAKE_CLAUDE_DELAY_MS": "40"})
    recorder = Recorder()
    async with supervising(make_config(tmp_path, claude=claude), recorder) as h:
        lifecycle = await h.events(SESSIONS_TOPIC)
        answer = await h.start("claude", prompt="say hello")
        sid = answer["session"]
        assert answer["name"] == "claude-1"
        assert answer["state"] in ("RUNNING", "WORKING")
        ev = await h.events(session_topic(sid))

        await ev.wait(lambda: ev.of("result"))
        turn = [k for k in ev.kinds() if k not in ("state", "input")]
        assert turn == ["init", "message", "tool_use", "tool_result", "message", "result"]
        summary = h.sup.find(sid)
        assert (summary.state, summary.reason) == (State.WAITING, "result")
        assert summary.usage.input_tokens == 120
        assert summary.usage.output_tokens == 45
        assert summary.usage.cost_usd == pytest.approx(0.0042)
        assert summary.usage.turns == 1
        assert summary.agent_session_id == ev.of("init")[0]["session_id"]

        # A permission request waits for its answer.
        await h.call("session.input", SessionInput(session=sid, text="ask for permission first"))
        await ev.wait(lambda: ev.of("permission_request"))
        request = ev.of("permission_request")[0]
        assert h.sup.find(sid).reason == "permission_request"
        with pytest.raises(RequestError) as unknown:
            await h.call("session.approve", SessionApprove(session=sid, request_id="x", allow=True))
        assert unknown.value.code == "not_found"
        # A unique prefix of the request id, in any case, names it.
        prefix = request["request_id"][:8].upper()
        approve = SessionApprove(session=sid, request_id=prefix, allow=True)
        await h.call("session.approve", approve)
        await ev.wait(lambda: len(ev.of("result")) == 2)
        assert ev.of("tool_result")[-1]["content"] == "hello from fake claude"
        assert h.sup.find(sid).usage.cost_usd == pytest.approx(0.0084)
        inputs = ev.of("input")
        assert inputs[0] == {"text": "say hello", "by": "tester"}
        assert inputs[1] == {"text": "ask for permission first", "by": "tester"}
        assert inputs[2]["approval"] == {
            "request_id": request["request_id"],
            "allow": True,
            "message": None,
            "always": False,
        }

        # An interrupt ends the turn early.
        await h.call("session.input", SessionInput(session=sid, text="a long task"))
        await ev.wait(lambda: len(ev.of("init")) == 3)
        await h.call("session.interrupt", SessionInterrupt(session=sid))
        await ev.wait(lambda: len(ev.of("result")) == 3)
        assert ev.of("result")[2]["subtype"] == "error_during_execution"
        assert ev.of("result")[2]["last_turn"]["error"] == "interrupted"
        assert h.sup.find(sid).last_turn == TurnOutcome(ok=False, error="interrupted")

        stopped = await h.call("session.stop", SessionStop(session=sid))
        assert stopped["state"] == "EXITED"
        assert (await h.call("session.stop", SessionStop(session=sid)))["state"] == "EXITED"

        await lifecycle.wait(lambda: "EXITED" in lifecycle.states())
        states = lifecycle.states()
        assert states[:2] == ["STARTING", "RUNNING"]
        assert states[-2:] == ["STOPPING", "EXITED"]
        assert {"WORKING", "WAITING"} <= set(states)
        last = lifecycle.of("state")[-1]
        assert last["previous"] == "STOPPING"
        assert last["summary"]["usage"]["turns"] == 3
        assert lifecycle.of("state")[0]["previous"] is None
    assert recorder.summaries[-1].state is State.EXITED
    assert recorder.summaries[-1].usage.turns == 3
    assert any(s.pid_start for s in recorder.summaries)


async def test_a_hook_from_a_supervised_claude_session_joins_it(tmp_path: Path) -> None:
    async with supervising(make_config(tmp_path, claude=agent(*FAKE_CLAUDE, format="claude"))) as h:
        sid = (await h.start("claude", prompt="hi"))["session"]
        ev = await h.events(session_topic(sid))
        await ev.wait(lambda: ev.of("result"))
        agent_id = ev.of("init")[0]["session_id"]
        h.sup.ingest_hook({"session_id": agent_id, "hook_event_name": "Stop"})
        await ev.wait(lambda: ev.of("hook"))
        assert ev.of("hook")[0]["hook_event_name"] == "Stop"
        assert [s.id for s in h.sup.summaries()] == [sid]


# -- input and its errors -----------------------------------------------------------------------


async def test_text_session_echoes_input_lines(tmp_path: Path) -> None:
    async with supervising(make_config(tmp_path, echo=agent(*FAKE_TEXT))) as h:
        sid = (await h.start("echo", prompt="first"))["session"]
        ev = await h.events(session_topic(sid))
        await h.call("session.input", SessionInput(session=sid, text="second"))
        await ev.wait(lambda: len(ev.of("text")) == 3)
        assert [d["line"] for d in ev.of("text")][1:] == ["you said: first", "you said: second"]


async def test_input_conflicts(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, codex=agent(*FAKE_CODEX, format="codex"), echo=agent(*FAKE_TEXT, restart="no")
    )
    async with supervising(config) as h:
        codex = (await h.start("codex", prompt="list files"))["session"]
        with pytest.raises(RequestError, match="takes no input") as info:
            await h.call("session.input", SessionInput(session=codex, text="more"))
        assert info.value.code == "conflict"
        ev = await h.events(session_topic(codex))
        await ev.wait(lambda: any("You asked: 'list files'" in d["text"] for d in ev.of("message")))

        echo = (await h.start("echo"))["session"]
        with pytest.raises(RequestError, match="has no pending request 'r'; pending: none") as info:
            await h.call(
                "session.approve", SessionApprove(session=echo, request_id="r", allow=True)
            )
        assert info.value.code == "not_found"
        await h.call("session.stop", SessionStop(session=echo))
        with pytest.raises(RequestError, match="is EXITED") as info:
            await h.call("session.input", SessionInput(session=echo, text="late"))
        assert info.value.code == "conflict"
        with pytest.raises(RequestError) as info:
            await h.call("session.input", SessionInput(session="nobody", text="x"))
        assert info.value.code == "not_found"


async def test_an_interrupted_text_agent_that_exits_is_not_failed_nor_restarted(
    tmp_path: Path,
) -> None:
    sleeper = agent(MISBEHAVE, "sleep", restart="always")
    async with supervising(make_config(tmp_path, sleeper=sleeper)) as h:
        sid = (await h.start("sleeper"))["session"]
        ev = await h.events(session_topic(sid))
        await ev.wait(lambda: ev.of("text"))
        await h.call("session.interrupt", SessionInterrupt(session=sid))
        await ev.wait(lambda: "EXITED" in ev.states())
        exited = ev.of("state")[-1]
        assert (exited["exit_code"], exited["signal"]) == (-signal.SIGINT, "SIGINT")
        assert exited["reason"] == "interrupted (killed by SIGINT)"
        assert ev.of("input")[-1] == {"interrupt": True, "by": "tester"}
        assert h.sup.find(sid).state is State.EXITED
        assert "BACKOFF" not in ev.states()


async def test_a_claude_restart_by_policy_resumes_and_never_resends_the_first_prompt(
    tmp_path: Path,
) -> None:
    claude = agent(*FAKE_CLAUDE, format="claude", restart="on-failure")
    async with supervising(make_config(tmp_path, claude=claude)) as h:
        sid = (await h.start("claude", prompt="say hello"))["session"]
        ev = await h.events(session_topic(sid))
        await ev.wait(lambda: len(ev.of("result")) == 1)
        first = h.sup.find(sid)
        assert first.agent_session_id
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)  # a crash: FAILED, then the policy restarts it
        await ev.wait(lambda: ev.states().count("RUNNING") == 2)
        again = h.sup.find(sid)
        assert again.reason == "resumed"
        assert again.pid != first.pid
        # Its cmdline reads empty while its exec is under way (seen on a loaded CI machine).
        resume = [b"--resume", first.agent_session_id.encode()]

        async def resumed() -> bool:
            await trio.lowlevel.checkpoint()
            return cmdline(again.pid)[-3:-1] == resume

        await until("the resume arguments in the new agent's cmdline", resumed, 10)
        # The conversation already has its first prompt: nothing is sent again.
        assert [i["text"] for i in ev.of("input") if "text" in i] == ["say hello"]
        await h.call("session.input", SessionInput(session=sid, text="go on"))
        await ev.wait(lambda: len(ev.of("result")) == 2)
        assert h.sup.find(sid).agent_session_id == first.agent_session_id


# -- starting -----------------------------------------------------------------------------------


async def test_start_errors_and_names(tmp_path: Path) -> None:
    root = tmp_path / "work"
    (root / "inside").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)
    config = make_config(
        tmp_path,
        echo=agent(*FAKE_TEXT, cwd_roots=(str(root),)),
        fixed=agent(*FAKE_TEXT),
    )
    async with supervising(config) as h:
        with pytest.raises(RequestError, match="no agent 'nope'; known: echo, fixed") as info:
            await h.start("nope")
        assert info.value.code == "not_found"
        for cwd in (str(root / "link"), str(root / "inside" / ".." / ".."), "/etc"):
            with pytest.raises(RequestError, match="outside the folders") as info:
                await h.start("echo", cwd=cwd)
            assert info.value.code == "forbidden"
        with pytest.raises(RequestError, match="lists no cwd_roots") as info:
            await h.start("fixed", cwd=str(root))
        assert info.value.code == "forbidden"

        first = await h.start("echo", cwd=str(root / "inside" / ".." / "inside"))
        assert first["name"] == "echo-1"
        assert h.sup.find(first["session"]).cwd == str(root / "inside")
        assert (await h.start("echo"))["name"] == "echo-2"
        await h.start("fixed", name="mine")
        with pytest.raises(RequestError, match="already named 'mine'") as info:
            await h.start("echo", name="mine")
        assert info.value.code == "conflict"

        missing = await h.start("echo", cwd=str(root / "missing"))
        assert missing["state"] == "FAILED"
        assert missing["reason"] == f"cwd does not exist: {root / 'missing'}"


async def test_codex_exec_gets_its_prompt_last_and_its_stdin_closed(tmp_path: Path) -> None:
    codex = agent(*FAKE_CODEX, format="codex", args_allowed=("-m", "gpt"))
    async with supervising(make_config(tmp_path, codex=codex)) as h:
        sid = (await h.start("codex", prompt="count files", args=("-m", "gpt")))["session"]
        ev = await h.events(session_topic(sid))
        await ev.wait(lambda: "EXITED" in ev.states())
        assert any("You asked: 'count files'" in d["text"] for d in ev.of("message"))
        usage = h.sup.find(sid).usage
        # Codex counts the cached input inside input_tokens; hived counts it apart, as Claude.
        assert (usage.input_tokens, usage.cache_read_tokens) == (2400 - 2048, 2048)


async def test_operator_args_are_only_those_the_template_allows(tmp_path: Path) -> None:
    """An operator's args used to append any flag to a template (--dangerously-skip-permissions
    reached a claude session); now a template lists what it takes."""
    config = make_config(
        tmp_path,
        none=agent(*FAKE_TEXT),
        listed=agent(*FAKE_TEXT, args_allowed=("--fast", "--slow")),
        pattern=agent(*FAKE_TEXT, args_allowed="--model=(opus|sonnet)"),
    )
    async with supervising(config) as h:
        refused = [
            ("none", ("--fast",)),
            ("listed", ("--fast", "--dangerously-skip-permissions")),
            ("pattern", ("--model=opus", "--model=opus --yolo")),
            ("pattern", ("--model=haiku",)),
        ]
        for name, args in refused:
            with pytest.raises(RequestError, match="does not take the argument") as info:
                await h.start(name, args=args)
            assert info.value.code == "forbidden"
            assert f"agents.{name}.args_allowed" in info.value.message
        assert h.sup.summaries() == [], "a refused start makes no session"
        for name, args in [("listed", ("--slow", "--fast")), ("pattern", ("--model=sonnet",))]:
            sid = (await h.start(name, args=args))["session"]
            launch = h.sup.find(sid).launch
            assert launch is not None
            assert tuple(launch["args"]) == args


async def test_a_template_without_cwd_runs_in_a_folder_of_its_own_not_the_state_folder(
    tmp_path: Path,
) -> None:
    async with supervising(make_config(tmp_path, echo=agent(*FAKE_TEXT))) as h:
        sid = (await h.start("echo"))["session"]
        work = tmp_path / "work" / "echo"
        assert h.sup.find(sid).cwd == str(work)
        assert work.is_dir()
        assert stat.S_IMODE(work.stat().st_mode) == 0o700


async def test_autostart_starts_sessions_with_the_daemon(tmp_path: Path) -> None:
    async with supervising(make_config(tmp_path, echo=agent(*FAKE_TEXT, autostart=2))) as h:
        assert sorted(s.name for s in h.sup.summaries()) == ["echo-1", "echo-2"]
        for summary in h.sup.summaries():
            await h.state_becomes(summary.id, State.RUNNING)


# -- finding sessions and listing them ----------------------------------------------------------


async def test_find_by_id_prefix_and_name(tmp_path: Path) -> None:
    async with supervising(make_config(tmp_path, echo=agent(*FAKE_TEXT))) as h:
        a = (await h.start("echo", name="alpha"))["session"]
        # While it is the only session: two ids made in one millisecond differ only at the end.
        assert h.sup.find(a[:-1]).id == a
        assert h.sup.find(a.lower()).id == a
        b = (await h.start("echo"))["session"]
        assert h.sup.find(a).id == a
        assert h.sup.find("alpha").id == a
        assert h.sup.find(b.lower()).id == b
        with pytest.raises(RequestError, match="ambiguous") as info:
            h.sup.find(a[:5])
        assert info.value.code == "bad_request"
        assert a in info.value.message
        assert b in info.value.message
        with pytest.raises(RequestError) as info:
            h.sup.find("zzz")
        assert info.value.code == "not_found"


async def test_sessions_lists_live_ones_newest_first_with_filters(tmp_path: Path) -> None:
    config = make_config(tmp_path, echo=agent(*FAKE_TEXT), quick=agent(MISBEHAVE, "exit", "0"))
    async with supervising(config) as h:
        a = (await h.start("echo"))["session"]
        b = (await h.start("echo"))["session"]
        q = (await h.start("quick", name="q"))["session"]
        await h.state_becomes(q, State.EXITED)

        async def ids(**fields: Any) -> list[str]:
            answer = await h.call("sessions", Sessions(**fields))
            return [s["id"] for s in answer["sessions"]]

        assert await ids() == [b, a]
        assert await ids(all=True) == [q, b, a]
        assert await ids(state="EXITED") == [q]
        assert await ids(agent="quick", all=True) == [q]
        assert await ids(all=True, limit=1) == [q]
        assert await ids(since="2000-01-01T00:00:00Z") == [q, b, a]
        assert await ids(since="2999-01-01T00:00:00Z") == []


# -- exits, restarts, stops ---------------------------------------------------------------------


async def test_an_agent_that_exits_at_once_with_0_is_exited(tmp_path: Path) -> None:
    async with supervising(make_config(tmp_path, quick=agent(MISBEHAVE, "exit", "0"))) as h:
        sid = (await h.start("quick"))["session"]
        await h.state_becomes(sid, State.EXITED)
        summary = h.sup.find(sid)
        assert (summary.exit_code, summary.reason, summary.pid) == (0, "exit status 0", None)
        assert summary.ended_at is not None


async def test_on_failure_backs_off_then_goes_fatal(tmp_path: Path) -> None:
    failing = agent(MISBEHAVE, "exit", "3", max_restarts=1, restart_window_s=60.0)
    async with supervising(make_config(tmp_path, failing=failing)) as h:
        lifecycle = await h.events(SESSIONS_TOPIC)
        sid = (await h.start("failing"))["session"]
        await lifecycle.wait(lambda: "FATAL" in lifecycle.states())
        assert lifecycle.states() == [
            "STARTING",
            "RUNNING",
            "FAILED",
            "BACKOFF",
            "STARTING",
            "RUNNING",
            "FAILED",
            "FATAL",
        ]
        states = lifecycle.of("state")
        assert states[2]["reason"] == "exit status 3"
        assert states[2]["exit_code"] == 3
        assert states[3]["reason"] == "restart in 1 s"
        assert states[-1]["reason"] == "1 restarts within 60 s"
        assert h.sup.find(sid).restarts == 1

        # A manual restart gives a FATAL session a fresh budget.
        answer = await h.call("session.restart", SessionRestart(session=sid))
        assert answer["state"] in ("RUNNING", "FAILED", "BACKOFF")
        assert h.sup.find(sid).restarts == 2


async def test_restart_policy_no_and_on_failure_after_success(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        once=agent(MISBEHAVE, "exit", "5", restart="no"),
        clean=agent(MISBEHAVE, "exit", "0", restart="on-failure"),
    )
    async with supervising(config) as h:
        once = (await h.start("once"))["session"]
        clean = (await h.start("clean"))["session"]
        await h.state_becomes(once, State.FAILED)
        await h.state_becomes(clean, State.EXITED)
        # Their tasks have ended: a stop answers at once, with the state as it was.
        with trio.fail_after(1):
            assert (await h.call("session.stop", SessionStop(session=once)))["state"] == "FAILED"
            assert (await h.call("session.stop", SessionStop(session=clean)))["state"] == "EXITED"
        assert h.sup.find(once).restarts == h.sup.find(clean).restarts == 0


async def test_restart_always_restarts_a_clean_exit_and_stop_ends_the_backoff(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, again=agent(MISBEHAVE, "exit", "0", restart="always"))
    async with supervising(config) as h:
        sid = (await h.start("again"))["session"]
        await h.state_becomes(sid, State.BACKOFF)
        with trio.fail_after(1):  # well before the 1 s delay ends
            answer = await h.call("session.stop", SessionStop(session=sid))
        assert answer == {"session": sid, "name": "again-1", "state": "EXITED", "reason": "stopped"}


async def test_a_command_not_found_fails_with_its_reason_and_no_restart(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        typo=AgentConfig(command=("claudee-not-here", "-p"), restart="always"),  # type: ignore[arg-type]
    )
    async with supervising(config) as h:
        lifecycle = await h.events(SESSIONS_TOPIC)
        answer = await h.start("typo")
        assert answer["state"] == "FAILED"
        assert answer["reason"] == "command not found: claudee-not-here"
        # The session's task has ended: a stop answers at once, and nothing was restarted.
        with trio.fail_after(1):
            await h.call("session.stop", SessionStop(session=answer["session"]))
        await lifecycle.wait(lambda: "FAILED" in lifecycle.states())
        assert lifecycle.states() == ["STARTING", "FAILED"]


async def test_stop_kills_an_agent_that_ignores_sigterm_and_its_grandchild(tmp_path: Path) -> None:
    config = make_config(tmp_path, stubborn=agent(MISBEHAVE, "ignore-term", stop_timeout_s=0.3))
    async with supervising(config) as h:
        sid = (await h.start("stubborn"))["session"]
        ev = await h.events(session_topic(sid))
        await ev.wait(lambda: ev.of("text"))
        _, pid, grandchild = ev.of("text")[0]["line"].split()
        assert h.sup.find(sid).pid == int(pid)
        with trio.fail_after(5):
            answer = await h.call("session.stop", SessionStop(session=sid))
        assert answer["state"] == "EXITED"
        await ev.wait(lambda: "EXITED" in ev.states())
        assert ev.of("state")[-1]["signal"] == "SIGKILL"
        await wait_gone(int(pid), int(grandchild))


async def test_restart_of_a_running_session_starts_a_new_process(tmp_path: Path) -> None:
    async with supervising(make_config(tmp_path, echo=agent(*FAKE_TEXT))) as h:
        sid = (await h.start("echo"))["session"]
        first_pid = h.sup.find(sid).pid
        answer = await h.call("session.restart", SessionRestart(session=sid))
        assert answer["state"] == "RUNNING"
        summary = h.sup.find(sid)
        assert summary.pid not in (None, first_pid)
        assert summary.restarts == 1


async def test_drain_stops_every_session(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        echo=agent(*FAKE_TEXT, autostart=2),
        stubborn=agent(MISBEHAVE, "ignore-term", stop_timeout_s=30.0, autostart=1),
    )
    hub = Hub()
    sup = Supervisor(config, hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.serve)
        stubborn = sup.find("stubborn-1").id
        ev = await Harness(sup, hub).events(session_topic(stubborn))
        await ev.wait(lambda: ev.of("text"))  # it ignores SIGTERM from now on
        # The daemon's deadline is shorter than the stubborn agent's 30 s grace: SIGKILL comes
        # a reap budget (5 s) before it.
        started = trio.current_time()
        with trio.fail_after(10), trio.move_on_after(5.5):
            await sup.drain()
        assert 0.5 <= trio.current_time() - started < 5.5
        assert [s.state for s in sup.summaries()] == [State.EXITED] * 3
        assert sup.find(stubborn).exit_code == -signal.SIGKILL
        with pytest.raises(RequestError, match="stopping"):
            await sup.handlers()["session.start"](SessionStart(agent="echo"), CALLER)
        nursery.cancel_scope.cancel()


# -- output -------------------------------------------------------------------------------------


async def test_a_line_over_the_limit_is_cut_with_a_note_and_the_next_line_arrives(
    tmp_path: Path,
) -> None:
    size = LINE_LIMIT_BYTES + LINE_LIMIT_BYTES // 2
    async with supervising(make_config(tmp_path, big=agent(MISBEHAVE, "bigline", str(size)))) as h:
        sid = (await h.start("big"))["session"]
        ev = await h.events(session_topic(sid))
        await ev.wait(lambda: "EXITED" in ev.states())
        cut, after = ev.of("text")
        assert len(cut["line"]) == LINE_LIMIT_BYTES
        assert "cut" in cut["note"]
        assert after == {"line": "after"}


async def test_a_text_agents_lines_are_published_as_its_driver_reads_them(
    tmp_path: Path,
) -> None:
    """The ``text`` format's lines are published without the driver (the hot path): each
    event is what the driver makes of its line."""
    out = b"plain\r\nstray returns\r\r\n\nnot utf-8 \xff\n\ttabs  \nno newline"
    script = f"import sys; sys.stdout.buffer.write({out!r})"
    async with supervising(make_config(tmp_path, raw=agent("-c", script))) as h:
        sid = (await h.start("raw"))["session"]
        ev = await h.events(session_topic(sid))
        await ev.wait(lambda: "EXITED" in ev.states())
        lines = ["plain", "stray returns\r", "", "not utf-8 \ufffd", "\ttabs  ", "no newline"]
        driver = text_driver(DriverLaunch(cwd=str(tmp_path)))
        assert ev.of("text") == [driver.feed(line).events[0].data for line in lines]
        assert ev.of("text")[1] == {"line": "stray returns"}


async def test_garbage_output_is_replaced_not_fatal(tmp_path: Path) -> None:
    async with supervising(make_config(tmp_path, junk=agent(MISBEHAVE, "garbage"))) as h:
        sid = (await h.start("junk"))["session"]
        ev = await h.events(session_topic(sid))
        await ev.wait(lambda: "EXITED" in ev.states())
        lines = [d["line"] for d in ev.of("text")]
        assert lines[0].startswith("\ufffd\ufffd\ufffd not utf-8")
        assert lines[-1] == "the last line has no newline \ufffd"


async def test_a_flood_does_not_stall_another_session(tmp_path: Path) -> None:
    count = 100_000
    config = make_config(
        tmp_path, flood=agent(MISBEHAVE, "flood", str(count)), echo=agent(*FAKE_TEXT)
    )
    async with supervising(config) as h:
        echo = (await h.start("echo"))["session"]
        ev = await h.events(session_topic(echo))
        flood = (await h.start("flood"))["session"]
        round_trips = during_flood = 0
        while h.sup.find(flood).state is not State.EXITED or round_trips < 3:
            round_trips += 1
            during_flood += 1000 < h.hub.last_seq(session_topic(flood)) < count
            await h.call("session.input", SessionInput(session=echo, text=f"ping {round_trips}"))
            await ev.wait_line(f"you said: ping {round_trips}", timeout_s=2.0)
        assert during_flood >= 1
        # Every line became an event: STARTING, RUNNING, the lines, EXITED.
        assert h.hub.last_seq(session_topic(flood)) == count + 3


async def test_silence_stalls_a_session_and_output_brings_it_back(tmp_path: Path) -> None:
    async with supervising(make_config(tmp_path, echo=agent(*FAKE_TEXT, idle_s=0.3))) as h:
        sid = (await h.start("echo"))["session"]
        await h.state_becomes(sid, State.STALLED, timeout_s=5)
        assert h.sup.find(sid).reason == "no output for 0.3 s"
        await h.call("session.input", SessionInput(session=sid, text="wake up"))
        await h.state_becomes(sid, State.RUNNING, timeout_s=5)
        assert h.sup.find(sid).reason == "output"


async def test_output_keeps_putting_the_stall_off(tmp_path: Path) -> None:
    async with supervising(make_config(tmp_path, echo=agent(*FAKE_TEXT, idle_s=1.5))) as h:
        sid = (await h.start("echo"))["session"]
        ev = await h.events(session_topic(sid))
        for n in range(10):  # 2.5 s of output, a line every 0.25 s: never 1.5 s of silence
            await h.call("session.input", SessionInput(session=sid, text=f"line {n}"))
            await trio.sleep(0.25)
        assert "STALLED" not in ev.states()
        await h.state_becomes(sid, State.STALLED, timeout_s=5)


async def test_stats_count_sessions_by_state(tmp_path: Path) -> None:
    async with supervising(make_config(tmp_path, quick=agent(MISBEHAVE, "exit", "0"))) as h:
        sid = (await h.start("quick"))["session"]
        await h.state_becomes(sid, State.EXITED)
        h.sup.ingest_hook({"session_id": "abc", "hook_event_name": "SessionStart"})
        stats = h.sup.stats()
        assert (stats.sessions, stats.live, stats.observed) == (2, 1, 1)
        assert stats.states == {"EXITED": 1, "RUNNING": 1}


def test_examples_exist() -> None:
    for path in (*FAKE_CLAUDE[:1], *FAKE_CODEX[:1], *FAKE_TEXT, MISBEHAVE):
        assert os.path.exists(path)


async def test_a_stop_whose_caller_goes_away_still_completes(tmp_path: Path) -> None:
    """The server cancels a handler when its client disconnects; the stop must go on."""
    config = make_config(tmp_path, stubborn=agent(MISBEHAVE, "ignore-term", stop_timeout_s=0.3))
    async with supervising(config) as h:
        sid = (await h.start("stubborn"))["session"]
        ev = await h.events(session_topic(sid))
        await ev.wait(lambda: ev.of("text"))  # its SIGTERM handler is in place
        _, pid, grandchild = ev.of("text")[0]["line"].split()
        with trio.move_on_after(0.05) as caller_gone:
            await h.call("session.stop", SessionStop(session=sid))
        assert caller_gone.cancelled_caught
        await ev.wait(lambda: "EXITED" in ev.states())
        assert ev.of("state")[-1]["signal"] == "SIGKILL"
        await wait_gone(int(pid), int(grandchild))
