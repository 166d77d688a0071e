"""Where the config file is and where hived listens by default: the two facts that ``hivectl``
needs before it knows anything else, kept apart from the config model so that reading them
imports nothing heavy (``hivectl hook`` runs on every tool call of a Claude Code session)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

DEFAULT_CONFIG_PATH: Final = "/etc/hived/hived.toml"
DEFAULT_LISTEN: Final = "127.0.0.1:7420"


def config_path(given: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """``--config`` if given, else ``$HIVED_CONFIG``, else /etc/hived/hived.toml."""
    return Path(given or environ.get("HIVED_CONFIG") or DEFAULT_CONFIG_PATH)
