"""hivectl against the real daemon: every command, human and --json, and every exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import trio

from tests.e2e.harness import SECRETS, Launcher, RunningDaemon, agent_toml, free_port

HIVECTL = str(Path(sys.executable).parent / "hivectl")


def env_for(daemon: RunningDaemon | None, role: str = "admin", **extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HIVED_")}
    environ.pop("NO_COLOR", None)
    if daemon is not None:
        environ["HIVED_URL"] = f"ws://127.0.0.1:{daemon.port}"
    environ["HIVED_TOKEN"] = SECRETS[role]
    environ["HIVED_CONFIG"] = "/nonexistent/hived.toml"
    environ.update(extra)
    return environ


async def hivectl(
    daemon: RunningDaemon | None, *args: str, role: str = "admin", stdin: bytes = b"", **env: str
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [HIVECTL, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env_for(daemon, role, **env),
        )


def out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode()


def as_json(result: subprocess.CompletedProcess[bytes]) -> Any:
    assert result.returncode == 0, result.stderr.decode()
    return orjson.loads(result.stdout)


async def wait_state(
    daemon: RunningDaemon, session: str, states: set[str], reason: str | None = None
) -> dict[str, Any]:
    """Poll until the session is in one of ``states`` (for ``reason``, when given)."""
    with trio.fail_after(20):
        while True:
            sessions = as_json(await hivectl(daemon, "sessions", "--all", "--json"))
            for summary in sessions:
                if (
                    summary["id"] == session
                    and summary["state"] in states
                    and reason in (None, summary["reason"])
                ):
                    return dict(summary)
            await trio.sleep(0.1)


async def test_status_for_people_and_for_scripts(hived: Launcher) -> None:
    daemon = await hived.start()
    human = await hivectl(daemon, "status")
    assert human.returncode == 0, human.stderr
    assert f"pid {daemon.proc.pid}" in out(human)
    assert "\033[" not in out(human)  # not a tty: no colour
    status = as_json(await hivectl(daemon, "status", "--json"))
    assert status["pid"] == daemon.proc.pid
    assert status["config_path"] == str(daemon.config_path)
    assert {"version", "uptime_s", "listen", "connections", "sessions", "hub", "tasks"} <= set(
        status
    )


async def test_session_commands_round_trip(hived: Launcher) -> None:
    daemon = await hived.start()
    started = await hivectl(daemon, "start", "claude", "--name", "alpha", "--prompt", "hello there")
    assert started.returncode == 0, started.stderr
    session = out(started).strip()
    assert len(session) == 26  # a ULID, and nothing else on stdout
    await wait_state(daemon, session, {"WAITING"})

    table = out(await hivectl(daemon, "sessions"))
    assert "alpha" in table
    assert "WAITING" in table
    assert "$" in table
    listed = as_json(await hivectl(daemon, "sessions", "--json", "--agent", "claude"))
    assert [s["name"] for s in listed] == ["alpha"]
    assert listed[0]["usage"]["cost_usd"] > 0

    sent = await hivectl(daemon, "send", "alpha", "-", stdin=b"run the tests")
    assert sent.returncode == 0, sent.stderr
    by_prefix = await hivectl(daemon, "send", session[:10], "again", "--json")
    assert as_json(by_prefix)["session"] == session

    logs = out(await hivectl(daemon, "logs", "alpha"))
    for expected in ("tool_use", "result", "run the tests"):
        assert expected in logs
    events = [
        orjson.loads(line)
        for line in out(await hivectl(daemon, "logs", session, "--json")).splitlines()
    ]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))

    # In a turn (this one waits for a permission), an interrupt ends it; between turns there is
    # nothing to interrupt, and hivectl says so.
    assert (await hivectl(daemon, "send", "alpha", "this needs permission")).returncode == 0
    await wait_state(daemon, session, {"WAITING"}, reason="permission_request")
    assert (await hivectl(daemon, "interrupt", "alpha")).returncode == 0
    ended = await wait_state(daemon, session, {"WAITING"}, reason="result")
    assert ended["last_turn"]["error"] == "interrupted"
    idle = await hivectl(daemon, "interrupt", "alpha")
    assert idle.returncode == 1
    assert b"claude is not in a turn: nothing to interrupt" in idle.stderr
    assert (await hivectl(daemon, "stop", "alpha")).returncode == 0
    await wait_state(daemon, session, {"EXITED"})
    assert (await hivectl(daemon, "restart", "alpha")).returncode == 0
    await wait_state(daemon, session, {"RUNNING", "WAITING", "WORKING"})


async def test_approve_and_deny_a_permission_request(hived: Launcher) -> None:
    daemon = await hived.start()
    session = out(await hivectl(daemon, "start", "claude", "--prompt", "needs permission")).strip()
    await wait_state(daemon, session, {"WAITING"})
    events = [
        orjson.loads(line)
        for line in out(await hivectl(daemon, "logs", session, "--json")).splitlines()
    ]
    request = next(e["data"]["request_id"] for e in events if e["kind"] == "permission_request")
    bogus = await hivectl(daemon, "approve", session, "no-such-request")
    assert bogus.returncode == 1
    assert "not_found" in bogus.stderr.decode()
    allowed = await hivectl(daemon, "approve", session, request)
    assert allowed.returncode == 0, allowed.stderr
    await wait_state(daemon, session, {"WAITING"})
    await hivectl(daemon, "send", session, "permission again")
    with trio.fail_after(20):
        while True:
            lines = out(await hivectl(daemon, "logs", session, "--json")).splitlines()
            events = [orjson.loads(line) for line in lines]
            requests = [
                e["data"]["request_id"] for e in events if e["kind"] == "permission_request"
            ]
            if len(requests) == 2:
                break
            await trio.sleep(0.1)
    denied = await hivectl(daemon, "deny", session, requests[1], "--message", "not today")
    assert denied.returncode == 0, denied.stderr


async def test_connections_kick_and_reload(hived: Launcher) -> None:
    daemon = await hived.start()
    async with trio.open_nursery() as nursery:
        tail = await trio.lowlevel.open_process(
            [HIVECTL, "tail", "--json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env_for(daemon, "viewer"),
        )
        with trio.fail_after(20):
            while True:
                connections = as_json(await hivectl(daemon, "connections", "--json"))
                viewers = [c for c in connections if c["role"] == "viewer"]
                if viewers:
                    break
                await trio.sleep(0.1)
        assert "viewer-token" in out(await hivectl(daemon, "connections"))
        kicked = await hivectl(daemon, "kick", str(viewers[0]["id"]), "--reason", "bye")
        assert kicked.returncode == 0, kicked.stderr
        with trio.fail_after(20):
            assert await tail.wait() == 1  # a kick is final: tail says so and does not reconnect
        assert tail.stderr is not None
        assert await tail.stderr.receive_some() == b"hivectl: connection closed by hived: bye\n"
        nursery.cancel_scope.cancel()
    reload = await hivectl(daemon, "reload")
    assert reload.returncode == 0
    assert "reloaded" in out(reload)
    daemon.config_path.write_text("bogus = 1\n")
    refused = await hivectl(daemon, "reload", "--json")
    assert refused.returncode == 1
    assert orjson.loads(refused.stdout)["errors"][0].endswith(
        "bogus: unknown key; known keys here: server, state, daemon, hooks, tokens, agents, notify, cluster"
    )


async def test_exit_codes(hived: Launcher) -> None:
    daemon = await hived.start()
    unknown = await hivectl(daemon, "stop", "no-such-session")
    assert unknown.returncode == 1
    assert "no-such-session" in unknown.stderr.decode()
    bad_token = await hivectl(daemon, "sessions", HIVED_TOKEN="wrong")
    assert bad_token.returncode == 4
    low_role = await hivectl(daemon, "status", role="viewer")
    assert low_role.returncode == 4
    viewer_start = await hivectl(daemon, "start", "claude", role="viewer")
    assert viewer_start.returncode == 4
    nothing = await hivectl(None, "status", HIVED_URL=f"ws://127.0.0.1:{free_port()}")
    assert nothing.returncode == 3
    assert "systemctl status hived" in nothing.stderr.decode()
    usage = await hivectl(daemon, "frobnicate")
    assert usage.returncode == 2
    for result in (unknown, bad_token, low_role, nothing, usage):
        assert b"Traceback" not in result.stderr


async def test_no_color_and_non_tty_output_have_no_escape_codes(hived: Launcher) -> None:
    daemon = await hived.start()
    await hivectl(daemon, "start", "text", "--name", "plain")
    for no_color in ("", "1"):  # empty: as if unset
        for command in (("status",), ("sessions", "--all"), ("logs", "plain")):
            result = await hivectl(daemon, *command, NO_COLOR=no_color)
            assert result.returncode == 0, result.stderr
            assert b"\033[" not in result.stdout


async def test_tail_resumes_across_a_daemon_restart_without_gap_or_duplicate(
    hived: Launcher,
) -> None:
    port, config = hived.config()
    daemon = await hived.start(config, port=port)
    tail = await trio.lowlevel.open_process(
        [HIVECTL, "tail", "sessions", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env_for(daemon),
    )
    assert tail.stdout is not None
    received: list[dict[str, Any]] = []
    buffer = b""

    async def read_until(count: int) -> None:
        nonlocal buffer
        with trio.fail_after(30):
            while len(received) < count:
                assert tail.stdout is not None
                buffer += await tail.stdout.receive_some(65536)
                *lines, buffer = buffer.split(b"\n")
                received.extend(orjson.loads(line) for line in lines if line)

    async def tail_subscribed(daemon: RunningDaemon) -> None:
        with trio.fail_after(20):
            while True:
                connections = as_json(await hivectl(daemon, "connections", "--json"))
                if any("sessions" in c["subscriptions"] for c in connections):
                    return
                await trio.sleep(0.05)

    try:
        await tail_subscribed(daemon)
        await hivectl(daemon, "start", "text", "--name", "before")
        await read_until(2)
        daemon.send_signal(signal.SIGTERM)
        assert await daemon.wait_exit() == 0
        daemon = await hived.start(config, port=port)
        await tail_subscribed(daemon)
        await hivectl(daemon, "start", "text", "--name", "after")
        await read_until(len(received) + 2)
        await hivectl(daemon, "stop", "after")
        await read_until(len(received) + 2)
    finally:
        tail.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            code = await tail.wait()
    seqs = [event["seq"] for event in received]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert code == 130


async def test_shutdown_stops_the_daemon_with_exit_0(hived: Launcher) -> None:
    daemon = await hived.start()
    result = await hivectl(daemon, "shutdown")
    assert result.returncode == 0, result.stderr
    assert await daemon.wait_exit() == 0


async def test_hook_posts_a_payload_and_never_fails(hived: Launcher) -> None:
    daemon = await hived.start()
    payload = orjson.dumps(
        {
            "session_id": "obs-1",
            "hook_event_name": "SessionStart",
            "cwd": "/tmp",
            "transcript_path": "/tmp/t",
            "permission_mode": "default",
            "source": "startup",
        }
    )
    posted = await hivectl(daemon, "hook", role="agent", stdin=payload)
    assert (posted.returncode, posted.stderr) == (0, b"")
    with trio.fail_after(20):
        while True:
            if "obs-1" in out(await hivectl(daemon, "sessions", "--all", "--json")):
                break
            await trio.sleep(0.1)
    with trio.fail_after(5):
        down = await hivectl(
            None, "hook", role="agent", stdin=payload, HIVED_URL=f"ws://127.0.0.1:{free_port()}"
        )
    assert down.returncode == 0
    assert b"could not post to hived" in down.stderr


async def test_start_of_a_session_that_fails_at_once_exits_1_with_the_reason(
    hived: Launcher,
) -> None:
    port, config = hived.config(body='[agents.broken]\ncommand = ["/nonexistent/agent"]\n')
    daemon = await hived.start(config, port=port)
    started = await hivectl(daemon, "start", "broken", "--name", "b1")
    assert started.returncode == 1
    session = out(started).strip()
    assert len(session) == 26  # still printed, so that a script can look the session up
    assert started.stderr.decode().startswith("hivectl: b1 FAILED: ")
    failed = await wait_state(daemon, session, {"FAILED"})
    assert failed["reason"] in started.stderr.decode()


async def test_session_arguments_empty_lower_case_and_unknown(hived: Launcher) -> None:
    daemon = await hived.start()
    session = out(await hivectl(daemon, "start", "text", "--name", "plain")).strip()
    empty = await hivectl(daemon, "logs", "")
    assert empty.returncode == 2
    lower = await hivectl(daemon, "logs", session[:12].lower(), "--json")
    assert all(orjson.loads(line)["session"] == session for line in out(lower).splitlines())
    unknown = await hivectl(daemon, "logs", "nosuch")
    assert unknown.stderr.decode() == (
        "hivectl: not_found: no session 'nosuch' (give an id, an id prefix or a name)\n"
    )
    nothing = await hivectl(daemon, "sessions", "--agent", "nosuch", "--state", "waiting")
    assert (nothing.returncode, out(nothing)) == (0, "no sessions\n")


async def test_hook_without_a_token_or_with_bad_arguments_still_exits_0(hived: Launcher) -> None:
    daemon = await hived.start()
    no_token = await hivectl(daemon, "hook", stdin=b"{}", HIVED_TOKEN="")
    assert (no_token.returncode, no_token.stderr) == (
        0,
        b"hivectl hook: no token: set HIVED_TOKEN\n",
    )
    bad = await hivectl(daemon, "hook", "--url", role="agent", stdin=b"{}")
    assert bad.returncode == 0
    assert b"posting nothing" in bad.stderr


async def test_a_name_means_the_live_session_to_every_command_after_a_restart(
    hived: Launcher,
) -> None:
    """After a daemon restart the autostarted ``auto-1`` is a new session beside the ended one
    of the same name: tail, logs and send all take the live one, and tail says which."""
    port, config = hived.config(body=agent_toml("auto", "fake_text.py", extra="autostart = 1"))
    daemon = await hived.start(config, port=port)
    [first] = as_json(await hivectl(daemon, "sessions", "--json"))
    daemon.send_signal(signal.SIGTERM)
    assert await daemon.wait_exit() == 0
    daemon = await hived.start(config, port=port)
    [second] = as_json(await hivectl(daemon, "sessions", "--json"))
    assert second["name"] == first["name"]
    assert second["id"] != first["id"]
    name = second["name"]

    tail = await trio.lowlevel.open_process(
        [HIVECTL, "tail", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_for(daemon),
    )
    assert tail.stdout is not None
    assert tail.stderr is not None
    try:
        with trio.fail_after(20):
            said = b""
            while b"\n" not in said:
                said += await tail.stderr.receive_some(4096)
        assert said.decode().startswith(f"following {name} ({second['id']}, ")
        sent = as_json(await hivectl(daemon, "send", name, "which one", "--json"))
        assert sent["session"] == second["id"]
        seen = b""
        with trio.fail_after(20):
            while b"you said: which one" not in seen:
                seen += await tail.stdout.receive_some(65536)
    finally:
        tail.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await tail.wait()
    logs = await hivectl(daemon, "logs", name, "--json")
    assert {orjson.loads(line)["session"] for line in out(logs).splitlines()} == {second["id"]}
    assert f"{name} ({second['id']}, " in logs.stderr.decode()


async def test_agents_lists_the_templates_with_their_descriptions(hived: Launcher) -> None:
    port, config = hived.config(
        body='[agents.rooted]\ncommand = ["true"]\ndescription = "Runs in a chosen folder"\n'
        'cwd_roots = ["/tmp"]\n'
    )
    daemon = await hived.start(config, port=port)
    listed = as_json(await hivectl(daemon, "agents", "--json", role="viewer"))
    by_name = {agent["name"]: agent for agent in listed}
    assert sorted(by_name) == ["claude", "codex", "rooted", "text"]
    assert by_name["rooted"]["description"] == "Runs in a chosen folder"
    assert by_name["rooted"]["cwd_choosable"] is True
    assert by_name["claude"]["cwd_choosable"] is False
    assert by_name["claude"]["takes_input"] is True
    assert by_name["codex"]["takes_input"] is False
    assert by_name["text"]["format"] == "text"
    assert by_name["text"]["description"] is None
    table = out(await hivectl(daemon, "agents", role="viewer"))
    assert table.splitlines()[0].split() == ["NAME", "FORMAT", "CWD", "INPUT", "DESCRIPTION"]
    assert "Runs in a chosen folder" in table
