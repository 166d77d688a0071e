"""The envelopes of requests forwarded to another node, and of their answers.

How it works: a request on a session another node owns is wrapped in a :class:`Command` — the
request's wire fields, who asked (token name and role: the owning node checks the role again),
the node that asked, where to push the answer, and a deadline — and appended to the owning
node's command stream as one JSON field. The owner answers with a :class:`Reply`, the same
``result`` or ``error`` it would send a client of its own. Both decode strictly: anything else
in the engine is :class:`EnvelopeError`, never a crash.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from hived.core.errors import HivedError
from hived.core.protocol import dumps


class EnvelopeError(HivedError, ValueError):
    """An entry in a command stream or a reply list that is not a valid envelope."""


@attrs.frozen
class Command:
    """One request forwarded to the node that owns its session."""

    id: str
    """Unique; names the reply list."""
    origin: str
    """The node that asked."""
    frame: str
    """The request as a client frame (:func:`~hived.core.protocol.request_frame`)."""
    token_name: str
    role: str
    """The asker's token role, as the asking node authenticated it."""
    deadline_ms: int
    """Wall-clock ms since the epoch after which the asker no longer waits: not run then."""

    def encode(self) -> bytes:
        return orjson.dumps(attrs.asdict(self))

    @classmethod
    def decode(cls, raw: str | bytes) -> Command:
        data = _object(raw, "command")
        try:
            command = cls(**data)
        except TypeError as exc:
            raise EnvelopeError(f"command: {exc}") from None
        for name in ("id", "origin", "frame", "token_name", "role"):
            if not isinstance(getattr(command, name), str):
                raise EnvelopeError(f"command: {name} is not a string")
        if isinstance(command.deadline_ms, bool) or not isinstance(command.deadline_ms, int):
            raise EnvelopeError("command: deadline_ms is not an integer")
        return command


@attrs.frozen
class Reply:
    """The owning node's answer: ``result`` when ``code`` is None, else an error."""

    result: Any = None
    code: str | None = None
    message: str = ""

    def encode(self) -> bytes:
        if self.code is None:
            return dumps({"result": self.result}).encode()
        return dumps({"error": {"code": self.code, "message": self.message}}).encode()

    @classmethod
    def decode(cls, raw: str | bytes) -> Reply:
        data = _object(raw, "reply")
        if "result" in data and len(data) == 1:
            return cls(result=data["result"])
        error = data.get("error")
        if (
            len(data) == 1
            and isinstance(error, dict)
            and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)
        ):
            return cls(code=error["code"], message=error["message"])
        raise EnvelopeError("reply: expected {result} or {error: {code, message}}")


def _object(raw: str | bytes, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"{what}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EnvelopeError(f"{what}: not a JSON object")
    return data
