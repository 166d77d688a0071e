"""A session's events as a Markdown transcript people can read.

How it works: :func:`markdown_head` writes the session's title and facts once, then
:func:`markdown_event` turns each event into a block on its own, so that a transcript is made
page by page (``session.export`` pages through the store) and never held whole. Prompts are
quoted, the agent's messages are its own Markdown, tool calls show their key input (an edit as
a diff) and their results are folded (``<details>``), thinking too; each turn's end gives its
cost and tokens. Everything the agent wrote goes inside code fences that are longer than any run
of backticks in it, so no output can break out of its block; the text outside fences (names,
prompts, messages) is the agent's and the user's own Markdown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from hived.core.history import event_text

FOLD_CHARS: Final = 20_000
"""Most characters of one tool result kept in the transcript (the JSONL export has it all)."""
_BACKTICKS: Final = re.compile(r"`+")


def fence(text: str, language: str = "") -> str:
    """``text`` in a code fence no backtick run inside it can close."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{language}\n{text.rstrip()}\n{ticks}"


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in text.rstrip().splitlines() or [""])


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def markdown_head(summary: Mapping[str, Any]) -> str:
    """The transcript's title and the session's facts."""
    usage = summary.get("usage") or {}
    facts = [
        ("session", summary.get("id")),
        ("agent", summary.get("agent")),
        ("working folder", summary.get("cwd")),
        ("started", summary.get("started_at")),
        ("ended", summary.get("ended_at")),
        ("state", summary.get("state")),
        ("cost", f"${float(usage.get('cost_usd') or 0):.4f}"),
        (
            "tokens",
            f"{usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out, "
            f"{usage.get('cache_read_tokens', 0)} cache read",
        ),
        ("turns", usage.get("turns", 0)),
    ]
    lines = [f"# {summary.get('name') or summary.get('id')}", ""]
    lines += [f"- **{label}**: {value}" for label, value in facts if value is not None]
    return "\n".join(lines) + "\n"


def _tool_use(data: Mapping[str, Any]) -> str:
    name = data.get("name") or data.get("tool_name") or "tool"
    tool_input = data.get("input")
    head = f"**Tool: {name}**"
    if isinstance(tool_input, Mapping):
        old, new = tool_input.get("old_string"), tool_input.get("new_string")
        path = tool_input.get("file_path") or tool_input.get("path")
        if isinstance(old, str) and isinstance(new, str):
            diff = [f"--- {path}", f"+++ {path}"]
            diff += ["-" + line for line in old.splitlines()]
            diff += ["+" + line for line in new.splitlines()]
            return f"{head} `{path}`\n\n" + fence("\n".join(diff), "diff")
        command = tool_input.get("command")
        if isinstance(command, str):
            return f"{head}\n\n" + fence(command, "sh")
    body = orjson.dumps(tool_input, option=orjson.OPT_INDENT_2).decode()
    return f"{head}\n\n" + fence(body, "json")


def _result(data: Mapping[str, Any]) -> str:
    cost = data.get("total_cost_usd")
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
    parts = ["turn ended"]
    if data.get("is_error"):
        parts.append(f"with an error ({data.get('subtype') or 'error'})")
    if isinstance(cost, int | float):
        parts.append(f"cost ${cost:.4f}")
    if usage:
        parts.append(
            f"tokens {usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out"
        )
    return "---\n\n*" + ", ".join(parts) + "*"


def markdown_event(event: Mapping[str, Any]) -> str | None:
    """One event as a Markdown block, or None for an event a reader does not need."""
    kind = event.get("kind")
    data = event.get("data") or {}
    if not isinstance(data, Mapping):
        return None
    ts = str(event.get("ts") or "")[11:19]
    if kind == "input":
        text = data.get("text")
        return f"### Prompt ({ts})\n\n{_quote(text)}" if isinstance(text, str) else None
    if kind == "message":
        return event_text("message", data).strip() or None
    if kind == "thinking":
        text = event_text("thinking", data).strip()
        return _details("Thinking", _quote(text)) if text else None
    if kind in ("tool_use", "permission_request"):
        block = _tool_use(data)
        return block if kind == "tool_use" else "*Permission asked:* " + block
    if kind == "tool_result":
        text = event_text("tool_result", data)
        if len(text) > FOLD_CHARS:
            text = text[:FOLD_CHARS] + f"\n… ({len(text) - FOLD_CHARS} more characters)"
        label = "Error" if data.get("is_error") else "Result"
        lines = text.count("\n") + 1 if text else 0
        return _details(f"{label} ({lines} lines)", fence(text))
    if kind == "result":
        return _result(data)
    if kind in ("stderr", "text"):
        line = data.get("line")
        return fence(line, "text") if isinstance(line, str) else None
    if kind == "state":
        reason = f" ({data['reason']})" if data.get("reason") else ""
        return f"*{ts} state: {data.get('state')}{reason}*"
    return None
