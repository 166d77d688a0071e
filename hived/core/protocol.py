"""The wire protocol: frame text to typed requests, replies to frame text, roles, close codes.

How it works: a client frame is one JSON object with a ``type``. :func:`parse_frame` decodes it
with orjson, reads the ``id`` first (so that every error about the frame can still name the
request it answers), finds the request class of :mod:`hived.core.messages` for the ``type``, and
structures the remaining fields through the strict converter, collecting the problems (the
first :data:`MAX_PROBLEMS`: what a frame makes hived do and say stays small whatever its size)
into one :class:`~hived.core.errors.ProtocolError` whose message names the field
(``subscribe.since: expected an integer ≥ 0, got "five"``). The connection that receives the
error answers with an ``error`` frame and lives on. Server frames are built here as text
(``welcome``, ``result``, ``error``); events are encoded once by :mod:`hived.core.events`. Which
role a request needs, and which requests only the admin channel answers, is a table here; the
role order itself is in :mod:`hived.core.auth`. A WebSocket opened without a token
authenticates by its first message, a ``hello``: :func:`check_hello` decides whether it may
stay, and if not, with which close code and reason, from a bounded look at the message (never
the full request validation, which an unauthenticated client must not be able to set off).
Nothing here does I/O: the server feeds text in
and sends text out. The reference for client authors is ``docs/protocol.md``.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Mapping, Set
from typing import Any, Final, cast

import attrs
import orjson
import ormsgpack

from hived.core.auth import ADMIN_CHANNEL, may_open, role_at_least
from hived.core.config import TokenConfig
from hived.core.convert import expected, flatten_errors
from hived.core.errors import ProtocolError
from hived.core.messages import (
    CONVERTER,
    REQUEST_TYPES,
    Agents,
    BaseRequest,
    ConfigReload,
    ConnectionKick,
    Connections,
    DaemonRestart,
    DaemonStop,
    Hello,
    Notifications,
    NotifyTest,
    Ping,
    PushKey,
    PushSubscribe,
    PushUnsubscribe,
    Request,
    SessionAnswer,
    SessionApprove,
    SessionEvents,
    SessionInput,
    SessionInterrupt,
    SessionRestart,
    SessionResume,
    Sessions,
    SessionStart,
    SessionStop,
    Status,
    Subscribe,
    Unsubscribe,
    Watch,
    field_names,
)

__all__ = [
    "ADMIN_ONLY",
    "ERROR_CODES",
    "REQUEST_TYPES",
    "ROLE_REQUIRED",
    "Agents",
    "BaseRequest",
    "Caller",
    "CloseCode",
    "ConfigReload",
    "ConnectionKick",
    "Connections",
    "DaemonRestart",
    "DaemonStop",
    "Hello",
    "Notifications",
    "NotifyTest",
    "Ping",
    "PushKey",
    "PushSubscribe",
    "PushUnsubscribe",
    "Request",
    "SessionAnswer",
    "SessionApprove",
    "SessionEvents",
    "SessionInput",
    "SessionInterrupt",
    "SessionRestart",
    "SessionResume",
    "SessionStart",
    "SessionStop",
    "Sessions",
    "Status",
    "Subscribe",
    "Unsubscribe",
    "Watch",
    "close_reason",
    "error_frame",
    "forbidden_reason",
    "parse_frame",
    "parse_server_frame",
    "request_frame",
    "result_frame",
    "welcome_frame",
]

SERVER_NAME: Final = "hived"

ERROR_CODES: Final = frozenset(
    {"bad_json", "bad_request", "unknown_type", "not_found", "forbidden", "conflict", "internal"}
)
"""The ``code`` of every ``error`` frame is one of these."""

MAX_PROBLEMS: Final = 5
"""A request's ``bad_request`` error lists at most this many problems (a list field stops
being checked at as many bad items: :data:`hived.core.convert.MAX_ITEM_PROBLEMS`)."""

MAX_ERROR_MESSAGE_CHARS: Final = 1024
"""An ``error`` frame's ``message`` is cut to this many characters."""

MAX_HELLO_CHARS: Final = 4096
"""A first message longer than this is not a ``hello``: it closes with 4001 unread."""

