"""Reading the config file from disk (the parsing and checking live in hived.core.config)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hived.core.config import DEFAULT_CONFIG_PATH, Config, parse_config
from hived.core.errors import ConfigError


def config_path(given: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """``--config`` if given, else ``$HIVED_CONFIG``, else /etc/hived/hived.toml."""
    return Path(given or environ.get("HIVED_CONFIG") or DEFAULT_CONFIG_PATH)


def read_config(path: Path) -> Config:
    """Read, parse and validate the file; every problem comes back in one ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot read the config file: {reason}"]) from None
    return parse_config(text, source=str(path), base_dir=path.resolve().parent)
