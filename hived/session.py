"""One supervised session: its runs, from spawn to exit, and the restart policy between them.

How it works: a :class:`Session` is one task in the supervisor's nursery (:meth:`Session.start`)
that loops over *runs*. A run spawns the template's command in its own process group
(:mod:`hived.process`) and opens a nursery for the run's tasks: a stdout reader (lines → the
format's parser → events → hub), a stderr reader (``stderr`` events), an input writer (queued
input → stdin) and the stall watch (``idle_s`` without output → STALLED, a cancel-scope deadline
that every output pushes back). The run ends when the process exits, or when a stop cancels the
wait and :func:`~hived.process.stop_process_group` ends the group. The restart policy then picks
what follows: nothing, BACKOFF and a new run, or FATAL once the budget is spent.

Requests never do a session's work in their own task, which is cancelled when its client goes
away: :meth:`Session.request_stop` and :meth:`Session.request_restart` are synchronous, they
only set what the session's task reads and wake it; the request then just waits for the outcome.
Every state change goes through :meth:`Session._move`, which checks it against the table of
:mod:`hived.core.sessions` and hands the summary to the supervisor (:class:`Host`) to publish
and record.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import trio

from hived.core.config import AgentConfig
from hived.core.drivers import get_format
from hived.core.drivers.base import Answer, Driver, DriverLaunch, DriverRefusal, Step
from hived.core.errors import RequestError
from hived.core.events import session_topic, utc_timestamp
from hived.core.sessions import (
    ACTIVE_STATES,
    TRANSITIONS,
    RestartBudget,
    SessionSummary,
    State,
    backoff_delay_s,
    check_transition,
)
from hived.hub import Hub
from hived.orphans import pid_start as process_start
from hived.process import (
    LINE_LIMIT_BYTES,
    SpawnError,
    read_lines,
    signal_group,
    spawn,
    stop_process_group,
)

log = logging.getLogger(__name__)

INPUT_QUEUE: Final = 64
"""Inputs queued per session before ``session.input`` answers ``conflict``."""
READER_GRACE_S: Final = 2.0
"""After the process is gone, how long its readers may take to reach the end of its output
(a descendant that escaped the group can hold the pipes open)."""
CUT_NOTE: Final = f"line cut at {LINE_LIMIT_BYTES} bytes by hived; the rest of it was dropped"


def signal_name(exit_code: int | None) -> str | None:
    """The signal that killed a process, from its exit code (negative), or None."""
    if exit_code is None or exit_code >= 0:
        return None
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"


def _exit_reason(exit_code: int) -> str:
    name = signal_name(exit_code)
    return f"killed by {name}" if name else f"exit status {exit_code}"


@attrs.frozen
class Launch:
    """What a session starts: fixed when the session is made, the same for every run, and kept
    with the session (:meth:`to_json`) so that a later daemon run can resume it."""

    args: tuple[str, ...]
    """Appended to the template's command."""
    cwd: str
    env: Mapping[str, str]
    prompt: str | None = None
    """The first prompt: sent at the start of a run that begins a conversation (never into a
    resumed one)."""
    started_by: str | None = None
    """The token that started the session (shown on the prompt's ``input`` event)."""

    def to_json(self) -> dict[str, Any]:
        """The launch as the store keeps it (the environment is the template's: not kept)."""
        return {
            "args": list(self.args),
            "cwd": self.cwd,
            "prompt": self.prompt,
            "started_by": self.started_by,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], env: Mapping[str, str]) -> Launch:
        return cls(
            args=tuple(str(a) for a in d.get("args") or ()),
            cwd=str(d["cwd"]),
            env=env,
            prompt=d.get("prompt"),
            started_by=d.get("started_by"),
        )


@attrs.frozen
class Host:
    """What a session uses of the supervisor that runs it."""

    hub: Hub
    nursery: trio.Nursery
    """The supervisor's: the session's task runs there, never in a request's task."""
    announce: Callable[[SessionSummary, State | None], None]
    """Publishes a state change (new summary, previous state) and records the summary."""
    record: Callable[[SessionSummary], None]
    """Records a summary whose state stayed the same (its usage or agent session id changed)."""
    learned_agent_id: Callable[[str, Session], None]
    """The agent told its own session id: hooks that carry it join this session."""


