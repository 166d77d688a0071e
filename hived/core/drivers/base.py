"""What every agent driver shares: its inputs, its outputs, and the :class:`Driver` protocol.

How it works: a driver is the two-way protocol of one agent run, with no I/O (the h11 model).
The session's task owns the process; it hands the driver every stdout line (:meth:`Driver.feed`)
and every operator action (:meth:`Driver.prompt`, :meth:`Driver.answer`,
:meth:`Driver.interrupt`), and each call returns a :class:`Step`: the events to publish, the
bytes to write to the agent's stdin, the session's usage as a running total, how the last turn
ended, and whether the process should get a signal or lose its stdin. A driver keeps the
pending requests of its run (permission, question, elicitation) so that answers can be checked
and encoded; a request the agent withdraws, or that the run's end makes moot, is published as a
``request_withdrawn`` event.

An action the agent cannot take now raises :class:`DriverRefusal` with words for the operator
(the session turns it into a ``conflict``); a malformed answer raises it with ``bad_request``.
Nothing the agent prints ever raises: a line a driver cannot read becomes an event with a
``parse_error`` note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple, Protocol

import attrs
import orjson

from hived.core.errors import HivedError
from hived.core.events import AgentEvent, Usage

RequestKind = Literal["permission", "question", "elicitation"]
REQUEST_KINDS: Final[frozenset[str]] = frozenset({"permission", "question", "elicitation"})

REASONS: Final[Mapping[str, str]] = {
    "permission": "permission_request",
    "question": "question",
    "elicitation": "elicitation",
}
"""A pending request's kind → the reason of the WAITING state it puts its session in."""

WORKING: Final = "WORKING"
WAITING: Final = "WAITING"


class DriverRefusal(HivedError, ValueError):
    """An operator action the agent cannot take as asked; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class DriverLaunch:
    """What a driver knows of the run it drives."""

    cwd: str
    """The agent's working directory (ACP and Codex app-server send it in their protocol)."""
    prompt: str | None = None
    """The first prompt of this run (``None`` when resuming without one, or none was given)."""
    resume_id: str | None = None
    """The agent's own session or thread id to resume, or ``None`` for a new conversation."""
    usage: Usage = attrs.field(factory=Usage)
    """The session's usage before this run: the driver's totals start from it."""


@attrs.frozen
class TurnOutcome:
    """How the last turn ended: the summary's ``last_turn`` (DESIGN §10)."""

    ok: bool
    error: str | None = None
    """``api_error``, ``max_turns``, ``max_budget``, ``interrupted``, ``error`` … when not ok."""
    message: str | None = None
    """The agent's own words about the failure, where it gave some."""

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "error": self.error, "message": self.message}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TurnOutcome:
        return cls(ok=bool(d.get("ok")), error=d.get("error"), message=d.get("message"))


@attrs.frozen
class Pending:
    """A request the agent waits on a person for."""

    request_id: str
    kind: str
    """One of :data:`REQUEST_KINDS`."""
    data: Mapping[str, Any]
    """What the driver needs to answer it (the tool input, the agent's options, its JSON-RPC id)."""


@attrs.frozen
class Answer:
    """An operator's answer to a pending request, in the words of the wire.

    ``session.approve`` fills ``allow`` (and ``message``, ``always``, ``updated_input``);
    ``session.answer`` fills ``answers`` (questions) or ``action``/``content`` (elicitations).
    """

    allow: bool | None = None
    message: str | None = None
    always: bool = False
    """Allow this tool from now on, where the agent offers it."""
    updated_input: Mapping[str, Any] | None = None
    """The tool input to run instead of the agent's (an edited command)."""
    answers: Mapping[str, str] | None = None
    """A question's answers: question text → chosen label(s) or free text."""
    action: str | None = None
    """An elicitation's outcome: ``accept``, ``decline`` or ``cancel``."""
    content: Mapping[str, Any] | None = None
    """An accepted elicitation's form content."""


