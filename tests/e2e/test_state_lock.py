"""One daemon per state folder: a second hived on a folder in use refuses to start.

The first daemon runs a session whose summary is committed as live; a second daemon with the
same ``state.dir`` (on another port) exits 1 with one line naming the folder and the first
daemon's pid, and the first goes on serving with its session's record untouched (not LOST).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hived.client import connect
from tests.e2e.harness import DEADLINE_S, SECRETS, Launcher, http_get

pytestmark = pytest.mark.e2e


def stored_state(db: Path, session: str) -> str | None:
    """The session's state as committed in the store (read-only), or None if not there yet."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT state FROM sessions WHERE id = ?", (session,)).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


async def test_a_second_daemon_on_the_same_state_dir_exits_1_and_the_first_keeps_serving(
    hived: Launcher, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    first = await hived.start()
    async with connect(first.ws_url, SECRETS["operator"], reconnect=False) as client:
        session = str((await client.request("session.start", agent="text"))["session"])
        await first.wait_for(
            lambda: stored_state(state_dir / "hived.db", session) not in (None, "STARTING"),
            "the session committed as live",
        )
        live = stored_state(state_dir / "hived.db", session)

        # The same config on another port (the launcher rewrites tmp_path/hived.toml with it).
        port, config = hived.config()
        second = await hived.start(config, port=port, ready=False)
        assert await second.wait_exit(timeout_s=DEADLINE_S) == 1
        log = second.log()
        assert (
            f"{state_dir}: state.dir is in use by another hived (pid {first.proc.pid}); "
            "stop it, or give this one another state.dir"
        ) in log
        assert "Traceback" not in log
        assert "LOST" not in log

        status, _, _ = await http_get(first.port, "/healthz")
        assert status == 200
        assert stored_state(state_dir / "hived.db", session) == live
        listed = await client.request("sessions")
        assert [s["state"] for s in listed["sessions"] if s["id"] == session] == [live]
