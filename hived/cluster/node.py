"""The cluster service of one node: its engine tasks and its hooks into request handling.

How it works: :class:`Cluster` is built before the hub, so that the hub records through the
mirror's :class:`~hived.cluster.mirror.Tap`; :meth:`Cluster.attach` then wraps the handlers
of the requests that see or act beyond this node:

- ``sessions`` adds the other nodes' summaries (:mod:`hived.cluster.view`);
- ``subscribe`` to a ``session/<id>`` this node does not have follows it from the engine
  (:mod:`hived.cluster.follow`), answering with the stream's ``epoch`` and owning ``node``;
- the requests on one session (and ``session.events``) that this node answers ``not_found``
  go to the node whose summaries hold that session (:mod:`hived.cluster.commands`);
- ``session.start`` with another ``node`` goes there;
- ``status`` gains a ``cluster`` object.

:meth:`Cluster.serve` runs the mirror, the command stream, the heart-beat (which also keeps
this node's summaries in the engine and notices an engine that lost its data) and the feed of
the other nodes' ``sessions`` events into this node's ``sessions`` topic, each naming its
``node``. A node that falls silent has its live sessions announced ``UNREACHABLE`` there, and
their own state again when it is back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any, Final, cast

import attrs
import orjson
import trio
from coredis import PureToken

from hived import __version__
from hived.cluster.commands import Commands
from hived.cluster.engine import ENGINE_ERRORS, Engine, open_engine, retry_delay_s
from hived.cluster.feed import SessionsFeed, read_summaries
from hived.cluster.follow import RemoteTopic
from hived.cluster.keys import SESSIONS_TOPIC, Keys
from hived.cluster.liveness import Liveness, heartbeat_ttl_ms
from hived.cluster.mirror import Mirror, Tap
from hived.cluster.view import merge
from hived.core.config import ClusterConfig
from hived.core.errors import RequestError
from hived.core.events import Event
from hived.core.messages import SessionEvents, Sessions, SessionStart, Subscribe
from hived.core.pages import STATUS_LIST_MAX_BYTES, byte_page, sessions_page
from hived.core.protocol import Caller, Request
from hived.history import History
from hived.hub import Hub, Subscriber
from hived.server.listener import Server
from hived.server.router import Handler, Router

log = logging.getLogger(__name__)

FORWARDED: Final = (
    "session.input",
    "session.approve",
    "session.answer",
    "session.interrupt",
    "session.stop",
    "session.restart",
    "session.resume",
    "session.events",
)
"""Requests on one session that go to its owner when this node does not know the session."""
FILL_PAGE: Final = 1000
LEAVE_BUDGET_S: Final = 2.0
"""What leaving the cluster may take of the daemon's shutdown budget."""


