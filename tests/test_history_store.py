"""The store's history features: the search index, the usage ledger, forgetting, retention."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hived.core.config import PositiveInt, StateConfig
from hived.core.events import KINDS, Event, Usage, encode_event, session_topic
from hived.core.history import MAX_TEXT_CHARS, search_text, search_text_json, usage_delta
from hived.core.pages import LABEL_MAX_CHARS, LIST_REPLY_MAX_BYTES
from hived.core.sessions import SessionSummary, State
from hived.store import Store, schema
from hived.store.indexer import follow_step
from hived.store.search import QueryError, SearchFilters, split_marks

A = "01JAAAAAAAAAAAAAAAAAAAAAAA"
B = "01JBBBBBBBBBBBBBBBBBBBBBBB"


def make_state(tmp_path: Path, **changes: Any) -> StateConfig:
    return StateConfig(dir=str(tmp_path / "state"), sync_interval_ms=PositiveInt(20), **changes)


class Feed:
    """Records events into a store with consecutive seqs per topic, as the hub would."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seqs: dict[str, int] = {}

    def event(
        self, session: str, kind: str, data: Mapping[str, Any], ts: str, topic: str | None = None
    ) -> Event:
        topic = topic or session_topic(session)
        seq = self.seqs[topic] = self.seqs.get(topic, 0) + 1
        event = Event(topic, seq, ts, kind, session, dict(data))
        self.store.record(event, encode_event(event))
        return event

    def state(self, summary: SessionSummary, ts: str) -> None:
        data = {"state": str(summary.state), "summary": summary.to_json()}
        self.event(summary.id, "state", data, ts, topic="sessions")
        self.event(summary.id, "state", data, ts)
        self.store.record_session(summary)


