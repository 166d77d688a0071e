"""Reloading the real daemon's config: SIGHUP and ``config.reload`` (docs/protocol.md §2, §5).

What a reload may change live — tokens, agent templates, server settings other than the
address — applies to open connections and new requests at once; a removed token's connections
are closed with 4001, a token whose role no longer opens its channel with 4003, and the others
stay. A change of ``server.listen`` is only reported: the daemon keeps its port until restarted.
A file with mistakes changes nothing and the reply lists every mistake.

Close codes are read with the independent ``websockets`` library, requests go through ours.
"""

from __future__ import annotations

import hashlib
import signal
import socket
from typing import Any, Final

import orjson
import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.trio.client import ClientConnection

from hived.client import AuthError, RemoteError, connect
from tests.e2e.harness import (
    DEADLINE_S,
    SECRETS,
    Launcher,
    RunningDaemon,
    agent_toml,
    free_port,
    http_get,
    websockets_client,
)

pytestmark = pytest.mark.e2e

NEW_SECRET: Final = "newcomer-secret-0123456789"


def token_block(name: str, role: str, secret: str) -> str:
    """A ``[[tokens]]`` entry as the harness writes it."""
    sha = hashlib.sha256(secret.encode()).hexdigest()
    return f'[[tokens]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{sha}"\n\n'


def harness_token(role: str) -> str:
    return token_block(f"{role}-token", role, SECRETS[role])


def replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} not in the config"
    return text.replace(old, new)


async def next_message(ws: ClientConnection) -> dict[str, Any]:
    with trio.fail_after(DEADLINE_S):
        frame = await ws.recv()
    assert isinstance(frame, str)
    parsed = orjson.loads(frame)
    return dict(parsed[0] if isinstance(parsed, list) else parsed)


async def welcomed(ws: ClientConnection, role: str) -> None:
    message = await next_message(ws)
    assert message["type"] == "welcome", message
    assert message["role"] == role


