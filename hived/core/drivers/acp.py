"""The ``acp`` driver: an Agent Client Protocol v1 client, JSON-RPC 2.0 over stdio, one per line.

How it works: :meth:`AcpDriver.start` writes ``initialize`` (protocol version 1). Its response
says what the agent can do; the driver then opens the session: ``session/new {cwd, mcpServers:
[]}``, or for a launch with a ``resume_id`` ``session/resume`` (where the agent advertises
``sessionCapabilities.resume``: no history replayed) or else ``session/load`` (``loadSession``:
the agent replays the conversation as ``session/update`` s, published marked ``replayed``). An
agent that can do neither gets no new session in place of the old one: the run fails with a
``resume_unsupported`` turn and its stdin is closed. The session id is the agent session id.

Each prompt is a ``session/prompt``; its response's ``stopReason`` ends the turn (a ``result``
event): ``end_turn`` is ok, ``cancelled`` is ``interrupted``, ``max_tokens``,
``max_turn_requests`` and ``refusal`` are failed turns with that error. The agent streams the turn
as ``session/update`` notifications (acp_updates.py) and asks with
``session/request_permission`` (acp_permissions.py).

Decisions:

- Client capabilities: ``fs.readTextFile``, ``fs.writeTextFile`` and ``terminal`` are all
  offered as ``false``. The agent then reads, writes and runs commands with its own tools, which
  it asks permission for (which hived shows), in the session's cwd; hived serves no files and no
  terminals, so it needs no sandbox of its own. An ``fs/*`` or ``terminal/*`` request (or any
  other the driver does not know) gets a JSON-RPC error ``-32601`` at once.
- One prompt at a time: prompts given before the session is open are queued and sent one per
  turn; a prompt while a turn runs is refused (``conflict``). Interrupt first, or wait.
- Interrupt is the ``session/cancel`` notification; every permission request still open is
  answered ``cancelled`` at once (the spec requires it) and withdrawn. The turn ends with the
  prompt's response, ``stopReason: cancelled``.
- Usage: a prompt response's ``usage`` (unstable in v1; the Claude adapter and opencode send it)
  adds that turn's tokens as the agent counts them. ``usage_update`` 's ``cost`` (in USD) is, by
  the spec, the session's running cost: opencode's is, across processes; the Claude adapter's
  starts from 0 in each process. So a new session's cost is the agent's figure (on top of the
  session's cost before the run, for a restart that starts afresh); a resumed session's first
  figure tells which kind the agent reports: one at least the session's cost so far is the whole
  session's, a lower one is counted on top of it. (A Claude adapter's first resumed turn that
  costs more than all before would be taken for the whole: the heuristic's one blind spot.)
  Its context figures (``used``, ``size``) go into the turn's ``result`` event rather than an
  event per update.
- A pending request's id is ``acp-<JSON-RPC id>`` (the Claude adapter numbers its requests from
  0, codex-acp uses UUIDs).
"""

from __future__ import annotations

from typing import Any, Final

import attrs

import hived
from hived.core.drivers import acp_permissions as permissions
from hived.core.drivers.acp_updates import CHUNK_KINDS, Chunks, Event, ToolCalls, turn_tokens
from hived.core.drivers.base import (
    WAITING,
    WORKING,
    Answer,
    DriverLaunch,
    DriverRefusal,
    Pending,
    Step,
    TurnOutcome,
    jsonrpc_line,
    withdraw_all,
)
from hived.core.drivers.jsonrpc import JsonRpcDriver
from hived.core.events import AgentEvent, Usage
from hived.core.parsers.jsonl import JsonObject, as_amount, as_object, as_str
from hived.core.parsers.text import clean_text

PROTOCOL_VERSION: Final = 1
CLIENT_CAPABILITIES: Final[JsonObject] = {
    "fs": {"readTextFile": False, "writeTextFile": False},
    "terminal": False,
}
"""What hived offers the agent (see the module's docstring)."""

_OUTCOMES: Final = {
    "end_turn": TurnOutcome(ok=True),
    "cancelled": TurnOutcome(ok=False, error="interrupted"),
}


