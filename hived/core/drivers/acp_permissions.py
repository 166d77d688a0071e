"""ACP ``session/request_permission``: what hived shows, and the option it picks for an answer.

How it works: the agent asks with the tool call it wants to run and a list of options, each an
``optionId`` of its own choosing with one of four ``kind`` s (``allow_once``, ``allow_always``,
``reject_once``, ``reject_always``). hived's approve carries ``allow`` and ``always``; the
option is the one of the matching kind. The answer is the JSON-RPC result
``{"outcome": {"outcome": "selected", "optionId": ...}}``, or ``{"outcome": "cancelled"}`` for a
request still open when its turn is cancelled (the spec requires it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from hived.core.drivers.acp_updates import tool_name
from hived.core.drivers.base import DriverRefusal
from hived.core.parsers.jsonl import JsonObject, as_object, as_str

OPTION_KINDS: Final = ("allow_once", "allow_always", "reject_once", "reject_always")
_WORDS: Final = {
    "allow_once": "allow",
    "allow_always": "allow_always",
    "reject_once": "deny",
    "reject_always": "deny_always",
}
"""An option kind → the word hived shows for it (as the other drivers' ``options``)."""

CANCELLED: Final[JsonObject] = {"outcome": {"outcome": "cancelled"}}


def offered(options: object) -> dict[str, str]:
    """The options an agent offers: kind → its first option id of that kind."""
    found: dict[str, str] = {}
    for option in options if isinstance(options, list) else ():
        kind, option_id = as_str(as_object(option).get("kind")), as_object(option).get("optionId")
        if kind in OPTION_KINDS and isinstance(option_id, str) and kind not in found:
            found[kind] = option_id
    return found


def request_data(params: JsonObject, request_id: str, known: Mapping[str, Any]) -> dict[str, Any]:
    """The ``permission_request`` event's data: ACP's own fields and Claude's names beside.

    ``options`` are hived's words for what an approve may pick (as the other drivers');
    ``agent_options`` the agent's own list (ids, names and kinds). ``known``: what the updates
    said of the same tool call before (the Claude adapter names the tool only there)."""
    call = {**known, **as_object(params.get("toolCall"))}
    kinds = offered(params.get("options"))
    return {
        **params,
        "request_id": request_id,
        "request_kind": "permission",
        "tool_name": tool_name(call),
        "tool_use_id": call.get("toolCallId"),
        "input": as_object(call.get("rawInput")),
        "title": call.get("title"),
        "options": [_WORDS[k] for k in OPTION_KINDS if k in kinds],
        "agent_options": params.get("options"),
        "method": "session/request_permission",
    }


def choose(options: Mapping[str, str], *, allow: bool, always: bool) -> str:
    """The option id that says ``allow`` (``always``); ``bad_request`` when none is offered.

    An allow is never widened: a plain allow needs an ``allow_once``. A plain reject falls back
    to ``reject_always`` when the agent offers no ``reject_once`` (refusing more is safe).
    """
    wanted: Sequence[str]
    if allow:
        wanted = ("allow_always",) if always else ("allow_once",)
    else:
        wanted = ("reject_always",) if always else ("reject_once", "reject_always")
    for kind in wanted:
        if kind in options:
            return options[kind]
    offered_kinds = ", ".join(options) or "none"
    raise DriverRefusal(
        "bad_request",
        f"the agent offers no {' or '.join(wanted)} option here (it offers: {offered_kinds})",
    )


def selected(option_id: str) -> JsonObject:
    return {"outcome": {"outcome": "selected", "optionId": option_id}}
