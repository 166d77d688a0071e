"""The ``codex-app`` driver: ``codex app-server``, JSON-RPC 2.0 over stdio, one object per line.

How it works: :meth:`CodexAppDriver.start` writes ``initialize``; its response lets the driver
send ``initialized`` and open the thread (``thread/start`` with the cwd, or ``thread/resume`` of
the launch's ``resume_id``); the thread's id is the agent session id. Each prompt is a
``turn/start``. The server streams notifications (``turn/started``, ``item/started``,
``item/completed``, deltas, ``thread/tokenUsage/updated``, ``turn/completed``) and asks the client
for approvals with requests of its own (``item/commandExecution/requestApproval``,
``item/fileChange/requestApproval``), which wait for a JSON-RPC response.

Decisions, from the real Codex 0.171 (tests/realagents/CODEX_NOTES.md):

- Prompts given before the thread exists are queued and sent one per turn. A prompt while a turn
  runs is refused (``conflict``): Codex would run it as a turn of its own later or steer the
  running one, and hived cannot tell the operator which; interrupt first, or wait.
- A pending request's id is ``codex-<JSON-RPC id>``: the server numbers its requests from 0 per
  process, so the id is unique within a run, which is all a pending set needs.
- Usage: ``thread/tokenUsage/updated`` carries the thread's running ``total`` (and ``last``, the
  latest model request), several times per turn. The driver adds the difference between totals
  to the session's usage, so nothing is counted twice; after ``thread/resume`` the server first
  replays the thread's old total under a turn of the earlier run, which only sets the baseline.
  Codex's ``inputTokens`` include the cached ones; hived reports them Claude's way
  (``input_tokens`` without the cached, ``cache_read_tokens`` the cached).
- A server request the driver cannot map gets a JSON-RPC error at once, so the agent never waits
  on a question nobody will see; it is published as an ``agent_event``.
"""

from __future__ import annotations

from typing import Final

import hived
from hived.core.drivers.base import (
    NOTHING,
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
    withdrawn_event,
)
from hived.core.drivers.codex_approvals import (
    APPROVALS,
    approval_decision,
    approval_input,
    approval_options,
)
from hived.core.drivers.codex_items import (
    TEXT_ITEMS,
    TOOL_ITEMS,
    reasoning_text,
    tool_result_data,
    tool_use_data,
)
from hived.core.drivers.jsonrpc import JsonRpcDriver
from hived.core.events import AgentEvent, Usage
from hived.core.parsers.jsonl import JsonObject, as_count, as_object, as_str

SILENT: Final = frozenset(
    {
        "thread/status/changed",
        "item/reasoning/summaryTextDelta",
        "item/reasoning/summaryPartAdded",
        "item/reasoning/textDelta",
        "item/commandExecution/outputDelta",
        "item/fileChange/outputDelta",
        "item/plan/delta",
    }
)
"""Notifications whose content reaches hived another way (a completed item, a state)."""

_BUDGET_ERRORS: Final = frozenset({"sessionBudgetExceeded", "usageLimitExceeded"})
_LOCAL_ERRORS: Final = frozenset({"sandboxError", "threadRollbackFailed", "tooManyDenials"})

_TOTAL_FIELDS: Final = (
    "inputTokens",
    "cachedInputTokens",
    "cacheWriteInputTokens",
    "outputTokens",
    "reasoningOutputTokens",
)
Totals = tuple[int, int, int, int, int]
_ZERO: Final[Totals] = (0, 0, 0, 0, 0)


def _totals(breakdown: object) -> Totals:
    b = as_object(breakdown)
    i, c, w, o, r = (as_count(b.get(name)) for name in _TOTAL_FIELDS)
    return (i, c, w, o, r)


def _minus(a: Totals, b: Totals) -> Totals:
    i, c, w, o, r = (x - y for x, y in zip(a, b, strict=True))
    return (i, c, w, o, r)


def _usage_of(t: Totals) -> Usage:
    """Codex figures in hived's words: input without the cached tokens (as Claude reports)."""
    i, c, w, o, r = t
    return Usage(
        input_tokens=max(i - c, 0),
        output_tokens=o,
        cache_read_tokens=c,
        cache_write_tokens=w,
        reasoning_tokens=r,
    )