@attrs.define(eq=False)
class Session:
    """A supervised session: its mutable state and its task. Its public face is :attr:`summary`.

    The requests act through the public methods; everything else is the task's.
    """

    summary: SessionSummary
    template: AgentConfig
    launch: Launch
    host: Host
    budget: RestartBudget
    done: trio.Event = attrs.Factory(trio.Event)
    """Set when the session's task has ended; a new one for each task (:meth:`start`)."""
    _process: trio.Process | None = attrs.field(default=None, init=False)
    _driver: Driver | None = attrs.field(default=None, init=False)
    """The current run's driver (the agent's protocol), while a run is up."""
    _inbox: trio.MemorySendChannel[bytes | None] | None = attrs.field(default=None, init=False)
    """Bytes for the agent's stdin; ``None`` closes it."""
    _next_prompt: str | None = attrs.field(default=None, init=False)
    """A prompt for the next run only (``session.resume`` with a prompt)."""
    _interrupted: bool = attrs.field(default=False, init=False)
    """An interrupt was a signal: the run's end is no failure, and no reason to restart."""
    _stop_requested: bool = attrs.field(default=False, init=False)
    _restart_requested: bool = attrs.field(default=False, init=False)
    _spawn_failed: bool = attrs.field(default=False, init=False)
    _stop_timeout_s: float | None = attrs.field(default=None, init=False)
    """Overrides the template's grace for this stop (the daemon's shutdown budget is shorter)."""
    _before_stall: State = attrs.field(default=State.RUNNING, init=False)
    _wake: trio.CancelScope | None = attrs.field(default=None, init=False)
    """Cancelled to end a wait early: the process wait of a run, or the BACKOFF delay."""
    _stall: trio.CancelScope | None = attrs.field(default=None, init=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    """Set (and replaced) at every state change, for requests that wait for one."""

    @property
    def id(self) -> str:
        return self.summary.id

    @property
    def name(self) -> str:
        return self.summary.name

    @property
    def state(self) -> State:
        return self.summary.state

    @property
    def topic(self) -> str:
        return session_topic(self.summary.id)

    def answer(self) -> dict[str, Any]:
        """The reply to a request on this session: who it is and where it stands."""
        summary = self.summary
        return {
            "session": summary.id,
            "name": summary.name,
            "state": str(summary.state),
            "reason": summary.reason,
        }

    # -- requests -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the session's task (its first, or a restart of an ended one)."""
        self.done = trio.Event()
        self.host.nursery.start_soon(self._serve)

    async def wait_until(self, condition: Callable[[Session], bool], timeout_s: float) -> None:
        """Until ``condition`` holds (checked at each state change), or ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            while not condition(self):
                await self._changed.wait()

    def request_stop(self, timeout_s: float | None = None) -> None:
        """Have the task end the run (STOPPING) or the BACKOFF delay, and not restart.

        ``timeout_s`` replaces the template's grace before SIGKILL. Does nothing once the task
        has ended.
        """
        if self.done.is_set():
            return
        self._stop_requested = True
        self._restart_requested = False
        self._stop_timeout_s = timeout_s
        self._cut_short()

    async def stop(self) -> None:
        """Stop the session and wait until its task has ended; idempotent."""
        if not self.done.is_set():
            self.request_stop()
            await self.done.wait()

    def request_restart(self, prompt: str | None = None) -> None:
        """Stop the run (if any), then start a new one at once; a FATAL session gets a fresh
        restart budget. Counts one restart. An agent whose format resumes (claude) goes on
        with its conversation; ``prompt`` is sent into the new run."""
        self._next_prompt = prompt
        if self.done.is_set():
            if self.state is State.FATAL:
                self.budget.reset()
            self._stop_requested = False
            self._count_restart()
            self._move(State.STARTING, "restart requested")
            self.start()
        else:
            self._stop_requested = self._restart_requested = True
            self._stop_timeout_s = None
            self._cut_short()

    def send_input(self, text: str, by: str | None) -> None:
        """Send a prompt; ``conflict`` when the agent or the session cannot take it now."""
        driver = self._running_driver("input")
        if not driver.takes_input:
            raise RequestError(
                "conflict",
                f"session {self.name} runs a {self.template.format} agent, which takes no input",
            )
        self._perform(self._ask(driver.prompt, text))
        self._publish_input(by, text=text)

    def answer_request(self, ref: str, answer: Answer, by: str | None) -> str:
        """Answer a pending request named by its id or a unique prefix of it (any case);
        ``not_found`` when none matches, ``bad_request`` when several do or the answer does
        not fit the request. The request's full id."""
        driver = self._running_driver("an answer")
        request_id = self._pending_id(driver, ref)
        self._perform(self._ask(driver.answer, request_id, answer))
        data: dict[str, Any] = {"request_id": request_id}
        if answer.allow is not None:
            data["approval"] = {
                "request_id": request_id,
                "allow": answer.allow,
                "message": answer.message,
                "always": answer.always,
            }
        if answer.answers is not None:
            data["answers"] = dict(answer.answers)
        if answer.action is not None:
            data["action"] = answer.action
        self._publish_input(by, **data)
        return request_id

    def _pending_id(self, driver: Driver, ref: str) -> str:
        """The pending request id that ``ref`` is, or is the only one to start with."""
        pending = driver.pending
        if ref in pending:
            return ref
        matches = [key for key in pending if key.lower().startswith(ref.lower())]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise RequestError(
                "bad_request",
                f"request id {ref!r} is ambiguous in session {self.name}: "
                f"it matches {', '.join(matches)}",
            )
        waiting = ", ".join(f"{key} ({p.kind})" for key, p in pending.items()) or "none"
        raise RequestError(
            "not_found", f"session {self.name} has no pending request {ref!r}; pending: {waiting}"
        )

    def interrupt(self, by: str | None) -> None:
        """End the agent's current turn the way its driver knows (a control request, a
        JSON-RPC call, or SIGINT to the group)."""
        driver = self._running_driver("an interrupt")
        self._perform(self._ask(driver.interrupt))
        self._publish_input(by, interrupt=True)

    def _running_driver(self, what: str) -> Driver:
        self._check_active(what)
        if self._driver is None:
            raise RequestError("conflict", f"session {self.name} is starting; {what} must wait")
        return self._driver

    def _ask(self, action: Callable[..., Step], *args: Any) -> Step:
        """A driver's step for an operator's action; its refusal as the request's error."""
        try:
            return action(*args)
        except DriverRefusal as exc:
            raise RequestError(exc.code, f"session {self.name}: {exc.message}") from None

    def _check_active(self, what: str) -> None:
        if self.state not in ACTIVE_STATES:
            raise RequestError(
                "conflict", f"session {self.name} is {self.state}; {what} needs a running one"
            )

    def _send(self, data: bytes | None) -> None:
        """Queue bytes for the session's stdin (``None`` closes it); ``conflict`` when it cannot
        take them now."""
        assert self._inbox is not None
        try:
            self._inbox.send_nowait(data)
        except trio.WouldBlock:
            raise RequestError(
                "conflict",
                f"session {self.name} is not reading its input ({INPUT_QUEUE} inputs wait)",
            ) from None
        except trio.BrokenResourceError:
            raise RequestError("conflict", f"session {self.name} has closed its input") from None

    def _publish_input(self, by: str | None, **data: Any) -> None:
        self.host.hub.publish(self.topic, "input", data | {"by": by}, self.id)

    def _cut_short(self) -> None:
        """End the current run (STOPPING) or BACKOFF delay; the task does the rest."""
        if self.state in ACTIVE_STATES or self.state is State.STARTING:
            self._move(State.STOPPING, "stop requested")
        if self._wake is not None:
            self._wake.cancel()

    # -- state --------------------------------------------------------------------------------

    def _move(self, new: State, reason: str | None, **changes: Any) -> None:
        previous = self.state
        check_transition(previous, new)
        self.summary = attrs.evolve(self.summary, state=new, reason=reason, **changes)
        # The agent's own WORKING/WAITING flips are many; only the lifecycle is worth info.
        level = logging.DEBUG if {previous, new} <= ACTIVE_STATES else logging.INFO
        log.log(level, "session %s: %s → %s (%s)", self.name, previous, new, reason)
        self.host.announce(self.summary, previous)
        self._notify()

    def _notify(self) -> None:
        """Wake the requests waiting for a change."""
        self._changed.set()
        self._changed = trio.Event()

    def _count_restart(self) -> None:
        self.summary = attrs.evolve(self.summary, restarts=self.summary.restarts + 1)

    # -- the task -----------------------------------------------------------------------------

    async def _serve(self) -> None:
        """The session's task: runs, and the restart policy between them."""
        try:
            while True:
                await self._run()
                if not await self._next_run():
                    break
        except* Exception as group:
            log.error("session %s: internal error", self.name, exc_info=group)
            if State.FAILED in TRANSITIONS[self.state]:
                self._move(State.FAILED, f"internal error: {group.exceptions[0]!r}")
        finally:
            self.done.set()
            self._notify()

    async def _next_run(self) -> bool:
        """After a run: whether another one follows, asked for or by the restart policy."""
        if not self._restart_requested and not await self._restart_by_policy():
            return False
        self._restart_requested = self._stop_requested = False
        self._count_restart()
        return True

    async def _restart_by_policy(self) -> bool:
        """Whether the policy restarts the session (after BACKOFF), or FATAL once the budget is
        spent."""
        if self._stop_requested or self._spawn_failed or self._interrupted:
            return False
        template = self.template
        if template.restart == "no" or (
            template.restart == "on-failure" and self.state is State.EXITED
        ):
            return False
        now = trio.current_time()
        if not self.budget.record(now):
            reason = f"{template.max_restarts} restarts within {template.restart_window_s:g} s"
            self._move(State.FATAL, reason)
            return False
        return await self._backoff(backoff_delay_s(self.budget.recent(now)))

    async def _backoff(self, delay_s: float) -> bool:
        """BACKOFF for ``delay_s`` (cut short by a stop or a restart); whether to run again."""
        self._move(State.BACKOFF, f"restart in {delay_s:g} s")
        with trio.CancelScope() as self._wake:
            await trio.sleep(delay_s)
        self._wake = None
        if self._stop_requested and not self._restart_requested:
            self._move(State.EXITED, "stopped")
            return False
        return True

    async def _run(self) -> None:
        """One run of the process: STARTING → RUNNING … → EXITED or FAILED."""
        if self.state is State.STOPPING:
            # Stopped before the task got to spawn anything.
            self._move(State.EXITED, "stopped", ended_at=utc_timestamp())
            return
        if self.state is not State.STARTING:
            self._move(State.STARTING, "restart")
        self._spawn_failed = self._interrupted = False
        launch, fmt = self.launch, get_format(self.template.format)
        # A conversation the agent can resume goes on; its first prompt is never sent again.
        resume_id = self.summary.agent_session_id if fmt.resumable else None
        prompt = self._next_prompt if resume_id else (self._next_prompt or launch.prompt)
        self._next_prompt = None
        argv = fmt.argv(
            self.template.command, launch.args, prompt if fmt.prompt_in_argv else None, resume_id
        )
        try:
            proc = await spawn(argv, cwd=launch.cwd, env=launch.env)
        except SpawnError as exc:
            self._spawn_failed = True
            self._move(State.FAILED, exc.reason, pid=None, ended_at=utc_timestamp())
            return
        self._process = proc
        # With the pid, the start time tells this process from a later one with its pid.
        pid, pid_start = proc.pid, process_start(proc.pid)
        if not self._stop_requested:
            self._move(
                State.RUNNING,
                "resumed" if resume_id else "spawned",
                started_at=utc_timestamp(),
                ended_at=None,
                exit_code=None,
                pid=pid,
                pid_start=pid_start,
            )
        else:
            self.summary = attrs.evolve(self.summary, pid=pid, pid_start=pid_start)
        driver = fmt.make(
            DriverLaunch(
                cwd=launch.cwd,
                prompt=None if fmt.prompt_in_argv else prompt,
                resume_id=resume_id,
                usage=self.summary.usage,
            )
        )
        if prompt is not None:
            self._publish_input(launch.started_by, text=prompt)
        try:
            await self._supervise(proc, driver)
        finally:
            with trio.CancelScope(shield=True):
                exit_code = await stop_process_group(proc, 0.0)
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        await stream.aclose()
            self._process = self._inbox = self._driver = None
            self._publish_step(driver.exited())
        if self._stop_requested:
            new, reason = State.EXITED, "stopped"
        elif exit_code == 0:
            new, reason = State.EXITED, "exit status 0"
        elif self._interrupted:
            new, reason = State.EXITED, f"interrupted ({_exit_reason(exit_code)})"
        else:
            new, reason = State.FAILED, _exit_reason(exit_code)
        self._move(new, reason, exit_code=exit_code, ended_at=utc_timestamp(), pid=None)

    async def _supervise(self, proc: trio.Process, driver: Driver) -> None:
        """Run the process's tasks until it has ended and its output is read."""
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        send, receive = trio.open_memory_channel[bytes | None](INPUT_QUEUE)
        self._inbox, self._driver = send, driver
        self._perform(driver.start())
        async with trio.open_nursery() as run:
            run.start_soon(_write_input, proc.stdin, receive)
            run.start_soon(self._watch_stall)
            async with trio.open_nursery() as readers:
                readers.start_soon(self._read_stdout, proc.stdout, driver)
                readers.start_soon(self._read_stderr, proc.stderr)
                await self._wait_exit(proc)
                readers.cancel_scope.deadline = trio.current_time() + READER_GRACE_S
            run.cancel_scope.cancel()

    async def _wait_exit(self, proc: trio.Process) -> None:
        """Until the process exits, or a stop ends it (SIGTERM, grace, SIGKILL)."""
        if not self._stop_requested:
            with trio.CancelScope() as self._wake:
                await proc.wait()
            self._wake = None
        timeout_s = self._stop_timeout_s
        if timeout_s is None:
            timeout_s = self.template.stop_timeout_s
        await stop_process_group(proc, timeout_s)

    async def _watch_stall(self) -> None:
        """STALLED after ``idle_s`` without output; output moves the deadline (see _touch)."""
        idle_s = self.template.idle_s
        while True:
            with trio.CancelScope(deadline=trio.current_time() + idle_s) as self._stall:
                await trio.sleep_forever()
            # A session waiting for a person is silent by design: that is no stall.
            if self.state in (State.RUNNING, State.WORKING):
                self._before_stall = self.state
                self._move(State.STALLED, f"no output for {idle_s:g} s")

    def _touch(self) -> None:
        """Output arrived: push back the stall deadline, and leave STALLED."""
        if self._stall is not None:
            self._stall.deadline = trio.current_time() + self.template.idle_s
        if self.state is State.STALLED:
            self._move(self._before_stall, "output")

    async def _read_stdout(self, stream: trio.abc.ReceiveStream, driver: Driver) -> None:
        async for batch in read_lines(stream):
            self._touch()
            cut = batch.cut
            for index, line in enumerate(batch.lines):
                step = driver.feed(line)
                self._publish_step(step, CUT_NOTE if cut and index in cut else None)
                if step.stdin and self._inbox is not None:
                    # The agent waits for this answer: wait for room rather than drop it.
                    await self._inbox.send(step.stdin)
                self._signal(step)
            await self.host.hub.wait_writable()

    async def _read_stderr(self, stream: trio.abc.ReceiveStream) -> None:
        hub, topic, sid = self.host.hub, self.topic, self.id
        async for batch in read_lines(stream):
            self._touch()
            for index, line in enumerate(batch.lines):
                data = {"line": line}
                if index in batch.cut:
                    data["note"] = CUT_NOTE
                hub.publish(topic, "stderr", data, sid)
            await hub.wait_writable()

    def _perform(self, step: Step) -> None:
        """Carry out a step asked for outside the stdout reader: publish, write, signal."""
        self._publish_step(step)
        if step.stdin:
            self._send(step.stdin)
        if step.close_stdin:
            self._send(None)
        self._signal(step)

    def _signal(self, step: Step) -> None:
        if step.signal is None or self._process is None:
            return
        if step.signal == "SIGINT":
            self._interrupted = True
        signal_group(self._process, signal.Signals[step.signal])

    def _publish_step(self, step: Step, note: str | None = None) -> None:
        """Publish a step's events, and take what they tell about the session.

        Usage and the turn's outcome go into the summary first, so that the state change the
        same step makes (a turn's end: WAITING) announces them.
        """
        changes: dict[str, Any] = {}
        if step.usage is not None:
            changes["usage"] = step.usage
        if step.last_turn is not None:
            changes["last_turn"] = step.last_turn
        if changes:
            self.summary = attrs.evolve(self.summary, **changes)
        announced = False
        hub, topic, sid = self.host.hub, self.topic, self.id
        for event in step.events:
            data = event.data if note is None else {**event.data, "note": note}
            hub.publish(topic, event.kind, data, sid)
            if event.state or event.agent_session_id:
                announced |= self._apply(event.state, event.reason, event.agent_session_id)
        if step.state is not None:
            announced |= self._apply(step.state, step.reason, None)
        if changes and not announced:
            self.host.record(self.summary)

    def _apply(self, state: str | None, reason: str | None, agent_id: str | None) -> bool:
        """What an event tells about its session: its agent id and its state. Whether the
        state changed (and so was announced and recorded)."""
        if agent_id and agent_id != self.summary.agent_session_id:
            self.summary = attrs.evolve(self.summary, agent_session_id=agent_id)
            self.host.learned_agent_id(agent_id, self)
            self.host.record(self.summary)
        if state and self.state in ACTIVE_STATES:
            new = State(state)
            if new is not self.state:
                self._move(new, reason)
                return True
        return False


async def _write_input(
    stdin: trio.abc.SendStream, inbox: trio.MemoryReceiveChannel[bytes | None]
) -> None:
    """Write queued input to the agent's stdin until the queue closes, the agent's end does,
    or the driver closes it (``None``)."""
    async with inbox:
        async for data in inbox:
            if data is None:
                await stdin.aclose()
                return
            try:
                await stdin.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.info("stdin closed by the agent; input dropped")
                return
