"""The connection to the engine (Redis ≥ 7 or Valkey) through coredis, which runs under trio.

:func:`open_engine` opens the client from ``[cluster]``: the password comes from
``password_file`` (never from the URL, so that it is not in the config file), ``rediss://``
turns TLS on with ``tls_ca`` or the system's CAs. :data:`ENGINE_ERRORS` are what an engine that
is down, restarting or refusing raises: the tasks that talk to it catch them, log once and try
again after :func:`retry_delay_s`, so that the rest of the node never notices.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import coredis
import coredis.exceptions
import trio

from hived.core.config import ClusterConfig
from hived.core.errors import ConfigError

log = logging.getLogger(__name__)

Engine = coredis.Redis[str]

ENGINE_ERRORS: Final = (coredis.exceptions.RedisError, OSError, TimeoutError)
"""What a call to an engine that is down or refusing raises."""
CONNECT_TIMEOUT_S: Final = 2.0
STREAM_TIMEOUT_S: Final = 10.0
"""A reply that takes longer means the engine is gone (blocking reads block for less)."""
MAX_CONNECTIONS: Final = 1024
"""Each follower of another node's session holds one connection while it blocks."""
RETRY_MIN_S: Final = 0.2
RETRY_MAX_S: Final = 5.0


def retry_delay_s(failures: int) -> float:
    """The wait before the next try after ``failures`` failures in a row (≥ 1)."""
    return float(min(RETRY_MAX_S, RETRY_MIN_S * 2 ** min(failures - 1, 10)))


def read_password(path: str) -> str:
    """The first line of ``cluster.password_file``; ConfigError naming the key otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"cluster.password_file: cannot read {path}: {reason}"]) from None
    password = text.splitlines()[0].strip() if text.strip() else ""
    if not password:
        raise ConfigError([f"cluster.password_file: {path} is empty"])
    return password


@asynccontextmanager
async def open_engine(config: ClusterConfig) -> AsyncIterator[Engine]:
    """The engine client of ``config``, for as long as the block runs. It connects lazily:
    an engine that is down now is not an error here."""
    password = None
    if config.password_file is not None:
        password = await trio.to_thread.run_sync(read_password, config.password_file)
    tls: dict[str, Any] = {}
    if config.url.startswith("rediss://"):
        tls["ssl_context"] = ssl.create_default_context(cafile=config.tls_ca)
    client: Engine = coredis.Redis.from_url(
        config.url,
        decode_responses=True,
        password=password,
        connect_timeout=CONNECT_TIMEOUT_S,
        stream_timeout=STREAM_TIMEOUT_S,
        max_connections=MAX_CONNECTIONS,
        client_name=f"hived:{config.node}",
        **tls,
    )
    async with client:
        yield client