async def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes the connection; its close code (None: no close frame)."""
    try:
        with trio.fail_after(DEADLINE_S):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return None if exc.rcvd is None else exc.rcvd.code


async def still_answers(ws: ClientConnection) -> bool:
    await ws.send(orjson.dumps({"type": "ping", "id": "alive"}).decode())
    while (message := await next_message(ws))["type"] != "result":
        pass
    return bool(message["id"] == "alive")


async def refused_status(url: str, token: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets_client(url, token):
            pass
    return refused.value.response.status_code


async def sighup(daemon: RunningDaemon) -> None:
    """Reload with SIGHUP and wait until the daemon says it applied the file."""
    applied = daemon.log().count("reload: applied")
    daemon.send_signal(signal.SIGHUP)
    await daemon.wait_for(lambda: daemon.log().count("reload: applied") > applied, "the reload")


async def admin_reload(daemon: RunningDaemon) -> dict[str, Any]:
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
        return dict(await admin.request("config.reload"))


async def test_sighup_removing_a_token_closes_its_connections_with_4001_and_keeps_the_others(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    async with (
        websockets_client(daemon.ws_url, SECRETS["viewer"]) as by_header,
        websockets_client(daemon.ws_url, None) as by_hello,
        websockets_client(daemon.ws_url, SECRETS["operator"]) as other,
        websockets_client(daemon.admin_url, SECRETS["admin"]) as admin,
    ):
        await welcomed(by_header, "viewer")
        await by_hello.send(orjson.dumps({"type": "hello", "token": SECRETS["viewer"]}).decode())
        await welcomed(by_hello, "viewer")
        await welcomed(other, "operator")
        await welcomed(admin, "admin")

        config = daemon.config_path.read_text()
        daemon.config_path.write_text(replaced(config, harness_token("viewer"), ""))
        await sighup(daemon)

        assert await close_code(by_header) == 4001
        assert await close_code(by_hello) == 4001
        assert await still_answers(other)
        assert await still_answers(admin)
    assert await refused_status(daemon.ws_url, SECRETS["viewer"]) == 401


async def test_sighup_lowering_a_tokens_role_closes_its_connections_with_4003(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    async with (
        websockets_client(daemon.ws_url, SECRETS["operator"]) as lowered,
        websockets_client(daemon.ws_url, SECRETS["viewer"]) as other,
    ):
        await welcomed(lowered, "operator")
        await welcomed(other, "viewer")
        config = daemon.config_path.read_text()
        agent_now = token_block("operator-token", "agent", SECRETS["operator"])
        daemon.config_path.write_text(replaced(config, harness_token("operator"), agent_now))
        await sighup(daemon)
        assert await close_code(lowered) == 4003
        assert await still_answers(other)


async def test_a_token_added_by_a_reload_can_connect(hived: Launcher) -> None:
    daemon = await hived.start()
    with pytest.raises(AuthError):
        async with connect(daemon.ws_url, NEW_SECRET, reconnect=False):
            pass
    config = daemon.config_path.read_text()
    daemon.config_path.write_text(config + token_block("newcomer", "operator", NEW_SECRET))
    await sighup(daemon)
    async with connect(daemon.ws_url, NEW_SECRET, reconnect=False) as client:
        assert client.welcome["role"] == "operator"
        assert await client.request("ping") == {}


async def test_an_agent_template_added_by_a_reload_can_be_started(hived: Launcher) -> None:
    daemon = await hived.start()
    async with connect(daemon.ws_url, SECRETS["operator"], reconnect=False) as client:
        with pytest.raises(RemoteError) as unknown:
            await client.request("session.start", agent="latecomer")
        assert unknown.value.code == "not_found"

        config = daemon.config_path.read_text()
        extra = agent_toml("latecomer", "fake_text.py", extra='restart = "no"')
        daemon.config_path.write_text(config + extra)
        outcome = await admin_reload(daemon)
        assert outcome["reloaded"] is True
        assert "agents.latecomer" in outcome["changed"]

        started = await client.request("session.start", agent="latecomer")
        sub = await client.subscribe(f"session/{started['session']}", since=0)
        with trio.fail_after(DEADLINE_S):
            while (event := await sub.receive())["kind"] != "text":
                pass
        assert event["data"]["line"].startswith("fake_text ready")
        summaries = (await client.request("sessions"))["sessions"]
        assert [s["agent"] for s in summaries if s["id"] == started["session"]] == ["latecomer"]


async def test_config_reload_reports_what_changed_or_every_error_and_keeps_the_running_config(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    good = daemon.config_path.read_text()
    changed = replaced(good, "heartbeat_interval_s = 2.0", "heartbeat_interval_s = 3.0")
    daemon.config_path.write_text(changed)
    outcome = await admin_reload(daemon)
    assert outcome["reloaded"] is True
    assert outcome["changed"] == ["server"]
    assert outcome["restart_needed"] == []
    async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as client:
        assert client.welcome["heartbeat_interval_s"] == 3.0

    broken = replaced(changed, "heartbeat_interval_s = 3.0", "heartbeat_interval_s = 9.0")
    broken = replaced(broken, harness_token("viewer"), "")
    broken += '[agents.broken]\ncommand = "not a list"\nidle_s = 0\n'
    daemon.config_path.write_text(broken)
    outcome = await admin_reload(daemon)
    assert outcome["reloaded"] is False
    errors = outcome["errors"]
    assert len(errors) == 2, errors
    assert any("agents.broken.command" in e for e in errors), errors
    assert any("agents.broken.idle_s" in e for e in errors), errors
    assert all(e.startswith(f"{daemon.config_path}: ") for e in errors), errors
    # Nothing of the broken file was applied: the viewer token and the old heartbeat remain.
    async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as client:
        assert client.welcome["heartbeat_interval_s"] == 3.0
    assert "kept the running config" in daemon.log()


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def reload_new_listen(daemon: RunningDaemon) -> tuple[int, dict[str, Any]]:
    """Reload a config whose only change is ``server.listen``: the new port, the reply."""
    new_port = free_port()
    config = daemon.config_path.read_text()
    daemon.config_path.write_text(
        replaced(config, f"127.0.0.1:{daemon.port}", f"127.0.0.1:{new_port}")
    )
    return new_port, await admin_reload(daemon)


async def test_a_new_listen_address_needs_a_restart_and_the_old_port_keeps_serving(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    new_port, outcome = await reload_new_listen(daemon)
    assert outcome["reloaded"] is True
    assert outcome["restart_needed"] == ["server.listen"]
    assert "server" in outcome["changed"]
    assert "server.listen" in daemon.log()

    status, _, _ = await http_get(daemon.port, "/healthz")
    assert status == 200
    assert refuses(new_port)


async def test_status_reports_the_address_listened_on_after_a_listen_change(
    hived: Launcher,
) -> None:
    daemon = await hived.start()
    await reload_new_listen(daemon)
    async with connect(daemon.admin_url, SECRETS["admin"], reconnect=False) as admin:
        reported = await admin.request("status")
    assert reported["connections"]["listen"] == [f"127.0.0.1:{daemon.port}"]
    assert reported["listen"] == f"127.0.0.1:{daemon.port}", (
        "status reports the new server.listen although the daemon still listens on the old one"
    )
