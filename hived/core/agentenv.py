"""The environment an agent gets: a short allowlist of the daemon's, plus its template's ``env``.

Why: an agent runs code a model chose. It must not see the daemon's secrets (an exported
``HIVED_TOKEN``, a cloud key in the unit's environment), nor what systemd gave the daemon alone
(``NOTIFY_SOCKET``, ``WATCHDOG_*``, ``LISTEN_*``), nor settings that change an agent's behaviour
behind the operator's back (``IS_SANDBOX`` made the Claude ACP adapter refuse to start as root).
What a shell session needs to find programs, files, the locale and the proxy passes; everything
else an agent needs goes in its template's ``env`` (hived.toml(5)), where the operator sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

AGENT_ENV_NAMES: Final = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TZ",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NODE_EXTRA_CA_CERTS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)
"""The daemon's variables an agent gets, where the daemon has them."""
AGENT_ENV_PREFIXES: Final = ("LC_",)
"""Prefixes of more variables an agent gets (the locale's categories)."""


def agent_environ(daemon: Mapping[str, str], template: Mapping[str, str]) -> dict[str, str]:
    """The environment of an agent: the allowed part of the ``daemon``'s, then ``template``."""
    kept = {
        name: value
        for name, value in daemon.items()
        if name in AGENT_ENV_NAMES or name.startswith(AGENT_ENV_PREFIXES)
    }
    return kept | dict(template)
