"""The outbox's ride on the store writer: a statement commits in the transaction of the events
queued before it, across a batch cut in two and a failed write; and the outbox's SQL."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import trio

from hived.core.config import StateConfig
from hived.core.events import Event, encode_event
from hived.core.pages import LIST_REPLY_MAX_BYTES
from hived.notify import outbox
from hived.notify.rules import Birth, Item
from hived.store import Store, writer
from tests.test_store import make_state, wait_until

# Each probe row says how many events its transaction could see when it ran.
PROBE = "INSERT INTO probe (label, seen) SELECT ?, count(*) FROM events"


@pytest.fixture
def state(tmp_path: Path) -> StateConfig:
    return make_state(tmp_path)


@pytest.fixture
async def store(state: StateConfig) -> AsyncIterator[Store]:
    opened = Store.open(state)
    await opened.run(lambda conn: conn.execute("CREATE TABLE probe (label TEXT, seen INTEGER)"))
    async with trio.open_nursery() as nursery:
        await nursery.start(opened.serve)
        yield opened
        nursery.cancel_scope.cancel()


def publish(store: Store, seq: int) -> Event:
    event = Event("t", seq, "2026-12-05T00:00:00.000Z", "text", None, {"line": seq})
    store.record(event, encode_event(event))
    return event


def probes(store: Store) -> dict[str, int]:
    with sqlite3.connect(store.path) as conn:
        return dict(conn.execute("SELECT label, seen FROM probe").fetchall())


async def test_a_statement_commits_with_the_events_before_it_across_a_cut_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "BATCH_EVENTS", 3)
    for seq in range(1, 6):
        publish(store, seq)
        store.add_statement(PROBE, (f"after {seq}",))
        assert not store.committed("t", seq)
    await store.drain()
    # Events 1-3 went in one transaction, 4-5 in the next: each probe ran in its events' one.
    assert probes(store) == {"after 1": 3, "after 2": 3, "after 3": 3, "after 4": 5, "after 5": 5}
    assert store.committed("t", 5)


async def test_a_failed_write_keeps_each_statement_behind_its_events(store: Store) -> None:
    publish(store, 1)
    store.add_statement(PROBE, ("after 1",))
    await store.drain()
    await store.run(lambda conn: conn.execute("PRAGMA query_only = 1"))
    publish(store, 2)
    store.add_statement(PROBE, ("after 2",))
    await wait_until(lambda: store.stats().error is not None)
    publish(store, 3)
    store.add_statement(PROBE, ("after 3",))
    await store.run(lambda conn: conn.execute("PRAGMA query_only = 0"))
    await wait_until(lambda: store.pending == 0)
    await store.drain()
    assert probes(store) == {"after 1": 1, "after 2": 3, "after 3": 3}


def birth(id_: str, born_at: float) -> Birth:
    item = Item(event="permission", title="a asks permission", session="S1", request_id="r1")
    return Birth(id_, "hook", "r1", "session/S1", 3, born_at, born_at + 5, item)


async def test_the_outbox_keeps_a_notification_from_birth_to_outcome(store: Store) -> None:
    publish(store, 1)
    for id_, born_at in (("a", 10.0), ("b", 11.0), ("c", 12.0)):
        store.add_statement(outbox.INSERT, outbox.insert_params(birth(id_, born_at)))
    store.add_statement(outbox.DROP, ("answered", 13.0, "c"))
    await store.drain()
    pending = await store.run(outbox.load_pending)
    assert [(b, attempts) for b, attempts in pending] == [
        (birth("a", 10.0), 0),
        (birth("b", 11.0), 0),
    ]
    await store.run(outbox.mark, ["a"], "pending", "HTTP 503", 14.0, True)
    await store.run(outbox.mark, ["b"], "delivered", None, 15.0, True)
    rows = {row["id"]: row for row in (await store.run(outbox.recent, 10, None))[0]}
    assert [row["id"] for row in (await store.run(outbox.recent, 10, None))[0]] == ["c", "b", "a"]
    assert (rows["a"]["status"], rows["a"]["outcome"], rows["a"]["attempts"]) == (
        "pending",
        "HTTP 503",
        1,
    )
    assert (rows["b"]["status"], rows["b"]["done_at"]) == ("delivered", 15.0)
    assert (rows["c"]["status"], rows["c"]["outcome"]) == ("dropped", "answered")
    assert rows["a"]["item"]["title"] == "a asks permission"
    assert await store.run(outbox.counts) == {
        ("hook", "pending"): 1,
        ("hook", "delivered"): 1,
        ("hook", "dropped"): 1,
    }


async def test_settled_notifications_are_pruned_and_pending_ones_kept(store: Store) -> None:
    publish(store, 1)
    for id_ in ("old", "new", "waiting"):
        store.add_statement(outbox.INSERT, outbox.insert_params(birth(id_, 1.0)))
    await store.drain()
    await store.run(outbox.mark, ["old"], "delivered", None, 100.0, True)
    await store.run(outbox.mark, ["new"], "delivered", None, 300.0, True)
    assert await store.run(outbox.prune, 200.0) == 1
    assert sorted(row["id"] for row in (await store.run(outbox.recent, 10, None))[0]) == [
        "new",
        "waiting",
    ]


def long_birth(id_: str, born_at: float, title_bytes: int) -> Birth:
    item = Item(event="permission", title="t" * title_bytes, session="S1", name="n")
    return Birth(id_, "hook", id_, "session/S1", 1, born_at, born_at, item)


async def read_pages(store: Store, limit: int) -> tuple[list[str], list[int]]:
    """Every notification's id, page after page by ``next``, and each page's JSON size."""
    ids: list[str] = []
    sizes: list[int] = []
    after = None
    while True:
        rows, cursor = await store.run(outbox.recent, limit, after)
        ids += [row["id"] for row in rows]
        sizes.append(len(orjson.dumps(rows)))
        if cursor is None:
            return ids, sizes
        after = outbox.cursor_position(cursor)


async def test_notification_pages_stop_at_the_byte_cap_and_next_reaches_every_one(
    store: Store,
) -> None:
    publish(store, 1)
    # 200 notifications of 10 kB (2 MB unbounded), born in pairs at the same time: a page may
    # end between two of a same time and its next must still find the second.
    every = [long_birth(f"n{n:03d}", float(n // 2), 10_000) for n in range(200)]
    # One bigger than a page, the newest: it comes alone.
    every.append(long_birth("huge", 1000.0, 2 * LIST_REPLY_MAX_BYTES))
    for one in every:
        store.add_statement(outbox.INSERT, outbox.insert_params(one))
    await store.drain()
    ids, sizes = await read_pages(store, 1000)
    newest_first = sorted(every, key=lambda b: (-b.born_at, b.id))
    assert ids == [b.id for b in newest_first]
    assert sizes[0] > LIST_REPLY_MAX_BYTES
    assert len(sizes) > 8
    assert max(sizes[1:]) <= LIST_REPLY_MAX_BYTES
    # A limit pages too; the last page holding exactly the limit has no next.
    assert (await read_pages(store, 7))[0] == ids
    rows, cursor = await store.run(outbox.recent, 1, None)
    assert ([r["id"] for r in rows], cursor) == (["huge"], "1000.0/huge")


@pytest.mark.parametrize("cursor", ["", "12", "x/y", "nan/a", "inf/a", "1e400/a"])
def test_a_notification_cursor_no_page_gave_is_not_read(cursor: str) -> None:
    assert outbox.cursor_position(cursor) is None
