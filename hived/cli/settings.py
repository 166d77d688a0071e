"""Where hivectl connects and with what token: flags, environment, the local config.

Nothing here imports more than the standard library and :mod:`hived.core.defaults`:
``hivectl hook`` uses it on every tool call of a Claude Code session, and must start fast.
"""

from __future__ import annotations

import argparse
import os
import tomllib
import urllib.parse
from pathlib import Path
from typing import Final

from hived.core.defaults import DEFAULT_LISTEN, config_path

DEFAULT_URL: Final = f"ws://{DEFAULT_LISTEN}"


class Usage(Exception):
    """A mistake on the command line found after parsing (exit 2)."""


def base_url(given: str | None) -> str:
    """``ws://host:port`` from --url, HIVED_URL, the local config's listen address, or default."""
    url = given or os.environ.get("HIVED_URL") or local_url(config_path(None))
    if "://" not in url:
        url = f"ws://{url}"
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise Usage(f"--url: expected ws://HOST:PORT or wss://HOST:PORT, got {url!r}")
    return f"{scheme}://{parts.netloc}"


def local_url(path: Path) -> str:
    """The URL of the local config's ``server.listen`` (``wss`` with a ``tls_cert``).

    Only those two keys are read, and the rest of the file is not checked (hived checks it);
    :data:`DEFAULT_URL` where the file cannot be read or is not TOML.
    """
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return DEFAULT_URL
    server = config.get("server")
    if not isinstance(server, dict):
        server = {}
    listen = server.get("listen", DEFAULT_LISTEN)
    if not isinstance(listen, str):
        return DEFAULT_URL
    return f"{'wss' if server.get('tls_cert') else 'ws'}://{listen}"


def connection_options() -> argparse.ArgumentParser:
    """The options every hivectl command takes: where hived is, the token, JSON output."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="hived's address (ws://HOST:PORT)")
    common.add_argument(
        "--token", default=argparse.SUPPRESS, help="access token (prefer HIVED_TOKEN)"
    )
    common.add_argument(
        "--token-file", metavar="PATH", default=argparse.SUPPRESS, help="read the token from a file"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )
    return common


def read_token(args: argparse.Namespace) -> str | None:
    if getattr(args, "token", None):
        return str(args.token)
    if getattr(args, "token_file", None):
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise Usage(f"--token-file: cannot read {args.token_file}: {exc.strerror}") from None
    return os.environ.get("HIVED_TOKEN") or None
