"""Reading the config file from disk (the parsing and checking live in hived.core.config)."""

from __future__ import annotations

from pathlib import Path

from hived.core.config import Config, parse_config
from hived.core.defaults import config_path
from hived.core.errors import ConfigError

__all__ = ["config_path", "read_config"]


def read_config(path: Path) -> Config:
    """Read, parse and validate the file; every problem comes back in one ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot read the config file: {reason}"]) from None
    return parse_config(text, source=str(path), base_dir=path.resolve().parent)
