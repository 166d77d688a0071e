"""Claude Code hooks against the real daemon: ``POST /v1/hooks/claude`` and ``hivectl hook``.

Payloads have the shapes Claude Code sends (../shared/reference/agent-formats.md, "Claude Code
hooks"). An observed session is one hived did not start: it is keyed by the agent's own
``session_id``, shown in ``sessions`` with ``observed: true``, and its state follows its hooks.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
import trio

from hived.client import Client, connect
from tests.e2e.harness import (
    DEADLINE_S,
    SECRETS,
    Launcher,
    free_port,
    http_request,
)

pytestmark = pytest.mark.e2e

HIVECTL: Final = str(Path(sys.executable).parent / "hivectl")
HOOKS_PATH: Final = "/v1/hooks/claude"
MAX_MESSAGE_BYTES: Final = 4096


def payload(session_id: str, hook: str, **extra: Any) -> dict[str, Any]:
    """A hook payload with the fields every hook has."""
    return {
        "session_id": session_id,
        "transcript_path": f"/home/dev/.claude/projects/demo/{session_id}.jsonl",
        "cwd": "/home/dev/demo",
        "permission_mode": "default",
        "hook_event_name": hook,
        **extra,
    }


async def post(
    port: int, body: bytes, token: str | None = SECRETS["agent"]
) -> tuple[int, dict[str, str], bytes]:
    auth = "" if token is None else f"Authorization: Bearer {token}\r\n"
    head = (
        f"POST {HOOKS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return await http_request(port, head.encode() + body)


async def post_hook(port: int, hook: dict[str, Any]) -> None:
    status, _, body = await post(port, orjson.dumps(hook))
    assert (status, body) == (200, b""), (hook["hook_event_name"], status, body)


async def observed(client: Client, agent_session_id: str) -> dict[str, Any] | None:
    listed = await client.request("sessions", all=True)
    for entry in listed["sessions"]:
        if entry["agent_session_id"] == agent_session_id:
            return dict(entry)
    return None


async def wait_observed_state(client: Client, agent_session_id: str, want: str) -> dict[str, Any]:
    """Poll ``sessions`` until the observed session is in state ``want``; its summary."""
    entry = None
    with trio.move_on_after(DEADLINE_S):
        while True:
            entry = await observed(client, agent_session_id)
            if entry is not None and entry["state"] == want:
                return entry
            await trio.sleep(0.05)
    raise AssertionError(f"observed session {agent_session_id} not {want}; last seen: {entry}")


def hivectl_env(url: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HIVED_")}
    environ.update(
        HIVED_URL=url, HIVED_TOKEN=SECRETS["agent"], HIVED_CONFIG="/nonexistent/hived.toml"
    )
    return environ


async def test_the_hook_endpoint_answers_200_401_400_and_413(hived: Launcher) -> None:
    port, config = hived.config(server=f"max_message_bytes = {MAX_MESSAGE_BYTES}\n")
    daemon = await hived.start(config, port=port)
    good = orjson.dumps(payload(str(uuid.uuid4()), "SessionStart", source="startup"))

    status, headers, body = await post(port, good)
    assert (status, body) == (200, b"")
    assert headers.get("content-length", "0") == "0"
    for role in ("viewer", "operator", "admin"):
        status, _, body = await post(port, good, SECRETS[role])
        assert (status, body) == (200, b""), role

    for token in (None, "not-a-configured-token"):
        status, headers, _ = await post(port, good, token)
        assert status == 401, token
        assert headers.get("connection") == "close"

    for not_an_object in (b"[1, 2]", b'"SessionStart"', b"{not json", b""):
        status, _, body = await post(port, not_an_object)
        assert status == 400, not_an_object
        assert body, "a 400 says why"

    huge = orjson.dumps(payload("big", "UserPromptSubmit", prompt="x" * MAX_MESSAGE_BYTES))
    status, _, _ = await post(port, huge)
    assert status == 413

    status, _, _ = await http_request(
        port, f"GET {HOOKS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    )
    assert status == 405
    assert daemon.proc.poll() is None


async def test_an_observed_session_follows_its_hooks(hived: Launcher) -> None:
    daemon = await hived.start()
    agent_id = str(uuid.uuid4())
    async with connect(daemon.ws_url, SECRETS["viewer"], reconnect=False) as client:
        lifecycle = await client.subscribe("sessions", since=0)

        await post_hook(daemon.port, payload(agent_id, "SessionStart", source="startup"))
        entry = await wait_observed_state(client, agent_id, "RUNNING")
        assert entry["observed"] is True
        assert entry["agent"] == "claude"
        assert entry["cwd"] == "/home/dev/demo"
        session = entry["id"]
        hooks = await client.subscribe(f"session/{session}", since=0)

        steps: list[tuple[dict[str, Any], str]] = [
            (payload(agent_id, "UserPromptSubmit", prompt="fix the bug"), "WORKING"),
            (
                payload(
                    agent_id,
                    "Notification",
                    message="Claude needs your permission to use Bash",
                    notification_type="permission_prompt",
                ),
                "WAITING",
            ),
            (
                payload(
                    agent_id,
                    "PreToolUse",
                    tool_name="Bash",
                    tool_input={"command": "pytest -q"},
                    tool_use_id="toolu_01",
                ),
                "WORKING",
            ),
            (
                payload(
                    agent_id,
                    "PermissionRequest",
                    tool_name="Bash",
                    tool_input={"command": "rm -rf build"},
                ),
                "WAITING",
            ),
            (payload(agent_id, "SessionEnd", reason="prompt_input_exit"), "EXITED"),
        ]
        for hook, want in steps:
            await post_hook(daemon.port, hook)
            await wait_observed_state(client, agent_id, want)

        ended = await wait_observed_state(client, agent_id, "EXITED")
        assert ended["ended_at"] is not None
        live = await client.request("sessions")
        assert session not in [s["id"] for s in live["sessions"]]

        posted = ["SessionStart"] + [hook["hook_event_name"] for hook, _ in steps]
        received: list[dict[str, Any]] = []
        with trio.fail_after(DEADLINE_S):
            while len([e for e in received if e["kind"] == "hook"]) < len(posted):
                received.append(await hooks.receive())
        hook_events = [e for e in received if e["kind"] == "hook"]
        assert [e["data"]["hook_event_name"] for e in hook_events] == posted
        assert hook_events[2]["data"]["notification_type"] == "permission_prompt"
        assert all(e["session"] == session for e in received)

        states: list[str] = []
        with trio.fail_after(DEADLINE_S):
            while states[-1:] != ["EXITED"]:
                event = await lifecycle.receive()
                if event["kind"] == "state" and event["session"] == session:
                    states.append(event["data"]["state"])
        assert states == ["RUNNING", "WORKING", "WAITING", "WORKING", "WAITING", "EXITED"]


async def test_hivectl_hook_exits_0_fast_when_hived_is_down_or_hung() -> None:
    hook = orjson.dumps(payload(str(uuid.uuid4()), "Stop", stop_hook_active=False))
    down = f"ws://127.0.0.1:{free_port()}"
    # A socket that listens but never answers: the connection is accepted by the kernel.
    hung = trio.socket.socket()
    await hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    with hung:
        hung_url = f"ws://127.0.0.1:{hung.getsockname()[1]}"
        for url in (down, hung_url):
            began = trio.current_time()
            with trio.fail_after(3.0):
                result = await trio.run_process(
                    [HIVECTL, "hook"],
                    stdin=hook,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=hivectl_env(url),
                )
            assert result.returncode == 0, (url, result.stderr)
            assert result.stderr.strip(), f"{url}: a note on stderr says the post failed"
            assert b"Traceback" not in result.stderr
            assert result.stdout == b""
            assert trio.current_time() - began < 3.0
