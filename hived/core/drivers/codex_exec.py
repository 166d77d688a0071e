"""The ``codex`` driver: one-shot ``codex exec --json PROMPT`` runs.

How it works: the prompt is the command's last argument and stdin is closed at once (with a
pipe left open, ``codex exec`` waits to read it and never starts the turn). Lines are mapped by
:class:`~hived.core.parsers.codex.CodexParser`; ``turn.completed`` adds the turn's usage,
counted Claude's way (:func:`~hived.core.parsers.codex.turn_usage`); ``turn.failed`` is a failed
turn. Codex exec takes no follow-up prompt and asks for no approval (use the ``codex-app``
driver for that); an interrupt is SIGINT, which ends the run (the session notes it was asked).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from hived.core.drivers.base import (
    Answer,
    DriverLaunch,
    DriverRefusal,
    Pending,
    Step,
    TurnOutcome,
)
from hived.core.events import Usage
from hived.core.parsers.codex import CodexParser
from hived.core.parsers.jsonl import as_object, as_str

_NONE_PENDING: Final[Mapping[str, Pending]] = MappingProxyType({})


@attrs.define
class CodexExecDriver:
    """One ``codex exec --json`` run (see the module docstring)."""

    launch: DriverLaunch
    takes_input: bool = attrs.field(default=False, init=False)
    lines_are_text: bool = attrs.field(default=False, init=False)
    _parser: CodexParser = attrs.field(factory=CodexParser, init=False)
    _usage: Usage = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._usage = self.launch.usage

    @property
    def pending(self) -> Mapping[str, Pending]:
        return _NONE_PENDING

    def start(self) -> Step:
        return Step(close_stdin=True)

    def feed(self, line: str) -> Step:
        events = self._parser.parse_line(line)
        usage = last_turn = None
        for index, event in enumerate(events):
            if event.usage is not None:
                self._usage = usage = self._usage + event.usage
            if event.kind == "result":
                error = as_object(event.data.get("error"))
                last_turn = (
                    TurnOutcome(ok=False, error="error", message=as_str(error.get("message")))
                    if event.data.get("is_error")
                    else TurnOutcome(ok=True)
                )
                data = {**event.data, "last_turn": last_turn.to_json()}
                events[index] = event._replace(data=data)
        return Step(events=events, usage=usage, last_turn=last_turn)

    def prompt(self, text: str) -> Step:
        raise DriverRefusal(
            "conflict",
            "a codex exec run takes its one prompt at start; use a codex-app template "
            "(codex app-server) for a session that takes more",
        )

    def answer(self, request_id: str, answer: Answer) -> Step:
        raise KeyError(request_id)

    def interrupt(self) -> Step:
        return Step(signal="SIGINT")

    def exited(self) -> Step:
        return Step()
