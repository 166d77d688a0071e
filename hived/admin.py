"""The admin channel's own requests: ``status``, ``config.reload``, ``daemon.stop``.

``connections`` and ``connection.kick`` belong to the server; every client-channel request is
answered on the admin channel too (the router serves both).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from hived import __version__
from hived.core.drivers import get_format
from hived.core.events import utc_timestamp
from hived.core.messages import Notifications, NotifyTest, Watch
from hived.core.pages import STATUS_LIST_MAX_BYTES, byte_page
from hived.core.protocol import Caller, Request

if TYPE_CHECKING:
    from hived.agents.supervisor import Supervisor
    from hived.core.config import Config, ReloadOutcome
    from hived.hub import Hub
    from hived.notify.service import NotifyService
    from hived.server.listener import Server
    from hived.store import Store

Handler = Callable[[Request, Caller], Awaitable[Any]]


class Control(Protocol):
    """What the admin requests read of the daemon and ask of it (:class:`hived.daemon.Daemon`
    is the one): named here so that this module need not import the one that builds it."""

    config: Config
    started_config: Config
    config_path: Path
    started_at: float
    config_loaded_at: float
    listening: tuple[str, ...]

    @property
    def stopping(self) -> bool: ...

    async def reload(self) -> ReloadOutcome: ...

    def request_stop(self) -> None: ...

    def request_restart(self) -> None: ...


def count_tasks() -> int:
    """How many trio tasks are alive, from the root down."""
    root = trio.lowlevel.current_root_task()
    pending = [root] if root is not None else []
    count = 0
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


def _jsonable(value: Any) -> Any:
    return attrs.asdict(value) if attrs.has(type(value)) else value


@attrs.define
class Admin:
    """Answers the admin requests from the daemon's live parts."""

    daemon: Control
    hub: Hub
    store: Store
    supervisor: Supervisor
    server: Server
    notify: NotifyService

    def handlers(self) -> dict[str, Handler]:
        return {
            "status": self.status,
            "config.reload": self.config_reload,
            "daemon.stop": self.daemon_stop,
            "daemon.restart": self.daemon_restart,
            "agents": self.agents,
            "notifications": self.notifications,
            "notify.test": self.notify_test,
            "watch": self.watch,
        }

    async def watch(self, request: Request, caller: Caller) -> dict[str, Any]:
        """What this connection's person looks at: its notifications wait (DESIGN §12)."""
        assert isinstance(request, Watch)
        session = None if request.session is None else self.supervisor.find(request.session).id
        self.notify.attention.watch(caller.connection, caller.token_name, session, request.focused)
        return {"session": session, "focused": request.focused}

    async def notifications(self, request: Request, caller: Caller) -> dict[str, Any]:
        """The last notifications born, newest first, with their outcome (DESIGN §12): a page,
        ``next`` asks for older ones."""
        assert isinstance(request, Notifications)
        shown, after = await self.notify.recent(request.limit or 50, request.cursor)
        return {"notifications": shown, "next": after, "stats": self.notify.stats().to_json()}

    async def notify_test(self, request: Request, caller: Caller) -> dict[str, Any]:
        """Send a test message through one rule now."""
        assert isinstance(request, NotifyTest)
        return await self.notify.test(request.rule)

    async def agents(self, request: Request, caller: Caller) -> dict[str, Any]:
        """The agent templates of the running config (a viewer request, on both channels):
        what a start form offers. ``cwd_choosable`` follows ``session.start``'s rule: a ``cwd``
        is accepted only inside the template's ``cwd_roots``."""
        templates = self.daemon.config.agents
        return {
            "agents": [
                {
                    "name": name,
                    "description": template.description,
                    "format": template.format,
                    "command": list(template.command),
                    "cwd_choosable": bool(template.cwd_roots),
                    "cwd_roots": list(template.cwd_roots),
                    "takes_input": get_format(template.format).takes_input,
                }
                for name, template in sorted(templates.items())
            ]
        }

    async def status(self, request: Request, caller: Caller) -> dict[str, Any]:
        """The daemon's figures. Its lists grow with sessions and clients: each is capped at
        :data:`~hived.core.pages.STATUS_LIST_MAX_BYTES` (newest sessions first), with its full
        count beside it (``sessions_total``, ``attention_total``); ``sessions`` pages them all."""
        daemon = self.daemon
        summaries = self.supervisor.summaries()[::-1]  # newest first
        sessions, _ = byte_page((s.to_json() for s in summaries), STATUS_LIST_MAX_BYTES)
        watches = self.notify.attention.to_json()
        attention, _ = byte_page(watches, STATUS_LIST_MAX_BYTES)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - daemon.started_at, 3),
            "config_path": str(daemon.config_path),
            "config_loaded_at": utc_timestamp(daemon.config_loaded_at),
            "listen": ", ".join(daemon.listening),
            "tls": daemon.started_config.server.tls_cert is not None,
            "stopping": daemon.stopping,
            "connections": _jsonable(self.server.stats()),
            "sessions": sessions,
            "sessions_total": len(summaries),
            "hub": _jsonable(self.hub.stats()),
            "store": _jsonable(self.store.stats()),
            "notifications": self.notify.stats().to_json(),
            "attention": attention,
            "attention_total": len(watches),
            "tasks": count_tasks(),
        }

    async def config_reload(self, request: Request, caller: Caller) -> dict[str, Any]:
        outcome = await self.daemon.reload()
        return outcome.to_json()

    async def daemon_stop(self, request: Request, caller: Caller) -> dict[str, Any]:
        self.daemon.request_stop()
        return {"stopping": True}

    async def daemon_restart(self, request: Request, caller: Caller) -> dict[str, Any]:
        """Restart in place, leaving the agents running under their shims (DESIGN §11)."""
        self.daemon.request_restart()
        return {"restarting": True}
