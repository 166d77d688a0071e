"""What the JSON-RPC drivers (``acp``, ``codex-app``) share: calls, dispatch, prompts, pending.

How it works: both agents speak JSON-RPC 2.0 over stdio, one object per line, both ways: hived's
requests (numbered from 1; each one's method is kept until its response comes), the agent's
notifications, and the agent's own requests (a permission to ask), which wait for hived's
response. :meth:`JsonRpcDriver.feed` decodes a line and sorts it into responses, notifications
and requests; a subclass says what each means for its agent, when a turn runs and how a prompt
is sent. Both agents run one turn at a time: prompts given before the agent session is open are
queued and sent one per turn, and a prompt during a turn is refused (``conflict``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from hived.core.drivers.base import (
    NOTHING,
    Answer,
    DriverLaunch,
    DriverRefusal,
    Pending,
    Step,
    jsonrpc_line,
)
from hived.core.events import AgentEvent
from hived.core.parsers.jsonl import JsonObject, as_object, decode_object
from hived.core.parsers.text import text_event

METHOD_NOT_FOUND: Final = -32601
REFUSED_NOTE: Final = "answered with an error: hived does not handle this request"


class JsonRpcDriver:
    """The JSON-RPC half of an agent run; subclasses add the agent's meaning."""

    takes_input = True
    lines_are_text = False
    agent_name = "the agent"
    """How refusals name the agent to the operator."""

    def __init__(self, launch: DriverLaunch) -> None:
        self._launch = launch
        self._next_id = 1
        self._calls: dict[int, str] = {}
        """Our requests awaiting a response: JSON-RPC id → method."""
        self._session_id: str | None = None
        """The agent's session (Codex's thread) once opened; the id events carry."""
        self._queued: list[str] = [launch.prompt] if launch.prompt else []
        self._pending: dict[str, Pending] = {}

    @property
    def pending(self) -> Mapping[str, Pending]:
        return self._pending

    def feed(self, line: str) -> Step:
        decoded = decode_object(line)
        if decoded is None:
            return NOTHING
        if isinstance(decoded, AgentEvent):
            return Step(events=[decoded])
        try:
            return self._dispatch(decoded)
        except Exception as exc:  # a bug in hived must not cost the session its reader
            return Step(events=[text_event(line, f"hived driver bug: {exc!r}")])

    def prompt(self, text: str) -> Step:
        if self._in_turn():
            raise DriverRefusal(
                "conflict",
                f"{self.agent_name} is in a turn: wait for its result, or interrupt it first",
            )
        if self._session_id is None:
            self._queued.append(text)
            return NOTHING
        return Step(stdin=self._send_prompt(text))

    # -- for the subclasses ----------------------------------------------------------------

    def _in_turn(self) -> bool:
        raise NotImplementedError

    def _send_prompt(self, text: str) -> bytes:
        """The request that starts a turn with ``text``."""
        raise NotImplementedError

    def _succeeded(self, call: str | None, result: JsonObject, msg: JsonObject) -> Step:
        raise NotImplementedError

    def _failed_call(self, call: str | None, msg: JsonObject) -> Step:
        raise NotImplementedError

    def _notification(self, method: str, params: JsonObject, msg: JsonObject) -> Step:
        raise NotImplementedError

    def _agent_request(self, msg: JsonObject, method: str) -> Step:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------

    def _request(self, method: str, params: JsonObject) -> bytes:
        request_id = self._next_id
        self._next_id += 1
        self._calls[request_id] = method
        return jsonrpc_line({"id": request_id, "method": method, "params": params})

    def _next_prompt(self) -> bytes:
        """The next queued prompt's request, when the session is open and idle and one waits."""
        if self._queued and self._session_id is not None and not self._in_turn():
            return self._send_prompt(self._queued.pop(0))
        return b""

    def _event(self, kind: str, data: Mapping[str, Any], **hints: Any) -> AgentEvent:
        return AgentEvent(kind=kind, data=data, agent_session_id=self._session_id, **hints)

    def _dispatch(self, msg: JsonObject) -> Step:
        method = msg.get("method")
        if isinstance(method, str):
            if "id" in msg:
                return self._agent_request(msg, method)
            return self._notification(method, as_object(msg.get("params")), msg)
        if "id" in msg and ("result" in msg or "error" in msg):
            call = self._calls.pop(msg["id"], None) if isinstance(msg["id"], int) else None
            if "error" in msg:
                return self._failed_call(call, msg)
            return self._succeeded(call, as_object(msg.get("result")), msg)
        note = "expected a JSON-RPC request, notification or response"
        return Step(events=[self._event("agent_event", {**msg, "parse_error": note})])

    def _refuse(self, msg: JsonObject, method: str, *, before: Sequence[AgentEvent] = ()) -> Step:
        """Answer an agent's request hived cannot serve with an error at once, so that the
        agent never waits on a question nobody will see; the request is published (after the
        events ``before`` it)."""
        error = {"code": METHOD_NOT_FOUND, "message": f"hived does not handle {method}"}
        event = self._event("agent_event", {**msg, "note": REFUSED_NOTE})
        return Step(stdin=jsonrpc_line({"id": msg["id"], "error": error}), events=[*before, event])

    def _answerable(
        self, request_id: str, answer: Answer, *, needs_allow: str, no_edits: str
    ) -> tuple[Pending, bool]:
        """The pending permission ``answer`` settles (still pending until its reply is made) and
        whether it is allowed; refused (with the words given) without ``allow`` or with edited
        input."""
        pending = self._pending.get(request_id)
        if pending is None:
            raise DriverRefusal("conflict", f"no pending request {request_id!r}")
        if answer.allow is None:
            raise DriverRefusal("bad_request", needs_allow)
        if answer.updated_input is not None:
            raise DriverRefusal("bad_request", no_edits)
        return pending, answer.allow