def turn_outcome(stop_reason: str | None) -> TurnOutcome:
    """A ``stopReason`` as hived's ``last_turn``: the reason is the error where it is not ok."""
    known = _OUTCOMES.get(stop_reason or "")
    if known is not None:
        return known
    return TurnOutcome(ok=False, error=stop_reason or "error", message=f"stopReason {stop_reason}")


class AcpDriver(JsonRpcDriver):
    """One ACP agent run (see the module's docstring)."""

    def __init__(self, launch: DriverLaunch) -> None:
        super().__init__(launch)
        self._agent: JsonObject = {}
        """The initialize response's result (the agent's info and capabilities)."""
        self._opening: str | None = None
        """``session/new``, ``/resume`` or ``/load`` while in flight."""
        self._prompt_call: int | None = None
        """The JSON-RPC id of the running ``session/prompt``."""
        self._cancel_sent = False
        """hived cancelled the running turn (else a ``cancelled`` turn is the agent's doing)."""
        self._chunks = Chunks()
        self._tools = ToolCalls()
        self._tokens = attrs.evolve(launch.usage, cost_usd=0.0)
        """The session's usage but its cost."""
        self._cost_base: float | None = None if launch.resume_id else launch.usage.cost_usd
        """What the agent's cost figures add to (``None``: not known until the first)."""
        self._cost = 0.0
        """The agent's latest cost figure."""
        self._context: JsonObject = {}
        """The latest ``usage_update`` (context used and size, cost)."""

    @property
    def usage(self) -> Usage:
        """The session's running total."""
        base = self._launch.usage.cost_usd if self._cost_base is None else self._cost_base
        return attrs.evolve(
            self._tokens, cost_usd=max(base + self._cost, self._launch.usage.cost_usd)
        )

    # -- the Driver protocol ---------------------------------------------------------------

    def start(self) -> Step:
        params = {
            "protocolVersion": PROTOCOL_VERSION,
            "clientCapabilities": CLIENT_CAPABILITIES,
            "clientInfo": {"name": "hived", "title": "hived", "version": hived.__version__},
        }
        return Step(stdin=self._request("initialize", params))

    def answer(self, request_id: str, answer: Answer) -> Step:
        pending, allow = self._answerable(
            request_id,
            answer,
            needs_allow="an ACP permission needs allow true or false",
            no_edits="ACP has no way to run a tool with edited input",
        )
        option_id = permissions.choose(pending.data["options"], allow=allow, always=answer.always)
        del self._pending[request_id]
        reply = jsonrpc_line(
            {"id": pending.data["jsonrpc_id"], "result": permissions.selected(option_id)}
        )
        if self._pending:
            return Step(stdin=reply)
        return Step(stdin=reply, state=WORKING, reason="answered")

    def interrupt(self) -> Step:
        if self._prompt_call is None or self._session_id is None:
            raise DriverRefusal("conflict", "the agent is not in a turn: nothing to interrupt")
        self._cancel_sent = True
        stdin = jsonrpc_line(
            {"method": "session/cancel", "params": {"sessionId": self._session_id}}
        )
        for pending in self._pending.values():
            reply = {"id": pending.data["jsonrpc_id"], "result": permissions.CANCELLED}
            stdin += jsonrpc_line(reply)
        events = withdraw_all(self._pending, "turn cancelled")
        return Step(stdin=stdin, events=events)

    def exited(self) -> Step:
        events = self._flush()
        events += withdraw_all(self._pending, "agent exited")
        outcome = None
        if self._prompt_call is not None:
            outcome = TurnOutcome(ok=False, error="error", message="the agent exited in a turn")
        self._prompt_call = None
        return Step(events=events, last_turn=outcome)

    # -- writing ---------------------------------------------------------------------------

    def _in_turn(self) -> bool:
        return self._prompt_call is not None

    def _send_prompt(self, text: str) -> bytes:
        params = {
            "sessionId": self._session_id,
            "prompt": [{"type": "text", "text": clean_text(text)}],
        }
        stdin = self._request("session/prompt", params)
        self._prompt_call = self._next_id - 1
        self._cancel_sent = False
        return stdin

    def _flush(self) -> list[AgentEvent]:
        notes = {"replayed": True} if self._opening == "session/load" else {}
        state = {} if notes else {"state": WORKING}
        return [self._event(k, d, **state) for k, d in self._chunks.flush(**notes)]

    # -- reading ---------------------------------------------------------------------------

    def _notification(self, method: str, params: JsonObject, msg: JsonObject) -> Step:
        if method == "session/update":
            return self._update(params, msg)
        return Step(events=[*self._flush(), self._event("agent_event", msg)])

    def _succeeded(self, call: str | None, result: JsonObject, msg: JsonObject) -> Step:
        if call == "initialize":
            return self._initialized(result, msg)
        if call in ("session/new", "session/resume", "session/load"):
            return self._opened(call, result)
        if call == "session/prompt":
            return self._turn_ended(result)
        return Step(events=[self._event("agent_event", msg)])

    def _initialized(self, result: JsonObject, msg: JsonObject) -> Step:
        self._agent = result
        version = result.get("protocolVersion")
        if version != PROTOCOL_VERSION:
            message = f"the agent speaks ACP version {version!r}; hived speaks {PROTOCOL_VERSION}"
            return self._cannot_go_on(msg, "protocol_version", message)
        capabilities = as_object(result.get("agentCapabilities"))
        resume_id, cwd = self._launch.resume_id, self._launch.cwd
        if resume_id is None:
            return Step(stdin=self._open("session/new", {"cwd": cwd, "mcpServers": []}))
        params = {"sessionId": resume_id, "cwd": cwd, "mcpServers": []}
        if as_object(capabilities.get("sessionCapabilities")).get("resume") is not None:
            return Step(stdin=self._open("session/resume", params))
        if capabilities.get("loadSession") is True:
            return Step(stdin=self._open("session/load", params))
        message = (
            f"the agent ({as_object(result.get('agentInfo')).get('name')}) can neither load nor "
            f"resume a session: session {resume_id} cannot go on"
        )
        return self._cannot_go_on(msg, "resume_unsupported", message)

    def _cannot_go_on(self, msg: JsonObject, error: str, message: str) -> Step:
        """The run cannot work: a failed turn, said why, and the agent's stdin closed."""
        outcome = TurnOutcome(ok=False, error=error, message=message)
        data = {**msg, "is_error": True, "last_turn": outcome.to_json()}
        event = self._event("agent_event", data, state=WAITING, reason=error)
        self._queued.clear()
        return Step(events=[event], last_turn=outcome, close_stdin=True)

    def _open(self, method: str, params: JsonObject) -> bytes:
        self._opening = method
        return self._request(method, params)

    def _opened(self, call: str, result: JsonObject) -> Step:
        events = self._flush()  # the end of a loaded session's replayed history
        self._opening = None
        self._session_id = as_str(result.get("sessionId")) or self._launch.resume_id
        agent = {
            k: self._agent.get(k) for k in ("protocolVersion", "agentInfo", "agentCapabilities")
        }
        data = {**result, **agent, "sessionId": self._session_id, "method": call}
        events.append(self._event("init", data, state=WAITING, reason=call))
        return Step(events=events, stdin=self._next_prompt())

    def _failed_call(self, call: str | None, msg: JsonObject) -> Step:
        error = as_object(msg.get("error"))
        message = as_str(error.get("message"))
        data = {**msg, "method": call, "is_error": True}
        if call == "session/prompt":
            self._prompt_call = None
            events = [*self._flush(), *self._withdraw_turn()]
            outcome = TurnOutcome(ok=False, error="error", message=message)
            result = {**data, "last_turn": outcome.to_json(), "error": "error", "message": message}
            events.append(self._event("result", result, state=WAITING, reason="result"))
            self._tokens = self._tokens + Usage(turns=1)
            return Step(
                events=events, last_turn=outcome, usage=self.usage, stdin=self._next_prompt()
            )
        if call in ("initialize", "session/new", "session/resume", "session/load"):
            what = f"{call} failed: {message}"
            return self._cannot_go_on(msg, "error", what)
        return Step(events=[self._event("agent_event", data)])

    def _withdraw_turn(self) -> list[AgentEvent]:
        return withdraw_all(self._pending, "turn ended")

    def _turn_ended(self, result: JsonObject) -> Step:
        self._prompt_call = None
        stop_reason = as_str(result.get("stopReason"))
        outcome = turn_outcome(stop_reason)
        if stop_reason == "cancelled" and not self._cancel_sent:
            # codex-acp ends the turn so when a permission is rejected (its reject_once "abort").
            outcome = attrs.evolve(outcome, message="the agent cancelled the turn itself")
        events = [*self._flush(), *self._withdraw_turn()]
        turn = turn_tokens(result.get("usage")) + Usage(turns=1)
        self._tokens = self._tokens + turn
        data = {
            **result,
            "is_error": not outcome.ok,
            "error": outcome.error,
            "message": outcome.message,
            "usage": turn.to_json(),
            "last_turn": outcome.to_json(),
        }
        if self._context:
            data["context"] = self._context
        events.append(self._event("result", data, state=WAITING, reason="result"))
        return Step(events=events, usage=self.usage, last_turn=outcome, stdin=self._next_prompt())

    def _update(self, params: JsonObject, msg: JsonObject) -> Step:
        update = as_object(params.get("update"))
        kind = as_str(update.get("sessionUpdate"))
        replayed = self._opening == "session/load"
        if kind in CHUNK_KINDS:
            flushed = self._chunks.add(update)
            notes = {"replayed": True} if replayed else {}
            state = {} if replayed else {"state": WORKING}
            return Step(events=[self._event(k, {**d, **notes}, **state) for k, d in flushed])
        events = self._flush()
        if kind == "usage_update":
            return Step(events=events, usage=self._usage_update(update))
        made: Event
        if kind in ("tool_call", "tool_call_update"):
            made = self._tools.event(update)
        else:
            made = ("agent_event", {**update, "sessionId": params.get("sessionId")})
        extra: dict[str, Any] = {}
        if replayed:
            made[1]["replayed"] = True
        elif made[0] != "agent_event":
            extra = {"state": WORKING}
        events.append(self._event(*made, **extra))
        return Step(events=events)

    def _usage_update(self, update: JsonObject) -> Usage | None:
        self._context = {k: update[k] for k in ("used", "size", "cost") if k in update}
        cost = as_object(update.get("cost"))
        if cost.get("currency") != "USD":
            return None
        amount = as_amount(cost.get("amount"))
        if self._cost_base is None:
            # A resumed session's first figure. The spec's cost is the session's: then it holds
            # the cost before this run (opencode's does). The Claude adapter's starts from 0 in
            # each process: a figure below the session's cost so far is counted on top of it.
            before = self._launch.usage.cost_usd
            self._cost_base = 0.0 if amount >= before else before
        # A running total never goes down (opencode reports 0 for a turn cancelled at once).
        self._cost = max(self._cost, amount)
        return self.usage

    def _agent_request(self, msg: JsonObject, method: str) -> Step:
        events = self._flush()
        if method != "session/request_permission":
            return self._refuse(msg, method, before=events)
        params = as_object(msg.get("params"))
        request_id = f"acp-{msg['id']}"
        options = permissions.offered(params.get("options"))
        data = {"jsonrpc_id": msg["id"], "options": options}
        self._pending[request_id] = Pending(request_id=request_id, kind="permission", data=data)
        call_id = as_str(as_object(params.get("toolCall")).get("toolCallId")) or ""
        known = self._tools.calls.get(call_id, {})
        event_data = permissions.request_data(params, request_id, known)
        event = self._event(
            "permission_request", event_data, state=WAITING, reason="permission_request"
        )
        events.append(event)
        return Step(events=events)
