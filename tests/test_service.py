"""hived as a system service: the systemd units, the man pages, and ``make install``.

systemd's and groff's own checkers judge the files: ``systemd-analyze verify`` (which exits 0 on
unknown keys, so its output is what counts), ``systemd-analyze security``, ``systemd-sysusers``,
``systemd-tmpfiles``, ``groff -ww``. None of them needs systemd running. They come from Debian's
``systemd``, ``groff`` and ``man-db``, which .ci/run installs; a missing one fails the test.
"""

from __future__ import annotations

import configparser
import gzip
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from hived.core.config import AgentConfig, Command, DaemonConfig

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = REPO / "systemd"
MAN = REPO / "man"
VENV_BIN = Path(sys.executable).parent
PAGES = sorted(source.with_suffix("") for source in MAN.glob("*.rst"))


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, (
        f"{name} is not installed: .ci/run installs it (apt-get install systemd groff man-db)"
    )
    return path


def run(*argv: str | Path, env: dict[str, str] | None = None) -> str:
    """Run a checker; everything it prints (stdout and stderr), with its exit status if not 0."""
    done = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=None if env is None else {**os.environ, **env},
        check=False,
    )
    out = done.stdout + done.stderr
    return out if done.returncode == 0 else f"{out}[exit status {done.returncode}]"


def hived_bin() -> Path:
    path = VENV_BIN / "hived"
    assert path.exists(), f"{path} is missing: run `make test`, which installs hived in .venv"
    return path


def man_tree(root: Path) -> Path:
    """The rendered pages laid out as a MANPATH, so that verify can check Documentation=."""
    for page in PAGES:
        section = root / f"man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, section / page.name)
    return root


def verify(*units: Path, man_path: Path) -> str:
    return run(tool("systemd-analyze"), "verify", *units, env={"MANPATH": str(man_path)})


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """A copy of the units whose ExecStart runs the venv's hived (the test box has no /usr/bin/hived)."""
    units = tmp_path / "units"
    units.mkdir()
    text = (SYSTEMD / "hived.service").read_text(encoding="utf-8")
    assert "ExecStart=/usr/bin/hived " in text
    (units / "hived.service").write_text(text.replace("/usr/bin/hived", str(hived_bin())))
    shutil.copy(SYSTEMD / "hived.socket", units)
    return units


# --- the units ---------------------------------------------------------------------------------


def test_service_unit_passes_systemd_analyze_verify(unit_dir: Path, tmp_path: Path) -> None:
    assert verify(unit_dir / "hived.service", man_path=man_tree(tmp_path / "man")) == ""


def test_socket_unit_passes_systemd_analyze_verify(unit_dir: Path, tmp_path: Path) -> None:
    assert verify(unit_dir / "hived.socket", man_path=man_tree(tmp_path / "man")) == ""


