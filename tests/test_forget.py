"""Forgetting in the hub: a forgotten session's ring is dropped, and subscribing says so."""

from __future__ import annotations

import pytest

from hived.core.errors import RequestError
from hived.history import MemoryHistory
from hived.hub import Hub

TOPIC = "session/01JFORGOTTEN"


class ForgettingHistory(MemoryHistory):
    """A history that knows which sessions were forgotten (as the store does after a restart)."""

    def forgotten(self, session_id: str) -> str | None:
        return "2026-12-05T10:00:00.000Z" if f"session/{session_id}" == TOPIC else None


async def test_a_forgotten_topic_loses_its_ring_and_refuses_subscribers() -> None:
    hub = Hub()
    hub.publish(TOPIC, "message", {"text": "secret"}, session="01JFORGOTTEN")
    hub.publish("session/01JKEPT", "message", {"text": "kept"}, session="01JKEPT")
    kept_bytes = hub.stats().ring_bytes
    hub.forget(TOPIC, "2026-12-05T10:00:00.000Z")
    assert hub.stats().ring_bytes < kept_bytes
    sub = hub.subscriber(16)
    with pytest.raises(RequestError, match=r"forgotten at 2026-12-05T10:00:00\.000Z") as refused:
        await hub.subscribe(sub, TOPIC, 0)
    assert refused.value.code == "not_found"
    result = await hub.subscribe(sub, "session/01JKEPT", 0)
    assert result.last_seq == 1


async def test_the_history_says_what_was_forgotten_before_a_restart() -> None:
    hub = Hub(history=ForgettingHistory())
    with pytest.raises(RequestError, match="forgotten"):
        await hub.subscribe(hub.subscriber(16), TOPIC, None)
