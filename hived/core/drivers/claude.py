"""The ``claude`` driver: Claude Code's stream-json output and its control protocol.

How it works: Claude Code runs as ``claude -p --output-format stream-json --input-format
stream-json --verbose --permission-prompt-tool stdio``. Prompts go to its stdin as user messages.
Its messages, tool calls and results are mapped line by line by
:class:`~hived.core.parsers.claude.ClaudeParser`; this driver adds the two-way part:

- ``control_request`` lines: ``can_use_tool`` opens a pending request (``question`` for
  ``AskUserQuestion``, else ``permission``), ``elicitation`` opens an ``elicitation``; any
  other subtype is answered at once with an error response, as the SDK does, so the agent never
  waits on hived for something hived does not do. ``control_cancel_request`` withdraws.
- ``result`` ends a turn. Its ``usage`` is the turn's; its ``total_cost_usd`` is cumulative for
  the conversation (checked against the real CLI 2.1.336: it runs on across ``--resume``), so
  the session's cost is the latest figure (plus, for a run that began a new conversation, the
  cost of the ones before it), never a sum. A result with ``is_error`` is a failed turn
  (:class:`~hived.core.drivers.base.TurnOutcome`; the CLI says why in ``terminal_reason``), and
  requests still pending are withdrawn.
- Interrupts are a control request of hived's own; its answer is shown as it comes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

import attrs

from hived.core.drivers.base import (
    NOTHING,
    REASONS,
    WAITING,
    WORKING,
    Answer,
    DriverLaunch,
    DriverRefusal,
    Pending,
    Step,
    TurnOutcome,
    json_line,
    withdraw_all,
    withdrawn_event,
)
from hived.core.events import AgentEvent, Usage
from hived.core.parsers.claude import ClaudeParser
from hived.core.parsers.jsonl import (
    JsonObject,
    as_amount,
    as_count,
    as_object,
    as_str,
    decode_object,
    expected_note,
)
from hived.core.parsers.text import clean_text, text_event

DEFAULT_DENY_MESSAGE: Final = "Denied by the operator through hived."
QUESTION_TOOL: Final = "AskUserQuestion"

_TURN_ERRORS: Final = {
    "error_max_turns": "max_turns",
    "error_max_budget_usd": "max_budget",
    "aborted_streaming": "interrupted",
    "aborted_tools": "interrupted",
}
"""``terminal_reason`` or ``result`` subtypes of failed turns → hived's ``last_turn.error``; the
others (``api_error``, ``prompt_too_long``, ``error_during_execution``) keep their names."""


def user_message(text: str) -> bytes:
    """A prompt as the stream-json user message Claude reads on stdin."""
    return json_line(
        {
            "type": "user",
            "session_id": "",
            "uuid": str(uuid.uuid4()),
            "message": {"role": "user", "content": [{"type": "text", "text": clean_text(text)}]},
            "parent_tool_use_id": None,
        }
    )


def control_response(request_id: str, response: JsonObject) -> bytes:
    """A successful answer to one of the agent's control requests."""
    return json_line(
        {
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": response},
        }
    )


def control_error(request_id: str, error: str) -> bytes:
    """An error answer to a control request hived does not serve."""
    return json_line(
        {
            "type": "control_response",
            "response": {"subtype": "error", "request_id": request_id, "error": error},
        }
    )


def interrupt_request() -> bytes:
    """A control request that ends the current turn (Claude answers it, then ends with a result)."""
    request_id = f"hived-{uuid.uuid4().hex}"
    return json_line(
        {"type": "control_request", "request_id": request_id, "request": {"subtype": "interrupt"}}
    )


