"""The supervisor: agent sessions, from spawn to exit, with their restart policy.

How it works: each session is one task in the supervisor's nursery (:meth:`Supervisor.serve`)
that loops over *runs*. A run spawns the template's command in its own process group
(:mod:`hived.process`) and opens a nursery for the run's tasks: a stdout reader (lines → the
format's parser → events → hub), a stderr reader (``stderr`` events), an input writer (queued
input → stdin) and the stall watch (``idle_s`` without output → STALLED, a cancel-scope deadline
that every output pushes back). The run ends when the process exits, or when a stop cancels the
wait and :func:`~hived.process.stop_process_group` ends the group. The restart policy then picks
what follows: nothing, BACKOFF and a new run, or FATAL once the budget is spent.

Every state change goes through :meth:`Supervisor._move`, which checks it against the table of
:mod:`hived.core.sessions`, publishes a ``state`` event on ``sessions`` and on the session's
topic, and hands the summary to the recorder (the store). Sessions seen only through hooks live
in :mod:`hived.observed`; requests find both kinds by id, id prefix or name
(:meth:`Supervisor.find`). :meth:`Supervisor.handlers` answers the client's session requests.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import attrs
import trio

from hived.core.config import AgentConfig, Config
from hived.core.errors import RequestError
from hived.core.events import SESSIONS_TOPIC, AgentEvent, Usage, session_topic, utc_timestamp
from hived.core.parsers import (
    FORMATS_WITH_CONTROL,
    encode_approval,
    encode_input,
    encode_interrupt,
    make_parser,
    new_request_id,
)
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
from hived.core.sessions import (
    ACTIVE_STATES,
    TRANSITIONS,
    RestartBudget,
    SessionSummary,
    State,
    backoff_delay_s,
    check_transition,
    is_live,
    new_session_id,
    ulid_time_ms,
)
from hived.hub import Hub
from hived.observed import ObservedSessions
from hived.orphans import pid_start as process_start
from hived.process import (
    LINE_LIMIT_BYTES,
    REAP_BUDGET_S,
    SpawnError,
    read_lines,
    signal_group,
    spawn,
    stop_process_group,
)

log = logging.getLogger(__name__)

Handler = Callable[[Any, Caller], Awaitable[Any]]

INPUT_QUEUE: Final = 64
"""Inputs queued per session before ``session.input`` answers ``conflict``."""
READER_GRACE_S: Final = 2.0
"""After the process is gone, how long its readers may take to reach the end of its output
(a descendant that escaped the group can hold the pipes open)."""
STARTED_WAIT_S: Final = 5.0
"""How long ``session.start`` waits for the spawn before it answers STARTING."""
MAX_ENDED_SESSIONS: Final = 1000
"""Ended sessions kept in memory; older ones are forgotten here (the store keeps them)."""
CUT_NOTE: Final = f"line cut at {LINE_LIMIT_BYTES} bytes by hived; the rest of it was dropped"


class SessionRecorder(Protocol):
    """Keeps session summaries (the store); called on every state or usage change."""

    def record_session(self, summary: SessionSummary) -> None: ...


@attrs.frozen
class Launch:
    """What a run starts: fixed when the session is made, the same for every restart."""

    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str]
    prompt: str | None = None
    """The first input, written to stdin at each run's start (formats that take input)."""
    started_by: str | None = None
    """The token that started the session (shown on the prompt's ``input`` event)."""


@attrs.define(eq=False)
class Session:
    """A supervised session's mutable state. Its public face is :attr:`summary`."""

    summary: SessionSummary
    template: AgentConfig
    launch: Launch
    budget: RestartBudget
    process: trio.Process | None = None
    inbox: trio.MemorySendChannel[bytes] | None = None
    pending: dict[str, Mapping[str, Any]] = attrs.Factory(dict)
    """Permission requests awaiting an answer: request_id → the tool input."""
    stop_requested: bool = False
    restart_requested: bool = False
    spawn_failed: bool = False
    stop_timeout_s: float | None = None
    """Overrides the template's grace for this stop (the daemon's shutdown budget is shorter)."""
    before_stall: State = State.RUNNING
    wake: trio.CancelScope | None = None
    """Cancelled to end a wait early: the process wait of a run, or the BACKOFF delay."""
    stall: trio.CancelScope | None = None
    changed: trio.Event = attrs.Factory(trio.Event)
    """Set (and replaced) at every state change, for requests that wait for one."""
    done: trio.Event = attrs.Factory(trio.Event)
    """Set when the session's task has ended."""

    @property
    def id(self) -> str:
        return self.summary.id

    @property
    def state(self) -> State:
        return self.summary.state

    @property
    def topic(self) -> str:
        return session_topic(self.summary.id)


