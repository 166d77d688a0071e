"""A ``CODEX_HOME`` that points the real Codex CLI at the local OpenAI stand-in.

How it works: :func:`codex_env` writes ``config.toml`` into a directory of the test's own: a model
provider ``mock`` whose ``base_url`` is the stand-in, the Responses wire API, an ``env_key`` whose
variable is set to a dummy key, and no retries (a scripted HTTP error must end the turn, not be
retried five times). ``approval_policy = "on-request"`` makes Codex ask before every command that
is not on its list of known-safe read-only commands, and ``sandbox_mode = "read-only"``
runs an approved command as is (no sandbox helper is needed, and no second "escalate?" prompt
when the sandbox refuses). It returns the environment and the argv of ``codex app-server`` and of
``codex exec --json``.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PREFIX = REPO / ".agents"
CODEX_REL_PATH = Path("node_modules/@openai/codex/vendor/x86_64-unknown-linux-musl/bin/codex")
"""Where ``install_codex.sh`` puts the binary, under its prefix."""

API_KEY_VAR = "HIVED_MOCK_OPENAI_KEY"
MODEL = "gpt-5.5"
"""A model this Codex knows (no "unknown model" warnings); the stand-in ignores it."""


def codex_binary() -> Path:
    """The Codex binary to test: ``$HIVED_CODEX_BIN``, else the install path under ``.agents``."""
    override = os.environ.get("HIVED_CODEX_BIN")
    return Path(override) if override else DEFAULT_PREFIX / CODEX_REL_PATH


@attrs.frozen
class CodexEnv:
    """How to run Codex against the stand-in."""

    home: Path
    """The ``CODEX_HOME`` (config, sessions, logs)."""
    workdir: Path
    """A directory for the agent to work in (its ``cwd``)."""
    env: dict[str, str]
    app_server_argv: tuple[str, ...]
    exec_argv: tuple[str, ...]
    """``codex exec --json`` without the prompt (append it)."""


def config_toml(port: int) -> str:
    return f"""\
model = "{MODEL}"
model_provider = "mock"
approval_policy = "on-request"
sandbox_mode = "read-only"
check_for_update_on_startup = false

[model_providers.mock]
name = "mock"
base_url = "http://127.0.0.1:{port}/v1"
wire_api = "responses"
env_key = "{API_KEY_VAR}"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 30000

[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false
apps = false
shell_snapshot = false
image_generation = false

[otel]
exporter = "none"
"""


def codex_env(port: int, tmp: Path, binary: Path | None = None) -> CodexEnv:
    """Write ``tmp/codex-home/config.toml`` for the stand-in on ``port``; the way to run Codex."""
    home = tmp / "codex-home"
    workdir = tmp / "work"
    home.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config_toml(port))
    exe = str(binary or codex_binary())
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "CODEX_HOME": str(home),
        API_KEY_VAR: "sk-mock-not-a-real-key",
        "RUST_LOG": "warn",
        "NO_COLOR": "1",
        "LANG": "C.UTF-8",
    }
    return CodexEnv(
        home=home,
        workdir=workdir,
        env=env,
        app_server_argv=(exe, "app-server"),
        exec_argv=(exe, "exec", "--json", "--skip-git-repo-check", "-C", str(workdir)),
    )