@attrs.define
class ClaudeDriver:
    """One run of Claude Code in stream-json mode (see the module docstring)."""

    launch: DriverLaunch
    takes_input: bool = attrs.field(default=True, init=False)
    lines_are_text: bool = attrs.field(default=False, init=False)
    _parser: ClaudeParser = attrs.field(factory=ClaudeParser, init=False)
    _pending: dict[str, Pending] = attrs.field(factory=dict, init=False)
    _tokens: Usage = attrs.field(factory=Usage, init=False)
    """This run's summed per-turn figures (cost excluded)."""
    _run_cost_usd: float = attrs.field(default=0.0, init=False)
    """The latest cumulative cost of this process."""
    _interrupted: bool = attrs.field(default=False, init=False)
    _turns_open: int = attrs.field(init=False)
    """Turns asked for (the launch's prompt, each prompt since) or seen to begin (``init``)
    that have not ended with their result: an interrupt needs one."""

    @_turns_open.default
    def _turn_of_the_launch(self) -> int:
        return 0 if self.launch.prompt is None else 1

    @property
    def pending(self) -> Mapping[str, Pending]:
        return self._pending

    @property
    def usage(self) -> Usage:
        """The session's running total: before this run, plus this run.

        A resumed conversation reports its whole cost, the earlier runs' included.
        """
        before = self.launch.usage
        if self.launch.resume_id is None:
            cost = before.cost_usd + self._run_cost_usd
        else:
            cost = max(before.cost_usd, self._run_cost_usd)
        return attrs.evolve(before + self._tokens, cost_usd=cost)

    # -- the agent's side ---------------------------------------------------------------------

    def start(self) -> Step:
        if self.launch.prompt is None:
            return NOTHING
        return Step(stdin=user_message(self.launch.prompt))

    def feed(self, line: str) -> Step:
        decoded = decode_object(line)
        if decoded is None:
            return NOTHING
        if isinstance(decoded, AgentEvent):
            return Step(events=[decoded])
        try:
            match decoded.get("type"):
                case "control_request":
                    return self._control_request(decoded)
                case "control_cancel_request":
                    return self._cancel(decoded)
                case "result":
                    return self._result(decoded)
        except Exception as exc:  # a bug here must cost one line, not the session's reader
            return Step(events=[text_event(line, f"hived driver bug: {exc!r}")])
        events = self._parser.parse_line(line)
        if self._turns_open == 0 and any(e.kind == "init" for e in events):
            self._turns_open = 1  # a turn no prompt of hived's began
        return Step(events=events)

    def _control_request(self, obj: JsonObject) -> Step:
        request_id = obj.get("request_id")
        request = obj.get("request")
        if not isinstance(request, dict):
            return Step(events=[_raw(obj, expected_note("request", "an object", request))])
        if not isinstance(request_id, str):
            # Without its id the request cannot be answered: show it, do not offer it.
            return Step(events=[_raw(obj, expected_note("request_id", "a string", request_id))])
        subtype = request.get("subtype")
        if subtype == "can_use_tool":
            tool_name = as_str(request.get("tool_name"))
            kind = "question" if tool_name == QUESTION_TOOL else "permission"
            data = {
                **request,
                "request_id": request_id,
                "request_kind": kind,
                "tool_name": tool_name,
                "input": as_object(request.get("input")),
                "tool_use_id": as_str(request.get("tool_use_id")),
            }
            return self._open(Pending(request_id, kind, data), obj)
        if subtype == "elicitation":
            data = {**request, "request_id": request_id, "request_kind": "elicitation"}
            return self._open(Pending(request_id, "elicitation", data), obj)
        error = f"hived does not serve control requests of subtype {subtype!r}"
        return Step(events=[_raw(obj)], stdin=control_error(request_id, error))

    def _open(self, pending: Pending, obj: JsonObject) -> Step:
        self._pending[pending.request_id] = pending
        event = AgentEvent(
            kind="permission_request",
            data=pending.data,
            state=WAITING,
            reason=REASONS[pending.kind],
            agent_session_id=as_str(obj.get("session_id")),
        )
        return Step(events=[event])

    def _cancel(self, obj: JsonObject) -> Step:
        pending = self._pending.pop(str(obj.get("request_id")), None)
        events = [_raw(obj)]
        if pending is None:
            return Step(events=events)
        events.append(withdrawn_event(pending, "cancelled by the agent"))
        return Step(events=events, **self._back_to_work("request withdrawn"))

    def _result(self, obj: JsonObject) -> Step:
        turn_usage = as_object(obj.get("usage"))
        self._tokens += Usage(
            input_tokens=as_count(turn_usage.get("input_tokens")),
            output_tokens=as_count(turn_usage.get("output_tokens")),
            cache_read_tokens=as_count(turn_usage.get("cache_read_input_tokens")),
            cache_write_tokens=as_count(turn_usage.get("cache_creation_input_tokens")),
            turns=1,
            duration_ms=as_count(obj.get("duration_ms")),
        )
        # Cumulative for the process: the latest figure, never a sum.
        self._run_cost_usd = max(self._run_cost_usd, as_amount(obj.get("total_cost_usd")))
        outcome = self._outcome(obj)
        self._interrupted = False
        self._turns_open = max(self._turns_open - 1, 0)
        event = AgentEvent(
            kind="result",
            data={**obj, "last_turn": outcome.to_json()},
            state=WAITING,
            reason="result",
            agent_session_id=as_str(obj.get("session_id")),
        )
        events = [event, *withdraw_all(self._pending, "the turn ended")]
        return Step(events=events, usage=self.usage, last_turn=outcome)

    def _outcome(self, obj: JsonObject) -> TurnOutcome:
        if obj.get("is_error") is not True and obj.get("subtype") in ("success", None):
            return TurnOutcome(ok=True)
        why = as_str(obj.get("terminal_reason")) or as_str(obj.get("subtype")) or "error"
        if self._interrupted and why == "error_during_execution":
            error = "interrupted"
        elif why == "success":
            error = "api_error"
        else:
            error = _TURN_ERRORS.get(why, why)
        message = as_str(obj.get("result"))
        errors = obj.get("errors")
        if message is None and error != "interrupted" and isinstance(errors, list) and errors:
            message = "; ".join(str(e) for e in errors)
        return TurnOutcome(ok=False, error=error, message=message)

    # -- the operator's side ------------------------------------------------------------------

    def prompt(self, text: str) -> Step:
        self._turns_open += 1
        return Step(stdin=user_message(text))

    def answer(self, request_id: str, answer: Answer) -> Step:
        pending = self._pending[request_id]
        if pending.kind == "elicitation":
            response = _elicitation_response(answer)
        elif answer.answers is not None:
            if pending.kind != "question":
                raise DriverRefusal(
                    "bad_request", f"request {request_id} asks for a permission, not answers"
                )
            response = {
                "behavior": "allow",
                "updatedInput": {**pending.data["input"], "answers": dict(answer.answers)},
            }
        elif answer.allow:
            response = self._allow(pending, answer)
        else:
            message = clean_text(answer.message or DEFAULT_DENY_MESSAGE)
            response = {"behavior": "deny", "message": message}
        del self._pending[request_id]
        return Step(stdin=control_response(request_id, response), **self._back_to_work("answered"))

    def _allow(self, pending: Pending, answer: Answer) -> JsonObject:
        if pending.kind == "question":
            raise DriverRefusal(
                "bad_request",
                f"request {pending.request_id} is a question: answer it with its answers "
                "(session.answer), or deny it",
            )
        tool_input = answer.updated_input
        response: JsonObject = {
            "behavior": "allow",
            "updatedInput": dict(pending.data["input"] if tool_input is None else tool_input),
        }
        if answer.always:
            # Only the rules for this call: the agent also suggests wider moves (another
            # permission mode, more folders) that "always allow this" does not mean.
            suggestions = pending.data.get("permission_suggestions")
            rules = [
                s for s in suggestions or () if isinstance(s, dict) and s.get("type") == "addRules"
            ]
            if not rules:
                raise DriverRefusal(
                    "bad_request",
                    f"request {pending.request_id} offers no 'always allow'; allow it once",
                )
            response["updatedPermissions"] = rules
        return response

    def _back_to_work(self, reason: str) -> dict[str, Any]:
        return {} if self._pending else {"state": WORKING, "reason": reason}

    def interrupt(self) -> Step:
        if self._turns_open == 0:
            raise DriverRefusal("conflict", "claude is not in a turn: nothing to interrupt")
        self._interrupted = True
        return Step(stdin=interrupt_request())

    def exited(self) -> Step:
        return Step(events=withdraw_all(self._pending, "the agent exited"))


def _elicitation_response(answer: Answer) -> JsonObject:
    action = answer.action
    if action is None:
        action = "decline" if answer.allow is False else "accept" if answer.allow else None
    if action not in ("accept", "decline", "cancel"):
        raise DriverRefusal(
            "bad_request", "an elicitation is answered with action accept, decline or cancel"
        )
    response: JsonObject = {"action": action}
    if action == "accept":
        response["content"] = dict(answer.content or {})
    return response


def _raw(obj: JsonObject, note: str | None = None) -> AgentEvent:
    data = obj if note is None else {**obj, "parse_error": note}
    return AgentEvent(kind="agent_event", data=data, agent_session_id=as_str(obj.get("session_id")))
