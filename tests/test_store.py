from __future__ import annotations

import fcntl
import functools
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import attrs
import orjson
import pytest
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hived.core.config import Config, PositiveInt, StateConfig
from hived.core.errors import StoreError, StoreUnusable
from hived.core.events import Event, SpoolMark, encode_event, session_topic, utc_timestamp
from hived.core.sessions import ENDED_STATES, LIVE_STATES, SessionSummary, State
from hived.hub import Hub
from hived.memory import trim_heap
from hived.store import Store, schema, sql, writer
from hived.store.lock import StateLock
from hived.store.schema import SCHEMA_VERSION
from tests.test_fuzz import json_values

DEADLINE_S = 10.0


def make_state(tmp_path: Path, **changes: Any) -> StateConfig:
    return StateConfig(dir=str(tmp_path / "state"), sync_interval_ms=PositiveInt(20), **changes)


def make_event(topic: str, seq: int, *, ts: str | None = None, size: int = 200) -> Event:
    session = topic.removeprefix("session/") if topic.startswith("session/") else None
    return Event(
        topic, seq, ts or utc_timestamp(), "text", session, {"line": seq, "text": "x" * size}
    )


def record(store: Store, topic: str, seqs: range, **kwargs: Any) -> list[str]:
    frames = []
    for seq in seqs:
        event = make_event(topic, seq, **kwargs)
        frame = encode_event(event)
        store.record(event, frame)
        frames.append(frame)
    return frames


def seqs_of(pairs: list[tuple[int, str]]) -> list[int]:
    """The seqs of a read, each checked against its frame's."""
    seqs = [seq for seq, _ in pairs]
    assert seqs == [orjson.loads(frame)["seq"] for _, frame in pairs]
    return seqs


def frames_of(pairs: list[tuple[int, str]]) -> list[str]:
    """The frames of a read, their seqs checked."""
    seqs_of(pairs)
    return [frame for _, frame in pairs]


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition that another thread or process makes true, up to a deadline."""
    with trio.fail_after(DEADLINE_S):
        while not condition():  # noqa: ASYNC110 (no event to wait on across threads)
            await trio.sleep(0.005)


def summary(session_id: str, state: State = State.RUNNING, **changes: Any) -> SessionSummary:
    fields: dict[str, Any] = {"started_at": "2026-11-26T08:00:00.000Z", **changes}
    return SessionSummary(
        id=session_id, name=f"name-{session_id}", agent="claude", state=state, **fields
    )


@pytest.fixture
def state(tmp_path: Path) -> StateConfig:
    return make_state(tmp_path)


@pytest.fixture
async def store(state: StateConfig) -> AsyncIterator[Store]:
    """A store whose writer runs for the length of the test."""
    opened = Store.open(state)
    async with trio.open_nursery() as nursery:
        await nursery.start(opened.serve)
        yield opened
        nursery.cancel_scope.cancel()


def reopen(store: Store, state: StateConfig) -> Store:
    store.close()
    return Store.open(state)


# Opening, permissions, migrations.


def modes(directory: Path) -> dict[str, int]:
    found = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    return {".": stat.S_IMODE(directory.stat().st_mode), **found}


async def test_open_creates_dir_0700_and_files_0600(store: Store, state: StateConfig) -> None:
    record(store, "t", range(1, 11))
    await store.drain()
    assert modes(Path(state.dir)) == {
        ".": 0o700,
        "hived.db": 0o600,
        "hived.db-wal": 0o600,
        "hived.db-shm": 0o600,
        "hived.lock": 0o600,
    }


def test_migrations_bring_an_empty_dir_to_the_current_version(state: StateConfig) -> None:
    Store.open(state).close()
    Store.open(state).close()  # a second open migrates nothing and keeps the data
    with sqlite3.connect(Path(state.dir) / "hived.db") as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (schema.SCHEMA_VERSION,)
        ]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert {"events", "topics", "sessions", "events_topic_seq", "events_session_ts"} <= tables
    assert {"sessions_state", "sessions_name"} <= tables


def test_a_version_1_store_is_migrated_and_keeps_its_sessions(state: StateConfig) -> None:
    directory = Path(state.dir)
    directory.mkdir(mode=0o700)
    with sqlite3.connect(directory / "hived.db", isolation_level=None) as conn:
        conn.executescript(schema.MIGRATIONS[0])
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        conn.execute(
            "INSERT INTO sessions (id, name, agent, state, observed, usage, record) "
            "VALUES ('01JAAA', 'build', 'claude', 'EXITED', 0, '{}', ?)",
            (
                orjson.dumps(
                    attrs.evolve(summary("01JAAA", State.EXITED), name="build").to_record()
                ).decode(),
            ),
        )
    store = Store.open(state)
    try:
        assert [s.id for s in store.find_sessions("build")] == ["01JAAA"]
    finally:
        store.close()
    with sqlite3.connect(directory / "hived.db") as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)


def test_a_store_from_a_newer_hived_is_refused(state: StateConfig) -> None:
    Store.open(state).close()
    path = Path(state.dir) / "hived.db"
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer") as info:
        Store.open(state)
    assert str(path) in str(info.value)


def test_a_corrupt_file_raises_store_error_and_is_left_as_it_was(state: StateConfig) -> None:
    directory = Path(state.dir)
    directory.mkdir(mode=0o700)
    path = directory / "hived.db"
    garbage = b"this is not a database, it is a shopping list\n" * 100
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as info:
        Store.open(state)
    message = str(info.value)
    assert str(path) in message
    assert "move it aside" in message
    assert path.read_bytes() == garbage
    assert sorted(p.name for p in directory.iterdir()) == ["hived.db", "hived.lock"]


def test_an_empty_database_file_is_refused_as_unusable(state: StateConfig) -> None:
    """A 0-byte hived.db is a store that was truncated or lost: starting over in its place
    would hand out the seqs clients hold again. A new store is never empty (it is made under
    another name and renamed once it has its schema)."""
    Store.open(state).close()
    path = Path(state.dir) / "hived.db"
    assert path.stat().st_size > 0
    assert not Path(f"{path}.new").exists()
    path.write_bytes(b"")
    with pytest.raises(StoreUnusable, match="empty") as info:
        Store.open(state)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b""


async def test_a_database_damaged_in_the_middle_is_refused_at_open(state: StateConfig) -> None:
    """SQLite opens a file whose header is intact whatever its pages hold; the damage would
    show only when a page is read or written. Open checks every page."""
    store = Store.open(state)
    record(store, "t", range(1, 3001), size=1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        await store.drain()
        nursery.cancel_scope.cancel()
    path = Path(state.dir) / "hived.db"
    size = path.stat().st_size
    assert size > 1 << 20
    with path.open("r+b") as file:
        file.seek(size // 2)
        file.write(bytes(range(256)) * 64)
    damaged = path.read_bytes()
    with pytest.raises(StoreUnusable, match="damaged") as info:
        Store.open(state)
    message = str(info.value)
    assert str(path) in message
    assert "move it aside" in message
    assert path.read_bytes() == damaged


def test_a_database_that_hived_did_not_make_is_refused(state: StateConfig) -> None:
    directory = Path(state.dir)
    directory.mkdir(mode=0o700)
    with sqlite3.connect(directory / "hived.db") as conn:
        conn.execute("CREATE TABLE recipes (name TEXT)")
    with pytest.raises(StoreError, match="not made by hived"):
        Store.open(state)
    with sqlite3.connect(directory / "hived.db") as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["recipes"]


def test_a_state_dir_that_is_a_file_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(StoreError, match="not a folder"):
        Store.open(make_state(tmp_path))


def test_a_store_that_opens_read_only_raises_store_error(state: StateConfig) -> None:
    Store.open(state).close()

    def read_only(path: Path) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

    with pytest.raises(StoreError, match="readonly") as info:
        Store.open(state, connect=read_only)
    assert str(Path(state.dir) / "hived.db") in str(info.value)


NO_ACCESS_CHECK = """
import sys
from pathlib import Path
from hived.core.config import StateConfig
from hived.core.errors import StoreError
from hived.store import Store

