"""How to run the two real ACP agents against the local model stand-ins.

Checked with ``@zed-industries/claude-agent-acp`` 0.23.1 (Claude Code 2.1.83, the ``cli.js`` of its
``@anthropic-ai/claude-agent-sdk`` 0.2.83 dependency, run with node) and
``@zed-industries/codex-acp`` 0.16.0 (a Rust binary with Codex built in), as
``install_acp.sh`` installs them:

- The Claude adapter takes Claude Code's environment (:func:`claude_env`: the Anthropic stand-in's
  ``ANTHROPIC_BASE_URL``, a dummy key, a HOME of the test's own). It finds Claude Code by itself
  (``CLAUDE_CODE_EXECUTABLE`` would override), and keeps its sessions under ``$HOME/.claude``.
- The Codex adapter reads ``$CODEX_HOME/config.toml`` as Codex does (:func:`codex_env`: the
  OpenAI stand-in as the ``mock`` provider, ``approval_policy = "on-request"``, read-only
  sandbox); its sessions (rollouts) live under ``$CODEX_HOME/sessions``.

Both run with ``cwd`` = the work directory; hived's templates say the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import attrs

from tests.realagents.claude_env import claude_env
from tests.realagents.codex_env import codex_env

REPO: Final = Path(__file__).resolve().parents[2]
PREFIX: Final = REPO / ".agents" / "acp"
CLAUDE_ACP: Final = Path("node_modules/@zed-industries/claude-agent-acp/dist/index.js")
CODEX_ACP: Final = Path("node_modules/@zed-industries/codex-acp-linux-x64/bin/codex-acp")


@attrs.frozen
class AcpAgent:
    """One ACP agent ready to run against its stand-in, and the prompts its stand-in scripts."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    workdir: Path
    hello: str
    """A plain answer."""
    again: str
    """Another plain answer (the turn after a resume)."""
    tool: str
    """A command that needs permission."""
    made: str
    """The file that command creates in ``workdir``."""
    slow: str
    """A long streamed answer, to interrupt."""


def claude_acp_bin() -> Path:
    override = os.environ.get("HIVED_CLAUDE_ACP_BIN")
    return Path(override) if override else PREFIX / CLAUDE_ACP


def codex_acp_bin() -> Path:
    override = os.environ.get("HIVED_CODEX_ACP_BIN")
    return Path(override) if override else PREFIX / CODEX_ACP


def claude_acp(port: int, tmp: Path) -> AcpAgent:
    """The Claude adapter against the Anthropic stand-in on ``port`` (its HOME under ``tmp``)."""
    home, workdir = tmp / "home", tmp / "work"
    home.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    return AcpAgent(
        name="claude-agent-acp",
        argv=("node", str(claude_acp_bin())),
        # hived gives an agent the daemon's environment plus the template's: a truthy IS_SANDBOX
        # there (some containers set it) makes the adapter, run as root, start Claude Code with
        # permissions skipped allowed, and session/new fails ("Query closed before response
        # received"). Empty is false to the adapter.
        env={**claude_env(port, home), "IS_SANDBOX": ""},
        workdir=workdir,
        hello="hello",
        again="again",
        tool="runbash",
        made="made-by-claude.txt",
        slow="slowly",
    )


def codex_acp(port: int, tmp: Path) -> AcpAgent:
    """The Codex adapter against the OpenAI stand-in on ``port`` (its CODEX_HOME under ``tmp``)."""
    env = codex_env(port, tmp)
    return AcpAgent(
        name="codex-acp",
        argv=(str(codex_acp_bin()),),
        env=env.env,
        workdir=env.workdir,
        hello="say hello",
        again="say hello again",
        tool="please touch a file",
        made="approved.txt",
        slow="a slow answer please",
    )
