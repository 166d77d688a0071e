"""The history requests' answers (hived/archive.py) over fakes: the bounds of ``usage`` and
``session.forget``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from hived.archive import FORGET_MAX, Archive
from hived.cli.history import usage_table
from hived.core.messages import SessionForget, UsageLedger
from hived.core.pages import LABEL_MAX_CHARS, LIST_REPLY_MAX_BYTES
from hived.core.protocol import Caller
from hived.core.sessions import SessionSummary, State
from hived.hub import Hub

VIEWER = Caller(connection=1, token_name="viewer-token", role="viewer")
ADMIN = Caller(connection=2, token_name="admin-token", role="admin")


def row(key: str, cost: float) -> dict[str, Any]:
    figures = {"input_tokens": 1, "output_tokens": 2, "cost_usd": cost, "turns": 1, "sessions": 1}
    return {"key": key, "label": "l" * 200} | figures


def archive_of(rows: list[dict[str, Any]]) -> Archive:
    async def usage(by: str, since: str | None, until: str | None) -> dict[str, Any]:
        return {"rows": rows, "total": {"cost_usd": sum(r["cost_usd"] for r in rows)}}

    store: Any = SimpleNamespace(usage=usage)
    return Archive(store, None, None, None)  # type: ignore[arg-type]  # usage reads the store only


async def test_usage_lists_the_costliest_rows_that_fit_and_totals_them_all() -> None:
    # 5,000 sessions, costliest first as the ledger gives them: about 1.7 MB of rows.
    rows = [row(f"01J{n:023d}", 5000.0 - n) for n in range(5000)]
    reply = await archive_of(rows).usage(UsageLedger(by="session"), VIEWER)
    assert len(orjson.dumps(reply)) < LIST_REPLY_MAX_BYTES + 1000
    assert reply["rows"] == rows[: len(reply["rows"])]
    assert reply["rows_total"] == 5000
    assert reply["total"]["cost_usd"] == sum(r["cost_usd"] for r in rows)
    assert f"({5000 - len(reply['rows'])} more rows not listed" in usage_table(reply)


async def test_usage_by_day_keeps_the_latest_days_and_all_of_a_short_ledger() -> None:
    days = [row(f"day-{n:05d}", 1.0) for n in range(5000)]
    reply = await archive_of(days).usage(UsageLedger(by="day"), VIEWER)
    assert reply["rows"] == days[-len(reply["rows"]) :]
    assert reply["rows_total"] == 5000
    reply = await archive_of(days[:3]).usage(UsageLedger(by="day"), VIEWER)
    assert (reply["rows"], reply["rows_total"]) == (days[:3], 3)
    assert "more rows" not in usage_table(reply)


async def test_forgetting_a_thousand_long_named_sessions_answers_their_names_cut() -> None:
    ended = [
        SessionSummary(
            id=f"01J{n:023d}",
            name=f"s{n}-" + "n" * 100_000,
            agent="text",
            state=State.EXITED,
            started_at="2026-12-01T08:00:00.000Z",
            ended_at="2026-12-01T09:00:00.000Z",
        )
        for n in range(FORGET_MAX)
    ]

    async def forget(session_id: str) -> int:
        return 3

    store: Any = SimpleNamespace(
        list_sessions=lambda states: ended,
        forget=forget,
        forgotten=lambda session_id: "2026-12-05T10:00:00.000Z",
    )
    supervisor: Any = SimpleNamespace(release=lambda session_id: None)
    archive = Archive(store, Hub(), supervisor, None)  # type: ignore[arg-type]  # no records read
    request = SessionForget(ended_before="2026-12-02T00:00:00Z")
    reply = await archive.forget(request, ADMIN)
    assert [f["session"] for f in reply["forgotten"]] == [s.id for s in ended]
    assert reply["forgotten"][7]["name"] == "s7-" + "n" * (LABEL_MAX_CHARS - 4) + "…"
    assert len(orjson.dumps(reply)) < 300_000  # a hundred megabytes with the names whole