state = StateConfig(dir=sys.argv[1])
Store.open(state).close()
directory = Path(state.dir)
directory.chmod(0o500)
(directory / "hived.db").chmod(0o400)
try:
    Store.open(state).close()
except StoreError as exc:
    print(type(exc).__name__, exc)
else:
    print("opened")
"""
UNPRIVILEGED: Final = 65534
"""nobody: whom the check runs as when the tests run as root (root reads and writes any file,
so the check would prove nothing)."""


def test_a_folder_without_access_raises_store_error(tmp_path: Path) -> None:
    """Run as an unprivileged user even when the tests run as root (CI does): in a
    subprocess, through setpriv."""
    argv = [sys.executable, "-c", NO_ACCESS_CHECK]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root, and no setpriv to drop to an unprivileged user")
        argv = [setpriv, f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups"]
        argv += [sys.executable, "-c", NO_ACCESS_CHECK]
        base = Path(tempfile.mkdtemp(prefix="hived-noaccess-"))
        os.chown(base, UNPRIVILEGED, UNPRIVILEGED)
    else:
        base = tmp_path
    try:
        result = subprocess.run(
            [*argv, str(base / "state")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=Path(__file__).resolve().parents[1],
        )
    finally:
        if base != tmp_path:
            subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
            shutil.rmtree(base)
    assert result.returncode == 0, result.stderr
    name, _, message = result.stdout.strip().partition(" ")
    assert name == "StoreUnusable"
    assert "access" in message
    assert str(base / "state" / "hived.db") in message


# One daemon per state.dir: the lock.


def in_use(state: StateConfig, holder: str) -> str:
    return (
        f"{state.dir}: state.dir is in use by {holder}; stop it, or give this one another state.dir"
    )


async def test_a_second_open_is_refused_naming_the_dir_and_pid_and_leaves_the_first_alone(
    store: Store, state: StateConfig
) -> None:
    store.record_session(summary("run", State.WORKING, pid=None))
    record(store, "t", range(1, 4))
    await store.drain()
    with pytest.raises(StoreError) as info:
        Store.open(state)
    assert str(info.value) == in_use(state, f"another hived (pid {os.getpid()})")
    with sqlite3.connect(Path(state.dir) / "hived.db") as conn:
        assert conn.execute("SELECT state FROM sessions").fetchall() == [("WORKING",)]
    running = store.get_session("run")
    assert running is not None
    assert running.state == State.WORKING
    record(store, "t", range(4, 6))  # the first store still writes
    await store.drain()
    assert seqs_of(await store.read("t", 0, 10, 10)) == [1, 2, 3, 4, 5]


def test_an_open_works_again_once_the_holder_closed(state: StateConfig) -> None:
    first = Store.open(state)
    with pytest.raises(StoreError, match="in use"):
        Store.open(state)
    first.close()
    second = Store.open(state)
    try:
        assert (Path(state.dir) / "hived.lock").read_text() == f"{os.getpid()}\n"
    finally:
        second.close()


def test_a_lock_file_left_by_a_dead_holder_does_not_block(state: StateConfig) -> None:
    """A daemon killed with SIGKILL leaves its pid in the file but no flock (see also
    test_a_writer_killed_with_sigkill_keeps_every_committed_event, which reopens after one)."""
    directory = Path(state.dir)
    directory.mkdir(mode=0o700)
    (directory / "hived.lock").write_text("4194303\n")
    store = Store.open(state)
    try:
        assert (directory / "hived.lock").read_text() == f"{os.getpid()}\n"
    finally:
        store.close()


def test_a_holder_that_wrote_no_pid_is_named_another_process(state: StateConfig) -> None:
    directory = Path(state.dir)
    directory.mkdir(mode=0o700)
    with (directory / "hived.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StoreError) as info:
            Store.open(state)
    assert str(info.value) == in_use(state, "another process")
    assert not (directory / "hived.db").exists()


def test_an_open_that_fails_after_locking_releases_the_lock(state: StateConfig) -> None:
    directory = Path(state.dir)
    directory.mkdir(mode=0o700)
    (directory / "hived.db").write_bytes(b"not a database\n" * 100)
    with pytest.raises(StoreError, match="move it aside"):
        Store.open(state)
    StateLock.acquire(directory).release()


# Frames.


@pytest.mark.parametrize(
    "event",
    [
        Event("sessions", 1, "2026-11-26T08:00:00.123Z", "state", None, {}),
        Event("session/A", 7, "2026-11-26T08:00:00.123Z", "tool_use", "A", {"data": ',"data":'}),
        Event('we"ird\\ \n', 2**40, "ts\u2028", 'k"\x01', "s\x00é", {"é": ["\n", 1.5, None]}),
    ],
)
async def test_a_rebuilt_frame_is_byte_identical_to_the_encoded_one(
    store: Store, event: Event
) -> None:
    """The data column is cut out of the frame by SQLite; the frame rebuilt from the columns
    is the frame that went out live."""
    frame = encode_event(event)
    store.record(event, frame)
    await wait_until(lambda: store.pending == 0)
    assert await store.read(event.topic, event.seq - 1, event.seq, 10) == [(event.seq, frame)]


_TEXT = st.text(max_size=12)


@settings(max_examples=80, deadline=None, database=None)
@given(
    st.booleans(),
    st.lists(
        st.tuples(_TEXT, _TEXT, st.one_of(st.none(), _TEXT), st.dictionaries(_TEXT, json_values)),
        min_size=1,
        max_size=6,
    ),
)
@example(True, [("session/A", "text", "A", {"line": "plain"}), ("t", "k", None, {})])
@example(True, [("session/A", "text", "A\x00", {"line": "a\x00b"})])
def test_a_batch_is_stored_column_for_column_whichever_way_it_is_bound(
    tmp_path_factory: pytest.TempPathFactory,
    one_parameter: bool,
    events: list[tuple[str, str, str | None, dict[str, Any]]],
) -> None:
    """A batch goes in row by row, or as one JSON array (row by row all the same when an
    escaped NUL is in it: SQLite's JSON functions would cut the string there): either way
    each column holds what the event had, ``data`` the frame's own text of it, and the rows
    keep the batch's order."""
    conn = schema.open_database(tmp_path_factory.mktemp("db") / "hived.db")
    pending = []
    for seq, (topic, kind, session, data) in enumerate(events, 1):
        event = Event(topic, seq, "2026-12-05T12:00:00.000Z", kind, session, data)
        pending.append((topic, seq, event.ts, kind, session, encode_event(event), None))
    sql.write_batch(conn, pending, [], one_parameter=one_parameter)
    rows = conn.execute("SELECT topic, seq, ts, kind, session, data FROM events ORDER BY id")
    assert rows.fetchall() == [
        (topic, seq, ts, kind, session, orjson.dumps(orjson.loads(frame)["data"]).decode())
        for topic, seq, ts, kind, session, frame, _ in pending
    ]
    conn.close()


def test_a_batch_longer_than_an_array_goes_in_whole_and_in_order(tmp_path: Path) -> None:
    """Arrays of ARRAY_EVENTS at a time; the one with an escaped NUL in it row by row."""
    conn = schema.open_database(tmp_path / "hived.db")
    count = 2 * sql.ARRAY_EVENTS + 500
    pending = []
    for seq in range(1, count + 1):
        line = "a\x00b" if seq == sql.ARRAY_EVENTS + 7 else f"line {seq}"
        event = Event("t", seq, "2026-12-05T12:00:00.000Z", "text", "A", {"line": line})
        pending.append((*event[:5], encode_event(event), None))
    assert sql.write_batch(conn, pending, [], one_parameter=True) == {"t": count}
    rows = conn.execute("SELECT seq, data FROM events ORDER BY id").fetchall()
    assert rows == [(p[1], p[5][p[5].index(',"data":') + 8 : -1]) for p in pending]
    conn.close()


@pytest.mark.parametrize(
    ("one_parameter", "session"),
    [(True, "A"), (True, "A\x00"), (False, "A")],
    ids=["one-parameter", "an-escaped-nul-row-by-row", "row-by-row"],
)
def test_an_event_already_stored_is_skipped_and_the_rest_of_its_batch_kept(
    tmp_path: Path, one_parameter: bool, session: str, caplog: pytest.LogCaptureFixture
) -> None:
    conn = schema.open_database(tmp_path / "hived.db")
    pending = []
    for seq in (1, 2, 3):
        event = Event("t", seq, "2026-12-05T12:00:00.000Z", "text", session, {"n": seq})
        pending.append((*event[:5], encode_event(event), None))
    sql.write_batch(conn, pending[:2], [])
    assert sql.write_batch(conn, pending[1:], [], one_parameter=one_parameter) == {"t": 3}
    rows = conn.execute("SELECT seq, session, data FROM events ORDER BY id").fetchall()
    assert rows == [(seq, session, f'{{"n":{seq}}}') for seq in (1, 2, 3)]
    assert "1 events were already stored" in caplog.text
    conn.close()


# The batch writer.


async def test_the_writer_commits_many_events_per_transaction(store: Store) -> None:
    record(store, "t", range(1, 5001))
    await wait_until(lambda: store.pending == 0)
    stats = store.stats()
    assert stats.events == 5000
    assert stats.commits <= 3


async def test_an_event_is_committed_within_the_sync_interval_without_drain(
    store: Store, state: StateConfig
) -> None:
    record(store, "t", range(1, 2))
    assert store.stats().pending == 1
    await wait_until(lambda: store.pending == 0)
    stats = store.stats()
    assert stats.last_commit is not None
    assert stats.write_lag_ms == 0
    with sqlite3.connect(Path(state.dir) / "hived.db") as conn:
        assert conn.execute("SELECT topic, seq FROM events").fetchall() == [("t", 1)]


async def test_seq_counters_continue_after_reopen(store: Store, state: StateConfig) -> None:
    record(store, "a", range(1, 31))
    record(store, "b", range(1, 6))
    await store.drain()
    again = reopen(store, state)
    try:
        assert again.last_seqs() == {"a": 30, "b": 5}
        assert again.oldest_seq("a") == 1
        hub = Hub(history=again)
        assert hub.publish("a", "text", {}).seq == 31
    finally:
        again.close()


async def test_close_without_drain_keeps_only_committed_events(state: StateConfig) -> None:
    slow = attrs.evolve(state, sync_interval_ms=PositiveInt(60_000))
    store = Store.open(slow)
    committed = record(store, "t", range(1, 101))
    await store.drain()
    record(store, "t", range(101, 151))
    store.close()  # a crash: the last 50 were never committed
    again = Store.open(slow)
    try:
        assert again.last_seqs() == {"t": 100}
        assert frames_of(await again.read("t", 0, 1000, 1000)) == committed
    finally:
        again.close()


CRASHING_WRITER = """
import sys, trio
from hived.core.config import StateConfig
from hived.core.events import Event, encode_event
from hived.store import Store

async def main():
    store = Store.open(StateConfig(dir=sys.argv[1], sync_interval_ms=60_000))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        for seq in range(1, 1101):
            event = Event("t", seq, "2026-11-26T08:00:00.000Z", "text", None, {"line": seq})
            store.record(event, encode_event(event))
            if seq == 1000:
                await store.drain()
        print("queued", flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


async def test_a_writer_killed_with_sigkill_keeps_every_committed_event(
    state: StateConfig,
) -> None:
    async with trio.open_nursery() as nursery:
        argv = [sys.executable, "-c", CRASHING_WRITER, state.dir]
        process = await nursery.start(
            functools.partial(trio.run_process, argv, stdout=subprocess.PIPE, check=False)
        )
        line = b""
        with trio.fail_after(DEADLINE_S):
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(100)
        assert line == b"queued\n"
        process.kill()
    assert process.returncode == -9
    again = Store.open(state)
    try:
        assert again.last_seqs() == {"t": 1000}
        frames = frames_of(await again.read("t", 0, 2000, 2000))
        assert frames == [
            encode_event(Event("t", seq, "2026-11-26T08:00:00.000Z", "text", None, {"line": seq}))
            for seq in range(1, 1001)
        ]
    finally:
        again.close()


# Reads.


async def test_read_returns_a_range_across_committed_and_queued_events(state: StateConfig) -> None:
    store = Store.open(attrs.evolve(state, sync_interval_ms=PositiveInt(60_000)))
    try:
        frames = record(store, "t", range(1, 21))
        await store.drain()
        frames += record(store, "t", range(21, 31))  # queued, not committed
        record(store, "other", range(1, 6))
        assert store.pending == 15
        assert frames_of(await store.read("t", 0, 30, 100)) == frames
        assert seqs_of(await store.read("t", 5, 25, 100)) == list(range(6, 26))
        assert seqs_of(await store.read("t", 15, 30, 8)) == list(range(16, 24))
        assert await store.read("t", 30, 30, 10) == []
        assert store.oldest_seq("t") == 1
        assert store.oldest_seq("other") == 1
        assert store.oldest_seq("never") is None
    finally:
        store.close()


@pytest.mark.parametrize("via", ["read", "events"])
async def test_a_commit_landing_during_a_read_loses_no_event(
    state: StateConfig, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    store = Store.open(attrs.evolve(state, sync_interval_ms=PositiveInt(60_000)))
    try:
        topic = session_topic("S1")
        frames = record(store, topic, range(1, 11))  # queued: nothing committed yet
        real_checkpoint = trio.lowlevel.checkpoint
        armed = True

        async def checkpoint_during_which_the_writer_commits() -> None:
            nonlocal armed
            if armed:
                armed = False
                await store.drain()  # the queued events leave the queue for the database
            await real_checkpoint()

        monkeypatch.setattr(trio.lowlevel, "checkpoint", checkpoint_during_which_the_writer_commits)
        if via == "read":
            assert frames_of(await store.read(topic, 0, 10, 100)) == frames
        else:
            assert [e["seq"] for e in await store.events("S1")] == list(range(1, 11))
        assert not armed
        assert store.pending == 0
    finally:
        store.close()


async def test_reads_while_publishing_go_on_have_no_gap_and_no_duplicate(store: Store) -> None:
    total = 20_000
    done = trio.Event()

    async def publish() -> None:
        for seq in range(1, total + 1):
            event = make_event("t", seq, size=50)
            store.record(event, encode_event(event))
            if seq % 200 == 0:
                await trio.sleep(0.001)
        done.set()

    got: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish)
        with trio.fail_after(DEADLINE_S * 3):
            while len(got) < total:
                upto = store.last_seqs().get("t", 0)
                page = await store.read("t", len(got), upto, 512)
                got += seqs_of(page)
                if not page:
                    await trio.sleep(0.001)
    assert got == list(range(1, total + 1))
    assert done.is_set()


async def test_a_replay_through_the_hub_meets_live_events_without_gap(store: Store) -> None:
    hub = Hub(history=store, ring_size=64)
    for i in range(3000):
        hub.publish("t", "text", {"line": i})
    sub = hub.subscriber(queue_size=256)
    got: list[int] = []

    async def keep_publishing() -> None:
        for i in range(3000):
            hub.publish("t", "text", {"line": i})
            if i % 50 == 0:
                await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_publishing)
        nursery.start_soon(hub.subscribe, sub, "t", 0)
        with trio.fail_after(DEADLINE_S * 3):
            while len(got) < 6000:
                got += [orjson.loads(frame)["seq"] for frame in await sub.receive_batch()]
    assert got == list(range(1, 6001))


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "queued"])
async def test_session_events_pages_are_bounded_by_bytes(store: Store, committed: bool) -> None:
    topic = session_topic("S1")
    record(store, topic, range(1, 41), size=20_000)
    record(store, topic, range(41, 42), size=300_000)  # alone over the cap
    record(store, topic, range(42, 51), size=20_000)
    if committed:
        await store.drain()
    page = await store.events("S1", limit=10_000, max_bytes=100_000)
    assert [e["seq"] for e in page] == [1, 2, 3, 4]  # 4 x ~20 kB fit, a fifth does not
    page = await store.events("S1", since=38, limit=10_000, max_bytes=100_000)
    assert [e["seq"] for e in page] == [39, 40]
    page = await store.events("S1", since=40, limit=10_000, max_bytes=100_000)
    assert [e["seq"] for e in page] == [41], "a larger event comes alone"
    assert len(await store.events("S1", since=41, limit=10_000, max_bytes=100_000)) == 4
    assert len(await store.events("S1", limit=10_000)) == 50, "no byte bound asked: by count"


async def test_session_events_pages_span_committed_and_queued_within_the_bytes(
    store: Store,
) -> None:
    topic = session_topic("S1")
    record(store, topic, range(1, 3), size=20_000)
    await store.drain()
    record(store, topic, range(3, 11), size=20_000)
    page = await store.events("S1", limit=10_000, max_bytes=100_000)
    assert [e["seq"] for e in page] == [1, 2, 3, 4]


async def test_session_events_are_read_in_pages(store: Store) -> None:
    topic = session_topic("S1")
    record(store, topic, range(1, 251))
    await store.drain()
    first = await store.events("S1")
    assert [e["seq"] for e in first] == list(range(1, 101))
    assert first[0]["type"] == "event"
    assert first[0]["session"] == "S1"
    assert first[0]["data"]["line"] == 1
    assert [e["seq"] for e in await store.events("S1", since=100, limit=100)] == list(
        range(101, 201)
    )
    assert [e["seq"] for e in await store.events("S1", since=200)] == list(range(201, 251))
    assert await store.events("S1", since=250) == []
    assert await store.events("nobody") == []


# Retention.


async def test_retention_by_age_removes_old_events_and_keeps_seq_counters(
    store: Store, state: StateConfig
) -> None:
    old = utc_timestamp(time.time() - 40 * 86_400)
    record(store, "t", range(1, 1501), ts=old)
    record(store, "gone", range(1, 4), ts=old)
    kept = record(store, "t", range(1501, 1511))
    await store.drain()
    assert await store.prune() == 1503
    assert store.oldest_seq("t") == 1501
    assert store.oldest_seq("gone") == 4  # nothing at or before seq 3 is kept
    assert frames_of(await store.read("t", 0, 1510, 5000)) == kept
    stats = store.stats()
    assert (stats.events, stats.events_pruned) == (10, 1503)
    again = reopen(store, state)
    try:
        assert again.last_seqs() == {"t": 1510, "gone": 3}
        assert again.oldest_seq("gone") == 4
        assert again.stats().events == 10
    finally:
        again.close()


async def test_retention_by_size_removes_the_oldest_events(state: StateConfig) -> None:
    max_bytes = 256 * 1024
    store = Store.open(attrs.evolve(state, max_bytes=PositiveInt(max_bytes)))
    try:
        record(store, "t", range(1, 4001), size=300)
        await store.drain()
        assert sql.used_bytes(store._writer) > max_bytes
        deleted = await store.prune()
        assert deleted > 0
        assert sql.used_bytes(store._writer) <= max_bytes
        assert store.oldest_seq("t") == deleted + 1
        assert seqs_of(await store.read("t", 0, 4000, 5000)) == list(range(deleted + 1, 4001))
        assert store.last_seqs() == {"t": 4000}
    finally:
        store.close()


async def test_ended_sessions_are_kept_four_times_longer_than_events(store: Store) -> None:
    def days_ago(days: int) -> str:
        return utc_timestamp(time.time() - days * 86_400)

    store.record_session(summary("recent", State.EXITED, ended_at=days_ago(40)))
    store.record_session(summary("ancient", State.FAILED, ended_at=days_ago(200)))
    store.record_session(summary("live", State.RUNNING, started_at=days_ago(300)))
    await store.drain()
    await store.prune()
    assert sorted(s.id for s in store.list_sessions()) == ["live", "recent"]


# Bad disks.


@pytest.mark.parametrize(
    ("break_it", "mend_it", "words"),
    [
        ("PRAGMA max_page_count = 1", "PRAGMA max_page_count = 1073741823", "full"),
        ("PRAGMA query_only = 1", "PRAGMA query_only = 0", "readonly"),
    ],
    ids=["disk-full", "read-only"],
)
async def test_a_failing_disk_keeps_events_queued_and_writes_resume(
    state: StateConfig, break_it: str, mend_it: str, words: str
) -> None:
    made: list[sqlite3.Connection] = []

    def tracking(path: Path) -> sqlite3.Connection:
        made.append(schema.connect(path))
        return made[-1]

    store = Store.open(state, connect=tracking)
    writer = made[0]
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        record(store, "t", range(1, 11))
        await store.drain()
        writer.execute(break_it)  # SQLite itself now refuses the writer's batches
        frames = record(store, "t", range(11, 211))
        await wait_until(lambda: store.stats().error is not None)
        stats = store.stats()
        assert words in (stats.error or "")
        assert str(store.path) in (stats.error or "")
        assert (stats.events, stats.pending) == (10, 200)
        # Replay and the seq counters still work from memory.
        assert frames_of(await store.read("t", 10, 210, 500)) == frames
        writer.execute(mend_it)
        await wait_until(lambda: store.pending == 0)
        stats = store.stats()
        assert (stats.events, stats.error) == (210, None)
        nursery.cancel_scope.cancel()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT count(*), max(seq) FROM events").fetchone() == (210, 210)


async def test_a_stop_that_cannot_write_counts_what_is_lost_and_leaves_a_fence(
    state: StateConfig,
) -> None:
    made: list[sqlite3.Connection] = []

    def tracking(path: Path) -> sqlite3.Connection:
        made.append(schema.connect(path))
        return made[-1]

    store = Store.open(state, connect=tracking)
    first_epoch = store.epoch
    record(store, "t", range(1, 11))
    await store.drain()
    assert store.lost_events == 0
    made[0].execute("PRAGMA max_page_count = 1")  # the disk is full from now on
    record(store, "t", range(11, 61))
    with trio.move_on_after(0.5):
        await store.drain()
    assert store.lost_events == 50
    store.close()
    again = Store.open(state)
    try:
        assert again.epoch == first_epoch + 1
        # The run that lost events ended uncleanly: where "t" stood on disk is its fence.
        assert await again.fence("t", first_epoch) == 10
        assert await again.fence("never", first_epoch) == 0
        assert await again.fence("t", again.epoch) is None
        await again.drain()
    finally:
        again.close()
    third = Store.open(state)
    try:
        assert await third.fence("t", first_epoch + 1) is None, "that run ended cleanly"
        assert await third.fence("t", 999) is None, "an unknown run says nothing"
    finally:
        third.close()


async def test_wait_writable_blocks_sources_past_the_bound_until_the_queue_drains(
    state: StateConfig,
) -> None:
    store = Store.open(state, max_pending=100)
    record(store, "t", range(1, 151))  # publishing itself never blocks
    with trio.move_on_after(0.05) as scope:
        await store.wait_writable()
    assert scope.cancelled_caught, "wait_writable returned with 150 events pending"
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        with trio.fail_after(DEADLINE_S):
            await store.wait_writable()
        assert store.pending <= 50
        nursery.cancel_scope.cancel()


async def test_while_a_source_waits_for_room_the_writer_does_not_wait_for_its_interval(
    tmp_path: Path,
) -> None:
    state = StateConfig(dir=str(tmp_path / "state"), sync_interval_ms=PositiveInt(600_000))
    store = Store.open(state, max_pending=100)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        record(store, "t", range(1, 151))
        await trio.testing.wait_all_tasks_blocked()  # the writer waits for its interval
        with trio.fail_after(DEADLINE_S):
            await store.wait_writable()
            await wait_until(lambda: store.pending == 0)
        nursery.cancel_scope.cancel()
    store.close()


async def test_a_batch_goes_in_as_one_parameter_only_while_a_source_waits_for_room(
    state: StateConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row by row is cheaper for SQLite, one parameter frees the GIL for a busy event loop:
    a source held back by the bound is what says the loop is busy."""
    ways: list[bool] = []
    real = sql.write_batch

    def spy(*args: Any) -> dict[str, int]:
        ways.append(args[-1])
        return real(*args)

    monkeypatch.setattr(sql, "write_batch", spy)
    store = Store.open(state, max_pending=100)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        record(store, "t", range(1, 11))
        await wait_until(lambda: store.pending == 0)
        record(store, "t", range(11, 161))
        with trio.fail_after(DEADLINE_S):
            await store.wait_writable()
        await wait_until(lambda: store.pending == 0)
        nursery.cancel_scope.cancel()
    assert ways[0] is False
    assert True in ways[1:]
    reopened = reopen(store, state)
    assert seqs_of(await reopened.read("t", 0, 160, 200)) == list(range(1, 161))
    reopened.close()


# Sessions.


async def test_sessions_recorded_live_are_marked_lost_on_reopen(
    store: Store, state: StateConfig
) -> None:
    store.record_session(summary("run", State.WORKING, pid=None))
    store.record_session(summary("done", State.EXITED, ended_at="2026-11-26T09:00:00.000Z"))
    await store.drain()
    again = reopen(store, state)
    try:
        assert [s.id for s in again.recovered] == ["run"]
        lost = again.get_session("run")
        assert lost is not None
        assert lost.state == State.LOST
        assert lost.reason == "daemon stopped while the session ran"
        assert lost.ended_at is not None
        assert again.get_session("done") == summary(
            "done", State.EXITED, ended_at="2026-11-26T09:00:00.000Z"
        )
        assert again.stats().sessions_lost == 1
    finally:
        again.close()
    third = Store.open(state)  # LOST is not live: nothing to recover a second time
    try:
        assert third.recovered == ()
    finally:
        third.close()


async def test_list_sessions_filters_and_orders_newest_first(store: Store) -> None:
    store.record_session(summary("a", State.EXITED, started_at="2026-11-20T08:00:00.000Z"))
    store.record_session(
        attrs.evolve(summary("b", State.RUNNING), agent="codex", started_at="2026-11-24T08:00:00Z")
    )
    store.record_session(summary("c", State.RUNNING, started_at="2026-11-25T08:00:00.000Z"))
    await store.drain()
    # Queued and not yet committed: the latest summary of a session wins.
    store.record_session(summary("a", State.FATAL, started_at="2026-11-20T08:00:00.000Z"))
    store.record_session(summary("d", State.WAITING, started_at="2026-11-26T08:00:00.000Z"))

    def ids(**filters: Any) -> list[str]:
        return [s.id for s in store.list_sessions(**filters)]

    assert ids() == ["d", "c", "b", "a"]
    assert store.list_sessions(state="FATAL")[0].state == State.FATAL
    assert ids(state="RUNNING") == ["c", "b"]
    assert ids(agent="codex") == ["b"]
    assert ids(since="2026-11-24T08:00:00Z") == ["d", "c", "b"]
    assert ids(since="2026-11-25T09:00:00+01:00") == ["d", "c"]
    assert ids(limit=2) == ["d", "c"]
    assert ids(agent="claude", limit=1) == ["d"]
    await store.drain()
    assert ids() == ["d", "c", "b", "a"]
    assert ids(state="FATAL") == ["a"]


async def test_list_sessions_keeps_the_states_asked_for(store: Store) -> None:
    store.record_session(summary("a", State.EXITED, started_at="2026-11-20T08:00:00.000Z"))
    store.record_session(summary("b", State.WORKING, started_at="2026-11-21T08:00:00.000Z"))
    store.record_session(summary("c", State.LOST, started_at="2026-11-22T08:00:00.000Z"))
    store.record_session(summary("d", State.RUNNING, started_at="2026-11-23T08:00:00.000Z"))
    await store.drain()
    store.record_session(summary("b", State.EXITED, started_at="2026-11-21T08:00:00.000Z"))
    store.record_session(summary("e", State.WAITING, started_at="2026-11-24T08:00:00.000Z"))

    def ids(**filters: Any) -> list[str]:
        return [s.id for s in store.list_sessions(**filters)]

    assert ids(states=LIVE_STATES) == ["e", "d"]  # b ended: its queued summary says so
    assert ids(states=["EXITED", "LOST"]) == ["c", "b", "a"]
    assert ids(states=ENDED_STATES, limit=2) == ["c", "b"]
    assert ids(states=LIVE_STATES, state="RUNNING") == ["d"]
    assert ids(states=LIVE_STATES, state="EXITED") == []
    assert ids(states=[]) == []
    await store.drain()
    assert ids(states=LIVE_STATES) == ["e", "d"]


async def test_list_sessions_of_live_states_reads_only_their_rows(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recent enough that the retention pass, which runs as the store serves, keeps them all.
    now = time.time()
    for i in range(300):
        started = utc_timestamp(now - 1000 + i)
        store.record_session(summary(f"X{i:03}", State.EXITED, started_at=started))
    store.record_session(summary("LIVE1", State.RUNNING, started_at=utc_timestamp(now - 2000)))
    await store.drain()
    parsed: list[str] = []
    real_summary = sql._summary

    def counting_summary(record: str) -> SessionSummary:
        parsed.append(record)
        return real_summary(record)

    monkeypatch.setattr(sql, "_summary", counting_summary)
    assert [s.id for s in store.list_sessions(states=LIVE_STATES)] == ["LIVE1"]
    assert len(parsed) == 1
    assert [s.id for s in store.list_sessions(limit=5)] == [f"X{i}" for i in range(299, 294, -1)]
    assert len(parsed) == 6


def test_session_lookups_read_by_index(state: StateConfig) -> None:
    statements: list[str] = []

    def tracing(path: Path) -> sqlite3.Connection:
        conn = schema.connect(path)
        conn.set_trace_callback(statements.append)  # each statement, its values filled in
        return conn

    store = Store.open(state, connect=tracing)
    try:
        store.list_sessions(states=LIVE_STATES)
        store.find_sessions("build")  # by id (the primary key), by name, by id prefix
        selects = [sql for sql in statements if sql.startswith("SELECT record FROM sessions")]
        plans = [
            " ".join(row[-1] for row in store._writer.execute("EXPLAIN QUERY PLAN " + select))
            for select in selects
        ]
    finally:
        store.close()
    assert len(plans) == 4
    assert "USING INDEX sessions_state (state=?)" in plans[0]
    assert "USING PRIMARY KEY (id=?)" in plans[1]
    assert "USING INDEX sessions_name (name=?)" in plans[2]
    assert "USING PRIMARY KEY (id>? AND id<?)" in plans[3]


async def test_find_sessions_by_id_then_name_then_id_prefix(store: Store) -> None:
    def kept(session_id: str, name: str, started_at: str) -> SessionSummary:
        return attrs.evolve(summary(session_id, State.EXITED), name=name, started_at=started_at)

    store.record_session(kept("01JAAA", "build", "2026-11-20T08:00:00.000Z"))
    store.record_session(kept("01JAAB", "build", "2026-11-22T08:00:00.000Z"))
    store.record_session(kept("01JBBB", "01JAAA", "2026-11-23T08:00:00.000Z"))
    store.record_session(kept("01KCCC", "deploy", "2026-11-21T08:00:00.000Z"))
    await store.drain()
    store.record_session(kept("01JAAC", "build", "2026-11-24T08:00:00.000Z"))  # queued

    def ids(ref: str, **kwargs: Any) -> list[str]:
        return [s.id for s in store.find_sessions(ref, **kwargs)]

    assert ids("01JAAA") == ["01JAAA"]  # an id comes before a name
    assert ids("build") == ["01JAAC"]  # the newest of that name, queued or not
    assert ids("deploy") == ["01KCCC"]
    assert ids("01jaa") == ["01JAAA", "01JAAB", "01JAAC"]  # an ambiguous prefix
    assert ids("01J", limit=2) == ["01JAAA", "01JAAB"]
    assert ids("01K") == ["01KCCC"]
    assert ids("01KCCCX") == []
    assert ids("nothing") == []
    assert ids("") == []


@pytest.mark.parametrize(
    ("prefix", "end"),
    [("01J", "01K"), ("a\U0010ffff", "b"), ("\U0010ffff", None), ("a\ud7ff", "a\ue000")],
)
def test_prefix_end_is_the_least_string_after_every_string_with_the_prefix(
    prefix: str, end: str | None
) -> None:
    assert sql.prefix_end(prefix) == end


def test_reload_applies_retention_and_sync_settings(state: StateConfig) -> None:
    store = Store.open(state)
    try:
        store.reload(
            Config(
                state=attrs.evolve(
                    state, retention_days=PositiveInt(2), sync_interval_ms=PositiveInt(500)
                )
            )
        )
        assert store._retention.retention_days == 2
        assert store._batches.interval_s == 0.5
    finally:
        store.close()


async def test_wait_writable_blocks_sources_past_the_byte_bound_until_half_is_written(
    tmp_path: Path,
) -> None:
    """A few big events (1 MiB lines on a slow disk) hold back sources long before the count
    bound: the pending events are bounded in bytes too."""
    state = make_state(tmp_path, max_pending_bytes=PositiveInt(1 << 20))
    store = Store.open(state)
    record(store, "t", range(1, 6), size=300_000)  # 5 events, 1.5 MB
    assert store.saturated
    assert store.stats().pending_bytes > 1 << 20
    with trio.move_on_after(0.05) as scope:
        await store.wait_writable()
    assert scope.cancelled_caught, "wait_writable returned with 1.5 MB pending"
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        with trio.fail_after(DEADLINE_S):
            await store.wait_writable()
        assert store.stats().pending_bytes <= 1 << 19
        assert not store.stats().saturated
        nursery.cancel_scope.cancel()


def test_a_batch_commits_the_last_mark_of_each_spool() -> None:
    def pending(seq: int, mark: SpoolMark | None) -> sql.Pending:
        return ("t", seq, "ts", "text", None, "{}", mark)

    a0, b0, a1, b1 = (SpoolMark(k, o, 0) for k, o in (("a", 1), ("b", 1), ("a", 2), ("b", 5)))
    batch = [pending(1, a0), pending(2, b0), pending(3, None), pending(4, a1), pending(5, b1)]
    assert writer.last_marks(batch) == [a1, b1]
    assert writer.last_marks([pending(1, None)]) == []


async def test_the_heap_is_trimmed_once_after_a_burst_is_written(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of pending events, once all written, hands the freed heap back (malloc_trim);
    a trickle of events does not pay for a trim."""
    trims: list[bool] = []
    monkeypatch.setattr("hived.store.writer.trim_heap", lambda: trims.append(True) or True)
    record(store, "t", range(1, 11))
    await wait_until(lambda: store.pending == 0)
    assert trims == []
    record(store, "t", range(11, 11 + writer.TRIM_AFTER_EVENTS))
    await wait_until(lambda: store.pending == 0 and bool(trims))
    record(store, "t", range(11 + writer.TRIM_AFTER_EVENTS, 21 + writer.TRIM_AFTER_EVENTS))
    await wait_until(lambda: store.pending == 0)
    assert trims == [True]


def test_trim_heap_works_with_this_c_library() -> None:
    assert trim_heap() is True


async def test_an_error_that_is_not_sqlites_is_retried_and_never_ends_the_writer(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sql.write_batch
    failures = [OSError("a bug in the writer"), RuntimeError("another")]

    def flaky(*args: Any) -> dict[str, int]:
        if failures:
            raise failures.pop(0)
        return real(*args)

    monkeypatch.setattr(sql, "write_batch", flaky)
    record(store, "t", range(1, 11))
    await wait_until(lambda: store.pending == 0)
    stats = store.stats()
    assert (stats.events, stats.events_lost, stats.error) == (10, 0, None)
    assert seqs_of(await store.read("t", 0, 10, 100)) == list(range(1, 11))


async def test_a_batch_that_always_fails_unexpectedly_is_dropped_and_counted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sql.write_batch

    def poisoned(conn: sqlite3.Connection, events: list[sql.Pending], *rest: Any) -> Any:
        if any(topic == "poison" for topic, *_ in events):
            raise TypeError("cannot write this")
        return real(conn, events, *rest)

    monkeypatch.setattr(sql, "write_batch", poisoned)
    monkeypatch.setattr("hived.store.writer.RETRY_MAX_S", 0.01)
    record(store, "poison", range(1, 4))
    await wait_until(lambda: store.pending == 0)
    record(store, "t", range(1, 6))
    await wait_until(lambda: store.pending == 0)
    stats = store.stats()
    assert (stats.events, stats.events_lost, stats.pending_bytes) == (5, 3, 0)
    assert stats.error is None
