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

- opencode 1.18.33 speaks ACP itself (``opencode acp``). :func:`opencode_acp` gives it its
  config in ``OPENCODE_CONFIG_CONTENT``: the built-in ``anthropic`` provider with the Anthropic
  stand-in as ``baseURL`` and a dummy key, ``permission`` ``ask`` for bash and edits (so that it
  asks), and no autoupdate, models fetch, sharing, LSP downloads or default plugins (nothing
  leaves the machine). Its sessions live in ``$XDG_DATA_HOME/opencode``.

All run with ``cwd`` = the work directory; hived's templates say the same.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

import attrs

from tests.realagents.anthropic_standin import DEFAULT_SCRIPT
from tests.realagents.claude_env import claude_env
from tests.realagents.codex_env import codex_env

REPO: Final = Path(__file__).resolve().parents[2]
PREFIX: Final = REPO / ".agents" / "acp"
CLAUDE_ACP: Final = Path("node_modules/@zed-industries/claude-agent-acp/dist/index.js")
CODEX_ACP: Final = Path("node_modules/@zed-industries/codex-acp-linux-x64/bin/codex-acp")
OPENCODE: Final = Path("node_modules/opencode-linux-x64/bin/opencode")
OPENCODE_MODEL: Final = "anthropic/claude-sonnet-4-5-20250929"
"""A model opencode knows the price of (from the models.dev snapshot it ships)."""


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


def opencode_bin() -> Path:
    override = os.environ.get("HIVED_OPENCODE_BIN")
    return Path(override) if override else PREFIX / OPENCODE


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


def _after_a_rejection(keyword: str) -> dict[str, Any]:
    rule = next(r for r in DEFAULT_SCRIPT["rules"] if r["keyword"] == keyword)
    return {**rule, "tool_result": True}


OPENCODE_SCRIPT: Final[dict[str, Any]] = {
    **DEFAULT_SCRIPT,
    "rules": [*DEFAULT_SCRIPT["rules"], _after_a_rejection("slowly"), _after_a_rejection("again")],
}
"""The Anthropic stand-in's script for opencode. opencode ends a turn whose permission was
rejected without asking the model again, so the next prompt reaches the model in the same user
message as the rejected call's ``tool_result``: the stand-in must answer the prompt's keyword
there too."""


def opencode_acp(port: int, tmp: Path) -> AcpAgent:
    """opencode against the Anthropic stand-in on ``port`` (its HOME and XDG dirs under ``tmp``)."""
    home, workdir = tmp / "home", tmp / "work"
    home.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "model": OPENCODE_MODEL,
        "provider": {
            "anthropic": {
                "options": {"baseURL": f"http://127.0.0.1:{port}/v1", "apiKey": "sk-ant-standin"}
            }
        },
        "permission": {"bash": "ask", "edit": "ask"},
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "OPENCODE_CONFIG_CONTENT": json.dumps(config),
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_SHARE": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
        "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    }
    return AcpAgent(
        name="opencode",
        argv=(str(opencode_bin()), "acp"),
        env=env,
        workdir=workdir,
        hello="hello",
        again="again",
        tool="runbash",
        made="made-by-claude.txt",
        slow="slowly",
    )