class Cluster:
    """This node among the others (see the module docstring)."""

    def __init__(self, config: ClusterConfig, history: History) -> None:
        self.config = config
        self.node = config.node
        self.keys = Keys(config.key_prefix)
        self._history = history
        self.tap = Tap(history, self._recorded)
        self.liveness = Liveness(config.node)
        self._engine_cm = open_engine(config)
        self._engine: Engine | None = None
        self._mirror: Mirror | None = None
        self._commands: Commands | None = None
        self._feed: SessionsFeed | None = None
        self._hub: Hub | None = None
        self._server: Server | None = None
        self._summaries: Callable[[], list[dict[str, Any]]] = list
        self._originals: dict[str, Handler] = {}
        self._pending: dict[str, None] = {}
        """Topics recorded before the mirror runs."""
        self._remote: dict[str, RemoteTopic] = {}
        """The other nodes' topics followed for clients of this node, by topic."""
        self._following: dict[tuple[int, str], tuple[RemoteTopic, Subscriber]] = {}
        """What each (connection, topic) follows, for ``unsubscribe``."""
        self._nursery: trio.Nursery | None = None
        self._written: set[str] = set()
        """Session ids this node has in its summaries hash."""
        self._leaving = False
        """Set by :meth:`drain`: the heart-beat no longer says this node is alive."""
        self._marker: str | None = None
        """The engine's marker as this node last saw it (a new one: the engine lost its data)."""

    # Wiring.

    def attach(
        self,
        hub: Hub,
        router: Router,
        server: Server,
        summaries: Callable[[], list[dict[str, Any]]],
    ) -> None:
        """Wrap the handlers of ``router`` (after every service registered its own)."""
        self._hub = hub
        self._server = server
        self._summaries = summaries
        self._originals["sessions"] = router.wrap("sessions", self._wrap_sessions)
        self._originals["subscribe"] = router.wrap("subscribe", self._wrap_subscribe)
        self._originals["unsubscribe"] = router.wrap("unsubscribe", self._wrap_unsubscribe)
        self._originals["session.start"] = router.wrap("session.start", self._wrap_start)
        self._originals["status"] = router.wrap("status", self._wrap_status)
        for wire_type in FORWARDED:
            self._originals[wire_type] = router.wrap(wire_type, self._wrap_forwarded)

    def _recorded(self, event: Event) -> None:
        if self._mirror is not None:
            self._mirror.recorded(event)
        else:
            self._pending[event.topic] = None

    # The service.

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        hub = self._hub
        assert hub is not None, "attach() first"
        async with self._engine_cm as engine:
            self._engine = engine
            self._mirror = Mirror(
                engine, self.keys, self.node, self._history, hub.last_seq, self._mirrored
            )
            self._mirror.forget_cursors([*hub.topics(), *self._pending])
            self._pending.clear()
            self._commands = Commands(
                engine, self.keys, self.node, self.config.request_timeout_s, self._run_here
            )
            idle_s = self.config.heartbeat_interval_s / 2
            self._feed = SessionsFeed(engine, self.keys, self.node, hub, self._history, idle_s)
            await self._feed.recover()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._mirror.serve)
                await nursery.start(self._commands.serve)
                nursery.start_soon(self._serve_heartbeat)
                nursery.start_soon(self._feed.serve)
                log.info("cluster: node %s on %s", self.node, _redacted(self.config.url))
                task_status.started()

    def reload(self, config: object) -> None:
        """``[cluster]`` changes take effect at the next start (``restart_needed`` says so)."""

    async def drain(self) -> None:
        """Leave: the last summaries written, and the other nodes see this node gone at once
        rather than after its heart-beat's TTL."""
        self._leaving = True
        if self._engine is None:
            return
        with trio.move_on_after(LEAVE_BUDGET_S), contextlib.suppress(*ENGINE_ERRORS):
            await self._write_summaries()
            await self._engine.delete([self.keys.alive(self.node)])

    # Heart-beat, summaries, liveness.

    def _mirrored(self, topic: str) -> None:
        if topic == SESSIONS_TOPIC and self._nursery is not None:
            self._nursery.start_soon(self._write_summaries_quietly)

    async def _write_summaries_quietly(self) -> None:
        with contextlib.suppress(*ENGINE_ERRORS):  # else the next heart-beat writes them
            await self._write_summaries()

    async def _write_summaries(self) -> None:
        engine = self._engine
        assert engine is not None
        summaries = {s["id"]: orjson.dumps(s).decode() for s in self._summaries()}
        key = self.keys.summaries(self.node)
        if summaries:
            await engine.hset(key, summaries)
        gone = self._written - summaries.keys()
        if gone:
            await engine.hdel(key, list(gone))
        self._written = set(summaries)

    async def _serve_heartbeat(self) -> None:
        engine = self._engine
        assert engine is not None
        interval_s = self.config.heartbeat_interval_s
        ttl_ms = heartbeat_ttl_ms(interval_s)
        beat = orjson.dumps(
            {"node": self.node, "pid": os.getpid(), "version": __version__, "since": time.time()}
        ).decode()
        failures = 0
        while True:
            try:
                await self._check_marker(engine)
                await self._write_summaries()
                if not self._leaving and await self._sessions_mirrored(interval_s / 2):
                    await engine.set(self.keys.alive(self.node), beat, px=ttl_ms)
                await engine.sadd(self.keys.nodes, [self.node])
                nodes = await engine.smembers(self.keys.nodes)
                others = sorted(n for n in nodes if n != self.node)
                alive = {n: bool(await engine.exists([self.keys.alive(n)])) for n in others}
            except ENGINE_ERRORS as exc:
                failures += 1
                if failures == 1:
                    log.warning("cluster: heart-beat failed (%s)", exc)
                await trio.sleep(min(interval_s / 2, retry_delay_s(failures)))
                continue
            failures = 0
            for change in self.liveness.observe(alive):
                news = "back" if change.alive else "silent"
                log.warning("cluster: node %s is %s", change.node, news)
                try:
                    await self._announce(change.node, change.alive)
                except ENGINE_ERRORS as exc:
                    log.warning("cluster: cannot read node %s's sessions (%s)", change.node, exc)
            await trio.sleep(interval_s / 2)

    async def _sessions_mirrored(self, timeout_s: float) -> bool:
        """Whether the engine has this node's ``sessions`` events (waiting up to ``timeout_s``):
        a node says it is alive only then, so that the others, once they have read its
        stream, know every change its sessions went through while it was cut off."""
        assert self._mirror is not None
        with trio.move_on_after(timeout_s):
            await self._mirror.wait_mirrored(SESSIONS_TOPIC)
            return True
        return False

    async def _check_marker(self, engine: Engine) -> None:
        """A marker key tells whether the engine kept its data: gone or new means it did not,
        and every topic is mirrored again from the store."""
        key = f"{self.keys.prefix}:marker"
        await engine.set(key, secrets.token_hex(8), condition=PureToken.NX)
        marker = await engine.get(key)
        if self._marker is not None and marker != self._marker and self._mirror is not None:
            log.warning("cluster: the engine lost its data; mirroring every topic again")
            self._written = set()
            self._mirror.forget_cursors(self._hub.topics() if self._hub else [])
        self._marker = marker

    async def _announce(self, node: str, alive: bool) -> None:
        """Show on ``sessions`` that a node fell silent (its live sessions UNREACHABLE) or is
        back (each of them shown again, unless the feed showed a change meanwhile)."""
        assert self._feed is not None
        if alive:
            self._feed.back(node)
        else:
            self._feed.silent(node, await self._remote_summaries(node))

    async def _remote_summaries(self, node: str) -> list[dict[str, Any]]:
        assert self._engine is not None
        return await read_summaries(self._engine, self.keys, node)

    # Request hooks.

    async def _wrap_sessions_call(self, original: Handler, request: Any, caller: Caller) -> Any:
        assert isinstance(request, Sessions)
        every = attrs.evolve(request, limit=None)
        local: list[dict[str, Any]] = []
        while True:  # every local page: the merged list is paged again as a whole
            reply = await original(every, caller)
            local += reply["sessions"]
            if reply.get("next") is None:
                break
            every = attrs.evolve(every, before=reply["next"])
        remote: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
        if self._engine is not None:
            try:
                nodes = await self._engine.smembers(self.keys.nodes)
                for node in sorted(nodes - {self.node}):
                    alive = self.liveness.is_alive(node)
                    remote[node] = (alive, await self._remote_summaries(node))
            except ENGINE_ERRORS as exc:
                log.warning("cluster: sessions: the engine does not answer (%s)", exc)
        merged = merge(attrs.evolve(request, limit=None), local, self.node, remote)
        return sessions_page(merged, request.limit)

    def _wrap_sessions(self, original: Handler) -> Handler:
        async def handle(request: Request, caller: Caller) -> Any:
            return await self._wrap_sessions_call(original, request, caller)

        return handle

    def _wrap_subscribe(self, original: Handler) -> Handler:
        async def handle(request: Request, caller: Caller) -> Any:
            assert isinstance(request, Subscribe)
            self._stop_following(caller.connection, request.topic)
            hub, engine = self._hub, self._engine
            topic = request.topic
            if topic == SESSIONS_TOPIC or hub is None or engine is None or hub.last_seq(topic):
                return await original(request, caller)
            try:
                meta = await engine.hgetall(self.keys.meta(topic, self.node))
            except ENGINE_ERRORS as exc:
                raise RequestError(
                    "internal", f"subscribe {topic}: the cluster engine does not answer ({exc})"
                ) from None
            owner = meta.get("node")
            if not owner or owner == self.node:
                return await original(request, caller)
            return await self._follow(request, caller, owner, meta)

        return handle

    async def _follow(
        self, request: Subscribe, caller: Caller, owner: str, meta: dict[str, str]
    ) -> dict[str, Any]:
        hub, engine, server, nursery = self._hub, self._engine, self._server, self._nursery
        assert hub is not None
        assert engine is not None
        assert server is not None
        assert nursery is not None
        sub = server.subscriber_of(caller)
        top_text, epoch_text = meta.get("top", "0"), meta.get("epoch", "")
        top = int(top_text) if top_text.isdigit() else 0
        epoch = int(epoch_text) if epoch_text.isdigit() else 0
        since, recovered = request.since, True
        if since is not None and request.epoch is not None and request.epoch != epoch:
            since, recovered = 0, False
        if since is None:
            since = top
        elif since > top:
            since, recovered = top, False
        topic = request.topic
        remote = self._remote.get(topic)
        if remote is None:
            session_id = topic.partition("/")[2]

            async def fill(after: int, upto: int) -> list[tuple[int, str]]:
                return await self._fill(owner, session_id, after, upto)

            stream = self.keys.stream(topic, owner)
            remote = self._remote[topic] = RemoteTopic(engine, stream, hub, fill, top)
        try:
            await remote.join(sub, since)
        except ENGINE_ERRORS as exc:
            raise RequestError(
                "internal", f"subscribe {topic}: the cluster engine does not answer ({exc})"
            ) from None
        self._remote.setdefault(topic, remote)
        self._following = {  # forget connections that ended without unsubscribing
            key: (r, s) for key, (r, s) in self._following.items() if s in r.members
        }
        if sub in remote.members:
            self._following[(caller.connection, topic)] = (remote, sub)
            if not remote.serving:
                remote.serving = True
                nursery.start_soon(self._serve_remote, topic, remote)
        return {
            "topic": topic,
            "recovered": recovered,
            "last_seq": top,
            "epoch": epoch,
            "node": owner,
        }

    async def _serve_remote(self, topic: str, remote: RemoteTopic) -> None:
        try:
            await remote.serve()
        finally:
            remote.serving = False
            if not remote.members and self._remote.get(topic) is remote:
                del self._remote[topic]

    async def _fill(
        self, owner: str, session_id: str, after: int, upto: int
    ) -> list[tuple[int, str]]:
        """The owner's kept events of a session in ``(after, upto]``, read through its commands."""
        commands = self._commands
        assert commands is not None
        caller = Caller(-1, f"cluster@{self.node}", "viewer")
        pairs: list[tuple[int, str]] = []
        cursor = after
        while cursor < upto:
            request = SessionEvents(session=session_id, since=cursor, limit=FILL_PAGE)
            try:
                page = await commands.ask(owner, request, caller)
            except RequestError as exc:
                log.warning("cluster: cannot read %s from %s: %s", session_id, owner, exc.message)
                break
            events = page.get("events", []) if isinstance(page, dict) else []
            for event in events:
                seq = event.get("seq") if isinstance(event, dict) else None
                if isinstance(seq, int) and cursor < seq <= upto:
                    pairs.append((seq, orjson.dumps(event).decode()))
                    cursor = seq
            if not events:
                break
        return pairs

    def _stop_following(self, connection: int, topic: str) -> None:
        following = self._following.pop((connection, topic), None)
        if following is not None:
            remote, sub = following
            remote.leave(sub)

    def _wrap_unsubscribe(self, original: Handler) -> Handler:
        async def handle(request: Request, caller: Caller) -> Any:
            self._stop_following(caller.connection, getattr(request, "topic", ""))
            return await original(request, caller)

        return handle

    def _wrap_forwarded(self, original: Handler) -> Handler:
        async def handle(request: Request, caller: Caller) -> Any:
            try:
                return await original(request, caller)
            except RequestError as exc:
                if exc.code != "not_found" or self._commands is None:
                    raise
                ref = str(getattr(request, "session", ""))
                found = await self._owner_of(ref)
                if found is None:
                    raise
                owner, session_id = found
                forwarded = attrs.evolve(cast(Any, request), session=session_id)
                return await self._commands.ask(owner, forwarded, caller)

        return handle

    async def _owner_of(self, ref: str) -> tuple[str, str] | None:
        """The other node holding the session ``ref`` (an id, an id prefix or a name), and
        its id."""
        engine = self._engine
        if engine is None:
            return None
        try:
            nodes = await engine.smembers(self.keys.nodes)
            for node in sorted(nodes - {self.node}):
                for summary in await self._remote_summaries(node):
                    sid = str(summary.get("id", ""))
                    if sid == ref or sid.startswith(ref.upper()) or summary.get("name") == ref:
                        return node, sid
        except ENGINE_ERRORS as exc:
            log.warning("cluster: cannot look for session %s (%s)", ref, exc)
        return None

    def _wrap_start(self, original: Handler) -> Handler:
        async def handle(request: Request, caller: Caller) -> Any:
            assert isinstance(request, SessionStart)
            if request.node is None or request.node == self.node:
                return await original(attrs.evolve(request, node=None), caller)
            if self._commands is None or not self.liveness.is_alive(request.node):
                raise RequestError(
                    "not_found",
                    f"session.start: node {request.node!r} is not an alive node of this cluster",
                )
            return await self._commands.ask(request.node, attrs.evolve(request, node=None), caller)

        return handle

    def _wrap_status(self, original: Handler) -> Handler:
        async def handle(request: Request, caller: Caller) -> Any:
            status = await original(request, caller)
            if isinstance(status, dict):
                status = {**status, "cluster": self.status()}
            return status

        return handle

    def status(self) -> dict[str, Any]:
        """The ``cluster`` object of ``status``."""
        mirror, commands = self._mirror, self._commands
        every = [{"name": self.node, "alive": True, "self": True}]
        every += [
            {"name": n, "alive": alive, "self": False}
            for n, alive in sorted(self.liveness.alive.items())
        ]
        nodes, _ = byte_page(every, STATUS_LIST_MAX_BYTES)
        return {
            "node": self.node,
            "engine": _redacted(self.config.url),
            "connected": bool(mirror and mirror.connected),
            "events_mirrored": mirror.sent if mirror else 0,
            "requests_answered": commands.answered if commands else 0,
            "following": sum(len(remote.members) for remote in self._remote.values()),
            "nodes": nodes,
            "nodes_total": len(every),
        }

    async def _run_here(self, request: Request, caller: Caller) -> Any:
        """Run a request another node forwarded, with this node's own handlers."""
        handler = self._originals.get(request.type)
        if handler is None or request.type not in (*FORWARDED, "session.start"):
            raise RequestError("forbidden", f"{request.type} is not forwarded between nodes")
        return await handler(request, caller)


def _redacted(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
