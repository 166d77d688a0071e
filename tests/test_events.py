"""The event model: timestamps, usage sums, the one wire encoding."""

from __future__ import annotations

import orjson

from hived.core.events import Event, Usage, encode_event, session_topic, utc_timestamp


def test_timestamps_are_utc_with_milliseconds_and_round_correctly() -> None:
    assert utc_timestamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert utc_timestamp(1764144000.123) == "2025-11-26T08:00:00.123Z"
    assert utc_timestamp(1764144000.9996) == "2025-11-26T08:00:01.000Z"
    assert utc_timestamp(1764144001.0) == "2025-11-26T08:00:01.000Z"


def test_usage_adds_field_by_field() -> None:
    one = Usage(input_tokens=1, output_tokens=2, cost_usd=0.5, turns=1, duration_ms=10)
    two = Usage(
        input_tokens=10,
        output_tokens=20,
        cache_read_tokens=7,
        cache_write_tokens=3,
        reasoning_tokens=5,
        cost_usd=0.25,
        turns=2,
        duration_ms=5,
    )
    total = one + two
    assert total.to_json() == {
        "input_tokens": 11,
        "output_tokens": 22,
        "cache_read_tokens": 7,
        "cache_write_tokens": 3,
        "reasoning_tokens": 5,
        "cost_usd": 0.75,
        "turns": 3,
        "duration_ms": 15,
    }


def test_an_event_encodes_to_the_documented_wire_message() -> None:
    event = Event(
        session_topic("01J"), 7, "2026-11-26T08:00:00.123Z", "text", "01J", {"line": "hi"}
    )
    assert orjson.loads(encode_event(event)) == {
        "type": "event",
        "topic": "session/01J",
        "seq": 7,
        "ts": "2026-11-26T08:00:00.123Z",
        "kind": "text",
        "session": "01J",
        "data": {"line": "hi"},
    }