def _turn_outcome(turn: JsonObject) -> TurnOutcome:
    status = as_str(turn.get("status"))
    error = as_object(turn.get("error"))
    message = as_str(error.get("message"))
    if status == "completed":
        return TurnOutcome(ok=True)
    if status == "interrupted":
        return TurnOutcome(ok=False, error="interrupted", message=message)
    info = error.get("codexErrorInfo")
    if info in _BUDGET_ERRORS:
        return TurnOutcome(ok=False, error="max_budget", message=message)
    if info in _LOCAL_ERRORS or not error:
        return TurnOutcome(ok=False, error="error", message=message or f"turn {status}")
    # The turn's only other failures are the model API's (HTTP errors, a broken stream).
    return TurnOutcome(ok=False, error="api_error", message=message)


class CodexAppDriver(JsonRpcDriver):
    """One ``codex app-server`` run (see the module's docstring); its agent session is the
    thread."""

    agent_name = "codex"

    def __init__(self, launch: DriverLaunch) -> None:
        super().__init__(launch)
        self._turn_id: str | None = None
        self._turn_starting = False
        """A ``turn/start`` was sent and its turn is not known yet."""
        self._interrupt_wanted = False
        self._own_turns: set[str] = set()
        self._usage = launch.usage
        self._thread_total: Totals | None = None
        self._turn_usage = Usage()
        self._deltas: dict[str, list[str]] = {}
        self._items: dict[str, JsonObject] = {}
        """Started tool items by id (a file-change approval shows the item's changes)."""

    # -- the Driver protocol ---------------------------------------------------------------

    def start(self) -> Step:
        client = {"name": "hived", "title": "hived", "version": hived.__version__}
        return Step(stdin=self._request("initialize", {"clientInfo": client}))

    def answer(self, request_id: str, answer: Answer) -> Step:
        pending, allow = self._answerable(
            request_id,
            answer,
            needs_allow="a Codex approval needs allow true or false",
            no_edits="Codex cannot run an edited command or patch",
        )
        decision = approval_decision(pending.data, allow=allow, always=answer.always)
        del self._pending[request_id]
        reply = {"id": pending.data["jsonrpc_id"], "result": {"decision": decision}}
        return Step(stdin=jsonrpc_line(reply))

    def interrupt(self) -> Step:
        if self._session_id is not None and self._turn_id is not None:
            params = {"threadId": self._session_id, "turnId": self._turn_id}
            return Step(stdin=self._request("turn/interrupt", params))
        if self._turn_starting:
            self._interrupt_wanted = True  # sent once the turn has an id
            return NOTHING
        raise DriverRefusal("conflict", "codex is not in a turn: nothing to interrupt")

    def exited(self) -> Step:
        events = withdraw_all(self._pending, "agent exited")
        outcome = None
        if self._turn_id is not None or self._turn_starting:
            outcome = TurnOutcome(ok=False, error="error", message="the agent exited in a turn")
        self._turn_id = None
        self._turn_starting = False
        return Step(events=events, last_turn=outcome)

    # -- writing ---------------------------------------------------------------------------

    def _in_turn(self) -> bool:
        return self._turn_id is not None or self._turn_starting

    def _send_prompt(self, text: str) -> bytes:
        self._turn_starting = True
        self._turn_usage = Usage()
        params = {"threadId": self._session_id, "input": [{"type": "text", "text": text}]}
        return self._request("turn/start", params)

    # -- reading ---------------------------------------------------------------------------

    def _succeeded(self, call: str | None, result: JsonObject, msg: JsonObject) -> Step:
        if call == "initialize":
            opened = (
                ("thread/resume", {"threadId": self._launch.resume_id, "cwd": self._launch.cwd})
                if self._launch.resume_id
                else ("thread/start", {"cwd": self._launch.cwd})
            )
            stdin = jsonrpc_line({"method": "initialized"}) + self._request(*opened)
            return Step(stdin=stdin, events=[self._event("agent_event", msg)])
        if call in ("thread/start", "thread/resume"):
            return self._thread_opened(call, result)
        if call == "turn/start":
            turn_id = as_str(as_object(result.get("turn")).get("id"))
            return Step(stdin=self._turn_known(turn_id))
        if call == "turn/interrupt":
            return NOTHING  # the turn's end comes as turn/completed
        return Step(events=[self._event("agent_event", msg)])

    def _failed_call(self, call: str | None, msg: JsonObject) -> Step:
        error = as_object(msg.get("error"))
        data = {**msg, "method": call, "is_error": True}
        event = self._event("agent_event", data, state=WAITING, reason="error")
        if call == "turn/start":
            self._turn_starting = False
            self._interrupt_wanted = False
            message = as_str(error.get("message"))
            outcome = TurnOutcome(ok=False, error="error", message=message)
            return Step(events=[event], last_turn=outcome, stdin=self._next_prompt())
        if call in ("initialize", "thread/start", "thread/resume"):
            return Step(events=[event])
        return Step(events=[self._event("agent_event", data)])

    def _thread_opened(self, call: str, result: JsonObject) -> Step:
        thread = as_object(result.get("thread"))
        self._session_id = as_str(thread.get("id")) or self._session_id
        shown = {k: v for k, v in thread.items() if k != "turns"}
        data = {**result, "method": call, "thread": shown}
        if isinstance(thread.get("turns"), list):
            data["thread_turns"] = len(thread["turns"])
        event = self._event("init", data, state=WAITING, reason=call)
        return Step(events=[event], stdin=self._next_prompt())

    def _turn_known(self, turn_id: str | None) -> bytes:
        """A turn of ours has an id (from ``turn/start``'s response or ``turn/started``)."""
        if turn_id is None or turn_id == self._turn_id:
            return b""
        self._turn_id = turn_id
        self._turn_starting = False
        self._own_turns.add(turn_id)
        if self._interrupt_wanted and self._session_id is not None:
            self._interrupt_wanted = False
            params = {"threadId": self._session_id, "turnId": turn_id}
            return self._request("turn/interrupt", params)
        return b""

    def _notification(self, method: str, params: JsonObject, msg: JsonObject) -> Step:
        match method:
            case "turn/started":
                turn_id = as_str(as_object(params.get("turn")).get("id"))
                stdin = self._turn_known(turn_id)
                event = self._event("agent_event", msg, state=WORKING, reason="turn/started")
                return Step(events=[event], stdin=stdin)
            case "turn/completed":
                return self._turn_completed(params)
            case "item/started" | "item/completed":
                return Step(events=self._item(method, as_object(params.get("item")), msg))
            case "item/agentMessage/delta":
                item_id = as_str(params.get("itemId")) or ""
                self._deltas.setdefault(item_id, []).append(as_str(params.get("delta")) or "")
                return NOTHING
            case "thread/tokenUsage/updated":
                return self._token_usage(params)
            case "thread/started":
                thread_id = as_str(as_object(params.get("thread")).get("id"))
                self._session_id = self._session_id or thread_id
                return Step(events=[self._event("agent_event", msg)])
            case "serverRequest/resolved":
                return Step(events=self._resolved(params.get("requestId")))
            case "error":
                return Step(events=[self._event("agent_event", {**msg, "is_error": True})])
            case "account/rateLimits/updated":
                limits = as_object(params.get("rateLimits"))
                known = ("primary", "secondary", "credits", "rateLimitReachedType")
                if any(limits.get(k) is not None for k in known):
                    return Step(events=[self._event("rate_limit", msg)])
                return NOTHING  # sent after every model request, empty without an account
            case _ if method in SILENT:
                return NOTHING
            case _:
                return Step(events=[self._event("agent_event", msg)])

    def _item(self, phase: str, item: JsonObject, msg: JsonObject) -> list[AgentEvent]:
        item_type = item.get("type")
        item_id = as_str(item.get("id")) or ""
        if item_type in TOOL_ITEMS:
            if phase == "item/started":
                self._items[item_id] = item
                return [self._event("tool_use", tool_use_data(item), state=WORKING)]
            self._items.pop(item_id, None)
            return [self._event("tool_result", tool_result_data(item), state=WORKING)]
        if item_type in TEXT_ITEMS:
            if phase == "item/started":
                return []
            self._deltas.pop(item_id, None)
            if item_type == "agentMessage":
                text = as_str(item.get("text")) or ""
                data = {**item, "text": text, "role": "assistant"}
                return [self._event("message", data, state=WORKING)]
            data = {**item, "thinking": reasoning_text(item)}
            return [self._event("thinking", data, state=WORKING)]
        if item_type == "userMessage" and phase == "item/started":
            return []  # the completed one carries the same prompt
        return [self._event("agent_event", msg)]

    def _turn_completed(self, params: JsonObject) -> Step:
        turn = as_object(params.get("turn"))
        turn_id = as_str(turn.get("id"))
        outcome = _turn_outcome(turn)
        events = self._partial_messages()
        for pending in list(self._pending.values()):
            if pending.data.get("turn_id") in (turn_id, None):
                del self._pending[pending.request_id]
                events.append(withdrawn_event(pending, "turn ended"))
        turn_usage = self._turn_usage + Usage(turns=1, duration_ms=as_count(turn.get("durationMs")))
        self._usage = self._usage + Usage(turns=1, duration_ms=turn_usage.duration_ms)
        data = {
            **params,
            "status": turn.get("status"),
            "is_error": not outcome.ok,
            "error": outcome.error,
            "message": outcome.message,
            "usage": turn_usage.to_json(),
            "last_turn": outcome.to_json(),
        }
        events.append(self._event("result", data, state=WAITING, reason="result"))
        if turn_id is None or turn_id == self._turn_id or self._turn_id is None:
            self._turn_id = None
            self._turn_starting = False
            self._interrupt_wanted = False
        return Step(events=events, usage=self._usage, last_turn=outcome, stdin=self._next_prompt())

    def _partial_messages(self) -> list[AgentEvent]:
        """A message cut short (an interrupt): its streamed text, marked ``incomplete``."""
        events = []
        for item_id, parts in self._deltas.items():
            data = {"id": item_id, "type": "agentMessage", "text": "".join(parts)}
            events.append(self._event("message", {**data, "role": "assistant", "incomplete": True}))
        self._deltas.clear()
        return events

    def _token_usage(self, params: JsonObject) -> Step:
        usage = as_object(params.get("tokenUsage"))
        total = _totals(usage.get("total"))
        if params.get("turnId") not in self._own_turns:
            # A resumed thread's old total, replayed: the baseline, already counted.
            self._thread_total = total
            return NOTHING
        base = self._thread_total
        if base is None:
            # No baseline: a new thread starts from zero; a resumed one whose old total was not
            # replayed had, before this model request, its total less this request's.
            resumed = self._launch.resume_id is not None
            base = _minus(total, _totals(usage.get("last"))) if resumed else _ZERO
        if any(t < b for t, b in zip(total, base, strict=True)):
            base = _ZERO  # the thread's totals went back (a compaction?): count from zero
        self._thread_total = total
        added = _usage_of(_minus(total, base))
        self._usage = self._usage + added
        self._turn_usage = self._turn_usage + added
        return Step(usage=self._usage)

    def _resolved(self, request_id: object) -> list[AgentEvent]:
        """The server settled a request itself (answered elsewhere, or the turn moved on)."""
        for pending in list(self._pending.values()):
            if pending.data.get("jsonrpc_id") == request_id:
                del self._pending[pending.request_id]
                return [withdrawn_event(pending, "resolved by the agent")]
        return []

    def _agent_request(self, msg: JsonObject, method: str) -> Step:
        params = as_object(msg.get("params"))
        tool_name = APPROVALS.get(method)
        if tool_name is None:
            return self._refuse(msg, method)
        request_id = f"codex-{msg['id']}"
        item = self._items.get(as_str(params.get("itemId")) or "", {})
        tool_input = approval_input(method, params, item)
        options = params.get("availableDecisions")
        data = {
            "jsonrpc_id": msg["id"],
            "method": method,
            "turn_id": params.get("turnId"),
            "item_id": params.get("itemId") or params.get("callId"),
            "decisions": options if isinstance(options, list) else None,
            "tool_name": tool_name,
            "input": tool_input,
        }
        self._pending[request_id] = Pending(request_id=request_id, kind="permission", data=data)
        event_data = {
            **params,
            "request_id": request_id,
            "request_kind": "permission",
            "tool_name": tool_name,
            "input": tool_input,
            "options": approval_options(method, options),
            "method": method,
        }
        event = self._event(
            "permission_request", event_data, state=WAITING, reason="permission_request"
        )
        return Step(events=[event])
