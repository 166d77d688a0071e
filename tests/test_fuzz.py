"""A standing fuzzer for the sans-IO core (issue #19): whatever a peer sends, only the
documented errors come out — never another exception — and what hived says back stays small.

Bounded: each property runs a fixed number of examples, no database of examples is kept, no
deadline (a loaded CI machine must not fail it), so the module runs in a few seconds.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hived.core.auth import TokenTable
from hived.core.errors import ProtocolError
from hived.core.http import HttpError, check_upgrade, content_length, head_length, parse_head
from hived.core.protocol import (
    ERROR_CODES,
    MAX_ERROR_MESSAGE_CHARS,
    REQUEST_TYPES,
    BaseRequest,
    CloseCode,
    check_hello,
    error_frame,
    parse_frame,
)
from tests.test_auth import ALICE_SECRET, token

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TABLE = TokenTable((token("alice", "admin", ALICE_SECRET),))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "id",
        "topic",
        "since",
        "agent",
        "args",
        "cwd",
        "name",
        "prompt",
        "session",
        "text",
        "request_id",
        "allow",
        "message",
        "limit",
        "state",
        "all",
        "connection",
        "reason",
        "token",
    ]
) | st.text(max_size=12)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request-shaped object: a known (or unknown) type, fields of any JSON value."""
    message: dict[str, Any] = draw(st.dictionaries(field_names, json_values, max_size=6))
    message["type"] = draw(st.sampled_from(list(REQUEST_TYPES)) | st.text(max_size=12))
    return message


def _answers(text: str) -> None:
    """``text`` parses to a request, or to a ProtocolError whose error frame is well formed."""
    error: ProtocolError | None = None
    try:
        request = parse_frame(text)
    except ProtocolError as exc:
        error = exc
    if error is None:
        assert isinstance(request, BaseRequest)
        return
    assert error.code in ERROR_CODES
    request_id = error.request_id if isinstance(error.request_id, int | str) else None
    frame = orjson.loads(error_frame(request_id, error.code, error.message))
    assert len(frame["message"]) <= MAX_ERROR_MESSAGE_CHARS


@FUZZ
@given(st.text(max_size=200))
def test_any_text_is_a_request_or_a_protocol_error(text: str) -> None:
    _answers(text)


@FUZZ
@given(requests())
def test_any_request_shaped_object_is_a_request_or_a_protocol_error(
    message: dict[str, Any],
) -> None:
    _answers(orjson.dumps(message).decode())


@FUZZ
@given(json_values)
def test_any_json_value_is_a_request_or_a_protocol_error(value: object) -> None:
    _answers(orjson.dumps(value).decode())


@FUZZ
@given(
    st.one_of(st.none(), st.text(max_size=200), requests().map(lambda m: orjson.dumps(m).decode()))
)
def test_any_first_message_authenticates_or_closes_with_4001_or_4003(text: str | None) -> None:
    outcome = check_hello(text, TABLE.lookup, "/v1/ws")
    if outcome.token is None:
        assert outcome.code in (CloseCode.NOT_AUTHENTICATED, CloseCode.ROLE_TOO_LOW)
        assert len(outcome.reason.encode()) <= 123
    else:
        assert outcome.code == CloseCode.NORMAL


header_names = st.sampled_from(
    [
        "Host",
        "Origin",
        "Authorization",
        "Content-Length",
        "Transfer-Encoding",
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "X-Any",
    ]
) | st.text(max_size=10)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Request heads near the real shape: a request line, headers, CRLF or bare LF."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "get", ""]) | st.text(max_size=6))
    target = draw(
        st.sampled_from(["/", "/healthz", "/v1/ws", "/v1/hooks/claude", "*"]) | st.text(max_size=20)
    )
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/x"]))
    newline = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    lines = [f"{method} {target} {version}"]
    for name, value in draw(st.lists(st.tuples(header_names, st.text(max_size=20)), max_size=8)):
        lines.append(f"{name}: {value}")
    text = newline.join(lines) + newline + newline
    return text.encode("utf-8", errors="surrogatepass")


@FUZZ
@given(st.one_of(heads(), st.binary(max_size=300)))
def test_any_request_head_parses_or_is_an_http_error(data: bytes) -> None:
    error: HttpError | None = None
    try:
        length = head_length(data)
        request = parse_head(data[:length] if length is not None else data)
        content_length(request)
        check_upgrade(request)
    except HttpError as exc:
        error = exc
    if error is not None:
        assert 400 <= error.status < 600
        assert "\n" not in error.message
