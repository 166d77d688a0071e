"""The other nodes' ``sessions`` events, republished on this node's ``sessions`` topic.

How it works: every node mirrors its own ``sessions`` events into its stream
``sessions@<node>`` (entry id = the seq of that node's topic). :class:`SessionsFeed` reads the
other nodes' streams after a cursor per node and publishes each event here with ``data.node``
(who) and ``data.node_seq`` (its seq there). Exactly once, across outages on either side:

- a node cut from the engine mirrors what it missed when it is back, in order, and the
  stream's script refuses what it already has; this node's cursors are untouched meanwhile;
- this node's cursors live in its own store, in the events themselves: at start
  :meth:`SessionsFeed.recover` reads the ``sessions`` topic backwards for the last
  ``node_seq`` of each node, so what happened while this node was down is fed after it, once;
- a node that falls silent has its live sessions shown ``UNREACHABLE`` (a ``state`` event
  without ``node_seq``) and remembered as *marked*. An event of a marked session read from the
  stream shows its state and unmarks it. Once the node is back and the feed has read its
  stream up to its top (the node says it is alive only once its ``sessions`` stream is caught
  up), each session still marked — one whose state did not change meanwhile — is shown again
  with its state from the node's summaries. So a session's change is shown once, and a
  session that did not change is shown again only to undo ``UNREACHABLE``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import orjson
import trio

from hived.cluster.engine import ENGINE_ERRORS, Engine, retry_delay_s
from hived.cluster.keys import SESSIONS_TOPIC, Keys, entry_id, entry_seq
from hived.cluster.view import as_seen
from hived.core.sessions import LIVE_STATES
from hived.history import History
from hived.hub import Hub

log = logging.getLogger(__name__)

FEED_BLOCK_MS: Final = 1000
FEED_COUNT: Final = 256
RECOVER_PAGE: Final = 500
RECOVER_MAX_EVENTS: Final = 20_000
"""How far back :meth:`SessionsFeed.recover` looks for the cursors (older: start at the top)."""


async def read_summaries(engine: Engine, keys: Keys, node: str) -> list[dict[str, Any]]:
    """The session summaries ``node`` keeps in the engine (what is not one is skipped)."""
    raw = await engine.hgetall(keys.summaries(node))
    summaries = []
    for text in raw.values():
        try:
            summary = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if isinstance(summary, dict):
            summaries.append(summary)
    return summaries


def fed_position(frame: str, me: str) -> tuple[str, int] | None:
    """``(node, node_seq)`` of a ``sessions`` event this node republished, else None."""
    try:
        event = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    data = event.get("data") if isinstance(event, dict) else None
    if not isinstance(data, dict):
        return None
    node, seq = data.get("node"), data.get("node_seq")
    if isinstance(node, str) and node != me and isinstance(seq, int) and not isinstance(seq, bool):
        return node, seq
    return None


class SessionsFeed:
    """Feeds the other nodes' ``sessions`` events into this node's (see the module doc)."""

    def __init__(
        self, engine: Engine, keys: Keys, me: str, hub: Hub, history: History, idle_s: float
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._me = me
        self._hub = hub
        self._history = history
        self._idle_s = idle_s
        self.cursors: dict[str, int] = {}
        """Per other node: the last seq of its stream published here."""
        self.marked: dict[str, set[str]] = {}
        """Per silent (or just back) node: its sessions shown UNREACHABLE, not shown since."""
        self._back: set[str] = set()
        """Nodes back from silence whose marked sessions wait to be shown again."""

    async def recover(self) -> None:
        """The cursors from the ``sessions`` events this node's store kept (newest first)."""
        upto = self._hub.last_seq(SESSIONS_TOPIC)
        floor = max(0, upto - RECOVER_MAX_EVENTS)
        found: dict[str, int] = {}
        while upto > floor:
            after = max(floor, upto - RECOVER_PAGE)
            pairs = await self._history.read(SESSIONS_TOPIC, after, upto, RECOVER_PAGE)
            for _, frame in reversed(pairs):
                position = fed_position(frame, self._me)
                if position is not None:
                    found.setdefault(*position)
            upto = after
        self.cursors.update(found)

    def silent(self, node: str, summaries: list[dict[str, Any]]) -> None:
        """``node`` stopped heart-beating: show its live sessions UNREACHABLE."""
        self._back.discard(node)
        marked = self.marked.setdefault(node, set())
        for summary in summaries:
            if summary.get("state") in LIVE_STATES:
                sid = str(summary.get("id"))
                marked.add(sid)
                self._show(node, summary, alive=False)

    def back(self, node: str) -> None:
        """``node`` heart-beats again: its marked sessions are shown again once caught up."""
        if self.marked.get(node):
            self._back.add(node)
        else:
            self.marked.pop(node, None)

    def _show(self, node: str, summary: Mapping[str, Any], *, alive: bool) -> None:
        shown = as_seen(summary, node, alive)
        data = {"state": shown["state"], "node": node, "summary": shown}
        self._hub.publish(SESSIONS_TOPIC, "state", data, session=str(summary.get("id")))

    async def serve(self) -> None:
        """Read the other nodes' streams and publish here, until cancelled."""
        failures = 0
        while True:
            try:
                await self._read_once()
                await self._show_again()
            except ENGINE_ERRORS:
                failures += 1
                await trio.sleep(retry_delay_s(failures))
                continue
            failures = 0

    async def _read_once(self) -> None:
        engine = self._engine
        nodes = await engine.smembers(self._keys.nodes)
        for node in sorted(nodes - {self._me} - self.cursors.keys()):
            self.cursors[node] = await self._top(node)  # a node never fed from: from now on
        if not self.cursors:
            await trio.sleep(self._idle_s)
            return
        streams = {self._keys.stream(SESSIONS_TOPIC, n): n for n in self.cursors}
        got = await engine.xread(
            {stream: entry_id(self.cursors[n]) for stream, n in streams.items()},
            count=FEED_COUNT,
            block=FEED_BLOCK_MS,
        )
        for stream, entries in (got or {}).items():
            node = streams[stream]
            for entry in entries:
                try:
                    seq = entry_seq(str(entry.identifier))
                except ValueError:
                    continue
                if seq > self.cursors[node]:
                    self.cursors[node] = seq
                    self._republish(node, seq, str(entry.field_values.get("f", "")))

    async def _top(self, node: str) -> int:
        top = await self._engine.hget(self._keys.meta(SESSIONS_TOPIC, node), "top")
        return int(top) if top and top.isdigit() else 0

    async def _show_again(self) -> None:
        for node in sorted(self._back):
            if self.cursors.get(node, 0) < await self._top(node):
                continue  # not caught up yet: what the stream has is shown first
            marked = self.marked.pop(node, set())
            self._back.discard(node)
            for summary in await read_summaries(self._engine, self._keys, node):
                if str(summary.get("id")) in marked and summary.get("state") in LIVE_STATES:
                    self._show(node, summary, alive=True)

    def _republish(self, node: str, seq: int, frame: str) -> None:
        try:
            event = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict) or not isinstance(event.get("kind"), str):
            return
        data = event.get("data")
        data = {**data} if isinstance(data, dict) else {}
        data.update(node=node, node_seq=seq)
        summary = data.get("summary")
        if isinstance(summary, dict):
            data["summary"] = {**summary, "node": node}
        session = event.get("session")
        if isinstance(session, str):
            self.marked.get(node, set()).discard(session)
        hub_session = session if isinstance(session, str) else None
        self._hub.publish(SESSIONS_TOPIC, event["kind"], data, hub_session)
