"""What the JSON-RPC driver tests share: a driver's steps as one record, and what it wrote."""

from __future__ import annotations

from typing import Any

import orjson

from hived.core.drivers.base import Step, TurnOutcome
from hived.core.events import AgentEvent, Usage


def sent(step: Step) -> list[dict[str, Any]]:
    """The messages a step writes to the agent's stdin."""
    return [orjson.loads(line) for line in step.stdin.splitlines()]


class Steps:
    """Every step a driver took, and what they add up to."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    @property
    def written(self) -> list[dict[str, Any]]:
        return [m for step in self.steps for m in sent(step)]

    @property
    def events(self) -> list[AgentEvent]:
        return [e for step in self.steps for e in step.events]

    def kinds(self, kind: str) -> list[AgentEvent]:
        return [e for e in self.events if e.kind == kind]

    @property
    def outcomes(self) -> list[TurnOutcome]:
        return [s.last_turn for s in self.steps if s.last_turn is not None]

    @property
    def usage(self) -> Usage | None:
        """The session's usage as the last step that changed it said."""
        usages = [s.usage for s in self.steps if s.usage is not None]
        return usages[-1] if usages else None