def _signal_name(exit_code: int | None) -> str | None:
    if exit_code is None or exit_code >= 0:
        return None
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"


def _exit_reason(exit_code: int) -> str:
    name = _signal_name(exit_code)
    return f"killed by {name}" if name else f"exit status {exit_code}"


@attrs.frozen
class SupervisorStats:
    """Counters for ``status``."""

    sessions: int
    live: int
    observed: int
    states: dict[str, int]
    restarts: int


class Supervisor:
    """Runs agent sessions from the config's templates; a service (docs/internals.md)."""

    def __init__(self, config: Config, hub: Hub, recorder: SessionRecorder | None = None) -> None:
        self._config = config
        self._hub = hub
        self._recorder = recorder
        self._sessions: dict[str, Session] = {}
        self._by_agent_id: dict[str, Session] = {}
        self._numbers: dict[str, int] = {}
        self._nursery: trio.Nursery | None = None
        self._draining = False
        self.observed = ObservedSessions(hub, config.hooks, self._announce, self._join)

    # -- the service ------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the sessions (and start the templates' ``autostart`` ones) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.observed.serve_idle_watch)
            for agent, template in self._config.agents.items():
                for _ in range(template.autostart):
                    self._create(agent, template, prompt=None, args=(), cwd=None, name=None)
            task_status.started()
            await trio.sleep_forever()

    def reload(self, config: Config) -> None:
        """New templates apply to sessions started from now on; running ones keep theirs."""
        self._config = config
        self.observed.reload(config.hooks)

    async def drain(self) -> None:
        """Stop every session at once, within the deadline the daemon set around this call.

        Each gets SIGTERM and its template's grace, shortened so that SIGKILL still comes one
        reap budget before the daemon's deadline. No session starts or restarts afterwards.
        """
        self._draining = True
        deadline = trio.current_effective_deadline()
        grace_s = max(deadline - trio.current_time() - REAP_BUDGET_S, 0.0)
        async with trio.open_nursery() as nursery:
            for session in list(self._sessions.values()):
                if not session.done.is_set():
                    timeout = min(session.template.stop_timeout_s, grace_s)
                    nursery.start_soon(self._stop, session, timeout)

    # -- reading ------------------------------------------------------------------------------

    def summaries(self) -> list[SessionSummary]:
        """Every session kept in memory, supervised and observed, oldest first."""
        summaries = [s.summary for s in self._sessions.values()]
        summaries += [s.summary for s in self.observed]
        return sorted(summaries, key=lambda s: s.id)

    def stats(self) -> SupervisorStats:
        summaries = self.summaries()
        states: dict[str, int] = {}
        for summary in summaries:
            states[summary.state] = states.get(summary.state, 0) + 1
        return SupervisorStats(
            sessions=len(summaries),
            live=sum(is_live(s.state) for s in summaries),
            observed=sum(s.observed for s in summaries),
            states=states,
            restarts=sum(s.restarts for s in summaries),
        )

    def find(self, ref: str) -> SessionSummary:
        """The session named by full id, by name, or by a unique id prefix.

        A name shared by several sessions means the live one, else the newest. Raises
        ``RequestError``: ``not_found`` for no match, ``bad_request`` naming the candidates when
        a prefix is ambiguous.
        """
        summaries = self.summaries()
        for summary in summaries:
            if summary.id == ref:
                return summary
        named = [s for s in summaries if s.name == ref]
        if named:
            live = [s for s in named if is_live(s.state)]
            return (live or named)[-1]
        prefixed = [s for s in summaries if s.id.startswith(ref.upper())]
        if len(prefixed) == 1:
            return prefixed[0]
        if prefixed:
            candidates = ", ".join(f"{s.id} ({s.name})" for s in prefixed[:10])
            more = f" and {len(prefixed) - 10} more" if len(prefixed) > 10 else ""
            raise RequestError(
                "bad_request", f"session {ref!r} is ambiguous: it matches {candidates}{more}"
            )
        raise RequestError("not_found", f"no session {ref!r} (give an id, an id prefix or a name)")

    def _supervised(self, ref: str, action: str) -> Session:
        summary = self.find(ref)
        session = self._sessions.get(summary.id)
        if session is None:
            raise RequestError(
                "conflict",
                f"session {summary.name} is observed through hooks; hived cannot {action} it",
            )
        return session

    # -- hooks ------------------------------------------------------------------------------

    def ingest_hook(self, payload: Mapping[str, Any]) -> None:
        """One Claude Code hook payload (see :mod:`hived.observed`); sync, never blocks."""
        self.observed.ingest_hook(payload)

    def _join(self, agent_session_id: str) -> str | None:
        session = self._by_agent_id.get(agent_session_id)
        return session.id if session is not None else None

    # -- state ------------------------------------------------------------------------------

    def _announce(self, summary: SessionSummary, previous: State | None) -> None:
        """Publish a state change on both topics and record the summary."""
        data = {
            "state": str(summary.state),
            "previous": None if previous is None else str(previous),
            "reason": summary.reason,
            "exit_code": summary.exit_code,
            "signal": _signal_name(summary.exit_code),
            "summary": summary.to_json(),
        }
        self._hub.publish(SESSIONS_TOPIC, "state", data, summary.id)
        self._hub.publish(session_topic(summary.id), "state", data, summary.id)
        self._record(summary)

    def _record(self, summary: SessionSummary) -> None:
        if self._recorder is not None:
            self._recorder.record_session(summary)

    def _move(self, session: Session, new: State, reason: str | None, **changes: Any) -> None:
        previous = session.state
        check_transition(previous, new)
        session.summary = attrs.evolve(session.summary, state=new, reason=reason, **changes)
        # The agent's own WORKING/WAITING flips are many; only the lifecycle is worth info.
        level = logging.DEBUG if {previous, new} <= ACTIVE_STATES else logging.INFO
        log.log(level, "session %s: %s → %s (%s)", session.summary.name, previous, new, reason)
        self._announce(session.summary, previous)
        session.changed.set()
        session.changed = trio.Event()

    async def _wait_for(
        self, session: Session, done: Callable[[Session], bool], timeout_s: float
    ) -> None:
        with trio.move_on_after(timeout_s):
            while not done(session):
                await session.changed.wait()

    # -- making sessions ----------------------------------------------------------------------

    def _create(
        self,
        agent: str,
        template: AgentConfig,
        *,
        prompt: str | None,
        args: tuple[str, ...],
        cwd: str | None,
        name: str | None,
        started_by: str | None = None,
    ) -> Session:
        if self._nursery is None:
            raise RequestError("conflict", "the supervisor is not running")
        argv = (*template.command, *args)
        if prompt is not None and encode_input(template.format, prompt) is None:
            argv, prompt = (*argv, prompt), None
        cwd = cwd or template.cwd or self._config.state.dir
        session = Session(
            summary=SessionSummary(
                id=new_session_id(),
                name=name or self._next_name(agent),
                agent=agent,
                state=State.STARTING,
                cwd=cwd,
            ),
            template=template,
            launch=Launch(argv, cwd, template.env, prompt, started_by),
            budget=RestartBudget(template.max_restarts, template.restart_window_s),
        )
        self._sessions[session.id] = session
        self._forget_ended()
        self._announce(session.summary, None)
        self._start_task(session)
        return session

    def _start_task(self, session: Session) -> None:
        assert self._nursery is not None
        session.done = trio.Event()
        self._nursery.start_soon(self._serve_session, session)

    def _next_name(self, agent: str) -> str:
        taken = {s.name for s in self.summaries() if is_live(s.state)}
        while True:
            n = self._numbers[agent] = self._numbers.get(agent, 0) + 1
            if f"{agent}-{n}" not in taken:
                return f"{agent}-{n}"

    def _forget_ended(self) -> None:
        ended = [s for s in self._sessions.values() if s.done.is_set()]
        for session in ended[: max(len(ended) - MAX_ENDED_SESSIONS, 0)]:
            del self._sessions[session.id]
            if self._by_agent_id.get(session.summary.agent_session_id or "") is session:
                del self._by_agent_id[session.summary.agent_session_id or ""]

    # -- a session's life -------------------------------------------------------------------

    async def _serve_session(self, session: Session) -> None:
        """The session's task: runs, and the restart policy between them."""
        try:
            while True:
                await self._run(session)
                if not await self._next_run(session):
                    break
        except* Exception as group:
            log.error("session %s: internal error", session.summary.name, exc_info=group)
            if State.FAILED in TRANSITIONS[session.state]:
                self._move(session, State.FAILED, f"internal error: {group.exceptions[0]!r}")
        finally:
            session.done.set()
            session.changed.set()

    async def _next_run(self, session: Session) -> bool:
        """After a run: whether another one follows (after BACKOFF), per the restart policy."""
        if session.restart_requested:
            session.restart_requested = session.stop_requested = False
            session.summary = attrs.evolve(session.summary, restarts=session.summary.restarts + 1)
            return True
        if session.stop_requested or session.spawn_failed or self._draining:
            return False
        policy = session.template.restart
        if policy == "no" or (policy == "on-failure" and session.state is State.EXITED):
            return False
        now = trio.current_time()
        if not session.budget.record(now):
            template = session.template
            reason = f"{template.max_restarts} restarts within {template.restart_window_s:g} s"
            self._move(session, State.FATAL, reason)
            return False
        return await self._backoff(session, backoff_delay_s(session.budget.recent(now)))

    async def _backoff(self, session: Session, delay_s: float) -> bool:
        """BACKOFF for ``delay_s`` (cut short by a stop or a restart); whether to run again."""
        self._move(session, State.BACKOFF, f"restart in {delay_s:g} s")
        with trio.CancelScope() as session.wake:
            await trio.sleep(delay_s)
        session.wake = None
        if session.restart_requested:
            session.restart_requested = session.stop_requested = False
        elif session.stop_requested or self._draining:
            self._move(session, State.EXITED, "stopped")
            return False
        session.summary = attrs.evolve(session.summary, restarts=session.summary.restarts + 1)
        return True

    async def _run(self, session: Session) -> None:
        """One run of the process: STARTING → RUNNING … → EXITED or FAILED."""
        if session.state is State.STOPPING:
            # Stopped before the task got to spawn anything.
            self._move(session, State.EXITED, "stopped", ended_at=utc_timestamp())
            return
        if session.state is not State.STARTING:
            self._move(session, State.STARTING, "restart")
        session.spawn_failed = False
        launch = session.launch
        try:
            proc = await spawn(launch.argv, cwd=launch.cwd, env=launch.env)
        except SpawnError as exc:
            session.spawn_failed = True
            self._move(session, State.FAILED, exc.reason, pid=None, ended_at=utc_timestamp())
            return
        session.process = proc
        # With the pid, the start time tells this process from a later one with its pid.
        pid, pid_start = proc.pid, process_start(proc.pid)
        if not session.stop_requested:
            session.pending.clear()
            self._move(
                session,
                State.RUNNING,
                "spawned",
                started_at=utc_timestamp(),
                ended_at=None,
                exit_code=None,
                pid=pid,
                pid_start=pid_start,
            )
        else:
            session.summary = attrs.evolve(session.summary, pid=pid, pid_start=pid_start)
        try:
            await self._supervise(session, proc)
        finally:
            with trio.CancelScope(shield=True):
                exit_code = await stop_process_group(proc, 0.0)
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        await stream.aclose()
            session.process = session.inbox = None
            session.pending.clear()
        self._end(session, exit_code)

    def _end(self, session: Session, exit_code: int) -> None:
        if session.stop_requested:
            new, reason = State.EXITED, "stopped"
        elif exit_code == 0:
            new, reason = State.EXITED, "exit status 0"
        else:
            new, reason = State.FAILED, _exit_reason(exit_code)
        self._move(session, new, reason, exit_code=exit_code, ended_at=utc_timestamp(), pid=None)

    async def _supervise(self, session: Session, proc: trio.Process) -> None:
        """Run the process's tasks until it has ended and its output is read."""
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        send, receive = trio.open_memory_channel[bytes](INPUT_QUEUE)
        session.inbox = send
        launch = session.launch
        if launch.prompt is not None:
            prompt = encode_input(session.template.format, launch.prompt)
            assert prompt is not None  # a format without input got it on the command line
            send.send_nowait(prompt)
            input_event = {"text": launch.prompt, "by": launch.started_by}
            self._hub.publish(session.topic, "input", input_event, session.id)
        async with trio.open_nursery() as run:
            run.start_soon(self._write_input, proc.stdin, receive)
            run.start_soon(self._watch_stall, session)
            async with trio.open_nursery() as readers:
                readers.start_soon(self._read_stdout, session, proc.stdout)
                readers.start_soon(self._read_stderr, session, proc.stderr)
                await self._wait_exit(session, proc)
                readers.cancel_scope.deadline = trio.current_time() + READER_GRACE_S
            run.cancel_scope.cancel()

    async def _wait_exit(self, session: Session, proc: trio.Process) -> None:
        """Until the process exits, or a stop ends it (SIGTERM, grace, SIGKILL)."""
        if not session.stop_requested:
            with trio.CancelScope() as session.wake:
                await proc.wait()
            session.wake = None
        timeout_s = session.stop_timeout_s
        if timeout_s is None:
            timeout_s = session.template.stop_timeout_s
        await stop_process_group(proc, timeout_s)

    async def _write_input(
        self, stdin: trio.abc.SendStream, inbox: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        async with inbox:
            async for data in inbox:
                try:
                    await stdin.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    log.info("stdin closed by the agent; input dropped")
                    return

    async def _watch_stall(self, session: Session) -> None:
        """STALLED after ``idle_s`` without output; output moves the deadline (see _touch)."""
        idle_s = session.template.idle_s
        while True:
            with trio.CancelScope(deadline=trio.current_time() + idle_s) as session.stall:
                await trio.sleep_forever()
            # A session waiting for a person is silent by design: that is no stall.
            if session.state in (State.RUNNING, State.WORKING):
                session.before_stall = session.state
                self._move(session, State.STALLED, f"no output for {idle_s:g} s")

    def _touch(self, session: Session) -> None:
        """Output arrived: push back the stall deadline, and leave STALLED."""
        if session.stall is not None:
            session.stall.deadline = trio.current_time() + session.template.idle_s
        if session.state is State.STALLED:
            self._move(session, session.before_stall, "output")

    async def _read_stdout(self, session: Session, stream: trio.abc.ReceiveStream) -> None:
        parser = make_parser(session.template.format)
        publish, topic, sid = self._hub.publish, session.topic, session.id
        async for batch in read_lines(stream):
            self._touch(session)
            cut = batch.cut
            for index, line in enumerate(batch.lines):
                for event in parser.parse_line(line):
                    data = event.data
                    if cut and index in cut:
                        data = {**data, "note": CUT_NOTE}
                    publish(topic, event.kind, data, sid)
                    if event.state or event.usage or event.agent_session_id:
                        self._apply(session, event)
                    if event.kind == "permission_request":
                        self._remember_request(session, event)
            await self._hub.wait_writable()

    async def _read_stderr(self, session: Session, stream: trio.abc.ReceiveStream) -> None:
        publish, topic, sid = self._hub.publish, session.topic, session.id
        async for batch in read_lines(stream):
            self._touch(session)
            for index, line in enumerate(batch.lines):
                data = {"line": line}
                if index in batch.cut:
                    data["note"] = CUT_NOTE
                publish(topic, "stderr", data, sid)
            await self._hub.wait_writable()

    def _apply(self, session: Session, event: AgentEvent) -> None:
        """What an event tells about its session: its agent id, usage, and state."""
        agent_id = event.agent_session_id
        if agent_id and agent_id != session.summary.agent_session_id:
            session.summary = attrs.evolve(session.summary, agent_session_id=agent_id)
            self._by_agent_id[agent_id] = session
            self._record(session.summary)
        if event.usage is not None:
            usage: Usage = session.summary.usage + event.usage
            session.summary = attrs.evolve(session.summary, usage=usage)
            self._record(session.summary)
        if event.kind == "result":
            session.pending.clear()
        if event.state and session.state in ACTIVE_STATES:
            new = State(event.state)
            if new is not session.state:
                self._move(session, new, event.reason)

    def _remember_request(self, session: Session, event: AgentEvent) -> None:
        request_id = event.data.get("request_id")
        tool_input = event.data.get("input")
        if isinstance(request_id, str):
            session.pending[request_id] = tool_input if isinstance(tool_input, Mapping) else {}

    # -- stopping -----------------------------------------------------------------------------

    async def _stop(self, session: Session, timeout_s: float | None = None) -> None:
        """Stop the session and wait until its task has ended; idempotent."""
        session.stop_requested = True
        session.restart_requested = False
        session.stop_timeout_s = timeout_s
        self._cut_short(session)
        await session.done.wait()

    def _cut_short(self, session: Session) -> None:
        """End the current run (STOPPING) or BACKOFF delay; the session's task does the rest."""
        if session.state in ACTIVE_STATES or session.state is State.STARTING:
            self._move(session, State.STOPPING, "stop requested")
        if session.wake is not None:
            session.wake.cancel()

    # -- requests -----------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        """The client requests the supervisor answers, by wire type."""
        return {
            "sessions": self._on_sessions,
            "session.start": self._on_start,
            "session.input": self._on_input,
            "session.approve": self._on_approve,
            "session.interrupt": self._on_interrupt,
            "session.stop": self._on_stop,
            "session.restart": self._on_restart,
        }

    async def _on_sessions(self, request: Sessions, caller: Caller) -> dict[str, Any]:
        """Live sessions, newest first; ended ones too with ``all``, ``since`` or ``state``."""
        summaries = self.summaries()
        if request.state is not None:
            summaries = [s for s in summaries if s.state == request.state.upper()]
        elif not request.all and request.since is None:
            summaries = [s for s in summaries if is_live(s.state)]
        if request.agent is not None:
            summaries = [s for s in summaries if s.agent == request.agent]
        if request.since is not None:
            since_ms = _epoch_ms(request.since)
            summaries = [s for s in summaries if ulid_time_ms(s.id) >= since_ms]
        summaries.reverse()
        if request.limit is not None:
            summaries = summaries[: request.limit]
        return {"sessions": [s.to_json() for s in summaries]}

    async def _on_start(self, request: SessionStart, caller: Caller) -> dict[str, Any]:
        """Start a session of a template.

        ``args`` are appended to the template's command. ``prompt`` is the first input for the
        formats that read stdin (``claude``, ``jsonl``, ``text``), else the command's last
        argument (``codex``). ``cwd`` rule: allowed only when the template lists ``cwd_roots``,
        the path is absolute, and — once symlinks and ``..`` are resolved — it is one of those
        folders or inside one (roots resolved the same way); the resolved path is what the
        agent gets. Anything else is ``forbidden``: a template without roots runs where its
        config says. ``name`` defaults to ``<agent>-<n>``; it must not be the name of another
        live session (``conflict``). The answer waits (briefly) for the spawn, so that a
        command that cannot start answers FAILED with its reason.
        """
        if self._draining:
            raise RequestError("conflict", "hived is stopping; no session starts now")
        template = self._config.agents.get(request.agent)
        if template is None:
            known = ", ".join(sorted(self._config.agents)) or "none configured"
            raise RequestError("not_found", f"no agent {request.agent!r}; known: {known}")
        cwd = None if request.cwd is None else _allowed_cwd(request.agent, template, request.cwd)
        if request.name is not None and any(
            s.name == request.name and is_live(s.state) for s in self.summaries()
        ):
            raise RequestError("conflict", f"a live session is already named {request.name!r}")
        session = self._create(
            request.agent,
            template,
            prompt=request.prompt,
            args=tuple(request.args),
            cwd=cwd,
            name=request.name,
            started_by=caller.token_name,
        )
        await self._wait_for(session, lambda s: s.state is not State.STARTING, STARTED_WAIT_S)
        return _answer(session)

    async def _on_input(self, request: SessionInput, caller: Caller) -> dict[str, Any]:
        session = self._supervised(request.session, "send input to")
        data = encode_input(session.template.format, request.text)
        if data is None:
            raise RequestError(
                "conflict",
                f"session {session.summary.name} runs a {session.template.format} agent, "
                "which takes no input",
            )
        self._send(session, data)
        self._published_input(session, caller, text=request.text)
        return _answer(session)

    async def _on_approve(self, request: SessionApprove, caller: Caller) -> dict[str, Any]:
        session = self._supervised(request.session, "answer")
        name, fmt = session.summary.name, session.template.format
        if fmt not in FORMATS_WITH_CONTROL:
            raise RequestError(
                "conflict", f"session {name} runs a {fmt} agent, which asks for no approvals"
            )
        tool_input = session.pending.get(request.request_id)
        if tool_input is None:
            pending = ", ".join(session.pending) or "none"
            raise RequestError(
                "not_found",
                f"session {name} has no pending permission request {request.request_id!r}; "
                f"pending: {pending}",
            )
        data = encode_approval(request.request_id, request.allow, request.message, tool_input)
        self._send(session, data)
        del session.pending[request.request_id]
        approval = {"request_id": request.request_id, "allow": request.allow}
        self._published_input(session, caller, approval=approval | {"message": request.message})
        if not session.pending and session.state is State.WAITING:
            self._move(session, State.WORKING, "allowed" if request.allow else "denied")
        return _answer(session)

    async def _on_interrupt(self, request: SessionInterrupt, caller: Caller) -> dict[str, Any]:
        """claude: the interrupt control request on stdin; other formats: SIGINT to the group."""
        session = self._supervised(request.session, "interrupt")
        if session.template.format in FORMATS_WITH_CONTROL:
            self._send(session, encode_interrupt(new_request_id()))
        else:
            self._check_active(session, "an interrupt")
            assert session.process is not None
            signal_group(session.process, signal.SIGINT)
        self._published_input(session, caller, interrupt=True)
        return _answer(session)

    async def _on_stop(self, request: SessionStop, caller: Caller) -> dict[str, Any]:
        """Stop and wait until it has; a session already ended is answered as it is."""
        session = self._supervised(request.session, "stop")
        if not session.done.is_set():
            await self._stop(session)
        return _answer(session)

    async def _on_restart(self, request: SessionRestart, caller: Caller) -> dict[str, Any]:
        """Stop the run (if any), then start a new one at once; a FATAL session gets a fresh
        restart budget. Answers once the new run has spawned."""
        session = self._supervised(request.session, "restart")
        if self._draining or self._nursery is None:
            raise RequestError("conflict", "hived is stopping; no session starts now")
        before = session.summary.restarts
        if session.done.is_set():
            if session.state is State.FATAL:
                session.budget.reset()
            session.stop_requested = False
            session.summary = attrs.evolve(session.summary, restarts=before + 1)
            self._move(session, State.STARTING, "restart requested")
            self._start_task(session)
        else:
            session.stop_requested = session.restart_requested = True
            session.stop_timeout_s = None
            self._cut_short(session)
        await self._wait_for(
            session,
            lambda s: (
                s.done.is_set() or (s.summary.restarts > before and s.state is not State.STARTING)
            ),
            session.template.stop_timeout_s + STARTED_WAIT_S,
        )
        return _answer(session)

    def _check_active(self, session: Session, what: str) -> None:
        if session.state not in ACTIVE_STATES:
            raise RequestError(
                "conflict",
                f"session {session.summary.name} is {session.state}; {what} needs a running one",
            )

    def _send(self, session: Session, data: bytes) -> None:
        """Queue bytes for the session's stdin; ``conflict`` when it cannot take them now."""
        self._check_active(session, "input")
        assert session.inbox is not None
        try:
            session.inbox.send_nowait(data)
        except trio.WouldBlock:
            raise RequestError(
                "conflict",
                f"session {session.summary.name} is not reading its input "
                f"({INPUT_QUEUE} inputs wait)",
            ) from None
        except trio.BrokenResourceError:
            raise RequestError(
                "conflict", f"session {session.summary.name} has closed its input"
            ) from None

    def _published_input(self, session: Session, caller: Caller, **data: Any) -> None:
        self._hub.publish(session.topic, "input", data | {"by": caller.token_name}, session.id)


def _answer(session: Session) -> dict[str, Any]:
    summary = session.summary
    return {
        "session": summary.id,
        "name": summary.name,
        "state": str(summary.state),
        "reason": summary.reason,
    }


def _epoch_ms(timestamp: str) -> int:
    moment = datetime.fromisoformat(timestamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _allowed_cwd(agent: str, template: AgentConfig, cwd: str) -> str:
    """``cwd`` resolved, if the template allows it (see ``_on_start``); else RequestError."""
    if not template.cwd_roots:
        raise RequestError(
            "forbidden", f"agent {agent} runs in its configured cwd; it lists no cwd_roots"
        )
    if not os.path.isabs(cwd):
        raise RequestError("bad_request", f"cwd must be an absolute path, got {cwd!r}")
    resolved = os.path.realpath(cwd)
    for root in template.cwd_roots:
        real_root = os.path.realpath(root)
        if os.path.commonpath([resolved, real_root]) == real_root:
            return resolved
    roots = ", ".join(template.cwd_roots)
    raise RequestError(
        "forbidden", f"cwd {cwd} is outside the folders agent {agent} allows: {roots}"
    )
