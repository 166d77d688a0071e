"""The environment and argv that run the real Claude Code against the local stand-in.

Checked with Claude Code 2.1.336 (npm ``@anthropic-ai/claude-agent-sdk-linux-x64@0.3.336``):
with an API key in the environment and a base URL on loopback the CLI needs no login, no
network and no config files; it writes its state (``.claude.json``, ``.claude/projects/...``
transcripts, which ``--resume`` reads) under ``$HOME``, so every test gives it a HOME of its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
DEFAULT_PREFIX: Final = REPO / ".agents"
PACKAGE: Final = "@anthropic-ai/claude-agent-sdk-linux-x64"
# The model the runs pin: one whose price the CLI knows, so total_cost_usd is not zero.
MODEL: Final = "claude-sonnet-4-5-20250929"

# The argv hived uses: a two-way stream-json session whose tool approvals arrive as control
# requests on stdout. --verbose is required with -p and stream-json output.
STREAM_JSON_ARGS: Final = (
    "-p",
    "--output-format",
    "stream-json",
    "--input-format",
    "stream-json",
    "--verbose",
    "--permission-prompt-tool",
    "stdio",
)


def claude_bin(prefix: Path | None = None) -> Path:
    """Where install_claude.sh puts the binary; ``HIVED_CLAUDE_BIN`` overrides."""
    override = os.environ.get("HIVED_CLAUDE_BIN")
    if override:
        return Path(override)
    return (prefix or DEFAULT_PREFIX) / "node_modules" / PACKAGE / "claude"


def claude_env(port: int, home: Path) -> dict[str, str]:
    """The whole environment for a run against the stand-in on 127.0.0.1:``port``.

    Built from scratch (only PATH and the locale are inherited) so that a developer's own
    ANTHROPIC_* or CLAUDE_* variables cannot leak into a test. Creates the runtime and temp
    directories under ``home`` that it points the CLI at.
    """
    # The CLI opens a socket at $XDG_RUNTIME_DIR/cc-socks/<pid>.sock (else /tmp/cc-socks/),
    # and left there by a killed process; keep it, and its temp files, inside the test's HOME.
    runtime = home / ".run"
    tmp = home / ".tmp"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
        "ANTHROPIC_API_KEY": "sk-ant-standin-not-a-real-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        # XDG dirs would otherwise fall back to the real user's; keep them under the test HOME.
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_RUNTIME_DIR": str(runtime),
        "CLAUDE_CODE_TMPDIR": str(tmp),
        "TMPDIR": str(tmp),
    }
    return env


def claude_argv(
    binary: Path,
    *,
    model: str = MODEL,
    resume: str | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The argv of a stream-json session, optionally resuming an earlier one."""
    argv = [str(binary), *STREAM_JSON_ARGS, "--model", model]
    if resume:
        argv += ["--resume", resume]
    return argv + list(extra)
