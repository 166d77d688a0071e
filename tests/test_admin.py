"""The admin requests' answers (hived/admin.py), from fakes of the daemon's parts."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import orjson

from hived.admin import Admin
from hived.core.pages import STATUS_LIST_MAX_BYTES
from hived.core.protocol import Caller, Status
from hived.core.sessions import SessionSummary, State
from hived.hub import Hub
from hived.notify.attention import Attention

ADMIN = Caller(connection=1, token_name="admin-token", role="admin")


def admin_with(summaries: list[SessionSummary], attention: Attention) -> Admin:
    """An Admin over fakes: only what ``status`` reads, with these sessions and watches."""
    now = time.time()
    daemon: Any = SimpleNamespace(
        started_at=now,
        config_path="/etc/hived/hived.toml",
        config_loaded_at=now,
        listening=["127.0.0.1:7420"],
        started_config=SimpleNamespace(server=SimpleNamespace(tls_cert=None)),
        stopping=False,
    )
    figures = SimpleNamespace(to_json=dict)
    parts: Any = SimpleNamespace(
        stats=lambda: {},
        summaries=lambda: summaries,
        attention=attention,
    )
    notify: Any = SimpleNamespace(stats=lambda: figures, attention=attention)
    return Admin(daemon, Hub(), parts, parts, parts, notify)


def session(n: int, name_bytes: int) -> SessionSummary:
    return SessionSummary(
        id=f"01J{n:023d}", name="n" * name_bytes, agent="text", state=State.RUNNING
    )


async def test_status_caps_its_lists_in_bytes_and_counts_them_all() -> None:
    # 300 sessions with 10 kB names and 5,000 watches: about 3.3 MB unbounded.
    summaries = [session(n, 10_000) for n in range(300)]
    attention = Attention()
    for connection in range(5000):
        attention.watch(connection, "viewer-" + "t" * 50, summaries[0].id, True)
    status = await admin_with(summaries, attention).status(Status(), ADMIN)
    assert len(orjson.dumps(status)) < 3 * STATUS_LIST_MAX_BYTES
    assert status["sessions_total"] == 300
    assert status["attention_total"] == 5000
    # The newest sessions, as many as fit.
    shown = [s["id"] for s in status["sessions"]]
    assert shown == [s.id for s in reversed(summaries)][: len(shown)]
    assert 0 < len(orjson.dumps(status["sessions"])) <= STATUS_LIST_MAX_BYTES
    assert 0 < len(orjson.dumps(status["attention"])) <= STATUS_LIST_MAX_BYTES


async def test_status_lists_everything_when_it_fits_and_one_big_session_alone() -> None:
    summaries = [session(1, 10), session(2, 2 * STATUS_LIST_MAX_BYTES)]
    status = await admin_with(summaries[:1], Attention()).status(Status(), ADMIN)
    assert ([s["id"] for s in status["sessions"]], status["sessions_total"]) == (
        [summaries[0].id],
        1,
    )
    assert (status["attention"], status["attention_total"]) == ([], 0)
    status = await admin_with(summaries, Attention()).status(Status(), ADMIN)
    assert ([s["id"] for s in status["sessions"]], status["sessions_total"]) == (
        [summaries[1].id],
        2,
    )
