"""The feed of the other nodes' ``sessions`` events, without an engine: where it resumes after a
restart, and which sessions it shows again once a silent node is back."""

from __future__ import annotations

from typing import Any, cast

import orjson

from hived.cluster.engine import Engine
from hived.cluster.feed import SessionsFeed, fed_position
from hived.cluster.keys import Keys
from hived.history import MemoryHistory
from hived.hub import Hub


def feed_over(hub: Hub, history: MemoryHistory) -> SessionsFeed:
    # The engine is never called by what these tests drive.
    return SessionsFeed(cast(Engine, None), Keys("t"), "a", hub, history, 0.1)


async def states(history: MemoryHistory, hub: Hub) -> list[tuple[Any, ...]]:
    pairs = await history.read("sessions", 0, hub.last_seq("sessions"), 100)
    frames = [orjson.loads(f) for _, f in pairs]
    return [(e["session"], e["data"]["state"], e["data"].get("node_seq")) for e in frames]


def test_a_republished_event_names_its_position_and_no_other_does() -> None:
    def frame(data: dict[str, Any]) -> str:
        return orjson.dumps({"type": "event", "topic": "sessions", "data": data}).decode()

    assert fed_position(frame({"node": "b", "node_seq": 7}), "a") == ("b", 7)
    assert fed_position(frame({"node": "a", "node_seq": 7}), "a") is None, "this node's own"
    assert fed_position(frame({"node": "b", "state": "UNREACHABLE"}), "a") is None, "a mark"
    assert fed_position(frame({"node": "b", "node_seq": True}), "a") is None
    assert fed_position("not json", "a") is None


async def test_after_a_restart_the_feed_resumes_after_the_last_event_of_each_node() -> None:
    history = MemoryHistory()
    hub = Hub(history=history)
    hub.publish("sessions", "state", {"state": "RUNNING", "node": "b", "node_seq": 4}, "S1")
    hub.publish("sessions", "state", {"state": "RUNNING", "node": "c", "node_seq": 9}, "S2")
    hub.publish("sessions", "state", {"state": "EXITED", "node": "b", "node_seq": 6}, "S1")
    hub.publish("sessions", "state", {"state": "RUNNING"}, "S3")  # this node's own
    hub.publish("sessions", "state", {"state": "UNREACHABLE", "node": "c"}, "S2")
    feed = feed_over(Hub(history=history), history)
    await feed.recover()
    assert feed.cursors == {"b": 6, "c": 9}


async def test_a_session_that_changed_while_its_node_was_silent_is_not_shown_again() -> None:
    history = MemoryHistory()
    hub = Hub(history=history)
    feed = feed_over(hub, history)
    feed.cursors["b"] = 3
    feed.silent("b", [{"id": "S1", "state": "RUNNING"}, {"id": "S2", "state": "WAITING"}])
    feed.silent("b", [{"id": "S3", "state": "EXITED"}])
    assert feed.marked == {"b": {"S1", "S2"}}, "only live sessions are marked"
    changed = {"type": "event", "session": "S1", "kind": "state", "data": {"state": "EXITED"}}
    feed._republish("b", 4, orjson.dumps(changed).decode())
    assert feed.marked == {"b": {"S2"}}, "S1's own event showed it"
    feed.back("b")
    assert await states(history, hub) == [
        ("S1", "UNREACHABLE", None),
        ("S2", "UNREACHABLE", None),
        ("S1", "EXITED", 4),
    ]