def test_verify_reports_what_is_wrong(unit_dir: Path, tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and an unknown man page are reported."""
    service = unit_dir / "hived.service"
    text = service.read_text().replace("KillMode=", "KilMode=").replace("hivectl(1)", "hivectl(7)")
    service.write_text(text)
    out = verify(service, man_path=man_tree(tmp_path / "man"))
    assert "Unknown key 'KilMode'" in out
    assert "man hivectl(7)" in out


@pytest.mark.parametrize(
    "drop_in", sorted((SYSTEMD / "examples").glob("*.conf")), ids=lambda p: p.name
)
def test_example_drop_in_passes_verify(drop_in: Path, unit_dir: Path, tmp_path: Path) -> None:
    text = drop_in.read_text(encoding="utf-8").replace("/opt/hived/bin/hived", str(hived_bin()))
    (unit_dir / "hived.service.d").mkdir()
    (unit_dir / "hived.service.d" / drop_in.name).write_text(text)
    assert verify(unit_dir / "hived.service", man_path=man_tree(tmp_path / "man")) == ""


def service_settings() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SYSTEMD / "hived.service", encoding="utf-8")
    return parser


def seconds(value: str) -> float:
    number, unit = value[:-1], value[-1:]
    assert unit == "s", f"expected a plain '<n>s', got {value!r}"
    return float(number)


def test_service_unit_is_what_issue_7_asks_for() -> None:
    unit = service_settings()
    service = unit["Service"]
    expected = {
        "Type": "notify",
        "ExecStart": "/usr/bin/hived --config /etc/hived/hived.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "KillMode": "process",  # agents outlive a crash of hived (issue 13)
        "Restart": "on-failure",
        "RestartPreventExitStatus": "78",
        "User": "hived",
        "Group": "hived",
        "StateDirectory": "hived",
        "ConfigurationDirectory": "hived",
        "RuntimeDirectory": "hived",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert "WatchdogSec" in service
    assert unit["Unit"]["Documentation"] == "man:hived(8) man:hived.toml(5) man:hivectl(1)"


def test_stop_timeout_leaves_hived_its_whole_graceful_stop() -> None:
    """systemd's SIGKILL must come after hived's own budget and an agent's grace, with a margin."""
    agent = AgentConfig(command=Command(("agent",)))
    budget_s = DaemonConfig().shutdown_timeout_s + agent.stop_timeout_s
    assert seconds(service_settings()["Service"]["TimeoutStopSec"]) >= budget_s + 10


def test_service_hardening_is_rated_ok(unit_dir: Path) -> None:
    """systemd's own exposure score (0 best, 10 worst) stays at 4.0 or below: "OK"."""
    out = run(
        tool("systemd-analyze"),
        "security",
        "--offline=yes",
        "--threshold=40",
        unit_dir / "hived.service",
    )
    assert "[exit status" not in out, out


# --- the man pages -----------------------------------------------------------------------------


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("man_build", MAN / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without_comments(roff: str) -> list[str]:
    # Comment lines name the docutils version that rendered the page; nothing else may differ.
    return [line for line in roff.splitlines() if not line.startswith('.\\"')]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_committed_page_is_rendered_from_its_source(page: Path) -> None:
    assert page.exists(), f"{page.name} was never rendered: run `make man`"
    rendered = load_build().render(page.with_suffix(page.suffix + ".rst"))
    assert without_comments(page.read_text(encoding="utf-8")) == without_comments(rendered), (
        f"{page.name} is stale: run `make man` and commit the result"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_groff_has_no_warning_for_page(page: Path) -> None:
    assert run(tool("groff"), "-ww", "-z", "-man", page) == ""


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_is_ascii_so_it_reads_the_same_in_any_locale(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    odd = sorted({c for c in text if not c.isascii()})
    assert not odd, f"{page.name} has non-ASCII characters {odd}: write them in ASCII in the source"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_man_formats_page_without_complaint(page: Path) -> None:
    """What a reader runs, in the plainest locale: no warning on stderr, a whole page out."""
    done = subprocess.run(
        [tool("man"), "-l", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80", "LC_ALL": "C"},
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert "See also" in done.stdout


# --- make install ------------------------------------------------------------------------------

INSTALLED = {
    "usr/lib/systemd/system/hived.service": 0o644,
    "usr/lib/systemd/system/hived.socket": 0o644,
    "usr/lib/sysusers.d/hived.conf": 0o644,
    "usr/lib/tmpfiles.d/hived.conf": 0o644,
    "usr/share/man/man8/hived.8.gz": 0o644,
    "usr/share/man/man5/hived.toml.5.gz": 0o644,
    "usr/share/man/man1/hivectl.1.gz": 0o644,
    "usr/share/doc/hived/protocol.md": 0o644,
    "usr/share/doc/hived/hived.toml": 0o644,
    "usr/share/doc/hived/examples/venv.conf": 0o644,
    "usr/share/doc/hived/examples/work-dirs.conf": 0o644,
    "etc/hived/hived.toml": 0o640,
}


def make_install(destdir: Path) -> str:
    return run(
        tool("make"),
        "--no-print-directory",
        "-C",
        REPO,
        "install",
        "PREFIX=/usr",
        f"DESTDIR={destdir}",
        f"BINDIR={VENV_BIN}",
    )


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    out = make_install(root)
    assert "[exit status" not in out, out
    return root


def test_make_install_puts_every_file_where_it_belongs(installed: Path) -> None:
    found = {
        str(path.relative_to(installed)): path.stat().st_mode & 0o777
        for path in installed.rglob("*")
        if path.is_file()
    }
    assert found == INSTALLED
    for page in PAGES:
        packed = installed / f"usr/share/man/man{page.suffix[1:]}/{page.name}.gz"
        assert gzip.decompress(packed.read_bytes()) == page.read_bytes()
    assert (installed / "etc/hived/hived.toml").read_bytes() == (
        SYSTEMD / "hived.toml"
    ).read_bytes()


def test_installed_unit_runs_the_hived_of_bindir_and_verifies(installed: Path) -> None:
    units = installed / "usr/lib/systemd/system"
    service = (units / "hived.service").read_text(encoding="utf-8")
    assert f"\nExecStart={VENV_BIN}/hived --config /etc/hived/hived.toml\n" in service
    man_path = installed / "usr/share/man"
    assert verify(units / "hived.service", units / "hived.socket", man_path=man_path) == ""


def test_installed_config_passes_check_config(installed: Path) -> None:
    """It is valid; on this machine, without Claude Code or /srv/hived, it only warns."""
    config = installed / "etc/hived/hived.toml"
    checked = subprocess.run(
        [hived_bin(), "check-config", "--config", config],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (checked.returncode, checked.stdout) == (0, f"{config}: ok\n")
    assert all(line.startswith("hived: warning: ") for line in checked.stderr.splitlines())


def test_installed_sysusers_and_tmpfiles_files_are_valid(installed: Path) -> None:
    """sysusers makes the user in the install root; tmpfiles then parses every line, resolving
    users and groups there (``--clean`` on entries without an age changes nothing, as any user)."""
    assert "Creating user 'hived'" in run(tool("systemd-sysusers"), f"--root={installed}")
    assert (installed / "etc/passwd").read_text().startswith("hived:x:")
    assert run(tool("systemd-tmpfiles"), f"--root={installed}", "--clean") == ""


def test_make_install_never_overwrites_an_existing_config(tmp_path: Path) -> None:
    config = tmp_path / "root/etc/hived/hived.toml"
    config.parent.mkdir(parents=True)
    config.write_text("# mine\n")
    out = make_install(tmp_path / "root")
    assert "[exit status" not in out, out
    assert config.read_text() == "# mine\n"
    assert f"kept {config}" in out
    assert (tmp_path / "root/usr/share/doc/hived/hived.toml").exists()
