#!/usr/bin/env python3
"""A scripted Claude Code (stream-json both ways) for the dashboard's tests of agent output.

Each prompt is one turn, chosen by a word in it:

- ``markdown``: a message with a heading, a list, a code block, a link, a script tag and an
  image with a handler (to be shown as text or dropped, never run);
- ``edit``: thinking, an Edit and a Write (with their tool results), and a Bash call whose
  output has terminal colours;
- ``ask``: an AskUserQuestion permission request; the answers that come back are told in a
  message;
- ``elicit``: an MCP elicitation; the content that comes back is told in a message;
- ``always``: a Bash permission request offering "always allow"; what came back is told.

Every turn ends with a ``result``. Standard library only.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

SESSION = str(uuid.uuid4())

MARKDOWN = (
    "# Plan\n\nI will:\n\n1. read `app.py`\n2. fix **the bug**\n\n"
    "```python\ndef hello():\n    return 'hi'\n```\n\n"
    "See [the docs](https://example.org/docs).\n\n"
    '<script>window.pwned = 1</script>\n\n<img src=x onerror="window.pwned = 2">\n'
)
QUESTION = {
    "questions": [
        {
            "question": "Which colour do you prefer?",
            "header": "Colour",
            "options": [
                {"label": "Red", "description": "A warm colour"},
                {"label": "Blue", "description": "A cool colour"},
            ],
            "multiSelect": False,
        }
    ]
}
SCHEMA = {
    "type": "object",
    "properties": {
        "ticket": {"type": "string", "title": "Ticket", "description": "Its key, as ABC-1"},
        "urgent": {"type": "boolean", "title": "Urgent"},
    },
    "required": ["ticket"],
}


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def assistant(block: dict[str, Any]) -> None:
    emit(
        {
            "type": "assistant",
            "message": {"role": "assistant", "content": [block], "model": "scripted"},
            "session_id": SESSION,
        }
    )


def say(text: str) -> None:
    assistant({"type": "text", "text": text})


def tool(name: str, tool_input: dict[str, Any], output: str, is_error: bool = False) -> None:
    tool_id = "toolu_" + uuid.uuid4().hex[:12]
    assistant({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
    result = {
        "type": "tool_result",
        "tool_use_id": tool_id,
        "content": output,
        "is_error": is_error,
    }
    emit({"type": "user", "message": {"role": "user", "content": [result]}, "session_id": SESSION})


def ask(request: dict[str, Any]) -> dict[str, Any]:
    """Send a control request; the response to it (other lines read meanwhile are dropped)."""
    request_id = str(uuid.uuid4())
    emit({"type": "control_request", "request_id": request_id, "request": request})
    for line in sys.stdin:
        obj = json.loads(line)
        response = obj.get("response") or {}
        if obj.get("type") == "control_response" and response.get("request_id") == request_id:
            inner = response.get("response")
            return inner if isinstance(inner, dict) else {}
    raise SystemExit(0)


def turn(prompt: str) -> None:
    emit({"type": "system", "subtype": "init", "session_id": SESSION, "model": "scripted"})
    if "markdown" in prompt:
        say(MARKDOWN)
    elif "edit" in prompt:
        assistant({"type": "thinking", "thinking": "The greeting should name the world."})
        tool(
            "Edit",
            {
                "file_path": "/srv/app/hello.py",
                "old_string": "def hello():\n    return 'hi'\n",
                "new_string": "def hello():\n    return 'hello, world'\n",
            },
            "The file /srv/app/hello.py has been updated.",
        )
        tool("Write", {"file_path": "/srv/app/NOTES.md", "content": "# Notes\nnew file\n"}, "ok")
        tool("Bash", {"command": "pytest -q"}, "\x1b[32m3 passed\x1b[0m in 0.01s")
        say("Edited.")
    elif "ask" in prompt:
        answer = ask(
            {
                "subtype": "can_use_tool",
                "tool_name": "AskUserQuestion",
                "input": QUESTION,
                "tool_use_id": "toolu_q",
            }
        )
        answers = (answer.get("updatedInput") or {}).get("answers")
        say(f"You answered {json.dumps(answers)}")
    elif "elicit" in prompt:
        answer = ask(
            {
                "subtype": "elicitation",
                "mcp_server_name": "tickets",
                "message": "Which **ticket** is this about?",
                "requested_schema": SCHEMA,
            }
        )
        say(f"Elicitation {answer.get('action')}: {json.dumps(answer.get('content'))}")
    elif "always" in prompt:
        rule = {"toolName": "Bash", "ruleContent": "make test"}
        answer = ask(
            {
                "subtype": "can_use_tool",
                "tool_name": "Bash",
                "input": {"command": "make test"},
                "tool_use_id": "toolu_a",
                "permission_suggestions": [
                    {"type": "addRules", "rules": [rule], "behavior": "allow"}
                ],
            }
        )
        kept = "with" if answer.get("updatedPermissions") else "without"
        say(f"Bash {answer.get('behavior')}, {kept} a rule kept")
    else:
        say("Say markdown, edit, ask, elicit or always.")
    emit(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "duration_ms": 5,
            "num_turns": 1,
            "total_cost_usd": 0.001,
            "usage": {"input_tokens": 10, "output_tokens": 5},
            "session_id": SESSION,
        }
    )


def main() -> None:
    for line in sys.stdin:
        obj = json.loads(line)
        if obj.get("type") == "user":
            content = obj["message"]["content"]
            text = (
                content
                if isinstance(content, str)
                else " ".join(b.get("text", "") for b in content if isinstance(b, dict))
            )
            turn(text)


if __name__ == "__main__":
    main()
