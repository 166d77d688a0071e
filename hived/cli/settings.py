"""Where hivectl connects and with what token: flags, environment, the local config."""

from __future__ import annotations

import argparse
import os
import urllib.parse
from pathlib import Path
from typing import Final

from hived.configfile import config_path, read_config
from hived.core.errors import ConfigError

DEFAULT_URL: Final = "ws://127.0.0.1:7420"


class Usage(Exception):
    """A mistake on the command line found after parsing (exit 2)."""


def base_url(given: str | None) -> str:
    """``ws://host:port`` from --url, HIVED_URL, the local config's listen address, or default."""
    url = given or os.environ.get("HIVED_URL")
    if not url:
        try:
            server = read_config(config_path(None)).server
        except ConfigError:
            return DEFAULT_URL
        url = f"{'wss' if server.tls_cert else 'ws'}://{server.listen}"
    if "://" not in url:
        url = f"ws://{url}"
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise Usage(f"--url: expected ws://HOST:PORT or wss://HOST:PORT, got {url!r}")
    return f"{scheme}://{parts.netloc}"


def read_token(args: argparse.Namespace) -> str | None:
    if getattr(args, "token", None):
        return str(args.token)
    if getattr(args, "token_file", None):
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise Usage(f"--token-file: cannot read {args.token_file}: {exc.strerror}") from None
    return os.environ.get("HIVED_TOKEN") or None
