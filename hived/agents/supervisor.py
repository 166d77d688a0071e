"""The supervisor: the table of agent sessions, and the requests on them.

How it works: :meth:`Supervisor.serve` holds the nursery every supervised session's task runs in
(:mod:`hived.agents.session`: one session's runs, from spawn to exit, with its restart policy), and
starts the templates' ``autostart`` sessions. ``session.start`` makes a session from a template;
the other requests find a session by id, id prefix or name (:meth:`Supervisor.find`) and act
through it. A stop or a restart is only asked of the session's own task, so it completes even
when the client that asked goes away (its request's task is then cancelled).

Every state change, of a supervised session or of one seen only through hooks
(:mod:`hived.agents.observed`), is published the same way (:meth:`Supervisor._announce`): a
``state`` event on ``sessions`` and on the session's topic, and the summary handed to the
recorder (the store). A hook from a supervised claude session joins that session's topic.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import trio

from hived.agents.observed import ObservedSessions, Recall
from hived.agents.process import REAP_BUDGET_S
from hived.agents.session import Attach, Host, Launch, Marks, Session, signal_name
from hived.agents.shim import EXIT_NAME
from hived.agents.shimrun import SHIMS_DIR, find_shims, read_launch
from hived.core.config import AgentConfig, Config, default_cwd, disallowed_arg
from hived.core.drivers import get_format
from hived.core.drivers.base import Answer
from hived.core.errors import RequestError, StoreError
from hived.core.events import SESSIONS_TOPIC, session_topic
from hived.core.logtext import printable
from hived.core.protocol import (
    Caller,
    SessionAnswer,
    SessionApprove,
    SessionInput,
    SessionInterrupt,
    SessionRestart,
    SessionResume,
    Sessions,
    SessionStart,
    SessionStop,
)
from hived.core.sessions import (
    RestartBudget,
    SessionSummary,
    State,
    is_live,
    new_session_id,
    ulid_time_ms,
)
from hived.hub import Hub
from hived.notify.budget import session_budget

log = logging.getLogger(__name__)

Handler = Callable[[Any, Caller], Awaitable[Any]]

STARTED_WAIT_S: Final = 5.0
"""How long ``session.start`` waits for the spawn before it answers STARTING."""
TAKE_UP_WAIT_S: Final = 60.0
"""How long a request on a session waits for its run to be set up: started, or taken up after
a daemon restart (its driver rebuilt from the agent's spooled output, which takes a moment for
a long one)."""
MAX_ENDED_SESSIONS: Final = 1000
"""Ended sessions kept in memory; older ones are forgotten here (the store keeps them)."""


class SessionRecorder(Protocol):
    """Keeps session summaries (the store); called on every state or usage change."""

    def record_session(self, summary: SessionSummary) -> None: ...

    async def keep_session(self, summary: SessionSummary) -> None:
        """Record it and return once it is on disk; StoreError if it cannot be."""


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

    def __init__(
        self,
        config: Config,
        hub: Hub,
        recorder: SessionRecorder | None = None,
        recall: Recall | None = None,
        marks: Marks | None = None,
        kept: Callable[[str], SessionSummary | None] | None = None,
    ) -> None:
        """``recorder`` keeps the summaries; ``recall`` finds a kept observed session of an
        earlier run; ``marks`` keeps how far the kept events go into each agent's output;
        ``kept`` finds a session by id (all four the store, in the daemon)."""
        self._config = config
        self._hub = hub
        self._recorder = recorder
        self._marks = marks
        self._kept = kept
        self._sessions: dict[str, Session] = {}
        self._by_agent_id: dict[str, Session] = {}
        self._numbers: dict[str, int] = {}
        self._host: Host | None = None
        """What the sessions use of the supervisor; made by :meth:`serve`, with its nursery."""
        self._draining = False
        self.unaccounted: list[str] = []
        """Shims found at start that no session of the store accounts for: left running."""
        self.observed = ObservedSessions(hub, config.hooks, self._announce, self._join, recall)

    # -- the service ------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the sessions (and start the templates' ``autostart`` ones) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._host = Host(
                self._hub,
                nursery,
                self._announce,
                self._record,
                self._learned_agent_id,
                shims=self.shims_dir,
                marks=self._marks,
            )
            nursery.start_soon(self.observed.serve_idle_watch)
            taken_up = await self._take_up_runs()
            for agent, template in self._config.agents.items():
                # Sessions an earlier daemon left running count: a restart adds none of its own.
                for _ in range(template.autostart - taken_up[agent]):
                    try:
                        await self._create(
                            agent, template, prompt=None, args=(), cwd=None, name=None
                        )
                    except RequestError as exc:
                        log.error("autostart of %s: %s", agent, exc.message)
            task_status.started()
            await trio.sleep_forever()

    @property
    def shims_dir(self) -> Path:
        return Path(self._config.state.dir) / SHIMS_DIR

    async def _take_up_runs(self) -> Counter[str]:
        """Take up the agents an earlier daemon run left running under their shims; how many
        of each template still run."""
        taken_up: Counter[str] = Counter()
        for run_dir, run in await find_shims(self.shims_dir):
            session_id = run_dir.name
            kept = None if self._kept is None else self._kept(session_id)
            template = None if kept is None else self._config.agents.get(kept.agent)
            if kept is None or template is None or kept.launch is None or run is None:
                why = (
                    "its shim does not answer"
                    if run is None
                    else "no session of this store"
                    if kept is None
                    else f"its template {kept.agent!r} is gone"
                    if template is None
                    else "its launch was not kept"
                )
                log.warning("shim %s: left alone: %s", run_dir, why)
                self.unaccounted.append(f"{run_dir}: {why}")
                if run is not None:
                    await run.detach()
                continue
            try:
                launch = await read_launch(run_dir)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("shim %s: left alone: unreadable %s (%r)", run_dir, exc)
                self.unaccounted.append(f"{run_dir}: unreadable launch")
                await run.detach()
                continue
            session = self._hold(kept, template, Launch.from_json(kept.launch, template.env))
            session.attach(Attach(run, launch))
            if not await trio.Path(run_dir / EXIT_NAME).exists():  # its agent still runs
                taken_up[kept.agent] += 1
        return taken_up

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
        stopping = [s for s in self._sessions.values() if not s.done.is_set()]
        for session in stopping:
            session.request_stop(min(session.template.stop_timeout_s, grace_s))
        for session in stopping:
            await session.done.wait()

    async def detach(self) -> None:
        """Let go of every session without ending its agent (each stays under its shim, for
        the next daemon to take up); the daemon restarts. Nothing starts afterwards."""
        self._draining = True
        live = [s for s in self._sessions.values() if not s.done.is_set()]
        for session in live:
            session.request_detach()
        for session in live:
            await session.done.wait()

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

    def holds(self, session_id: str) -> bool:
        """Whether this run keeps the session with this exact id (supervised or observed)."""
        if session_id in self._sessions:
            return True
        return any(s.summary.id == session_id for s in self.observed)

    def _check_not_draining(self) -> None:
        if self._draining:
            raise RequestError("conflict", "hived is stopping; no session starts now")

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

    def ingest_hook(self, payload: Mapping[str, Any], token: str = "") -> None:
        """One Claude Code hook payload, sent with the token named ``token`` (see
        :mod:`hived.agents.observed`); sync, never blocks."""
        self.observed.ingest_hook(payload, token)

    def _join(self, agent_session_id: str) -> str | None:
        session = self._by_agent_id.get(agent_session_id)
        return session.id if session is not None else None

    def _learned_agent_id(self, agent_session_id: str, session: Session) -> None:
        self._by_agent_id[agent_session_id] = session

    # -- state ------------------------------------------------------------------------------

    def _announce(self, summary: SessionSummary, previous: State | None) -> None:
        """Publish a state change on both topics and record the summary."""
        data = {
            "state": str(summary.state),
            "previous": None if previous is None else str(previous),
            "reason": summary.reason,
            "exit_code": summary.exit_code,
            "signal": signal_name(summary.exit_code),
            "summary": summary.to_json(),
        }
        self._hub.publish(SESSIONS_TOPIC, "state", data, summary.id)
        self._hub.publish(session_topic(summary.id), "state", data, summary.id)
        self._record(summary)

    def _record(self, summary: SessionSummary) -> None:
        if self._recorder is not None:
            self._recorder.record_session(summary)

    # -- making sessions ----------------------------------------------------------------------

    async def _create(
        self,
        agent: str,
        template: AgentConfig,
        *,
        prompt: str | None,
        args: tuple[str, ...],
        cwd: str | None,
        name: str | None,
        started_by: str | None = None,
        limits: tuple[float | None, int | None] = (None, None),
    ) -> Session:
        cwd = cwd or template.cwd
        if cwd is None:
            cwd = default_cwd(self._config.state.dir, agent)
            try:
                os.makedirs(cwd, mode=0o700, exist_ok=True)
            except OSError as exc:
                log.warning("agent %s: cannot make its working folder %s: %s", agent, cwd, exc)
        launch = Launch(args, cwd, template.env, prompt, started_by, *limits)
        summary = SessionSummary(
            id=new_session_id(),
            name=name or self._next_name(agent),
            agent=agent,
            state=State.STARTING,
            cwd=cwd,
            launch=launch.to_json(),
        )
        session = self._hold(summary, template, launch)
        # On disk before its agent starts: after a crash from here on, the next daemon knows
        # the session and takes its run up (the run's folder names the session).
        if self._recorder is not None:
            try:
                await self._recorder.keep_session(session.summary)
            except StoreError as exc:
                del self._sessions[session.id]
                raise RequestError(
                    "internal", f"not started: the store cannot keep the session's record ({exc})"
                ) from None
        self._announce(session.summary, None)
        session.start()
        return session

    def _hold(self, summary: SessionSummary, template: AgentConfig, launch: Launch) -> Session:
        """Keep a session of this run (made now, or adopted from the store) in the table."""
        if self._host is None:
            raise RequestError("conflict", "the supervisor is not running")
        session = Session(
            summary=summary,
            template=template,
            launch=launch,
            host=self._host,
            budget=RestartBudget(template.max_restarts, template.restart_window_s),
            limits=session_budget(summary.agent, template, launch.max_cost_usd, launch.max_tokens),
        )
        session.done.set()
        self._sessions[session.id] = session
        if summary.agent_session_id:
            self._by_agent_id[summary.agent_session_id] = session
        self._forget_ended()
        return session

    def adopt(self, kept: SessionSummary) -> None:
        """Hold an ended session that only the store keeps (an earlier daemon run's), so that
        it can be restarted or resumed as the same session. ``conflict`` when it cannot be:
        observed, its template gone, or kept before launches were (no way to know its args)."""
        self._check_not_draining()
        if kept.observed:
            raise RequestError(
                "conflict",
                f"session {kept.name} was observed through hooks; hived did not start it and "
                "cannot resume it",
            )
        template = self._config.agents.get(kept.agent)
        if template is None:
            raise RequestError(
                "conflict", f"session {kept.name}: its agent template {kept.agent!r} is gone"
            )
        if kept.launch is None:
            raise RequestError(
                "conflict",
                f"session {kept.name} was kept by an older hived without its launch; start a "
                f"new one: hivectl start {kept.agent}",
            )
        try:
            launch = Launch.from_json(kept.launch, template.env)
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestError(
                "conflict", f"session {kept.name}: its kept launch is unreadable ({exc!r})"
            ) from None
        self._hold(kept, template, launch)

    def _next_name(self, agent: str) -> str:
        taken = {s.name for s in self.summaries() if is_live(s.state)}
        while True:
            n = self._numbers[agent] = self._numbers.get(agent, 0) + 1
            if f"{agent}-{n}" not in taken:
                return f"{agent}-{n}"

    def release(self, session_id: str) -> None:
        """Let go of an ended session this run keeps in memory (``session.forget``)."""
        session = self._sessions.get(session_id)
        if session is not None and session.done.is_set():
            del self._sessions[session_id]
            agent_id = session.summary.agent_session_id or ""
            if self._by_agent_id.get(agent_id) is session:
                del self._by_agent_id[agent_id]
        self.observed.release(session_id)

    def _forget_ended(self) -> None:
        ended = [s for s in self._sessions.values() if s.done.is_set()]
        for session in ended[: max(len(ended) - MAX_ENDED_SESSIONS, 0)]:
            del self._sessions[session.id]
            agent_id = session.summary.agent_session_id or ""
            if self._by_agent_id.get(agent_id) is session:
                del self._by_agent_id[agent_id]

    # -- requests -----------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        """The client requests the supervisor answers, by wire type."""
        return {
            "sessions": self._on_sessions,
            "session.start": self._on_start,
            "session.input": self._on_input,
            "session.approve": self._on_approve,
            "session.answer": self._on_answer,
            "session.interrupt": self._on_interrupt,
            "session.stop": self._on_stop,
            "session.restart": self._on_restart,
            "session.resume": self._on_resume,
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

        ``args`` are appended to the template's command, each as its ``args_allowed`` allows
        (by default none: ``forbidden``). ``prompt`` is the first input for the
        formats that read stdin (``claude``, ``jsonl``, ``text``), else the command's last
        argument (``codex``). ``cwd`` rule: allowed only when the template lists ``cwd_roots``,
        the path is absolute, and — once symlinks and ``..`` are resolved — it is one of those
        folders or inside one (roots resolved the same way); the resolved path is what the
        agent gets. Anything else is ``forbidden``: a template without roots runs where its
        config says. ``name`` defaults to ``<agent>-<n>``; it must not be the name of another
        live session (``conflict``). The answer waits (briefly) for the spawn, so that a
        command that cannot start answers FAILED with its reason.
        """
        self._check_not_draining()
        template = self._config.agents.get(request.agent)
        if template is None:
            known = ", ".join(sorted(self._config.agents)) or "none configured"
            raise RequestError("not_found", f"no agent {request.agent!r}; known: {known}")
        cwd = None if request.cwd is None else _allowed_cwd(request.agent, template, request.cwd)
        refused = disallowed_arg(template.args_allowed, tuple(request.args))
        if refused is not None:
            raise RequestError(
                "forbidden",
                f"agent {request.agent} does not take the argument '{printable(refused)[:200]}'; "
                f"agents.{request.agent}.args_allowed lists what it takes"
                + ("" if template.args_allowed else " (none now)"),
            )
        if request.name is not None and any(
            s.name == request.name and is_live(s.state) for s in self.summaries()
        ):
            raise RequestError("conflict", f"a live session is already named {request.name!r}")
        limits = (request.max_cost_usd, request.max_tokens)
        session_budget(request.agent, template, *limits)  # bad_request when over the caps
        session = await self._create(
            request.agent,
            template,
            prompt=request.prompt,
            args=tuple(request.args),
            cwd=cwd,
            name=request.name,
            started_by=caller.token_name,
            limits=limits,
        )
        await session.wait_until(lambda s: s.state is not State.STARTING, STARTED_WAIT_S)
        return session.answer()

    async def _on_input(self, request: SessionInput, caller: Caller) -> dict[str, Any]:
        session = self._supervised(request.session, "send input to")
        await session.wait_driven(TAKE_UP_WAIT_S)
        session.send_input(request.text, caller.token_name)
        return session.answer()

    async def _on_approve(self, request: SessionApprove, caller: Caller) -> dict[str, Any]:
        """Allow or deny a pending permission request (or deny a question or elicitation)."""
        session = self._supervised(request.session, "answer")
        await session.wait_driven(TAKE_UP_WAIT_S)
        if request.input is not None and not request.allow:
            raise RequestError("bad_request", "input replaces the tool input of an allow only")
        answer = Answer(
            allow=request.allow,
            message=request.message,
            always=request.always,
            updated_input=request.input,
        )
        request_id = session.answer_request(request.request_id, answer, caller.token_name)
        return session.answer() | {"request_id": request_id}

    async def _on_answer(self, request: SessionAnswer, caller: Caller) -> dict[str, Any]:
        """Answer a pending question (``answers``) or elicitation (``action``, ``content``)."""
        session = self._supervised(request.session, "answer")
        await session.wait_driven(TAKE_UP_WAIT_S)
        if (request.answers is None) == (request.action is None):
            raise RequestError(
                "bad_request",
                "session.answer takes answers (a question) or action (an elicitation): one of them",
            )
        answer = Answer(answers=request.answers, action=request.action, content=request.content)
        request_id = session.answer_request(request.request_id, answer, caller.token_name)
        return session.answer() | {"request_id": request_id}

    async def _on_interrupt(self, request: SessionInterrupt, caller: Caller) -> dict[str, Any]:
        """claude: the interrupt control request on stdin; other formats: SIGINT to the group."""
        session = self._supervised(request.session, "interrupt")
        await session.wait_driven(TAKE_UP_WAIT_S)
        session.interrupt(caller.token_name)
        return session.answer()

    async def _on_stop(self, request: SessionStop, caller: Caller) -> dict[str, Any]:
        """Stop and wait until it has; a session already ended is answered as it is.

        The session's own task does the stopping: a caller that goes away stops only waiting.
        """
        session = self._supervised(request.session, "stop")
        await session.stop()
        return session.answer()

    async def _on_restart(self, request: SessionRestart, caller: Caller) -> dict[str, Any]:
        """Stop the run (if any), then start a new one at once; a FATAL session gets a fresh
        restart budget. Answers once the new run has spawned.

        As with a stop, the work is the session task's; the request only waits for it.
        """
        session = self._supervised(request.session, "restart")
        return await self._restart(session, prompt=None)

    async def _on_resume(self, request: SessionResume, caller: Caller) -> dict[str, Any]:
        """Go on with an ended session: a new run of the same session whose agent resumes its
        conversation (claude ``--resume``); ``prompt`` is sent into it. ``conflict`` for a
        session that still runs, or whose format cannot resume."""
        session = self._supervised(request.session, "resume")
        if not session.done.is_set():
            raise RequestError(
                "conflict", f"session {session.name} is {session.state}; only an ended one resumes"
            )
        fmt = get_format(session.template.format)
        if not fmt.resumable:
            raise RequestError(
                "conflict",
                f"session {session.name} runs a {fmt.name} agent, which cannot resume a "
                "conversation; restart it instead (session.restart)",
            )
        if session.summary.agent_session_id is None:
            raise RequestError(
                "conflict",
                f"session {session.name} never told its agent session id; nothing to resume",
            )
        return await self._restart(session, prompt=request.prompt)

    async def _restart(self, session: Session, prompt: str | None) -> dict[str, Any]:
        self._check_not_draining()
        before = session.summary.restarts
        session.request_restart(prompt)
        await session.wait_until(
            lambda s: (
                s.done.is_set() or (s.summary.restarts > before and s.state is not State.STARTING)
            ),
            session.template.stop_timeout_s + STARTED_WAIT_S,
        )
        return session.answer()


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