def summary(session_id: str, agent: str = "claude", **changes: Any) -> SessionSummary:
    return SessionSummary(
        id=session_id,
        name=f"name-{session_id[-1]}",
        agent=agent,
        state=changes.pop("state", State.WORKING),
        started_at="2026-12-01T08:00:00.000Z",
        cwd=f"/srv/{agent}",
        **changes,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store.open(make_state(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(opened.serve)
        yield opened
        nursery.cancel_scope.cancel()


def fill(feed: Feed) -> dict[str, Event]:
    """Two sessions with messages, tool calls, results, stderr and prompts."""
    day = "2026-12-0{}T10:00:00.000Z"
    named = {
        "prompt": feed.event(A, "input", {"text": "run the database migration"}, day.format(1)),
        "message": feed.event(
            A, "message", {"text": "I will run the migration now."}, day.format(1)
        ),
        "tool": feed.event(
            A,
            "tool_use",
            {"name": "Bash", "input": {"command": "alembic upgrade head"}},
            day.format(1),
        ),
        "result": feed.event(
            A, "tool_result", {"content": [{"type": "text", "text": "migration ok"}]}, day.format(2)
        ),
        "edit": feed.event(
            B,
            "tool_use",
            {"name": "Edit", "input": {"file_path": "src/hived/store/sql.py"}},
            day.format(2),
        ),
        "stderr": feed.event(B, "stderr", {"line": "warning: migration pending"}, day.format(3)),
        "state": feed.event(B, "state", {"state": "WORKING", "text": "migration"}, day.format(3)),
    }
    return named


async def hits(store: Store, query: str, **filters: Any) -> list[int]:
    found, _ = await store.search(query, SearchFilters(**filters), 50)
    return [hit["seq"] for hit in found]


# The searchable text.


def test_search_text_takes_what_people_search_for() -> None:
    assert search_text("message", {"text": "hello"}) == "hello"
    assert search_text("tool_use", {"name": "Bash", "input": {"command": "ls -l"}}) == "Bash\nls -l"
    assert search_text("tool_result", {"content": [{"type": "text", "text": "out"}]}) == "out"
    assert search_text("stderr", {"line": "boom"}) == "boom"
    assert search_text("input", {"text": "fix it"}) == "fix it"
    assert search_text("state", {"state": "WORKING"}) is None
    assert search_text("message", {"text": "  "}) is None
    assert search_text("message", {"text": "a\x02b\x03"}) == "a b "


def test_usage_delta_is_the_difference_of_running_totals() -> None:
    first = usage_delta(None, {"input_tokens": 10, "cost_usd": 0.5, "turns": 1})
    assert first["input_tokens"] == 10
    assert first["turns"] == 1
    later = usage_delta(
        {"input_tokens": 10, "cost_usd": 0.5, "turns": 1},
        {"input_tokens": 25, "cost_usd": 0.75, "turns": 2},
    )
    assert later["input_tokens"] == 15
    assert later["cost_usd"] == 0.25
    assert later["turns"] == 1
    restarted = usage_delta({"input_tokens": 100}, {"input_tokens": 7})
    assert restarted["input_tokens"] == 7


# Search.


async def test_a_query_finds_exactly_the_matching_events(store: Store) -> None:
    named = fill(Feed(store))
    await store.index_now()
    want = {named[key].seq for key in ("prompt", "message", "result")}
    assert set(await hits(store, "migration", session=A)) == want
    found, cursor = await store.search("migration", SearchFilters(), 50)
    assert [(h["session"], h["seq"]) for h in found] == [
        (B, named["stderr"].seq),
        (A, named["result"].seq),
        (A, named["message"].seq),
        (A, named["prompt"].seq),
    ]
    assert cursor is None
    assert await hits(store, "alembic") == [named["tool"].seq]
    assert await hits(store, '"src/hived/store/sql.py"') == [named["edit"].seq]
    assert await hits(store, "migrat*", kinds=("stderr",)) == [named["stderr"].seq]
    assert await hits(store, "nothing_like_this") == []


async def test_hits_link_to_their_topic_and_seq_with_a_marked_snippet(store: Store) -> None:
    named = fill(Feed(store))
    await store.index_now()
    found, _ = await store.search("alembic", SearchFilters(), 50)
    (hit,) = found
    assert hit["topic"] == session_topic(A)
    assert hit["seq"] == named["tool"].seq
    assert hit["kind"] == "tool_use"
    assert hit["ts"] == named["tool"].ts
    start, end = hit["marks"][0]
    assert hit["snippet"][start:end] == "alembic"
    assert split_marks("a \x02b\x03 c") == ("a b c", [[2, 3]])


async def test_filters_by_time_template_and_paging_by_cursor(store: Store) -> None:
    feed = Feed(store)
    store.record_session(summary(A, agent="claude"))
    store.record_session(summary(B, agent="codex"))
    named = fill(feed)
    await store.index_now()
    assert await hits(store, "migration", agent="codex") == [named["stderr"].seq]
    since = await hits(store, "migration", since="2026-12-02T00:00:00.000Z")
    assert since == [named["stderr"].seq, named["result"].seq]
    until = await hits(store, "migration", until="2026-12-02T00:00:00.000Z")
    assert until == [named["message"].seq, named["prompt"].seq]
    pages: list[int] = []
    before = None
    while True:
        page, before = await store.search("migration", SearchFilters(), 1, before)
        pages += [hit["seq"] for hit in page]
        if before is None:
            break
    assert pages == await hits(store, "migration")
    assert await hits(store, "migration", session="01JNOSUCHSESSION000000000") == []


async def test_search_pages_stop_at_the_byte_cap_and_next_reaches_every_hit(
    store: Store,
) -> None:
    # Each hit carries its session's name: 60 hits of a 100 kB name are 6 MB unbounded.
    store.record_session(attrs.evolve(summary(A), name="a" * 100_000))
    store.record_session(attrs.evolve(summary(B), name="b" * 2 * LIST_REPLY_MAX_BYTES))
    feed = Feed(store)
    for n in range(60):
        feed.event(A, "message", {"text": f"deploy step {n}"}, "2026-12-01T10:00:00.000Z")
    lone = feed.event(B, "message", {"text": "deploy alone"}, "2026-12-02T10:00:00.000Z")
    await store.index_now()
    seqs: list[int] = []
    sizes: list[int] = []
    cursor = None
    while True:
        found, cursor = await store.search("deploy", SearchFilters(), 500, cursor)
        sizes.append(len(orjson.dumps(found)))
        seqs += [hit["seq"] for hit in found]
        if cursor is None:
            break
    # The hit bigger than a page comes alone; the others two to a page, none over the cap.
    assert seqs == [lone.seq, *range(60, 0, -1)]
    assert sizes[0] > LIST_REPLY_MAX_BYTES
    assert len(sizes) == 31
    assert max(sizes[1:]) <= LIST_REPLY_MAX_BYTES


async def test_a_last_page_of_exactly_limit_hits_has_no_next(store: Store) -> None:
    store.record_session(summary(A))
    feed = Feed(store)
    for n in range(3):
        feed.event(A, "message", {"text": f"deploy step {n}"}, "2026-12-01T10:00:00.000Z")
    await store.index_now()
    found, cursor = await store.search("deploy", SearchFilters(), 3)
    assert (len(found), cursor) == (3, None)


@pytest.mark.parametrize(
    "query",
    [
        '"unterminated',
        "NEAR(",
        "NEAR(a b, x)",
        "nosuchcolumn:migration",
        "*",
        "migration AND",
        "(migration",
        "migration)",
        "text:(a) OR x:(b",
        "'; DROP TABLE events; --",
        "^",
        "AND OR NOT",
    ],
)
async def test_bad_queries_are_query_errors_never_internal(store: Store, query: str) -> None:
    fill(Feed(store))
    await store.index_now()
    try:
        await store.search(query, SearchFilters(), 50)
    except QueryError as exc:
        message = str(exc)
        assert message
        assert "Traceback" not in message
    # Either way the store still answers, and the events table is intact.
    assert await hits(store, "alembic")


@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ('"run the migration"', ["message"]),
        ("NEAR(run migration, 3)", ["message", "prompt"]),
        ("text:alembic", ["tool"]),
        ("migra*", ["stderr", "result", "message", "prompt"]),
        ("migration NOT run", ["stderr", "result"]),
        ('"DROP TABLE"', []),
    ],
)
async def test_fts5_syntax_gives_correct_results(store: Store, query: str, keys: list[str]) -> None:
    named = fill(Feed(store))
    await store.index_now()
    assert await hits(store, query) == [named[key].seq for key in keys]


# The usage ledger.


async def test_usage_is_recorded_per_turn_and_grouped(store: Store) -> None:
    feed = Feed(store)
    a1 = summary(A, usage=Usage(input_tokens=10, output_tokens=20, cost_usd=0.01, turns=1))
    feed.state(a1, "2026-12-01T10:00:00.000Z")
    a2 = summary(
        A,
        usage=Usage(input_tokens=15, output_tokens=50, cost_usd=0.03, turns=2),
        state=State.EXITED,
    )
    feed.state(a2, "2026-12-02T10:00:00.000Z")
    b1 = summary(
        B, agent="codex", usage=Usage(input_tokens=7, cache_read_tokens=3, cost_usd=0.5, turns=1)
    )
    feed.state(b1, "2026-12-02T11:00:00.000Z")
    # A state change with the same usage adds nothing.
    feed.state(b1, "2026-12-03T11:00:00.000Z")
    await store.index_now()
    by_day = await store.usage("day", None, None)
    assert [(r["key"], r["input_tokens"], r["turns"], r["sessions"]) for r in by_day["rows"]] == [
        ("2026-12-01", 10, 1, 1),
        ("2026-12-02", 12, 2, 2),
    ]
    assert by_day["total"] == {
        "input_tokens": 22,
        "output_tokens": 50,
        "cache_read_tokens": 3,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": 0.53,
        "turns": 3,
        "sessions": 2,
    }
    one_day = await store.usage("day", "2026-12-02T00:00:00.000Z", "2026-12-02T10:30:00.000Z")
    assert one_day["total"]["output_tokens"] == 30
    assert one_day["total"]["cost_usd"] == 0.02
    # Part days at either end come from the turns, whole days from the daily sums.
    spanning = await store.usage("day", "2026-12-01T09:00:00.000Z", "2026-12-02T10:30:00.000Z")
    assert [(r["key"], r["input_tokens"]) for r in spanning["rows"]] == [
        ("2026-12-01", 10),
        ("2026-12-02", 5),
    ]
    late = await store.usage("session", "2026-12-01T10:00:00.001Z", None)
    assert [(r["key"], r["input_tokens"]) for r in late["rows"]] == [(B, 7), (A, 5)]
    whole = await store.usage("day", "2026-12-02", "2026-12-03")
    assert whole["total"]["input_tokens"] == 12
    by_template = await store.usage("template", None, None)
    assert [r["key"] for r in by_template["rows"]] == ["codex", "claude"]
    by_session = await store.usage("session", None, None)
    assert [(r["key"], r["label"]) for r in by_session["rows"]] == [(B, "name-B"), (A, "name-A")]
    by_cwd = await store.usage("cwd", None, None)
    assert {r["key"] for r in by_cwd["rows"]} == {"/srv/claude", "/srv/codex"}
    # Renamed at a later turn (its label is its last name): a long name is cut.
    a3 = attrs.evolve(a2, name="n" * 100_000, usage=Usage(input_tokens=16, turns=3))
    feed.state(a3, "2026-12-04T10:00:00.000Z")
    await store.index_now()
    labels = {r["key"]: r["label"] for r in (await store.usage("session", None, None))["rows"]}
    assert labels[A] == "n" * (LABEL_MAX_CHARS - 1) + "…"


# Indexing in the background, forgetting, retention.


async def test_an_existing_store_is_indexed_in_the_background(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    store = Store.open(state)
    named = fill(Feed(store))
    await store.drain()
    with store._writer:
        store._writer.execute("DELETE FROM events_fts")
        store._writer.execute("DELETE FROM history_state")
    store.close()
    reopened = Store.open(state)
    assert reopened.stats().index.followed_upto == 0
    async with trio.open_nursery() as nursery:
        await nursery.start(reopened.serve)
        with trio.fail_after(10):
            while reopened.stats().index.followed_upto < 7:  # noqa: ASYNC110 (a worker thread)
                await trio.sleep(0.01)
        assert reopened.stats().index.state == "ready"
        assert await hits(reopened, "alembic") == [named["tool"].seq]
        nursery.cancel_scope.cancel()


def old_store(state: StateConfig) -> None:
    """A store as hived wrote it before the search index (schema version 3), with 2 events."""
    folder = Path(state.dir)
    folder.mkdir(mode=0o700)
    old = sqlite3.connect(folder / schema.DB_NAME)
    for script in schema.MIGRATIONS[:3]:
        old.executescript(script)
    old.executescript(
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        "INSERT INTO schema_version VALUES (3);"
        "INSERT INTO topics VALUES ('session/OLD', 1, 2);"
        "INSERT INTO events (topic, seq, ts, kind, session, data) VALUES "
        "('session/OLD', 1, '2026-12-04T00:00:00.000Z', 'input', 'OLD', '{\"text\":\"kept words\"}'),"
        "('session/OLD', 2, '2026-12-04T00:00:01.000Z', 'stderr', 'OLD', '{\"line\":\"old words\"}');"
    )
    old.close()


async def test_a_store_of_the_previous_schema_is_migrated_and_indexed(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    old_store(state)
    store = Store.open(state)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        with trio.fail_after(10):
            while store.stats().index.followed_upto < 2:  # noqa: ASYNC110 (a worker thread)
                await trio.sleep(0.01)
        assert await hits(store, "words") == [2, 1]
        nursery.cancel_scope.cancel()


def test_a_step_indexes_each_event_once(tmp_path: Path) -> None:
    conn = schema.open_database(schema.prepare_files(Path(tmp_path)))
    conn.execute(
        "INSERT INTO events (topic, seq, ts, kind, session, data) VALUES "
        "('session/X', 1, 't', 'message', 'X', '{\"text\":\"hello world\"}')"
    )
    assert follow_step(conn, 10).read == 1
    assert follow_step(conn, 10).read == 0
    assert conn.execute("SELECT count(*) FROM events_fts").fetchone() == (1,)


EDGE_CASES: Final = [
    ("text", {"line": "flood 1 2 ........"}),
    ("stderr", {"line": "warning: a\x02marked\x03 line", "note": "cut"}),
    ("text", {"line": " \t\u3000\x1c\xa0 "}),  # spaces only, as str.strip() sees them
    ("text", {"line": "x" * (MAX_TEXT_CHARS - 1) + "é✓" + "y" * 10}),  # past the cap, not ASCII
    ("text", {"line": 7}),
    ("text", {"text": "no line"}),
    ("stderr", {"line": None}),
    ("input", {"text": "fix the tests"}),
    ("input", {"text": ["not", "a string"]}),
    ("message", {"text": "hello \x03world"}),
    ("tool_use", {"name": "Bash", "input": {"command": "ls", "path": ["a", 1]}}),
    ("tool_result", {"content": [{"type": "text", "text": "ok"}, None]}),
    ("hook", {"tool_name": "Edit", "tool_input": {"file_path": "/x"}}),
    ("state", {"state": "WORKING", "line": "not searched"}),
    ("rate_limit", {"text": "not searched"}),
]


@functools.cache
def empty_database() -> sqlite3.Connection:
    """A database with hived's tables, made once: each test copies it."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    for script in schema.MIGRATIONS:
        conn.executescript(script)
    return conn


def indexed_texts(events: list[tuple[str, str]]) -> dict[int, str]:
    """Store events (kind, data as JSON text) in a new database, take one follow step: the
    text indexed for each event id."""
    conn = sqlite3.connect(":memory:")
    empty_database().backup(conn)
    conn.create_function(schema.SEARCH_TEXT_FUNCTION, 2, search_text_json, deterministic=True)
    conn.executemany(
        "INSERT INTO events (topic, seq, ts, kind, session, data) VALUES ('t', ?, 't', ?, 'S', ?)",
        [(seq, kind, data) for seq, (kind, data) in enumerate(events, 1)],
    )
    conn.commit()
    assert follow_step(conn, len(events) + 1).read == len(events)
    texts = dict(conn.execute("SELECT rowid, text FROM events_fts").fetchall())
    conn.close()
    return texts


def expected_texts(events: list[tuple[str, str]]) -> dict[int, str]:
    found = {i: search_text_json(kind, data) for i, (kind, data) in enumerate(events, 1)}
    return {i: text for i, text in found.items() if text is not None}


def test_the_index_holds_the_text_search_text_gives() -> None:
    # Text in SQL for some kinds, in Python for the others: the same texts as search_text.
    events = [(kind, orjson.dumps(data).decode()) for kind, data in EDGE_CASES]
    events += [("text", "not json"), ("message", "[1, 2]"), ("stderr", '"a string"')]
    texts = indexed_texts(events)
    assert texts == expected_texts(events)
    assert texts[1] == "flood 1 2 ........"
    assert texts[2] == "warning: a marked  line"
    assert len(texts[4]) == MAX_TEXT_CHARS
    assert 3 not in texts


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(KINDS)),
            st.dictionaries(
                st.sampled_from(["line", "text", "content", "name", "input", "prompt"]),
                st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
                | st.integers(min_value=-(2**63), max_value=2**63 - 1)
                | st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)))),
            ),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_any_event_is_indexed_with_the_text_search_text_gives(
    events: list[tuple[str, dict[str, Any]]],
) -> None:
    as_stored = [(kind, orjson.dumps(data).decode()) for kind, data in events]
    assert indexed_texts(as_stored) == expected_texts(as_stored)


async def test_forget_removes_every_trace(store: Store) -> None:
    feed = Feed(store)
    feed.state(
        summary(A, usage=Usage(input_tokens=5, turns=1), state=State.EXITED),
        "2026-12-01T09:00:00.000Z",
    )
    feed.state(
        summary(B, usage=Usage(input_tokens=6, turns=1), state=State.EXITED),
        "2026-12-01T09:00:00.000Z",
    )
    fill(feed)
    await store.index_now()
    deleted = await store.forget(A)
    assert deleted == 6
    conn = sqlite3.connect(store.path)
    for table, column in [
        ("events", "session"),
        ("sessions", "id"),
        ("usage_ledger", "session"),
        ("usage_totals", "session"),
    ]:
        assert conn.execute(
            f"SELECT count(*) FROM {table} WHERE {column} = ?", (A,)
        ).fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM topics WHERE topic = ?", (session_topic(A),)
    ).fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM events_fts WHERE events_fts MATCH 'alembic'"
    ).fetchone() == (0,)
    assert await hits(store, "migration") == [feed.seqs[session_topic(B)] - 1]
    assert (await store.usage("session", None, None))["total"]["sessions"] == 1
    assert store.forgotten(A) is not None
    assert store.forgotten(B) is None
    assert await store.read(session_topic(A), 0, 100, 100) == []
    conn.close()


async def test_retention_takes_the_index_entries_with_the_events(store: Store) -> None:
    fill(Feed(store))
    await store.index_now()
    assert await store.prune() == 0
    store._retention.max_bytes = 1
    assert await store.prune() > 0
    conn = sqlite3.connect(store.path)
    assert conn.execute("SELECT count(*) FROM events_fts").fetchone() == (0,)
    conn.close()
    assert await hits(store, "migration") == []


async def test_events_after_the_newest_were_deleted_are_still_indexed(store: Store) -> None:
    # SQLite gives a new event the largest id + 1: once the newest events are gone (their
    # session forgotten, or retention emptied the store), ids come again that the follower
    # had passed; it must go back for them.
    feed = Feed(store)
    fill(feed)
    feed.event(B, "message", {"text": "newest words"}, "2026-12-04T10:00:00.000Z")
    await store.index_now()
    await store.forget(B)
    later = feed.event(
        A, "message", {"text": "written after the forgetting"}, "2026-12-05T10:00:00.000Z"
    )
    await store.index_now()
    assert await hits(store, "forgetting") == [later.seq]
    store._retention.max_bytes = 1
    await store.prune()
    last = feed.event(A, "message", {"text": "after an empty store"}, "2026-12-06T10:00:00.000Z")
    await store.index_now()
    assert await hits(store, "empty") == [last.seq]
