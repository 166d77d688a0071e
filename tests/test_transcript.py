"""The Markdown transcript (core, synchronous) and hivectl's TIME arguments."""

from __future__ import annotations

import argparse
import datetime

import pytest

from hived.cli.history import time_arg
from hived.core.transcript import fence, markdown_event, markdown_head


def event(kind: str, **data: object) -> dict[str, object]:
    return {"kind": kind, "ts": "2026-12-05T10:11:12.000Z", "data": data}


def test_a_fence_is_longer_than_any_backtick_run_inside() -> None:
    assert fence("plain") == "```\nplain\n```"
    assert fence("a ``` b ```` c", "sh") == "`````sh\na ``` b ```` c\n`````"


def test_each_kind_reads_as_a_block() -> None:
    assert markdown_event(event("input", text="fix it\nplease")) == (
        "### Prompt (10:11:12)\n\n> fix it\n> please"
    )
    assert markdown_event(event("message", text="Done.")) == "Done."
    bash = markdown_event(event("tool_use", name="Bash", input={"command": "make test"}))
    assert bash == "**Tool: Bash**\n\n```sh\nmake test\n```"
    edit = markdown_event(
        event(
            "tool_use",
            name="Edit",
            input={"file_path": "a.py", "old_string": "x", "new_string": "y"},
        )
    )
    assert edit is not None
    assert "```diff\n--- a.py\n+++ a.py\n-x\n+y\n```" in edit
    result = markdown_event(event("tool_result", content="one\ntwo", is_error=True))
    assert (
        result == "<details><summary>Error (2 lines)</summary>\n\n```\none\ntwo\n```\n\n</details>"
    )
    turn = markdown_event(
        event("result", total_cost_usd=0.5, usage={"input_tokens": 3, "output_tokens": 4})
    )
    assert turn == "---\n\n*turn ended, cost $0.5000, tokens 3 in / 4 out*"
    assert markdown_event(event("rate_limit")) is None


def test_agent_output_cannot_leave_its_fence() -> None:
    block = markdown_event(event("tool_result", content="```\n# injected heading\n```"))
    assert block is not None
    assert block.count("````") == 2


def test_the_head_names_the_session_and_its_cost() -> None:
    head = markdown_head(
        {"id": "01J", "name": "fixer", "agent": "claude", "usage": {"cost_usd": 1.25}}
    )
    assert head.startswith("# fixer\n")
    assert "- **cost**: $1.2500" in head


def test_time_arguments_are_iso_or_an_age() -> None:
    assert time_arg("2026-12-01") == "2026-12-01T00:00:00.000Z"
    assert time_arg("2026-12-01T08:00:00+01:00") == "2026-12-01T07:00:00.000Z"
    hour_ago = datetime.datetime.fromisoformat(time_arg("1h"))
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - hour_ago).total_seconds() - 3600) < 60
    with pytest.raises(argparse.ArgumentTypeError, match="not a time"):
        time_arg("yesterday")
