"""The ``text`` and ``jsonl`` drivers: agents that print lines and read lines.

How it works: each stdout line goes through the format's parser (a ``text`` event per line, or
an ``agent_event`` per JSON object); a prompt is written to stdin as it is, with a newline. Such
agents have no protocol for an interrupt: it is SIGINT to the process group. They ask for
nothing, so nothing is ever pending, and they report no usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from hived.core.drivers.base import NOTHING, Answer, DriverLaunch, Pending, Step
from hived.core.parsers.jsonl import JsonlParser
from hived.core.parsers.text import TextParser, clean_text

_NONE_PENDING: Final[Mapping[str, Pending]] = MappingProxyType({})


@attrs.define
class LineDriver:
    """A ``text`` or ``jsonl`` agent run."""

    launch: DriverLaunch
    parser: TextParser | JsonlParser
    takes_input: bool = attrs.field(default=True, init=False)
    lines_are_text: bool = attrs.field(init=False)

    @lines_are_text.default
    def _text_parser(self) -> bool:
        return isinstance(self.parser, TextParser)

    @property
    def pending(self) -> Mapping[str, Pending]:
        return _NONE_PENDING

    def start(self) -> Step:
        return NOTHING if self.launch.prompt is None else self.prompt(self.launch.prompt)

    def feed(self, line: str) -> Step:
        return Step(events=self.parser.parse_line(line))

    def prompt(self, text: str) -> Step:
        return Step(stdin=(clean_text(text) + "\n").encode("utf-8", "replace"))

    def answer(self, request_id: str, answer: Answer) -> Step:
        raise KeyError(request_id)

    def interrupt(self) -> Step:
        return Step(signal="SIGINT")

    def exited(self) -> Step:
        return NOTHING


def text_driver(launch: DriverLaunch) -> LineDriver:
    return LineDriver(launch, TextParser())


def jsonl_driver(launch: DriverLaunch) -> LineDriver:
    return LineDriver(launch, JsonlParser())
