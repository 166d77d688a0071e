"""One supervised session: its runs, from spawn to exit, and the restart policy between them.

How it works: a :class:`Session` is one task in the supervisor's nursery (:meth:`Session.start`)
that loops over *runs*. A run starts the template's command through a shim
(:mod:`hived.agents.shimrun`: the agent in its own process group, its output spooled to disk, so
that it outlives the daemon) and opens a nursery for the run's tasks: a stdout reader (spooled lines
→ the format's driver → events → hub, each event kept with its place in the spool), a stderr
reader (``stderr`` events), an input writer (queued input → stdin) and the stall watch
(``idle_s`` without output → STALLED, a cancel-scope deadline that every output pushes back).
The run ends when the agent exits, or when a stop cancels the wait and
:func:`~hived.agents.shimrun.stop_run` ends the group. The restart policy then picks what follows:
nothing, BACKOFF and a new run, or FATAL once the budget is spent. A run a killed daemon left
running is taken up by the next one (:meth:`Session.attach`): its driver is rebuilt from the
spool and the operator's noted actions, and what the store had not kept is published again.

Requests never do a session's work in their own task, which is cancelled when its client goes
away: :meth:`Session.request_stop` and :meth:`Session.request_restart` are synchronous, they
only set what the session's task reads and wake it; the request then just waits for the outcome.
Every state change goes through :meth:`Session._move`, which checks it against the table of
:mod:`hived.core.sessions` and hands the summary to the supervisor (:class:`Host`) to publish
and record.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import trio

from hived.agents.orphans import pid_start as process_start
from hived.agents.process import (
    LINE_LIMIT_BYTES,
    Lines,
    SpawnError,
    read_lines,
    signal_group,
)
from hived.agents.shimrun import (
    Resume,
    ShimGone,
    ShimRun,
    end_run,
    note_action,
    read_actions,
    stop_run,
    write_launch,
)
from hived.core.config import AgentConfig
from hived.core.drivers import get_format
from hived.core.drivers.base import (
    REASONS,
    Action,
    Answer,
    Driver,
    DriverLaunch,
    DriverRefusal,
    Step,
    act,
)
from hived.core.errors import RequestError
from hived.core.events import AgentEvent, SpoolMark, session_topic, utc_timestamp
from hived.core.parsers.text import strip_newline
from hived.core.sessions import (
    ACTIVE_STATES,
    LIVE_STATES,
    TRANSITIONS,
    RestartBudget,
    SessionSummary,
    State,
    backoff_delay_s,
    check_transition,
)
from hived.hub import Hub
from hived.notify.budget import Budget, reached

log = logging.getLogger(__name__)

INPUT_QUEUE: Final = 64
"""Inputs queued per session before ``session.input`` answers ``conflict``."""
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
    max_cost_usd: float | None = None
    """The session's own budget, asked at ``session.start`` (:mod:`hived.notify.budget`)."""
    max_tokens: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The launch as the store keeps it (the environment is the template's: not kept)."""
        return {
            "args": list(self.args),
            "cwd": self.cwd,
            "prompt": self.prompt,
            "started_by": self.started_by,
            "max_cost_usd": self.max_cost_usd,
            "max_tokens": self.max_tokens,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], env: Mapping[str, str]) -> Launch:
        return cls(
            args=tuple(str(a) for a in d.get("args") or ()),
            cwd=str(d["cwd"]),
            env=env,
            prompt=d.get("prompt"),
            started_by=d.get("started_by"),
            max_cost_usd=d.get("max_cost_usd"),
            max_tokens=d.get("max_tokens"),
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
    shims: Path
    """Where each run's shim keeps its folder (``state.dir/shims``)."""
    marks: Marks | None = None
    """The store's spool marks: how far the kept events go into a run's output."""


class Marks(Protocol):
    """The store's spool marks (:class:`hived.store.Store`)."""

    async def spool_mark(self, key: str) -> SpoolMark | None: ...

    async def forget_marks(self, prefix: str) -> None: ...


@attrs.frozen
class Attach:
    """A run an earlier daemon run left to its shim, to take up (:meth:`Session.attach`)."""

    shim: ShimRun
    launch: DriverLaunch


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
    limits: Budget = attrs.Factory(Budget)
    """What the session may spend (:mod:`hived.notify.budget`)."""
    done: trio.Event = attrs.Factory(trio.Event)
    """Set when the session's task has ended; a new one for each task (:meth:`start`)."""
    _shim: ShimRun | None = attrs.field(default=None, init=False)
    """The current run's shim, while a run is up."""
    _attach: Attach | None = attrs.field(default=None, init=False)
    """A run to take up before any new one (the daemon restarted under it)."""
    _detaching: bool = attrs.field(default=False, init=False)
    """The daemon lets go of the run without ending it (a restart that keeps agents)."""
    _driver: Driver | None = attrs.field(default=None, init=False)
    _fed: int = attrs.field(default=0, init=False)
    """How far into the agent's stdout spool the driver has read (a line's end)."""
    _replay: list[Action] = attrs.field(factory=list, init=False)
    """Operator actions of a run taken up again, still to give the driver as it catches up."""
    """The current run's driver (the agent's protocol), while a run is up."""
    _inbox: trio.MemorySendChannel[bytes | None] | None = attrs.field(default=None, init=False)
    """Bytes for the agent's stdin; ``None`` closes it."""
    _next_prompt: str | None = attrs.field(default=None, init=False)
    """A prompt for the next run only (``session.resume`` with a prompt)."""
    _spent: bool = attrs.field(default=False, init=False)
    """The session has reached its budget: it takes no new prompt."""
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
    _output_at: float = attrs.field(default=0.0, init=False)
    """When output last arrived (trio's clock): what the stall watcher counts from."""
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

    def attach(self, attach: Attach) -> None:
        """Start the session's task on a run that an earlier daemon run left running."""
        self._attach = attach
        self.start()

    def request_detach(self) -> None:
        """Have the task let go of its run without ending it, and end (the daemon restarts
        and takes the run up again)."""
        if self.done.is_set():
            return
        self._detaching = True
        if self._wake is not None:
            self._wake.cancel()

    async def wait_until(self, condition: Callable[[Session], bool], timeout_s: float) -> None:
        """Until ``condition`` holds (checked at each state change), or ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            while not condition(self):
                await self._changed.wait()

    async def wait_driven(self, timeout_s: float) -> None:
        """Until the run's driver takes requests (a start, or a run taken up after a daemon
        restart, is being set up), the session is no longer active, or ``timeout_s``; the
        request that waited then gets its answer or its error as usual."""
        await self.wait_until(
            lambda s: (
                s._driver is not None
                or (s.state not in ACTIVE_STATES and s.state is not State.STARTING)
            ),
            timeout_s,
        )

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
        if self._spent:
            raise RequestError("conflict", f"session {self.name} has reached its budget")
        if not driver.takes_input:
            raise RequestError(
                "conflict",
                f"session {self.name} runs a {self.template.format} agent, which takes no input",
            )
        self._perform(self._ask(driver, "prompt", text))
        self._publish_input(by, text=text)

    def answer_request(self, ref: str, answer: Answer, by: str | None) -> str:
        """Answer a pending request named by its id or a unique prefix of it (any case);
        ``not_found`` when none matches, ``bad_request`` when several do or the answer does
        not fit the request. The request's full id."""
        driver = self._running_driver("an answer")
        request_id = self._pending_id(driver, ref)
        self._perform(self._ask(driver, "answer", request_id, answer))
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
        self._perform(self._ask(driver, "interrupt"))
        self._publish_input(by, interrupt=True)

    def _running_driver(self, what: str) -> Driver:
        self._check_active(what)
        if self._driver is None:
            raise RequestError("conflict", f"session {self.name} is starting; {what} must wait")
        return self._driver

    def _ask(self, driver: Driver, op: str, *args: Any) -> Step:
        """A driver's step for an operator's action; its refusal as the request's error.

        The action is noted in the run's folder with how far the driver had read the agent's
        output then, so that a later daemon can rebuild the driver exactly (:meth:`_reattach`).
        """
        try:
            step = act(driver, Action(self._fed, op, args))
        except DriverRefusal as exc:
            raise RequestError(exc.code, f"session {self.name}: {exc.message}") from None
        if self._shim is not None:
            note_action(self._shim, Action(self._fed, op, args))
        return step

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
            attach, self._attach = self._attach, None
            if attach is not None:
                await self._reattach(attach)
            else:
                await self._run()
            while not self._detaching and await self._next_run() and not self._detaching:
                await self._run()
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
        """One run of the agent: STARTING → RUNNING … → EXITED or FAILED."""
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
            shim = await ShimRun.start(
                self.host.shims / self.id, argv, cwd=launch.cwd, env=launch.env
            )
        except SpawnError as exc:
            self._spawn_failed = True
            self._move(State.FAILED, exc.reason, pid=None, ended_at=utc_timestamp())
            return
        driver_launch = DriverLaunch(
            cwd=launch.cwd,
            prompt=None if fmt.prompt_in_argv else prompt,
            resume_id=resume_id,
            usage=self.summary.usage,
        )
        await write_launch(shim, driver_launch)
        driver = fmt.make(driver_launch)
        # With the pid, the start time tells this process from a later one with its pid.
        pid, pid_start = shim.agent_pid, process_start(shim.agent_pid)
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
        if prompt is not None:
            self._publish_input(launch.started_by, text=prompt)
        self._fed, self._replay = 0, []
        await self._drive(shim, driver, Resume(), driver.start())

    async def _reattach(self, attach: Attach) -> None:
        """Take up a run the daemon left running when it died or restarted: rebuild its
        driver from the agent's spooled output up to what the store kept, publish the rest,
        ask again what waits for a person, and go on as if nothing happened."""
        shim, fmt = attach.shim, get_format(self.template.format)
        self._shim = shim
        driver = fmt.make(attach.launch)
        # The driver is rebuilt as it was: its start, then the agent's output with the
        # operator's actions where they came (their bytes reached the agent long ago).
        self._absorb(driver.start())
        self._fed, self._replay = 0, await read_actions(shim.dir)
        marks = self.host.marks
        out = None if marks is None else await marks.spool_mark(shim.mark_key("stdout"))
        err = None if marks is None else await marks.spool_mark(shim.mark_key("stderr"))
        resume = Resume(
            stdout=0 if out is None else out.offset, stderr=0 if err is None else err.offset
        )
        if self.state not in LIVE_STATES:
            # The agent runs, whatever the store last said (a daemon that died mid-way).
            self.summary = attrs.evolve(self.summary, state=State.RUNNING)
        state_before = self.state
        self.summary = attrs.evolve(self.summary, pid=shim.agent_pid)
        if out is not None:
            await self._warm_up(shim, driver, out)
        self._spent = reached(self.limits, self.summary.usage) is not None
        again = [
            Step(
                events=[
                    AgentEvent(
                        kind="permission_request",
                        data={**pending.data, "asked_again": True},
                        state="WAITING",
                        reason=REASONS.get(pending.kind, pending.kind),
                    )
                ]
            )
            for pending in driver.pending.values()
        ]
        state = self.state
        self.summary = attrs.evolve(self.summary, state=state_before)
        if state_before is State.STOPPING:
            self._stop_requested = True  # the daemon died stopping it: finish the stop
        elif state is not state_before:
            why = "taken up again after a daemon restart"
            if state not in TRANSITIONS[state_before]:
                self._move(State.RUNNING, why)  # from STARTING: the agent had started
            if state is not self.state:
                self._move(state, why)
        if self.state is State.STARTING:
            # The daemon died before it recorded the spawn: the agent runs all the same.
            self._move(
                State.RUNNING,
                "taken up again after a daemon restart",
                started_at=utc_timestamp(),
                pid_start=process_start(shim.agent_pid),
            )
        log.info(
            "session %s: taken up again (agent %d, output from %d)",
            self.name,
            shim.agent_pid,
            resume.stdout,
        )
        await self._drive(shim, driver, resume, *again)

    async def _warm_up(self, shim: ShimRun, driver: Driver, mark: SpoolMark) -> None:
        """Feed the driver the spooled lines whose events are kept, publishing none of them
        (but the rest of the last line's, the events the store had not kept)."""
        async with shim.spool("stdout", 0, upto=mark.offset) as stream:
            async for batch in read_lines(stream):
                for index, line in enumerate(batch.lines):
                    self._catch_up(driver)
                    step = driver.feed(line)
                    end = self._fed = batch.ends[index]
                    if end < mark.offset:
                        self._absorb(step)
                        continue
                    self._absorb(step._replace(events=step.events[: mark.nth + 1]))
                    rest = step.events[mark.nth + 1 :]
                    self._publish_step(
                        step._replace(events=rest), mark=(mark.key, end, mark.nth + 1)
                    )

    def _catch_up(self, driver: Driver) -> None:
        """Give the driver the operator's actions (of a run taken up again) that came before
        the line it is about to read."""
        while self._replay and self._replay[0].at <= self._fed:
            action = self._replay.pop(0)
            try:
                self._absorb(act(driver, action))
            except (DriverRefusal, KeyError):
                log.info("session %s: %s no longer applies", self.name, action.op)
            except Exception:
                # Rebuilding is best effort: a driver that trips on an old action must not
                # cost the session its agent, which still runs.
                log.warning("session %s: replaying %s failed", self.name, action.op, exc_info=True)

    def _absorb(self, step: Step) -> None:
        """What a step says about the session, taken without publishing (its events are kept)."""
        changes: dict[str, Any] = {}
        if step.usage is not None:
            changes["usage"] = step.usage
        if step.last_turn is not None:
            changes["last_turn"] = step.last_turn
        for event in step.events:
            if event.state and self.state in ACTIVE_STATES | {State.LOST}:
                changes["state"], changes["reason"] = State(event.state), event.reason
            if event.agent_session_id and event.agent_session_id != self.summary.agent_session_id:
                changes["agent_session_id"] = event.agent_session_id
                self.host.learned_agent_id(event.agent_session_id, self)
        if step.state is not None:
            changes["state"], changes["reason"] = State(step.state), step.reason
        if changes:
            self.summary = attrs.evolve(self.summary, **changes)

    async def _drive(self, shim: ShimRun, driver: Driver, resume: Resume, *first: Step) -> None:
        """Run the agent's tasks until it has ended (or the daemon lets go), then settle."""
        self._shim = shim
        exit_code: int | None = None
        try:
            await self._supervise(shim, driver, resume, first)
        finally:
            with trio.CancelScope(shield=True):
                if self._detaching:
                    await shim.detach()
                else:
                    exit_code = await end_run(shim)
                    self._report_lost_output(shim)
                    if self.host.marks is not None:
                        await self.host.marks.forget_marks(shim.mark_key(""))
            self._shim = self._inbox = self._driver = None
            if not self._detaching:
                self._publish_step(driver.exited())
        if exit_code is None:
            return
        if self._stop_requested:
            new, reason = State.EXITED, "stopped"
        elif exit_code == 0:
            new, reason = State.EXITED, "exit status 0"
        elif self._interrupted:
            new, reason = State.EXITED, f"interrupted ({_exit_reason(exit_code)})"
        elif shim.gone:
            new, reason = State.FAILED, "its shim died; the agent was stopped"
        else:
            new, reason = State.FAILED, _exit_reason(exit_code)
        self._move(new, reason, exit_code=exit_code, ended_at=utc_timestamp(), pid=None)

    def _report_lost_output(self, shim: ShimRun) -> None:
        """Say how much of the agent's output its shim could not spool (a full disk): a
        ``stderr`` event per stream that lost any, after the output that was kept."""
        for stream, count in sorted(shim.lost.items()):
            since = utc_timestamp(shim.lost_since) if shim.lost_since is not None else None
            line = (
                f"[hived: {count} bytes of the agent's {stream} were lost: its spool could not "
                f"be written (disk full?) from {since}]"
            )
            log.warning("session %s: %d bytes of %s lost from %s", self.id, count, stream, since)
            data = {"line": line, "lost_bytes": count, "lost_stream": stream, "lost_since": since}
            self.host.hub.publish(self.topic, "stderr", data, self.id)

    async def _supervise(
        self, shim: ShimRun, driver: Driver, resume: Resume, first: Sequence[Step]
    ) -> None:
        """Run the agent's tasks until it has ended and its output is read."""
        send, receive = trio.open_memory_channel[bytes | None](INPUT_QUEUE)
        self._inbox, self._driver = send, driver
        self._notify()
        async with trio.open_nursery() as watching:
            watching.start_soon(shim.serve_watch)
            for step in first:
                self._perform(step)
            async with trio.open_nursery() as run:
                run.start_soon(_write_input, shim, receive)
                run.start_soon(self._watch_stall)
                async with trio.open_nursery() as readers:
                    readers.start_soon(self._read_stdout, shim, driver, resume.stdout)
                    readers.start_soon(self._read_stderr, shim, resume.stderr)
                    await self._wait_exit(shim)
                    # The spools are complete once the agent has exited (the shim drained its
                    # pipes): the readers end when they have read them, unless the daemon lets go.
                    if self._detaching:
                        readers.cancel_scope.cancel()
                run.cancel_scope.cancel()
            watching.cancel_scope.cancel()

    async def _wait_exit(self, shim: ShimRun) -> None:
        """Until the agent exits, or a stop ends it (SIGTERM, grace, SIGKILL), or the daemon
        lets go of it."""
        if not self._stop_requested:
            with trio.CancelScope() as self._wake:
                await shim.wait_exit()
            self._wake = None
        if self._detaching:
            return
        timeout_s = self._stop_timeout_s
        if timeout_s is None:
            timeout_s = self.template.stop_timeout_s
        await stop_run(shim, timeout_s)

    async def _watch_stall(self) -> None:
        """STALLED after ``idle_s`` without output. Output only notes its time (see _touch):
        the watcher, woken at the deadline it set, sleeps on to the deadline output moved it
        to, so that a line costs no change to trio's deadlines."""
        idle_s = self.template.idle_s
        since = trio.current_time()
        while True:
            await trio.sleep_until(max(since, self._output_at) + idle_s)
            if trio.current_time() < self._output_at + idle_s:
                continue
            # A session waiting for a person is silent by design: that is no stall.
            if self.state in (State.RUNNING, State.WORKING):
                self._before_stall = self.state
                self._move(State.STALLED, f"no output for {idle_s:g} s")
            since = trio.current_time()

    def _touch(self) -> None:
        """Output arrived: note when (the stall watcher counts from it), and leave STALLED."""
        self._output_at = trio.current_time()
        if self.state is State.STALLED:
            self._move(self._before_stall, "output")

    async def _read_stdout(self, shim: ShimRun, driver: Driver, offset: int) -> None:
        key = shim.mark_key("stdout")
        async with shim.spool("stdout", offset) as stream:
            await self._publish_stdout(stream, driver, key, offset)

    async def _publish_stdout(
        self, stream: trio.abc.ReceiveStream, driver: Driver, key: str, offset: int
    ) -> None:
        async for batch in read_lines(stream, offset=offset):
            self._touch()
            if driver.lines_are_text and not self._replay:
                self._publish_lines("text", list(map(strip_newline, batch.lines)), batch, key)
                self._fed = batch.ends[-1]
                await self.host.hub.wait_writable()
                continue
            cut = batch.cut
            for index, line in enumerate(batch.lines):
                if self._replay:
                    self._catch_up(driver)
                step = driver.feed(line)
                self._fed = batch.ends[index]
                note = CUT_NOTE if cut and index in cut else None
                self._publish_step(step, note, mark=(key, batch.ends[index], 0))
                if step.stdin and self._inbox is not None:
                    # The agent waits for this answer: wait for room rather than drop it.
                    await self._inbox.send(step.stdin)
                self._signal(step)
            await self.host.hub.wait_writable()

    async def _read_stderr(self, shim: ShimRun, offset: int) -> None:
        key = shim.mark_key("stderr")
        async with shim.spool("stderr", offset) as stream:
            async for batch in read_lines(stream, offset=offset):
                self._touch()
                self._publish_lines("stderr", batch.lines, batch, key)
                await self.host.hub.wait_writable()

    def _publish_lines(self, kind: str, lines: Sequence[str], batch: Lines, key: str) -> None:
        """One ``kind`` event ``{"line": ...}`` for each of ``lines`` (``batch``'s, as they are
        published), each kept with its place in the spool ``key``."""
        hub, topic, sid, cut, ends = self.host.hub, self.topic, self.id, batch.cut, batch.ends
        for index, line in enumerate(lines):
            data = {"line": line}
            if cut and index in cut:
                data["note"] = CUT_NOTE
            hub.publish(topic, kind, data, sid, SpoolMark(key, ends[index], 0))

    def _perform(self, step: Step) -> None:
        """Carry out a step asked for outside the stdout reader: publish, write, signal."""
        self._publish_step(step)
        if step.stdin:
            self._send(step.stdin)
        if step.close_stdin:
            self._send(None)
        self._signal(step)

    def _signal(self, step: Step) -> None:
        if step.signal is None or self._shim is None or self._shim.offline:
            return
        if step.signal == "SIGINT":
            self._interrupted = True
        signal_group(self._shim.agent_pid, signal.Signals[step.signal])

    def _publish_step(
        self, step: Step, note: str | None = None, mark: tuple[str, int, int] | None = None
    ) -> None:
        """Publish a step's events, and take what they tell about the session.

        Usage and the turn's outcome go into the summary first, so that the state change the
        same step makes (a turn's end: WAITING) announces them. ``mark`` (spool key, line end,
        index of the first event) says which spool line the events were made from: each is
        kept with its place in it, so that a daemon killed at any point neither loses nor
        repeats one (DESIGN §11).
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
        for index, event in enumerate(step.events):
            data = event.data if note is None else {**event.data, "note": note}
            spool = None if mark is None else SpoolMark(mark[0], mark[1], mark[2] + index)
            hub.publish(topic, event.kind, data, sid, spool)
            if event.state or event.agent_session_id:
                announced |= self._apply(event.state, event.reason, event.agent_session_id)
        if step.state is not None:
            announced |= self._apply(step.state, step.reason, None)
        if changes and not announced:
            self.host.record(self.summary)
        if step.usage is not None and not self._spent:
            self._check_budget()

    def _check_budget(self) -> None:
        """Publish why and interrupt the turn (or stop) once the usage reaches the budget."""
        data = reached(self.limits, self.summary.usage)
        if data is None:
            return
        self._spent = True
        log.warning("session %s: %s", self.name, data["message"])
        self.host.hub.publish(self.topic, "budget", data, self.id)
        if self.limits.action == "stop":
            self.request_stop()
        elif self.state in ACTIVE_STATES and self._driver is not None:
            with contextlib.suppress(RequestError):
                self._perform(self._ask(self._driver, "interrupt"))

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


async def _write_input(shim: ShimRun, inbox: trio.MemoryReceiveChannel[bytes | None]) -> None:
    """Write queued input to the agent's stdin (through its shim) until the queue closes, the
    agent's end does, or the driver closes it (``None``)."""
    async with inbox:
        async for data in inbox:
            try:
                if data is None:
                    await shim.close_stdin()
                    return
                await shim.write(data)
            except (trio.BrokenResourceError, ShimGone):
                log.info("stdin closed by the agent; input dropped")
                return
