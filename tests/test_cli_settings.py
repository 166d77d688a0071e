"""Where hivectl connects (hived/cli/settings.py), and ``hivectl hook``'s light start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hived.cli.settings import DEFAULT_URL, base_url, local_url


@pytest.mark.parametrize(
    ("toml", "url"),
    [
        ('[server]\nlisten = "127.0.0.1:9001"\n', "ws://127.0.0.1:9001"),
        ('[server]\nlisten = "[::1]:9002"\ntls_cert = "c.pem"\n', "wss://[::1]:9002"),
        ('[state]\ndir = "/var/lib/hived"\n', DEFAULT_URL),  # no listen: hived's default
        ("[server]\nlisten = 9003\n", DEFAULT_URL),  # not an address: hived refuses the file
        ("server = 1\n", DEFAULT_URL),
        ("this is not TOML", DEFAULT_URL),
    ],
)
def test_the_local_configs_listen_address_is_the_default_url(
    tmp_path: Path, toml: str, url: str
) -> None:
    path = tmp_path / "hived.toml"
    path.write_text(toml)
    assert local_url(path) == url


def test_a_missing_local_config_means_the_default_url(tmp_path: Path) -> None:
    assert local_url(tmp_path / "nothing.toml") == DEFAULT_URL


def test_the_flag_then_the_environment_then_the_local_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hived.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:9004"\n')
    monkeypatch.setenv("HIVED_CONFIG", str(path))
    monkeypatch.delenv("HIVED_URL", raising=False)
    assert base_url(None) == "ws://127.0.0.1:9004"
    monkeypatch.setenv("HIVED_URL", "https://hive.example:443")
    assert base_url(None) == "wss://hive.example:443"
    assert base_url("127.0.0.1:9005") == "ws://127.0.0.1:9005"


def test_hivectl_hook_imports_neither_trio_nor_the_client(tmp_path: Path) -> None:
    """The hook runs on every tool call of a Claude Code session: it starts on the standard
    library alone (hived/cli/entry.py)."""
    script = (
        "import json, sys\n"
        "sys.argv = ['hivectl', 'hook', '--url', 'ws://127.0.0.1:1']\n"
        "from hived.cli.entry import hivectl\n"
        "code = hivectl()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('trio', 'trio_websocket', 'attrs', 'cattrs', 'orjson') or m.startswith(('hived.client', 'hived.core.config', 'hived.configfile')))\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=b"{}",
        capture_output=True,
        check=True,
        env={"HIVED_CONFIG": str(tmp_path / "none.toml"), "HIVED_TOKEN": "t"},
    )
    assert json.loads(result.stdout) == {"code": 0, "heavy": []}
    assert b"could not post to hived" in result.stderr
