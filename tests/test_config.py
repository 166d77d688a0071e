"""The config loader: a full valid file, every kind of mistake alone, and several at once."""

from __future__ import annotations

from pathlib import PurePath

import pytest

from hived.core.config import (
    DEFAULT_LISTEN,
    AgentConfig,
    Config,
    changed_sections,
    parse_config,
    parse_listen,
    restart_needed,
)
from hived.core.errors import ConfigError, HivedError

SHA = "ab" * 32

FULL = f"""
[server]
listen = "[::1]:7421"
allowed_origins = ["https://dash.example:8443"]
max_message_bytes = 65536
heartbeat_interval_s = 15
heartbeat_timeout_s = 5.5
auth_timeout_s = 3.0
subscriber_queue = 128
rate_limit_per_s = 12.5
rate_limit_burst = 40
tls_cert = "cert.pem"
tls_key = "key.pem"

[state]
dir = "state"
retention_days = 7
max_bytes = 1000000
sync_interval_ms = 50

[daemon]
shutdown_timeout_s = 12.0

[hooks]
observed_idle_s = 60.0

[[tokens]]
name = "alice"
role = "admin"
sha256 = "{SHA.upper()}"

[[tokens]]
name = "ci-bot"
role = "agent"
sha256 = "{"cd" * 32}"

[agents.claude]
command = ["claude", "-p", "--output-format", "stream-json", "--verbose"]
format = "claude"
cwd = "/srv/work"
cwd_roots = ["/srv/work"]
env = {{ CLAUDE_CONFIG_DIR = "/srv/claude" }}
restart = "always"
max_restarts = 3
restart_window_s = 60.0
stop_timeout_s = 2.0
idle_s = 120.0
autostart = 2
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return list(info.value.problems)


def only_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_full_valid_config_loads_every_key() -> None:
    config = parse_config(FULL, base_dir=PurePath("/etc/hived"))
    assert config.server.listen == "[::1]:7421"
    assert parse_listen(config.server.listen) == ("::1", 7421)
    assert config.server.allowed_origins == ("https://dash.example:8443",)
    assert config.server.heartbeat_interval_s == 15.0
    assert config.server.tls_cert == "/etc/hived/cert.pem"
    assert (config.server.rate_limit_per_s, config.server.rate_limit_burst) == (12.5, 40)
    assert config.state.dir == "/etc/hived/state"
    assert config.state.sync_interval_ms == 50
    assert config.daemon.shutdown_timeout_s == 12.0
    assert config.hooks.observed_idle_s == 60.0
    assert [t.name for t in config.tokens] == ["alice", "ci-bot"]
    assert config.tokens[0].sha256 == SHA  # stored lower-case
    claude = config.agents["claude"]
    assert claude.command[0] == "claude"
    assert claude.env == {"CLAUDE_CONFIG_DIR": "/srv/claude"}
    assert (claude.restart, claude.max_restarts, claude.autostart) == ("always", 3, 2)
    assert claude.cwd == "/srv/work"


def test_empty_file_gives_the_documented_defaults() -> None:
    config = parse_config("")
    assert config == Config()
    assert config.server.listen == DEFAULT_LISTEN
    assert config.server.subscriber_queue == 4096
    assert config.server.rate_limit_per_s == 50.0
    assert config.server.rate_limit_burst == 200
    assert config.state.retention_days == 30


def test_config_error_is_a_value_error_and_a_hived_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[server]\nlisten = 1\n")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, HivedError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[server]\nlisten = "7420"',
            'hived.toml: server.listen: expected "host:port", got "7420"',
        ),
        ('[server]\nlisten = "::1:7420"', "server.listen: expected an IPv6 address in brackets"),
        ('[server]\nlisten = "[::zz]:7420"', "server.listen: expected an IPv6 address in brackets"),
        ('[server]\nlisten = "127.0.0.1:70000"', "server.listen: expected a port from 1 to 65535"),
        ("[server]\nlisten = 7420", 'server.listen: expected "host:port", got 7420'),
        ("[server]\nprot = 1", "server.prot: unknown key; known keys here: listen,"),
        ("colour = 1", "hived.toml: colour: unknown key; known keys here: server,"),
        (
            '[server]\nmax_message_bytes = "5"',
            'server.max_message_bytes: expected an integer, got "5"',
        ),
        (
            "[server]\nmax_message_bytes = 0",
            "server.max_message_bytes: expected an integer ≥ 1, got 0",
        ),
        (
            "[server]\nheartbeat_interval_s = 0",
            "server.heartbeat_interval_s: expected a duration greater than 0",
        ),
        (
            "[server]\nheartbeat_interval_s = true",
            "server.heartbeat_interval_s: expected a number of seconds, got true",
        ),
        (
            '[server]\nallowed_origins = "https://x"',
            'server.allowed_origins: expected a list, got "https://x"',
        ),
        (
            '[server]\nallowed_origins = ["x"]',
            "server.allowed_origins[0]: expected an origin such as",
        ),
        (
            "[server]\nrate_limit_per_s = 0",
            "server.rate_limit_per_s: expected a finite number greater than 0, got 0",
        ),
        (
            "[server]\nrate_limit_per_s = -2.5",
            "server.rate_limit_per_s: expected a finite number greater than 0, got -2.5",
        ),
        (
            "[server]\nrate_limit_per_s = inf",
            "server.rate_limit_per_s: expected a finite number greater than 0, got inf",
        ),
        (
            "[server]\nrate_limit_per_s = nan",
            "server.rate_limit_per_s: expected a finite number greater than 0, got nan",
        ),
        (
            '[server]\nrate_limit_per_s = "50"',
            'server.rate_limit_per_s: expected a number per second, got "50"',
        ),
        (
            "[server]\nrate_limit_per_s = true",
            "server.rate_limit_per_s: expected a number per second, got true",
        ),
        (
            "[server]\nrate_limit_burst = 0",
            "server.rate_limit_burst: expected an integer ≥ 1, got 0",
        ),
        (
            "[server]\nrate_limit_burst = -1",
            "server.rate_limit_burst: expected an integer ≥ 1, got -1",
        ),
        (
            "[server]\nrate_limit_burst = 2.5",
            "server.rate_limit_burst: expected an integer, got 2.5",
        ),
        (
            '[server]\nrate_limit_burst = "200"',
            'server.rate_limit_burst: expected an integer, got "200"',
        ),
        ('[server]\ntls_cert = "c.pem"', "server: tls_cert and tls_key go together"),
        ("[state]\ndir = 5", "state.dir: expected a string, got 5"),
        (
            "[daemon]\nshutdown_timeout_s = -1",
            "daemon.shutdown_timeout_s: expected a duration greater than 0, got -1",
        ),
        (
            '[[tokens]]\nname = "a"\nrole = "root"\nsha256 = "' + SHA + '"',
            'tokens[0].role: expected one of viewer, operator, admin, agent, got "root"',
        ),
        (
            '[[tokens]]\nname = "a"\nrole = "admin"\nsha256 = "abc"',
            'tokens[0].sha256: expected 64 hex digits, got "abc"',
        ),
        ('[[tokens]]\nname = "a"\nrole = "admin"', "tokens[0].sha256: required, but missing"),
        (
            '[[tokens]]\nname = "a b"\nrole = "admin"\nsha256 = "' + SHA + '"',
            "tokens[0].name: expected letters, digits",
        ),
        (
            "[agents.a]\ncommand = []",
            "agents.a.command: expected a non-empty list of strings, got an empty list",
        ),
        (
            '[agents.a]\ncommand = "claude -p"',
            'agents.a.command: expected a non-empty list of strings, got "claude -p"',
        ),
        (
            '[agents.a]\ncommand = ["x", 1]',
            "agents.a.command: expected a list of strings, got 1 at [1]",
        ),
        (
            '[agents.a]\ncommand = ["x"]\nformat = "xml"',
            'agents.a.format: expected one of text, jsonl, claude, codex, codex-app, acp, got "xml"',
        ),
        (
            '[agents.a]\ncommand = ["x"]\nrestart = "sometimes"',
            "agents.a.restart: expected one of no, on-failure, always",
        ),
        (
            '[agents.a]\ncommand = ["x"]\nautostart = -1',
            "agents.a.autostart: expected an integer ≥ 0, got -1",
        ),
        (
            '[agents.a]\ncommand = ["x"]\nenv = { A = 1 }',
            "agents.a.env.A: expected a string, got 1",
        ),
        (
            '[agents.a]\ncommand = ["x"]\nidle_s = "10"',
            'agents.a.idle_s: expected a number of seconds, got "10"',
        ),
        ('[agents.a]\nformat = "text"', "agents.a.command: required, but missing"),
        ('[agents."a b"]\ncommand = ["x"]', "agents.a b: agent names are letters"),
        ("agents = 5", "agents: expected a table, got 5"),
    ],
)
def test_each_mistake_alone_is_reported_with_its_key_path(text: str, expected: str) -> None:
    assert expected in only_problem(text)


def test_strings_are_not_booleans_or_numbers() -> None:
    assert "expected an integer" in only_problem('[state]\nretention_days = "30"')
    assert "expected a number of seconds" in only_problem('[daemon]\nshutdown_timeout_s = "1"')


def test_duplicate_token_names_are_reported() -> None:
    text = "".join(
        f'[[tokens]]\nname = "alice"\nrole = "viewer"\nsha256 = "{sha}"\n'
        for sha in (SHA, "cd" * 32)
    )
    assert only_problem(text) == 'hived.toml: tokens[1].name: "alice" is already used by tokens[0]'


def test_one_secret_for_two_tokens_is_refused_whatever_the_case() -> None:
    text = (
        f'[[tokens]]\nname = "alice"\nrole = "viewer"\nsha256 = "{SHA}"\n'
        f'[[tokens]]\nname = "bob"\nrole = "admin"\nsha256 = "{SHA.upper()}"\n'
    )
    assert only_problem(text) == (
        'hived.toml: tokens[1].sha256: the same secret as tokens[0] ("alice")'
    )


def test_several_mistakes_are_all_reported_one_line_each() -> None:
    text = (
        '[server]\nlisten = "7420"\nbogus = 1\n'
        '[state]\nretention_days = 0\n[agents.x]\ncommand = "x"\n'
    )
    found = problems(text)
    assert len(found) == 4
    assert all(line.startswith("hived.toml: ") and "\n" not in line for line in found)
    keys = [line.split(": ")[1] for line in found]
    assert keys == ["server.listen", "server.bogus", "state.retention_days", "agents.x.command"]


def test_toml_syntax_error_names_line_and_column() -> None:
    assert only_problem(
        '[server]\nlisten = "a"\nmax_message_bytes = \n',
    ) == ("hived.toml: line 3, column 21: invalid TOML: Invalid value")


def test_source_name_prefixes_every_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("x = 1", source="/etc/hived/hived.toml")
    assert str(info.value).startswith("/etc/hived/hived.toml: x: unknown key")


def test_reload_diff_names_changed_sections_and_restart_keys() -> None:
    old = parse_config('[agents.a]\ncommand = ["x"]\n')
    new = parse_config(
        '[server]\nlisten = "127.0.0.1:9000"\nauth_timeout_s = 1.0\n[agents.b]\ncommand = ["y"]\n'
    )
    assert changed_sections(old, new) == ["server", "agents.a", "agents.b"]
    assert restart_needed(old, new) == ["server.listen"]
    assert restart_needed(old, old) == []


def test_agent_template_defaults() -> None:
    agent = AgentConfig(command=("x",))  # type: ignore[arg-type]
    assert (agent.format, agent.restart, agent.max_restarts, agent.autostart) == (
        "text",
        "on-failure",
        5,
        0,
    )
