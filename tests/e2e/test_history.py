"""Sessions of an earlier run of hived, as the next run sees them.

A first daemon runs a supervised session and an observed one, then stops; a second daemon on
the same state folder keeps both in its store. Requests on the ended supervised session find it
(by name or by a lower-case id prefix) and say it is not running, until a restart takes it up
again as the same session; a hook from the observed one brings that same session back instead of
making a second one.
"""

from __future__ import annotations

import signal
import uuid
from typing import Any

import pytest
import trio

from hived.client import Client, RemoteError, connect
from tests.e2e.harness import DEADLINE_S, SECRETS, Launcher, RunningDaemon
from tests.e2e.test_hooks import payload, post_hook

pytestmark = pytest.mark.e2e


async def sessions_of(client: Client, **where: Any) -> list[dict[str, Any]]:
    listed = await client.request("sessions", all=True)
    return [s for s in listed["sessions"] if all(s[k] == v for k, v in where.items())]


async def wait_state(client: Client, want: str, **where: Any) -> dict[str, Any]:
    """Poll ``sessions --all`` until the one session matching ``where`` is in state ``want``."""
    found: list[dict[str, Any]] = []
    with trio.move_on_after(DEADLINE_S):
        while True:
            found = await sessions_of(client, **where)
            if len(found) == 1 and found[0]["state"] == want:
                return found[0]
            await trio.sleep(0.05)
    raise AssertionError(f"no single session {where} in {want}; last seen: {found}")


async def stop_daemon(daemon: RunningDaemon) -> None:
    daemon.send_signal(signal.SIGTERM)
    assert await daemon.wait_exit() == 0


async def test_a_session_of_an_earlier_run_is_not_running_until_restarted_as_itself(
    hived: Launcher,
) -> None:
    port, config = hived.config()
    first = await hived.start(config, port=port)
    async with connect(first.ws_url, SECRETS["operator"], reconnect=False) as client:
        started = await client.request("session.start", agent="text", name="fixer")
        session = started["session"]
        await client.request("session.stop", session="fixer")
        before = await client.request("session.events", session=session, limit=10000)
    await stop_daemon(first)

    port, config = hived.config()
    second = await hived.start(config, port=port)
    async with connect(second.ws_url, SECRETS["operator"], reconnect=False) as client:
        kept = await wait_state(client, "EXITED", name="fixer")
        assert kept["id"] == session
        not_running = "session fixer is not running (EXITED in an earlier run of hived)"
        prefix = session[:12].lower()
        for wire_type, fields in (
            ("session.input", {"text": "hello"}),
            ("session.stop", {}),
            ("session.interrupt", {}),
            ("session.approve", {"request_id": "r1", "allow": True}),
            ("session.answer", {"request_id": "r1", "answers": {"q": "a"}}),
        ):
            with pytest.raises(RemoteError) as refused:
                await client.request(wire_type, session=prefix, **fields)
            assert (refused.value.code, refused.value.message) == ("conflict", not_running)
        with pytest.raises(RemoteError) as resume:
            await client.request("session.resume", session="fixer")
        assert resume.value.code == "conflict"
        assert "cannot resume a conversation; restart it instead" in resume.value.message

        # A restart takes the kept session up again: the same id, its topic's seq going on.
        restarted = await client.request("session.restart", session=prefix)
        assert (restarted["session"], restarted["state"]) == (session, "RUNNING")
        await wait_state(client, "RUNNING", id=session)
        after = await client.request("session.events", session=session, since=0, limit=10000)
        seqs = [e["seq"] for e in after["events"]]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) > len(before["events"])
        await client.request("session.stop", session=session)
    await stop_daemon(second)


async def test_an_observed_session_of_an_earlier_run_comes_back_with_its_id(
    hived: Launcher,
) -> None:
    agent_session_id = str(uuid.uuid4())
    port, config = hived.config()
    first = await hived.start(config, port=port)
    await post_hook(first.port, payload(agent_session_id, "SessionStart", source="startup"))
    async with connect(first.ws_url, SECRETS["viewer"], reconnect=False) as client:
        before = await wait_state(client, "RUNNING", agent_session_id=agent_session_id)
    await stop_daemon(first)

    port, config = hived.config()
    second = await hived.start(config, port=port)
    async with connect(second.ws_url, SECRETS["viewer"], reconnect=False) as client:
        await wait_state(client, "LOST", agent_session_id=agent_session_id)
        await post_hook(second.port, payload(agent_session_id, "UserPromptSubmit", prompt="go on"))
        after = await wait_state(client, "WORKING", agent_session_id=agent_session_id)
        assert after["id"] == before["id"]
        assert after["observed"] is True
        await post_hook(second.port, payload(agent_session_id, "Stop"))
        assert (await wait_state(client, "WAITING", id=before["id"]))["id"] == before["id"]
    await stop_daemon(second)
