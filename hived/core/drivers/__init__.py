"""Agent drivers: the two-way protocol of each agent format, sans-IO (DESIGN §10).

How it works: the config's ``format`` names a :class:`Format`: how to build a run's argv (the
template's command, the session's args, and the prompt or the id to resume where the agent takes
them on its command line) and how to make the run's :class:`~hived.core.drivers.base.Driver`.
The session's task spawns the argv, makes the driver, and moves bytes between the two.
docs/drivers.md describes each driver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

import attrs

from hived.core.drivers.acp import AcpDriver
from hived.core.drivers.base import Driver, DriverLaunch
from hived.core.drivers.claude import ClaudeDriver
from hived.core.drivers.codex_app import CodexAppDriver
from hived.core.drivers.codex_exec import CodexExecDriver
from hived.core.drivers.lines import jsonl_driver, text_driver


def _plain_argv(
    command: Sequence[str], args: Sequence[str], prompt: str | None, resume_id: str | None
) -> tuple[str, ...]:
    return (*command, *args)


def _claude_argv(
    command: Sequence[str], args: Sequence[str], prompt: str | None, resume_id: str | None
) -> tuple[str, ...]:
    return (*command, *args, *(("--resume", resume_id) if resume_id else ()))


def _codex_exec_argv(
    command: Sequence[str], args: Sequence[str], prompt: str | None, resume_id: str | None
) -> tuple[str, ...]:
    return (*command, *args, *(() if prompt is None else (prompt,)))


@attrs.frozen
class Format:
    """One value of a template's ``format``."""

    name: str
    make: Callable[[DriverLaunch], Driver]
    argv: Callable[[Sequence[str], Sequence[str], str | None, str | None], tuple[str, ...]]
    """(command, args, first prompt, agent id to resume) → the run's argv."""
    prompt_in_argv: bool = False
    """The first prompt is a command-line argument, not the driver's to send."""
    resumable: bool = False
    """A later run continues the agent's own conversation (same agent session id)."""
    takes_input: bool = True
    """The agent takes prompts after its start (``session.input``)."""


FORMATS: Final[Mapping[str, Format]] = {
    f.name: f
    for f in (
        Format("text", text_driver, _plain_argv),
        Format("jsonl", jsonl_driver, _plain_argv),
        Format("claude", ClaudeDriver, _claude_argv, resumable=True),
        Format("codex", CodexExecDriver, _codex_exec_argv, prompt_in_argv=True, takes_input=False),
        Format("codex-app", CodexAppDriver, _plain_argv, resumable=True),
        Format("acp", AcpDriver, _plain_argv, resumable=True),
    )
}
"""Every format hived drives, by name."""


def get_format(name: str) -> Format:
    """The format called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown agent format {name!r}; known: {sorted(FORMATS)}") from None