_HELLO_KEYS: Final = frozenset({"type", "id", "token"})


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (contract: see docs/protocol.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    """The daemon is stopping: reconnect later."""
    TOO_BIG = 1009
    """A frame exceeded ``max_message_bytes``."""
    INTERNAL = 1011
    NOT_AUTHENTICATED = 4001
    """No valid token (no ``hello`` in time, a wrong one, or the token was removed)."""
    ROLE_TOO_LOW = 4003
    TOO_SLOW = 4008
    """The subscriber's queue overflowed: reconnect and resume with ``since``."""
    RATE_LIMITED = 4029


ROLE_REQUIRED: Final[Mapping[str, str]] = {
    "hello": "viewer",
    "ping": "viewer",
    "subscribe": "viewer",
    "unsubscribe": "viewer",
    "sessions": "viewer",
    "session.events": "viewer",
    "search": "viewer",
    "usage": "viewer",
    "session.export": "viewer",
    "agents": "viewer",
    "notifications": "viewer",
    "watch": "viewer",
    "push.key": "viewer",
    "push.subscribe": "viewer",
    "push.unsubscribe": "viewer",
    "session.start": "operator",
    "session.input": "operator",
    "session.approve": "operator",
    "session.answer": "operator",
    "session.interrupt": "operator",
    "session.stop": "operator",
    "session.restart": "operator",
    "session.resume": "operator",
    "session.forget": "admin",
    "status": "admin",
    "connections": "admin",
    "connection.kick": "admin",
    "config.reload": "admin",
    "daemon.stop": "admin",
    "daemon.restart": "admin",
    "notify.test": "admin",
}
"""The lowest role that may send each request type."""

ADMIN_ONLY: Final = frozenset(t for t, role in ROLE_REQUIRED.items() if role == "admin")
"""Requests answered only on the admin channel (``/v1/admin``), even for an admin token."""


@attrs.frozen
class Caller:
    """What a request handler learns about who asked."""

    connection: int
    """The connection's id (as in ``connections`` and ``welcome``)."""
    token_name: str
    """The ``name`` of the token it authenticated with."""
    role: str
    """That token's role."""


def _has_usable_id(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def parse_frame(text: str) -> Request:
    """Turn one client frame into a request; raise :class:`ProtocolError` saying what is wrong.

    The error's ``code`` is ``bad_json``, ``bad_request`` or ``unknown_type``; its
    ``request_id`` is the frame's ``id`` whenever the frame was an object with an integer or
    string ``id``.
    """
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(
            "bad_json", f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(raw, dict):
        raise ProtocolError("bad_request", expected("one JSON object (a request) per frame", raw))
    request_id = raw.get("id") if _has_usable_id(raw.get("id")) else None
    wire_type = raw.get("type")
    if "type" not in raw:
        raise ProtocolError(
            "bad_request", f"type: required, but missing; known: {_known_types()}", request_id
        )
    if not isinstance(wire_type, str):
        raise ProtocolError(
            "bad_request", "type: " + expected("a message type (a string)", wire_type), request_id
        )
    cls = REQUEST_TYPES.get(wire_type)
    if cls is None:
        raise ProtocolError(
            "unknown_type",
            f"unknown message type {_quote(wire_type)}; known: {_known_types()}",
            request_id,
        )
    return cast("Request", _structure(cls, raw, request_id))


def _structure(
    cls: type[BaseRequest], raw: dict[str, Any], request_id: int | str | None
) -> BaseRequest:
    known = field_names(cls)
    unknown = (key for key in raw if key not in known)
    problems = [
        f"{cls.type}.{_shorten(key)}: unknown field; known fields: {', '.join(known)}"
        for key in itertools.islice(unknown, MAX_PROBLEMS + 1)
    ]
    fields = {key: value for key, value in raw.items() if key != "type" and key in known}
    try:
        request = CONVERTER.structure(fields, cls)
    except Exception as exc:  # cattrs raises exception groups of many kinds
        problems.extend(f"{cls.type}.{path}: {message}" for path, message in flatten_errors(exc))
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS])
        if len(problems) > MAX_PROBLEMS:
            shown += "; and more (only the first problems are listed)"
        raise ProtocolError("bad_request", shown, request_id)
    return request


def _known_types() -> str:
    return ", ".join(REQUEST_TYPES)


def _shorten(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _quote(text: str) -> str:
    return "'" + _shorten(text).replace("'", "\\'") + "'"


@attrs.frozen
class HelloOutcome:
    """What a connection's first message decides: its token, or the close that says why not."""

    token: TokenConfig | None
    """The token the connection authenticated with; None when it must close."""
    code: int
    """The :class:`CloseCode` to close with (``NORMAL`` when authenticated)."""
    reason: str
    """The close reason, for the client and the log ("" when authenticated); never the secret."""


def check_hello(
    text: str | None, lookup: Callable[[str], TokenConfig | None], channel: str
) -> HelloOutcome:
    """Authenticate a connection on ``channel`` by its first message, ``text``.

    ``text`` is None for a binary message. Anything but a ``hello`` (an object of at most
    :data:`MAX_HELLO_CHARS` with ``type``, a non-empty string ``token`` and an optional ``id``,
    nothing else) closes with 4001 and says how to authenticate; a secret that ``lookup`` does
    not know closes with 4001, a token whose role may not open ``channel`` with 4003.
    """
    first = 'authenticate first: send {"type": "hello", "token": "..."}'
    # A bounded look, never the full request validation: before authentication a client must
    # not make hived do work (or build replies) in proportion to what it sends.
    if text is None or len(text) > MAX_HELLO_CHARS:
        return HelloOutcome(None, CloseCode.NOT_AUTHENTICATED, first)
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        return HelloOutcome(None, CloseCode.NOT_AUTHENTICATED, first)
    if (
        not isinstance(raw, dict)
        or raw.get("type") != "hello"
        or not raw.keys() <= _HELLO_KEYS
        or not isinstance(raw.get("token"), str)
        or not raw["token"]
        or not (raw.get("id") is None or _has_usable_id(raw["id"]))
    ):
        return HelloOutcome(None, CloseCode.NOT_AUTHENTICATED, first)
    token = lookup(raw["token"])
    if token is None:
        return HelloOutcome(None, CloseCode.NOT_AUTHENTICATED, "not authenticated: unknown token")
    if not may_open(channel, token.role):
        return HelloOutcome(
            None, CloseCode.ROLE_TOO_LOW, f"role {token.role} may not open {channel}"
        )
    return HelloOutcome(token, CloseCode.NORMAL, "")


def forbidden_reason(wire_type: str, role: str, channel: str) -> str | None:
    """Why a connection of ``role`` on ``channel`` may not send ``wire_type``; None if it may.

    The reason is the message of the ``forbidden`` error the server answers with.
    """
    if wire_type in ADMIN_ONLY and channel != ADMIN_CHANNEL:
        return f"{wire_type} is answered only on the admin channel {ADMIN_CHANNEL}"
    required = ROLE_REQUIRED.get(wire_type, "admin")
    if not role_at_least(role, required):
        return f"{wire_type} needs the {required} role; this connection's token is {role}"
    return None


def _default(value: object) -> Any:
    """orjson fallback: attrs values (summaries, stats) and other mappings and sets."""
    if attrs.has(type(value)):
        return attrs.asdict(value)  # type: ignore[arg-type]  # attrs.has() checked it
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Set):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: object) -> str:
    """JSON text of a server message (orjson, with attrs values and mappings allowed)."""
    return orjson.dumps(value, default=_default).decode()