class Step(NamedTuple):
    """What one call into a driver asks of the session.

    A named tuple: one is made per line of agent output, where a frozen attrs instance of nine
    fields cost several times as much."""

    events: Sequence[AgentEvent] = ()
    stdin: bytes = b""
    """Bytes for the agent's stdin, whole lines."""
    usage: Usage | None = None
    """The session's usage as a running total, when this step changed it."""
    last_turn: TurnOutcome | None = None
    """How a turn that ended in this step ended."""
    signal: str | None = None
    """A signal name (``SIGINT``) to send the agent's process group."""
    close_stdin: bool = False
    """Close the agent's stdin (after writing :attr:`stdin`)."""
    state: str | None = None
    """``WORKING`` or ``WAITING`` after this step's events (an answer puts the agent back to
    work), with :attr:`reason`."""
    reason: str | None = None


NOTHING: Final = Step()


def json_line(obj: Mapping[str, Any]) -> bytes:
    """One JSON object as a line for an agent's stdin."""
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def jsonrpc_line(msg: Mapping[str, Any]) -> bytes:
    """One JSON-RPC 2.0 message (request, notification or response) as a line."""
    return json_line({"jsonrpc": "2.0", **msg})


class Driver(Protocol):
    """One agent run's protocol. Every method is synchronous and never does I/O."""

    takes_input: bool
    """Whether :meth:`prompt` can ever succeed (the format reads prompts after its start)."""
    lines_are_text: bool
    """Whether each stdout line is one ``text`` event ``{"line": <the line>}`` and nothing
    else (the ``text`` format): the session then publishes lines as such, without a
    :meth:`feed` and a step each (the hot path of a plain agent's output)."""

    @property
    def pending(self) -> Mapping[str, Pending]:
        """The requests the agent waits on, by id."""
        ...

    def start(self) -> Step:
        """Right after the spawn: the handshake and the first prompt, if any."""
        ...

    def feed(self, line: str) -> Step:
        """One stdout line (with or without its newline). Never raises."""
        ...

    def prompt(self, text: str) -> Step:
        """A prompt from an operator; :class:`DriverRefusal` when the agent cannot take one now."""
        ...

    def answer(self, request_id: str, answer: Answer) -> Step:
        """Answer the pending request ``request_id`` (an exact id from :attr:`pending`)."""
        ...

    def interrupt(self) -> Step:
        """End the current turn (not the session, where the agent allows it)."""
        ...

    def exited(self) -> Step:
        """The process ended: withdraw what is pending; final events."""
        ...


def withdrawn_event(pending: Pending, reason: str) -> AgentEvent:
    """The event for a request that is no longer waiting for an answer."""
    return AgentEvent(
        kind="request_withdrawn",
        data={"request_id": pending.request_id, "request_kind": pending.kind, "reason": reason},
    )


def withdraw_all(pending: dict[str, Pending], reason: str) -> list[AgentEvent]:
    """Empty ``pending``, with an event for each request it held."""
    events = [withdrawn_event(p, reason) for p in pending.values()]
    pending.clear()
    return events


@attrs.frozen
class Action:
    """An operator's action on a driver, with how far the driver had read the agent's output
    then: a run's driver is rebuilt from the agent's output and these, in the same order."""

    at: int
    """The stdout offset of the end of the last line the driver had been fed."""
    op: str
    """``prompt``, ``answer`` or ``interrupt``."""
    args: tuple[Any, ...] = ()

    def to_json(self) -> dict[str, Any]:
        args = [attrs.asdict(a) if isinstance(a, Answer) else a for a in self.args]
        return {"at": self.at, "op": self.op, "args": args}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Action:
        op = str(d["op"])
        args = list(d.get("args") or ())
        if op == "answer" and len(args) == 2 and isinstance(args[1], dict):
            args[1] = Answer(**args[1])
        return cls(int(d["at"]), op, tuple(args))


def act(driver: Driver, action: Action) -> Step:
    """Give ``driver`` the operator's ``action``; its step (or :class:`DriverRefusal`)."""
    if action.op == "prompt":
        return driver.prompt(*action.args)
    if action.op == "answer":
        return driver.answer(*action.args)
    if action.op == "interrupt":
        return driver.interrupt()
    raise ValueError(f"unknown action {action.op!r}")
