"""``hived``: run the daemon, check a config file, make tokens.

Exit status: 0 clean stop; 78 (EX_CONFIG) a config error or an unusable store at start; 1 any
other failure (including a stop forced by a second signal).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from hived import __version__
from hived.configfile import config_path, read_config
from hived.core.auth import hash_secret, new_secret
from hived.core.config import NAME_RULE, ROLES, AgentConfig, Config, default_cwd, is_name
from hived.core.errors import ConfigError, HivedError, StoreUnusable
from hived.logs import LEVELS, setup_logging
from hived.server.accepting import load_tls

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 78

COMMANDS: Final = ("run", "check-config", "token")

log = logging.getLogger("hived")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, also read by the man-page completeness test."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $HIVED_CONFIG, else /etc/hived/hived.toml)",
    )
    common.add_argument(
        "--log-level",
        choices=LEVELS,
        default=argparse.SUPPRESS,
        help="least severe level logged (default: info)",
    )
    parser = argparse.ArgumentParser(
        prog="hived",
        description="Run and watch AI coding agents; stream their events over WebSocket.",
        parents=[common],
        epilog="exit status: 0 clean stop, 1 failure, 78 config error. See hived(8).",
    )
    parser.add_argument("--version", action="version", version=f"hived {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="run the daemon in the foreground (default)")
    commands.add_parser(
        "check-config", parents=[common], help="validate the config file and exit (0 or 78)"
    )
    token = commands.add_parser("token", help="manage access tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="TOKEN_COMMAND")
    token_commands.required = True
    new = token_commands.add_parser("new", help="print a fresh secret and its [[tokens]] block")
    new.add_argument("--role", required=True, choices=ROLES, help="role the token grants")
    new.add_argument(
        "--name", type=_token_name, help=f"who holds it, {NAME_RULE} (default: ROLE-xxxx)"
    )
    return parser


def _token_name(text: str) -> str:
    """argparse type of ``--name``: the config's name rule, so the printed block loads."""
    if not is_name(text):
        raise argparse.ArgumentTypeError(f"expected {NAME_RULE}, got {text!r}")
    return text


_VALUE_OPTIONS: Final = ("--config", "--log-level")


def _with_default_command(argv: Sequence[str]) -> list[str]:
    """``hived --config X`` means ``hived run --config X``; an unknown command is refused.

    The first word that is neither an option nor an option's value is the command.
    """
    args = list(argv)
    if any(arg in ("-h", "--help", "--version") for arg in args):
        return args
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            if arg in COMMANDS:
                return args
            sys.stderr.write(f"hived: unknown command {arg!r}; commands: {', '.join(COMMANDS)}\n")
            raise SystemExit(EXIT_USAGE)
    return ["run", *args]


def _token_new(role: str, name: str | None) -> int:
    """The secret and how to use it on stderr; only the TOML block on stdout.

    So ``hived token new ... >> hived.toml`` appends the block and never the secret.
    """
    secret = new_secret()
    name = name or f"{role}-{hash_secret(secret)[:6]}"
    sys.stderr.write(
        f"Give this secret to {name}; it is shown only this once. Clients send it as\n"
        f"'Authorization: Bearer <secret>' or set HIVED_TOKEN for hivectl:\n"
        f"\n"
        f"HIVED_TOKEN={secret}\n"
        f"\n"
        f"Add the block on standard output to hived.toml (hived token new ... >> hived.toml),\n"
        f"then reload hived (systemctl reload hived).\n"
    )
    sys.stdout.write(
        f"\n"
        f"# Token for {name} ({role}), made by hived token new.\n"
        f"[[tokens]]\n"
        f'name = "{name}"\n'
        f'role = "{role}"\n'
        f'sha256 = "{hash_secret(secret)}"\n'
    )
    return EXIT_OK


def _report_config_error(exc: ConfigError) -> int:
    for problem in exc.problems:
        sys.stderr.write(f"hived: {problem}\n")
    n = len(exc.problems)
    sys.stderr.write(f"hived: {n} problem{'s' if n != 1 else ''} in the config file\n")
    return EXIT_CONFIG


def _agent_warnings(name: str, agent: AgentConfig, state_dir: str) -> list[str]:
    """What may fail when a session of ``agent`` starts, checked cheaply here.

    Warnings, not errors: the daemon's PATH and folders at start (under systemd, say) may
    differ from this shell's, and a missing folder may be made before a session starts.
    """
    warnings = []
    cwd = agent.cwd or default_cwd(state_dir, name)
    if agent.cwd is not None and not os.path.isdir(agent.cwd):
        warnings.append(f"agents.{name}.cwd: {agent.cwd} is not a folder")
    program = agent.command[0]
    if "/" in program:
        where = os.path.join(cwd, program)
        if not (os.path.isfile(where) and os.access(where, os.X_OK)):
            warnings.append(f"agents.{name}.command: {program} is not an executable file")
    elif shutil.which(program, path=agent.env.get("PATH", os.environ.get("PATH"))) is None:
        warnings.append(f"agents.{name}.command: {program} is not found on PATH")
    return warnings


def _check_config(path: Path, config: Config) -> int:
    """What a start would refuse too: the file, the TLS certificate and key it names, a state
    folder that is a file. Agent programs and folders that are missing only warn."""
    server = config.server
    if server.tls_cert is not None and server.tls_key is not None:
        try:
            load_tls(server.tls_cert, server.tls_key)
        except ConfigError as exc:
            return _report_config_error(exc)
    state_dir = config.state.dir
    if os.path.exists(state_dir) and not os.path.isdir(state_dir):
        return _report_config_error(
            ConfigError([f"{path}: state.dir: {state_dir} exists and is not a folder"])
        )
    for name, agent in config.agents.items():
        for warning in _agent_warnings(name, agent, state_dir):
            sys.stderr.write(f"hived: warning: {path}: {warning}\n")
    sys.stdout.write(f"{path}: ok\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hived`` console script."""
    args = build_parser().parse_args(_with_default_command(sys.argv[1:] if argv is None else argv))
    if args.command == "token":
        return _token_new(args.role, args.name)
    setup_logging(getattr(args, "log_level", "info"))
    path = config_path(getattr(args, "config", None))
    try:
        config = read_config(path)
    except ConfigError as exc:
        return _report_config_error(exc)
    if args.command == "check-config":
        return _check_config(path, config)
    from hived.daemon import run_daemon

    try:
        return run_daemon(path, config)
    except StoreUnusable as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except HivedError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