def welcome_frame(
    role: str,
    token_name: str,
    heartbeat_interval_s: float,
    version: str,
    connection: int,
    node: str | None = None,
) -> str:
    """The first frame of an authenticated connection (``token_name``: the token's name in the
    config, never its secret; ``node``: the cluster node's name, only in a cluster)."""
    welcome = {
        "type": "welcome",
        "server": SERVER_NAME,
        "version": version,
        "role": role,
        "token_name": token_name,
        "heartbeat_interval_s": heartbeat_interval_s,
        "connection": connection,
    }
    if node is not None:
        welcome["node"] = node
    return dumps(welcome)


def result_frame(request_id: int | str | None, result: object) -> str:
    """The answer to a request that succeeded; ``result`` is any JSON-able value."""
    return dumps({"type": "result", "id": request_id, "result": result})


def error_frame(request_id: int | str | None, code: str, message: str) -> str:
    """The answer to a request that failed (``id`` is null when the frame had none)."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}; known: {', '.join(sorted(ERROR_CODES))}")
    if len(message) > MAX_ERROR_MESSAGE_CHARS:
        message = message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
    return dumps({"type": "error", "id": request_id, "code": code, "message": message})


def request_frame(request: BaseRequest) -> str:
    """A request as a client frame: ``type``, then the fields that are set (None left out)."""
    message: dict[str, Any] = {"type": request.type}
    for field in attrs.fields(type(request)):
        value = getattr(request, field.name)
        if value is not None:
            message[field.name] = value
    return dumps(message)


def parse_server_frame(frame: str | bytes) -> list[dict[str, Any]]:
    """The messages in one server frame: a lone object, or an array of them (coalesced); JSON
    text, or MessagePack bytes (the ``hived.v1.msgpack`` subprotocol's binary frames)."""
    if isinstance(frame, bytes):
        try:
            raw = ormsgpack.unpackb(frame)
        except ormsgpack.MsgpackDecodeError as exc:
            raise ProtocolError("bad_json", f"not valid MessagePack: {exc}") from None
    else:
        try:
            raw = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("bad_json", f"not valid JSON: {exc.msg}") from None
    messages = raw if isinstance(raw, list) else [raw]
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolError("bad_request", expected("a message object", message))
    return messages


MAX_CLOSE_REASON_BYTES: Final = 123
"""RFC 6455 leaves 123 bytes of a close frame for the reason."""


def close_reason(text: str) -> str:
    """``text`` cut to fit a WebSocket close frame (123 UTF-8 bytes), without splitting a char."""
    data = text.encode()
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return text
    return data[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."
