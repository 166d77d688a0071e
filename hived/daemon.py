"""The daemon: one nursery that owns every service, signals, reload and stop.

Task tree (DESIGN §2): the daemon nursery holds the signal watcher, the watchdog pinger, the
store's writer, the supervisor and the listener. Services follow one contract (see
docs/internals.md): ``serve(task_status=...)`` until cancelled, ``reload(config)`` for a new
valid config, ``drain()`` for a graceful stop. Stop drains them in reverse start order under
``daemon.shutdown_timeout_s``, then cancels the nursery; a second SIGTERM/SIGINT cancels at
once.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from hived import __version__
from hived.admin import Admin
from hived.agents.shimrun import SHIMS_DIR, live_runs
from hived.agents.supervisor import Supervisor
from hived.archive import Archive
from hived.configfile import read_config
from hived.core.config import Config, ReloadOutcome, changed_sections, restart_needed
from hived.core.errors import ConfigError, HivedError, RequestError
from hived.core.protocol import Caller, Request
from hived.hub import Hub
from hived.memory import run_gc_sweeps, settle_garbage_collector
from hived.metrics import Sources, make_metrics
from hived.notify.attention import Attention
from hived.notify.rules import Who
from hived.notify.service import NotifyService
from hived.records import Records, announce_recovered
from hived.server.listener import Server
from hived.server.router import Handler, Router
from hived.store import Store
from hived.systemd import Notifier, listen_sockets

if TYPE_CHECKING:
    from hived.cluster.node import Cluster

log = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FORCED: Final = 1
EXIT_CONFIG: Final = 78
STATUS_INTERVAL_S: Final = 5.0
"""How often the STATUS= line for systemd is refreshed (sent only when it changed)."""
ORPHAN_GRACE_S: Final = 5.0
"""SIGTERM to SIGKILL for agents a killed daemon left running."""
STORE_FLUSH_BUDGET_S: Final = 5.0
"""After the shutdown deadline, how long the store still gets to commit what is queued."""


@attrs.define
class Daemon:
    """hived as a whole: builds the services from the config and runs them."""

    config_path: Path
    config: Config
    notifier: Notifier
    started_config: Config = attrs.field(
        default=attrs.Factory(lambda self: self.config, takes_self=True)
    )
    """The config the daemon started with: what a reload cannot change stays as it says."""
    started_at: float = attrs.field(factory=time.time)
    config_loaded_at: float = attrs.field(factory=time.time)
    forced: bool = False
    lost_events: int = 0
    """Events the stop could not write to the store (a full or failing disk): exit 1."""
    restart_requested: bool = False
    """Stop leaving the agents running, then exec the daemon again (``daemon.restart``)."""
    listening: tuple[str, ...] = ()
    """Where the server listens, ``host:port`` each (a reload does not move it)."""
    _stop_requested: trio.Event = attrs.field(factory=trio.Event)
    _services: tuple[Store | NotifyService | Supervisor | Server | Cluster, ...] = ()

    def request_stop(self) -> None:
        """Begin the graceful stop (SIGTERM, SIGINT, ``daemon.stop``)."""
        self._stop_requested.set()

    def request_restart(self) -> None:
        """Stop, leaving every agent running under its shim, then start again in this same
        process (``daemon.restart``): an upgrade or a restart that keeps agents."""
        self.restart_requested = True
        self._stop_requested.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    async def run(self) -> None:
        held = await trio.to_thread.run_sync(live_runs, Path(self.config.state.dir) / SHIMS_DIR)
        store = Store.open(self.config.state, held=held)
        cluster = None
        try:
            if self.config.cluster is not None:
                from hived.cluster.node import Cluster  # only imported when configured

                cluster = Cluster(self.config.cluster, store)
            hub = Hub(history=store if cluster is None else cluster.tap)
            supervisor = Supervisor(
                self.config,
                hub,
                recorder=store,
                recall=store.kept_observed,
                marks=store,
                kept=store.get_session,
            )

            def who(session_id: str) -> Who | None:
                for summary in supervisor.summaries():
                    if summary.id == session_id:
                        return Who(summary.id, summary.name, summary.agent)
                return None

            notify = NotifyService(
                self.config.notify,
                store,
                who,
                attention=Attention(),
                state_dir=Path(self.config.state.dir),
            )
            hub.observer = notify.observe
            router = Router()
            sockets = listen_sockets(os.environ) or None
            server = Server(
                self.config,
                hub,
                router,
                version=__version__,
                hook_sink=supervisor.ingest_hook,
                store_saturated=lambda: store.saturated,
                sockets=sockets,
                echo=echo_enabled(),
            )
            server.metrics = make_metrics(Sources(hub, server, supervisor, store, notify))
            notify.attention.is_open = server.is_open
            admin = Admin(
                self,
                hub=hub,
                store=store,
                supervisor=supervisor,
                server=server,
                notify=notify,
            )
            records = Records(supervisor, store)
            archive = Archive(store, hub, supervisor, records)
            handlers = {
                **supervisor.handlers(),
                **records.handlers(),
                **admin.handlers(),
                **archive.handlers(),
                **notify.handlers(),
            }
            for wire_type, handler in handlers.items():
                router.add(wire_type, handler)
            if cluster is not None:
                cluster.attach(
                    hub, router, server, lambda: [s.to_json() for s in supervisor.summaries()]
                )
            else:
                router.wrap("session.start", _without_cluster)
            self._services = (store, notify, supervisor, server, *([cluster] if cluster else []))
        except BaseException:
            store.close()  # store.serve, which closes it, has not started: release the folder
            raise

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_signals, nursery.cancel_scope)
            nursery.start_soon(self.notifier.serve_watchdog)
            started: list[Store | NotifyService | Supervisor | Server | Cluster] = []
            await nursery.start(store.serve)
            started.append(store)
            await nursery.start(notify.serve)
            started.append(notify)
            await store.reap_orphans(grace_s=ORPHAN_GRACE_S)
            announce_recovered(hub, store.recovered)
            if cluster is not None and not self.stopping:
                # Before the supervisor, so that it is drained after it: the other nodes see
                # this node's sessions stopped before they see the node leave.
                await nursery.start(cluster.serve)
                started.append(cluster)
            if not self.stopping:
                await nursery.start(supervisor.serve)
                started.append(supervisor)
            if not self.stopping:
                try:
                    addresses = await nursery.start(server.serve)
                except OSError as exc:
                    if sockets is not None or isinstance(exc, HivedError):
                        raise
                    raise HivedError(_cannot_listen(self.config.server.listen, exc)) from None
                started.append(server)
                self.listening = tuple(_address(host, port) for host, port in addresses)
                scheme = "https" if self.config.server.tls_cert else "http"
                for where in self.listening:
                    log.info("listening on %s (%s://%s/, WebSocket /v1/ws)", where, scheme, where)
                settle_garbage_collector()
                nursery.start_soon(run_gc_sweeps, lambda: server.accepted_total)
                self.notifier.ready()
                nursery.start_soon(self._serve_status, supervisor, server)
            await self._stop_requested.wait()
            await self._drain(reversed(started))
            nursery.cancel_scope.cancel()

    async def _drain(
        self, services: Iterable[Store | NotifyService | Supervisor | Server | Cluster]
    ) -> None:
        self.notifier.stopping()
        self.notifier.status("stopping")
        timeout_s = self.config.daemon.shutdown_timeout_s
        log.info("stopping: closing connections and sessions (up to %.0f s)", timeout_s)
        store = None
        side_by_side: list[Supervisor | Server] = []
        after: list[NotifyService | Cluster] = []
        for service in services:
            if isinstance(service, Store):
                store = service
            elif isinstance(service, Supervisor | Server):
                side_by_side.append(service)
            else:
                after.append(service)
        with trio.move_on_after(timeout_s) as scope:
            # Connections and sessions stop side by side under the one deadline: a client slow
            # to close must not eat the agents' grace before SIGKILL. The services started
            # before them stop after them, in reverse order (the cluster sees the sessions
            # ended before it leaves).
            async with trio.open_nursery() as draining:
                for service in side_by_side:
                    if isinstance(service, Supervisor) and self.restart_requested:
                        draining.start_soon(service.detach)
                    else:
                        draining.start_soon(service.drain)
            for later in after:
                await later.drain()
        if scope.cancelled_caught:
            log.warning("stop took longer than daemon.shutdown_timeout_s=%.1f", timeout_s)
        if store is not None:
            with trio.move_on_after(STORE_FLUSH_BUDGET_S):
                await store.drain()
            self.lost_events = store.lost_events

    async def _serve_status(self, supervisor: Supervisor, server: Server) -> None:
        """Keep systemd's STATUS= line current (``systemctl status hived`` shows it)."""
        while not self.stopping:
            sessions, clients = supervisor.stats(), server.stats()
            text = (
                f"serving on {', '.join(self.listening)}; {sessions.live} sessions live, "
                f"{clients.connections} clients"
            )
            if text != self.notifier.last_status:
                self.notifier.status(text)
            await trio.sleep(STATUS_INTERVAL_S)

    async def _serve_signals(self, cancel_scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        await self.reload()
                    except Exception:
                        # The reload of one service failed half-way: keep running on what
                        # was applied, and say so; a signal must never end the daemon.
                        log.exception("reload: failed; some settings may not be applied")
                elif self.stopping:
                    log.warning("second %s: stopping at once", signal.Signals(signum).name)
                    self.forced = True
                    cancel_scope.cancel()
                else:
                    log.info("%s: stopping gracefully", signal.Signals(signum).name)
                    self.request_stop()

    async def reload(self) -> ReloadOutcome:
        """Re-read the config file; apply it where it can change live, or keep the old one."""
        self.notifier.reloading()
        try:
            outcome = await self._reload()
        finally:
            self.notifier.ready()
        return outcome

    async def _reload(self) -> ReloadOutcome:
        try:
            new = await trio.to_thread.run_sync(read_config, self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload: %s", problem)
            log.error("reload: kept the running config (%d problems)", len(exc.problems))
            return ReloadOutcome(reloaded=False, errors=exc.problems)
        changed = tuple(changed_sections(self.config, new))
        pending = tuple(restart_needed(self.started_config, new))
        for key in pending:
            log.warning("reload: %s changed; it takes effect at the next restart", key)
        for service in self._services:
            service.reload(new)
        self.config = new
        self.config_loaded_at = time.time()
        log.info("reload: applied (changed: %s)", ", ".join(changed) or "nothing")
        return ReloadOutcome(reloaded=True, changed=changed, restart_needed=pending)


def _without_cluster(handler: Handler) -> Handler:
    """``session.start`` of a daemon without ``[cluster]``: a ``node`` is a mistake."""

    async def handle(request: Request, caller: Caller) -> Any:
        if getattr(request, "node", None) is not None:
            raise RequestError(
                "bad_request", "session.start: node is only for a cluster; this daemon has none"
            )
        return await handler(request, caller)

    return handle


TEST_ECHO_ENV: Final = "HIVED_TEST_ECHO"
"""Set to ``1`` in hived's environment, it serves the test build's echo WebSocket (for the
Autobahn test suite): never on by a config key."""


def echo_enabled() -> bool:
    """Whether this is a test build that serves ``/v1/echo`` (logged loudly when it is)."""
    if os.environ.get(TEST_ECHO_ENV) != "1":
        return False
    log.warning(
        "test build: %s=1: /v1/echo echoes anything to anyone, with no token", TEST_ECHO_ENV
    )
    return True


def _cannot_listen(listen: str, exc: OSError) -> str:
    """One line naming the address, its key and why it cannot be bound."""
    if exc.errno == errno.EADDRINUSE:
        why = "address already in use — is another hived running?"
    else:
        why = exc.strerror or str(exc)
    return f"cannot listen on {listen} (server.listen): {why}"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def run_daemon(config_path: Path, config: Config) -> int:
    """Run hived until it is stopped; the exit status.

    A failure to start (the port taken, a TLS key that does not load, a store that cannot be
    opened) is logged as one line and gives 78 for a config problem, else 1 — never a traceback.
    """
    daemon = Daemon(config_path, config, Notifier.from_environ(os.environ))
    try:
        trio.run(daemon.run)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if not all(isinstance(exc, HivedError | OSError) for exc in leaves):
            raise
        for exc in leaves:
            log.error("cannot run: %s", exc)
        return EXIT_CONFIG if any(isinstance(e, ConfigError) for e in leaves) else EXIT_FORCED
    if daemon.forced:
        return EXIT_FORCED
    if daemon.lost_events:
        log.error(
            "stopped, but %d events could not be written to the store and are lost",
            daemon.lost_events,
        )
        return EXIT_FORCED
    if daemon.restart_requested:
        # The same process, a new program: systemd sees the same main pid; the agents' shims
        # are taken up by the new daemon.
        log.info("restarting: %s", " ".join(sys.orig_argv))
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.execv(sys.executable, sys.orig_argv)
    log.info("stopped")
    return EXIT_OK
