"""Budgets (sans-IO): a session's limits within its template's caps, and when usage reaches
one."""

from __future__ import annotations

import pytest

from hived.core.config import parse_config
from hived.core.errors import ConfigError, RequestError
from hived.core.events import Usage
from hived.notify.budget import Budget, reached, session_budget, total_tokens

TEMPLATE = parse_config(
    '[agents.a]\ncommand = ["x"]\nmax_cost_usd = 2\nmax_tokens = 1000\nbudget_action = "stop"\n'
).agents["a"]


def test_a_session_budget_is_the_template_cap_or_lower() -> None:
    assert session_budget("a", TEMPLATE) == Budget(2.0, 1000, "stop")
    assert session_budget("a", TEMPLATE, 0.5, 10) == Budget(0.5, 10, "stop")
    with pytest.raises(RequestError, match=r"max_cost_usd 3 is over the cap of template a \(2\)"):
        session_budget("a", TEMPLATE, 3.0)
    with pytest.raises(RequestError, match=r"max_tokens 1001 is over the cap of template a"):
        session_budget("a", TEMPLATE, None, 1001)
    uncapped = parse_config('[agents.b]\ncommand = ["x"]\n').agents["b"]
    assert session_budget("b", uncapped, 9.0) == Budget(9.0, None, "interrupt")
    assert not session_budget("b", uncapped).limited


def test_bad_budget_keys_are_named() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            '[agents.a]\ncommand = ["x"]\nmax_cost_usd = 0\nmax_tokens = 1.5\n'
            'budget_action = "pause"\n'
        )
    assert caught.value.problems == (
        "hived.toml: agents.a.max_cost_usd: expected an amount greater than 0, got 0",
        "hived.toml: agents.a.max_tokens: expected an integer, got 1.5",
        'hived.toml: agents.a.budget_action: expected one of interrupt, stop, got "pause"',
    )


def test_usage_reaches_the_cost_or_the_token_limit() -> None:
    budget = Budget(max_cost_usd=1.0, max_tokens=500, action="interrupt")
    assert reached(budget, Usage(cost_usd=0.99, input_tokens=100)) is None
    assert reached(budget, Usage(cost_usd=1.0)) == {
        "limit": "max_cost_usd",
        "used": 1.0,
        "max": 1.0,
        "action": "interrupt",
        "message": "cost 1.0000 USD reached max_cost_usd 1: the turn is interrupted",
    }
    usage = Usage(input_tokens=100, cache_read_tokens=300, cache_write_tokens=50, output_tokens=50)
    assert total_tokens(usage) == 500
    said = reached(attrs_stop(budget), usage)
    assert said is not None
    assert said["message"] == "500 tokens reached max_tokens 500: the session is stopped"


def attrs_stop(budget: Budget) -> Budget:
    return Budget(budget.max_cost_usd, budget.max_tokens, "stop")
