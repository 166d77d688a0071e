"""``hived`` on the command line: check-config, token new, --version, exit statuses."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hived.cli.hived import EXIT_CONFIG, build_parser, main
from hived.core.config import parse_config
from tests.e2e.harness import free_port

THREE_MISTAKES = (
    '[server]\nlisten = "7420"\n[state]\nretention_days = "30"\n[agents.x]\ncommand = []\n'
)


def run_hived(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hived.cli.hived", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def test_check_config_names_all_three_mistakes_and_exits_78(tmp_path: Path) -> None:
    path = tmp_path / "hived.toml"
    path.write_text(THREE_MISTAKES)
    result = run_hived("check-config", "--config", str(path))
    assert result.returncode == EXIT_CONFIG == 78
    lines = result.stderr.splitlines()
    assert f'hived: {path}: server.listen: expected "host:port", got "7420"' in lines
    assert f'hived: {path}: state.retention_days: expected an integer, got "30"' in lines
    assert any(line.startswith(f"hived: {path}: agents.x.command: ") for line in lines)
    assert lines[-1] == "hived: 3 problems in the config file"
    assert "Traceback" not in result.stderr


def test_check_config_on_a_good_file_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "hived.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:7420"\n')
    result = run_hived("check-config", "--config", str(path))
    assert (result.returncode, result.stdout) == (0, f"{path}: ok\n")


def test_check_config_reads_hived_config_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "env.toml"
    path.write_text("bogus = 1\n")
    result = run_hived("check-config", env={"HIVED_CONFIG": str(path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 78
    assert f"{path}: bogus: unknown key" in result.stderr


def test_missing_config_file_is_a_config_error_without_traceback(tmp_path: Path) -> None:
    result = run_hived("check-config", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 78
    assert "cannot read the config file: No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_a_bad_config_exits_78_with_the_errors(tmp_path: Path) -> None:
    path = tmp_path / "hived.toml"
    path.write_text(THREE_MISTAKES)
    result = run_hived("--config", str(path))
    assert result.returncode == 78
    assert "3 problems in the config file" in result.stderr


@pytest.mark.parametrize("damage", ["empty", "garbage"])
def test_run_on_a_damaged_store_exits_78_naming_the_file(tmp_path: Path, damage: str) -> None:
    """Restarting cannot mend a damaged store: 78, which the unit does not restart on."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    db = state / "hived.db"
    db.write_bytes(b"" if damage == "empty" else b"not a database at all\n" * 200)
    path = tmp_path / "hived.toml"
    path.write_text(f'[server]\nlisten = "127.0.0.1:{free_port()}"\n[state]\ndir = "{state}"\n')
    result = run_hived("run", "--config", str(path))
    assert result.returncode == 78
    assert f"{db}: " in result.stderr
    assert "Traceback" not in result.stderr


def test_token_new_prints_the_secret_on_stderr_and_only_the_block_on_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["token", "new", "--role", "operator", "--name", "ci"]) == 0
    out, err = capsys.readouterr()
    secret = next(line for line in err.splitlines() if line.startswith("HIVED_TOKEN="))[12:]
    assert len(secret) >= 43  # 32 random bytes, url-safe base64
    assert secret not in out
    assert "# Token for ci (operator)" in out
    token = tomllib.loads(out)["tokens"][0]
    assert token == {
        "name": "ci",
        "role": "operator",
        "sha256": hashlib.sha256(secret.encode()).hexdigest(),
    }
    assert parse_config(out).tokens[0].name == "ci"


def test_token_new_appended_to_a_config_twice_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "hived.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:7420"\n')
    for name in ("alice", "bob"):
        result = run_hived("token", "new", "--role", "viewer", "--name", name)
        assert result.returncode == 0
        with path.open("a") as file:
            file.write(result.stdout)
    names = [token.name for token in parse_config(path.read_text()).tokens]
    assert names == ["alice", "bob"]
    assert "HIVED_TOKEN" not in path.read_text()


def test_token_new_refuses_a_name_the_config_would_refuse(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["token", "new", "--role", "admin", "--name", "bad name"])
    assert info.value.code == 2
    assert "argument --name: expected letters, digits, _ . - (≤ 64), got 'bad name'" in (
        capsys.readouterr().err
    )


def test_token_new_refuses_an_unknown_role(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["token", "new", "--role", "root"])
    assert info.value.code == 2
    assert "invalid choice: 'root'" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("hived 0.")


def test_run_is_the_default_command() -> None:
    parser = build_parser()
    args = parser.parse_args(["run", "--config", "x.toml", "--log-level", "debug"])
    assert (args.command, args.config, args.log_level) == ("run", "x.toml", "debug")


def test_an_unknown_command_is_named_with_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--log-level", "debug", "frobnicate"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "hived: unknown command 'frobnicate'; commands: run, check-config, token\n"
    )


def test_check_config_warns_of_a_missing_program_and_folder_but_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "hived.toml"
    path.write_text(
        '[state]\ndir = "state"\n'
        '[agents.a]\ncommand = ["no-such-program-hived"]\ncwd = "nowhere"\n'
        '[agents.b]\ncommand = ["./missing.sh"]\n'
        '[agents.c]\ncommand = ["sh", "-c", "true"]\n'
    )
    result = run_hived("check-config", "--config", str(path))
    assert (result.returncode, result.stdout) == (0, f"{path}: ok\n")
    assert result.stderr.splitlines() == [
        f"hived: warning: {path}: agents.a.cwd: {tmp_path}/nowhere is not a folder",
        f"hived: warning: {path}: agents.a.command: no-such-program-hived is not found on PATH",
        f"hived: warning: {path}: agents.b.command: ./missing.sh is not an executable file",
    ]


def test_check_config_refuses_a_state_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "hived.toml"
    (tmp_path / "state").write_text("")
    path.write_text('[state]\ndir = "state"\n')
    result = run_hived("check-config", "--config", str(path))
    assert result.returncode == 78
    assert f"{path}: state.dir: {tmp_path}/state exists and is not a folder" in result.stderr
