"""Budgets: how much a session may spend, and whether its usage has reached that (sans-IO).

A template may cap its sessions' cost (``max_cost_usd``) and tokens (``max_tokens``: every
token the model read or wrote, cached ones included); ``session.start`` may set a session's own
limits, within the template's caps. The session checks its running total each time its agent
reports usage; the first time :func:`reached` says a limit is, it publishes a ``budget``
event (which notifications can be born from) and interrupts the turn or stops the session, as
``budget_action`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from hived.core.config import AgentConfig
from hived.core.errors import RequestError
from hived.core.events import Usage


@attrs.frozen
class Budget:
    """A session's limits (None: no limit) and what reaching one does."""

    max_cost_usd: float | None = None
    max_tokens: int | None = None
    action: str = "interrupt"

    @property
    def limited(self) -> bool:
        return self.max_cost_usd is not None or self.max_tokens is not None


def total_tokens(usage: Usage) -> int:
    """Every token the model read or wrote: input, cached input (read and written), output."""
    return (
        usage.input_tokens
        + usage.cache_read_tokens
        + usage.cache_write_tokens
        + usage.output_tokens
    )


def session_budget(
    template_name: str,
    template: AgentConfig,
    max_cost_usd: float | None = None,
    max_tokens: int | None = None,
) -> Budget:
    """A session's budget: the template's caps, or lower limits asked at ``session.start``
    (``bad_request`` for one above the template's cap)."""
    cap_usd, cap_tokens = template.max_cost_usd, template.max_tokens
    if max_cost_usd is not None and cap_usd is not None and max_cost_usd > cap_usd:
        raise RequestError(
            "bad_request",
            f"max_cost_usd {max_cost_usd:g} is over the cap of template {template_name} "
            f"({cap_usd:g})",
        )
    if max_tokens is not None and cap_tokens is not None and max_tokens > cap_tokens:
        raise RequestError(
            "bad_request",
            f"max_tokens {max_tokens} is over the cap of template {template_name} ({cap_tokens})",
        )
    return Budget(
        max_cost_usd=template.max_cost_usd if max_cost_usd is None else max_cost_usd,
        max_tokens=template.max_tokens if max_tokens is None else max_tokens,
        action=template.budget_action,
    )


def reached(budget: Budget, usage: Usage) -> dict[str, Any] | None:
    """The ``budget`` event's data when ``usage`` has reached a limit of ``budget``, else None."""
    if budget.max_cost_usd is not None and usage.cost_usd >= budget.max_cost_usd:
        limit, used, cap = "max_cost_usd", usage.cost_usd, budget.max_cost_usd
        said = f"cost {used:.4f} USD reached max_cost_usd {cap:g}"
    elif budget.max_tokens is not None and total_tokens(usage) >= budget.max_tokens:
        limit, used, cap = "max_tokens", total_tokens(usage), budget.max_tokens
        said = f"{used} tokens reached max_tokens {cap}"
    else:
        return None
    verb = "the session is stopped" if budget.action == "stop" else "the turn is interrupted"
    return {"limit": limit, "used": used, "max": cap, "action": budget.action,
            "message": f"{said}: {verb}"}  # fmt: skip


def from_launch(d: Mapping[str, Any]) -> tuple[float | None, int | None]:
    """The session's own limits as its launch keeps them."""
    cost, tokens = d.get("max_cost_usd"), d.get("max_tokens")
    return (
        float(cost) if isinstance(cost, int | float) else None,
        tokens if isinstance(tokens, int) else None,
    )
