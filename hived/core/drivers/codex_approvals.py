"""Codex app-server approval requests: what hived shows, and the decision it writes back.

How it works: the server asks before a command (``item/commandExecution/requestApproval``) or a
file change (``item/fileChange/requestApproval``); servers before the v2 protocol used
``execCommandApproval`` and ``applyPatchApproval``. The answer is a JSON-RPC result
``{"decision": ...}``. Codex 0.171 lists the decisions it will take in ``availableDecisions``
(``accept``, ``{"acceptWithExecpolicyAmendment": ...}``, ``cancel`` in the transcripts); its schema
also accepts ``acceptForSession`` and ``decline`` always.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from hived.core.parsers.jsonl import JsonObject

COMMAND_APPROVAL: Final = "item/commandExecution/requestApproval"
FILE_APPROVAL: Final = "item/fileChange/requestApproval"
LEGACY_COMMAND_APPROVAL: Final = "execCommandApproval"
LEGACY_PATCH_APPROVAL: Final = "applyPatchApproval"
APPROVALS: Final = {
    COMMAND_APPROVAL: "Bash",
    FILE_APPROVAL: "Edit",
    LEGACY_COMMAND_APPROVAL: "Bash",
    LEGACY_PATCH_APPROVAL: "Edit",
}
"""Server requests that ask the user for a permission, and the tool name hived shows for each."""


_COMMAND_INPUT: Final = (
    "command",
    "cwd",
    "reason",
    "commandActions",
    "proposedExecpolicyAmendment",
)
_CHANGE_INPUT: Final = ("reason", "grantRoot")


def approval_input(method: str, params: JsonObject, item: JsonObject) -> dict[str, Any]:
    """The ``input`` of a permission request: the command and its cwd, or the file changes.

    A v2 file-change request names only its item; the changes come from that item's
    ``item/started`` (``item``).
    """
    if method in (COMMAND_APPROVAL, LEGACY_COMMAND_APPROVAL):
        return {k: params[k] for k in _COMMAND_INPUT if params.get(k) is not None}
    changes = params.get("fileChanges", item.get("changes"))
    return {
        "changes": changes,
        **{k: params[k] for k in _CHANGE_INPUT if params.get(k) is not None},
    }


def approval_options(method: str, offered: object) -> list[str]:
    """What an operator may answer: ``allow``, ``allow_always`` where offered, ``deny``."""
    if method in (LEGACY_COMMAND_APPROVAL, LEGACY_PATCH_APPROVAL) or not isinstance(offered, list):
        return ["allow", "allow_always", "deny"]
    always = any(_is_always(d) for d in offered)
    return ["allow", "allow_always", "deny"] if always else ["allow", "deny"]


def _is_always(decision: object) -> bool:
    if decision == "acceptForSession":
        return True
    return isinstance(decision, dict) and "acceptWithExecpolicyAmendment" in decision


def approval_decision(data: Mapping[str, Any], *, allow: bool, always: bool) -> Any:
    """The wire decision: accept / acceptForSession (or the offered policy amendment) / decline.

    A denial is ``decline`` (the agent goes on with the turn), never ``cancel`` (which also
    interrupts it): hived interrupts with its own action.
    """
    if data["method"] in (LEGACY_COMMAND_APPROVAL, LEGACY_PATCH_APPROVAL):
        if not allow:
            return "denied"
        return "approved_for_session" if always else "approved"
    if not allow:
        return "decline"
    if not always:
        return "accept"
    offered = data.get("decisions")
    if offered is None or "acceptForSession" in offered:
        return "acceptForSession"
    for decision in offered:
        if _is_always(decision):
            return decision
    return "accept"
