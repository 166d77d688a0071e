"""The one view: every node's session summaries in one ``sessions`` answer.

How it works: each node keeps its summaries in the engine (a hash per node). The node that
answers a ``sessions`` request asks its own supervisor as before, names itself in each summary,
and adds the other nodes' summaries, filtered by the same rules (state, agent, ended ones only
with ``all`` or ``since``, newest first, ``limit``). The live sessions of a node that has gone
silent show as ``UNREACHABLE``: they are not lost, and show their own state again once the node
is back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from hived.core.messages import Sessions
from hived.core.sessions import LIVE_STATES, UNREACHABLE, ulid_time_ms


def as_seen(summary: Mapping[str, Any], node: str, alive: bool) -> dict[str, Any]:
    """The summary as this node shows it: naming its node, UNREACHABLE if that node is silent
    while the session was live."""
    shown = {**summary, "node": node}
    if not alive and shown.get("state") in LIVE_STATES:
        shown["state"] = UNREACHABLE
    return shown


def merge(
    request: Sessions,
    local: Iterable[Mapping[str, Any]],
    me: str,
    remote: Mapping[str, tuple[bool, Iterable[Mapping[str, Any]]]],
) -> list[dict[str, Any]]:
    """The answer's summaries: ``local`` (already filtered by its supervisor) and, per other
    node, ``(alive, summaries)``, older than ``before``, newest first and cut at ``limit``."""
    merged = [{**summary, "node": me} for summary in local]
    since_ms = None if request.since is None else _epoch_ms(request.since)
    for node, (alive, summaries) in remote.items():
        for summary in summaries:
            shown = as_seen(summary, node, alive)
            if _wanted(request, shown, since_ms):
                merged.append(shown)
    if request.before is not None:
        before = request.before.upper()
        merged = [s for s in merged if str(s.get("id", "")) < before]
    merged.sort(key=lambda s: str(s.get("id", "")), reverse=True)
    return merged if request.limit is None else merged[: request.limit]


def _wanted(request: Sessions, summary: Mapping[str, Any], since_ms: int | None) -> bool:
    state = summary.get("state")
    if request.state is not None:
        if state != request.state:
            return False
    elif not request.all and since_ms is None and state not in LIVE_STATES | {UNREACHABLE}:
        return False
    if request.agent is not None and summary.get("agent") != request.agent:
        return False
    if since_ms is not None:
        try:
            return ulid_time_ms(str(summary.get("id", ""))) >= since_ms
        except ValueError:
            return False
    return True


def _epoch_ms(timestamp: str) -> int:
    moment = datetime.fromisoformat(timestamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
