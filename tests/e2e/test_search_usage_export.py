"""History through the real daemon: search, the usage ledger, export, forgetting, hivectl."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from hived.client import Client, RemoteError, connect
from hived.core.config import StateConfig
from hived.core.events import Event, encode_event
from hived.store import Store
from tests.e2e.harness import SECRETS, Launcher, RunningDaemon, until
from tests.e2e.test_hivectl import as_json, hivectl, out

WORD = "zebracorn"
"""A word no fake agent says by itself: it appears where a prompt put it."""


async def ended_session(daemon: RunningDaemon, client: Client) -> dict[str, Any]:
    """A fake Claude session with two turns that mention WORD, stopped."""
    started = await client.request(
        "session.start", agent="claude", name="history", prompt=f"fix the {WORD} migration"
    )
    session = started["session"]

    async def state() -> str:
        listed = await client.request("sessions", all=True)
        return next(s["state"] for s in listed["sessions"] if s["id"] == session)

    await until("first turn", lambda: _is(state, "WAITING"))
    await client.request("session.input", session=session, text=f"now test the {WORD} again")

    async def turns() -> bool:
        results = [e for e in await all_events(client, session) if e["kind"] == "result"]
        return len(results) == 2 and await state() == "WAITING"

    await until("second turn", turns)
    await client.request("session.stop", session=session)
    await until("the end", lambda: _is(state, "EXITED"))
    listed = await client.request("sessions", all=True)
    return dict(next(s for s in listed["sessions"] if s["id"] == session))


async def _is(state: Callable[[], Any], wanted: str) -> bool:
    return bool(await state() == wanted)


async def all_events(client: Client, session: str) -> list[dict[str, Any]]:
    page = await client.request("session.events", session=session, limit=10000)
    return list(page["events"])


async def indexed(admin_url: str) -> None:
    async with connect(admin_url, SECRETS["admin"], reconnect=False) as admin:

        async def ready() -> bool:
            store = (await admin.request("status"))["store"]
            return bool(store["pending"] == 0 and store["index"]["behind"] == 0)

        await until("the index caught up", ready)


async def test_search_usage_export_and_forget_through_the_daemon(
    hived: Launcher, tmp_path: Path
) -> None:
    daemon = await hived.start()
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        summary = await ended_session(daemon, client)
        session = summary["id"]
        await indexed(daemon.admin_url)
        events = await all_events(client, session)

        # Search finds exactly the events that carry the word, newest first.
        found = await client.request("search", query=WORD)
        expected = [
            e["seq"]
            for e in reversed(events)
            if e["kind"] != "state" and WORD in orjson.dumps(e["data"]).decode()
        ]
        assert [hit["seq"] for hit in found["hits"]] == expected
        assert {hit["kind"] for hit in found["hits"]} == {"input"}
        assert all(hit["topic"] == f"session/{session}" for hit in found["hits"])
        hit = found["hits"][0]
        start, end = hit["marks"][0]
        assert hit["snippet"][start:end] == WORD
        only_tools = await client.request("search", query="echo", kinds=["tool_use"])
        assert only_tools["hits"]
        assert {h["kind"] for h in only_tools["hits"]} == {"tool_use"}

        # Bad queries and injection attempts: bad_request naming the query, or a result.
        for query in ['"open', "NEAR(", "path:x", "*", "a OR", "x') OR 1=1 --", "text:(a"]:
            answers = []
            try:
                answers.append(await client.request("search", query=query))
            except RemoteError as exc:
                answers.append(exc)
            (answer,) = answers
            if isinstance(answer, RemoteError):
                assert answer.code == "bad_request", (query, answer)
                assert "search.query" in str(answer)
            else:
                assert answer["hits"] == [], query
        with pytest.raises(RemoteError) as bad:
            await client.request("search", query=WORD, limit=0)
        assert bad.value.code == "bad_request"

        # The usage ledger adds up to the session's own figures.
        ledger = await client.request("usage", by="session")
        (row,) = ledger["rows"]
        assert row["key"] == session
        assert row["label"] == "history"
        assert row["turns"] == summary["usage"]["turns"]
        assert row["input_tokens"] == summary["usage"]["input_tokens"]
        assert row["cost_usd"] == pytest.approx(summary["usage"]["cost_usd"])
        by_day = await client.request("usage", since="2000-01-01T00:00:00Z", until=None)
        assert by_day["total"] == {k: v for k, v in row.items() if k not in ("key", "label")}
        with pytest.raises(RemoteError) as bad:
            await client.request("usage", by="week")
        assert bad.value.code == "bad_request"
        assert "usage.by" in str(bad.value)

        # Export: JSONL is every frame as it went out, and imports back into a store.
        jsonl = ""
        cursor = None
        while True:
            page = await client.request("session.export", session=session, cursor=cursor)
            jsonl += page["text"]
            cursor = page["next"]
            if cursor is None:
                break
        lines = jsonl.splitlines()
        assert [orjson.loads(line) for line in lines] == events
        fresh = Store.open(StateConfig(dir=str(tmp_path / "imported")))
        for line in lines:
            wire = orjson.loads(line)
            event = Event(
                wire["topic"], wire["seq"], wire["ts"], wire["kind"], wire["session"], wire["data"]
            )
            assert encode_event(event) == line
            fresh.record(event, line)
        await fresh.drain()
        topic = f"session/{session}"
        assert [frame for _, frame in await fresh.read(topic, 0, 10**6, 10**6)] == lines
        fresh.close()
        markdown = (await client.request("session.export", session=session, format="md"))["text"]
        assert markdown.startswith("# history")
        assert "### Prompt" in markdown
        assert WORD in markdown
        assert "<details><summary>Result" in markdown

    # Forgetting (admin) removes it all, and every later look says so.
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
        with pytest.raises(RemoteError) as refused:
            async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
                await client.request("session.forget", session=session)
        assert refused.value.code == "forbidden"
        gone = await admin.request("session.forget", session=session)
        assert gone["forgotten"][0]["session"] == session
        assert gone["forgotten"][0]["events"] >= len(events)
        await check_forgotten(admin, session)
        assert not (await admin.request("search", query=WORD))["hits"]
        assert (await admin.request("usage"))["rows"] == []
    daemon.send_signal(signal.SIGTERM)
    assert await daemon.wait_exit() == 0
    daemon = await hived.start()
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
        await check_forgotten(admin, session)


async def check_forgotten(admin: Client, session: str) -> None:
    with pytest.raises(RemoteError) as replay:
        await admin.subscribe(f"session/{session}", since=0)
    assert replay.value.code == "not_found"
    assert "forgotten" in str(replay.value)
    with pytest.raises(RemoteError) as page:
        await admin.request("session.events", session=session)
    assert page.value.code == "not_found"
    assert "forgotten" in str(page.value)
    listed = await admin.request("sessions", all=True)
    assert session not in {s["id"] for s in listed["sessions"]}


async def test_hivectl_logs_filters_search_usage_export_and_forget(hived: Launcher) -> None:
    daemon = await hived.start()
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        summary = await ended_session(daemon, client)
        session = summary["id"]
        events = await all_events(client, session)
    await indexed(daemon.admin_url)

    inputs = [e for e in events if e["kind"] == "input"]
    logs = await hivectl(daemon, "logs", session, "--kind", "input", "--json")
    assert [orjson.loads(line)["seq"] for line in out(logs).splitlines()] == [
        e["seq"] for e in inputs
    ]
    last = await hivectl(
        daemon, "logs", session, "-n", "2", "--kind", "tool_use", "--kind", "input", "--json"
    )
    wanted = [e["seq"] for e in events if e["kind"] in ("tool_use", "input")][-2:]
    assert [orjson.loads(line)["seq"] for line in out(last).splitlines()] == wanted
    grep = await hivectl(daemon, "logs", session, "--grep", WORD.upper(), "--json")
    assert [orjson.loads(line)["seq"] for line in out(grep).splitlines()] == [
        e["seq"] for e in inputs
    ]
    future = await hivectl(daemon, "logs", session, "--since", "2999-01-01", "--json")
    assert out(future) == ""
    recent = await hivectl(daemon, "logs", session, "--since", "1h", "--kind", "input")
    assert WORD in out(recent)
    bad = await hivectl(daemon, "logs", session, "--since", "yesterday")
    assert bad.returncode == 2
    assert "not a time" in bad.stderr.decode()

    found = await hivectl(daemon, "search", WORD, "--json")
    assert [orjson.loads(line)["seq"] for line in out(found).splitlines()] == [
        e["seq"] for e in reversed(inputs)
    ]
    human = await hivectl(daemon, "search", WORD, "--session", "history", "-n", "1")
    assert human.returncode == 0
    assert len(out(human).splitlines()) == 1
    assert "history#" in out(human)
    broken = await hivectl(daemon, "search", '"open')
    assert broken.returncode == 1
    assert "search.query" in broken.stderr.decode()

    usage = as_json(await hivectl(daemon, "usage", "--by", "template", "--json"))
    assert usage["rows"][0]["key"] == "claude"
    assert usage["total"]["turns"] == summary["usage"]["turns"]
    table = out(await hivectl(daemon, "usage"))
    assert "TURNS" in table
    assert "total" in table

    md = await hivectl(daemon, "export", "history", "--format", "md")
    assert "### Prompt" in out(md)
    jsonl = await hivectl(daemon, "export", session)
    assert [orjson.loads(line) for line in out(jsonl).splitlines()] == events

    none = await hivectl(daemon, "forget", "--ended-before", "2000-01-01")
    assert out(none).strip() == "nothing to forget"
    gone = as_json(await hivectl(daemon, "forget", "--ended-before", "2999-01-01", "--json"))
    assert [s["session"] for s in gone["forgotten"]] == [session]
    after = await hivectl(daemon, "logs", session)
    assert after.returncode == 1
    assert "forgotten" in after.stderr.decode()
