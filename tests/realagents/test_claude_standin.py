"""The real Claude Code against the scripted stand-in: the shapes hived's driver relies on.

Installs nothing: run tests/realagents/install_claude.sh first (or point HIVED_CLAUDE_BIN at a
``claude`` binary); without it these tests skip.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realagents.claude_env import claude_bin
from tests.realagents.record_claude import (
    Recorder,
    control_response,
    is_control,
    is_type,
    user_message,
)

BINARY = claude_bin()

pytestmark = pytest.mark.skipif(
    not BINARY.exists(),
    reason=f"{BINARY} not found: run tests/realagents/install_claude.sh or set HIVED_CLAUDE_BIN",
)


@pytest.fixture
def rec(tmp_path: Path) -> Iterator[Recorder]:
    recorder = Recorder(BINARY, tmp_path)
    try:
        yield recorder
    finally:
        recorder.close()


def out_lines(transcript: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["line"] for e in transcript if e["dir"] == "out" and "line" in e]


def test_two_turns_init_per_turn_usage_per_turn_cost_cumulative(rec: Recorder) -> None:
    with rec.run() as run:
        run.send(user_message("hello"))
        first = run.expect(is_type("result"))
        run.send(user_message("once again"))
        second = run.expect(is_type("result"))
        run.close_stdin()
        assert run.wait(15) == 0
        lines = out_lines(run.transcript)

    inits = [x for x in lines if x["type"] == "system" and x.get("subtype") == "init"]
    assert len(inits) == 2
    assert inits[0]["session_id"] == inits[1]["session_id"] == first["session_id"]
    assert inits[0]["model"] == "claude-sonnet-4-5-20250929"
    texts = [
        block["text"]
        for x in lines
        if x["type"] == "assistant"
        for block in x["message"]["content"]
        if block["type"] == "text"
    ]
    assert texts == ["Hi there", "Hi again"]

    assert (first["subtype"], first["is_error"], first["result"]) == ("success", False, "Hi there")
    assert second["result"] == "Hi again"
    # usage is the turn's own; total_cost_usd is the running total of the process.
    assert first["usage"]["input_tokens"] == 100
    assert first["usage"]["cache_creation_input_tokens"] == 1000
    assert first["usage"]["cache_read_input_tokens"] == 2000
    assert second["usage"]["input_tokens"] == 200
    assert second["usage"]["cache_read_input_tokens"] == 3000
    # Sonnet 4.5: $3 in, $15 out, $3.75 cache write, $0.30 cache read per million tokens.
    assert math.isclose(first["total_cost_usd"], 0.00495, rel_tol=1e-9)
    assert math.isclose(second["total_cost_usd"], 0.00495 + 0.0021, rel_tol=1e-9)

    bodies = rec.standin.messages_requests()
    assert len(bodies) == 2
    assert all(body["stream"] and body["model"] == "claude-sonnet-4-5-20250929" for body in bodies)
    assert [m["role"] for m in bodies[1]["messages"]] == ["user", "assistant", "user"]


def test_permission_allow_runs_the_tool_and_finishes_the_turn(rec: Recorder) -> None:
    with rec.run() as run:
        run.send(user_message("please runbash"))
        request = run.expect(is_control("can_use_tool"))
        inner = request["request"]
        assert inner["tool_name"] == "Bash"
        assert inner["input"]["command"] == "touch made-by-claude.txt"
        assert inner["tool_use_id"].startswith("toolu_standin_")
        assert {
            "type": "addRules",
            "rules": [{"toolName": "Bash", "ruleContent": "touch made-by-claude.txt"}],
            "behavior": "allow",
            "destination": "localSettings",
        } in inner["permission_suggestions"]

        run.send(
            control_response(
                request["request_id"], {"behavior": "allow", "updatedInput": inner["input"]}
            )
        )
        tool_result = run.expect(is_type("user"))
        result = run.expect(is_type("result"))
        run.close_stdin()
        assert run.wait(15) == 0

    block = tool_result["message"]["content"][0]
    assert block["type"] == "tool_result"
    assert block["tool_use_id"] == inner["tool_use_id"]
    assert block["is_error"] is False
    assert (rec.cwd / "made-by-claude.txt").exists()
    assert (result["subtype"], result["is_error"], result["num_turns"]) == ("success", False, 2)
    assert result["result"] == "The command ran."
    assert result["permission_denials"] == []

    last = rec.standin.messages_requests()[-1]["messages"][-1]
    assert any(
        b.get("type") == "tool_result" and b.get("tool_use_id") == inner["tool_use_id"]
        for b in last["content"]
    )
