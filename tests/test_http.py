"""hived.core.http: request heads in, responses out, without I/O."""

from __future__ import annotations

import orjson
import pytest

from hived.core.http import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    HttpError,
    Request,
    check_upgrade,
    content_length,
    error_response,
    head_length,
    json_response,
    parse_head,
    response,
    wants_upgrade,
)


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


UPGRADE = (
    "GET /v1/ws HTTP/1.1",
    "Host: 127.0.0.1:7420",
    "Connection: keep-alive, Upgrade",
    "Upgrade: websocket",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
)


def status_of(excinfo: pytest.ExceptionInfo[HttpError]) -> int:
    return excinfo.value.status


def test_a_get_request_parses_into_its_parts() -> None:
    request = parse_head(head("GET /a%20b/c?x=1&x=2&y=z HTTP/1.1", "Host: h", "X-Thing:  v  "))
    assert request == Request(
        method="GET",
        target="/a%20b/c?x=1&x=2&y=z",
        path="/a b/c",
        query={"x": ("1", "2"), "y": ("z",)},
        version="HTTP/1.1",
        headers=(("host", "h"), ("x-thing", "v")),
    )


def test_header_lookup_ignores_case_and_joins_repeats() -> None:
    request = parse_head(head("GET / HTTP/1.1", "Host: h", "Accept: a", "ACCEPT: b"))
    assert request.header("accept") == "a, b"
    assert request.header("Host") == "h"
    assert request.header("missing") is None


def test_list_header_tokens_are_lower_cased() -> None:
    request = parse_head(head(*UPGRADE))
    assert request.header_tokens("connection") == {"keep-alive", "upgrade"}


def test_http_1_0_needs_no_host() -> None:
    assert parse_head(head("GET /healthz HTTP/1.0")).version == "HTTP/1.0"


def test_head_length_finds_the_blank_line() -> None:
    data = head("GET / HTTP/1.1", "Host: h")
    assert head_length(data + b"body") == len(data)
    assert head_length(data[:-2]) is None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET / HTTP/1.1\r\nHost: h\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\n",
        b"\n",
        b"GET / HTTP/1.1\n",  # incomplete: refused as soon as the bare LF is seen
    ],
)
def test_a_head_with_a_bare_lf_is_400(data: bytes) -> None:
    with pytest.raises(HttpError, match="bare LF") as excinfo:
        head_length(data)
    assert status_of(excinfo) == 400


def test_a_bare_lf_in_the_body_after_the_head_is_not_the_heads() -> None:
    data = head("POST / HTTP/1.1", "Host: h")
    assert head_length(data + b"a\nb\n\n") == len(data)


def test_a_head_of_exactly_the_limit_is_accepted() -> None:
    start = b"GET / HTTP/1.1\r\nHost: h\r\nX: "
    data = start + b"a" * (MAX_HEAD_BYTES - len(start) - 4) + b"\r\n\r\n"
    assert len(data) == MAX_HEAD_BYTES
    assert head_length(data) == MAX_HEAD_BYTES
    assert parse_head(data).header("x") is not None


def test_a_head_past_the_limit_is_431() -> None:
    with pytest.raises(HttpError) as excinfo:
        head_length(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES)
    assert status_of(excinfo) == 431


def test_too_many_headers_is_431() -> None:
    lines = [f"X-{i}: v" for i in range(MAX_HEADERS + 1)]
    with pytest.raises(HttpError) as excinfo:
        parse_head(head("GET / HTTP/1.1", *lines))
    assert status_of(excinfo) == 431


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello
        head("GET"),
        head("GET / HTTP/1.1 extra"),
        head("get/ HTTP/1.1"),
        head("GET  / HTTP/1.1", "Host: h"),
        head("GET http://example.com/ HTTP/1.1", "Host: h"),
        head("GET / HTTP/1.1"),  # no Host
        head("GET / HTTP/1.1", "Host: h", "Bad Header: v"),
        head("GET / HTTP/1.1", "Host: h", "NoColon"),
        head("GET / HTTP/1.1", "Host: h", " folded"),
        head("GET / HTTP/1.1", "Host: h", "X: a\x00b"),
        head("GET / HTTP/1.1", "Host: h", "Host: i"),
        head("GET / HTTP/1.1", "Host: h", "Content-Length: 1", "Content-Length: 2"),
        head("GET /%ff HTTP/1.1", "Host: h"),
        head("GET /%00 HTTP/1.1", "Host: h"),
        b"GET / HTTP/1.1\r\nHost: h\r\n",  # no blank line
    ],
)
def test_garbage_is_400(data: bytes) -> None:
    with pytest.raises(HttpError) as excinfo:
        parse_head(data)
    assert status_of(excinfo) == 400
    assert excinfo.value.message


def test_another_http_version_is_505() -> None:
    with pytest.raises(HttpError) as excinfo:
        parse_head(head("GET / HTTP/2.0", "Host: h"))
    assert status_of(excinfo) == 505


def test_content_length_is_read_and_checked() -> None:
    assert content_length(parse_head(head("POST / HTTP/1.1", "Host: h"))) is None
    assert (
        content_length(parse_head(head("POST / HTTP/1.1", "Host: h", "Content-Length: 12"))) == 12
    )
    with pytest.raises(HttpError) as excinfo:
        content_length(parse_head(head("POST / HTTP/1.1", "Host: h", "Content-Length: -1")))
    assert status_of(excinfo) == 400


def test_a_chunked_body_is_411() -> None:
    request = parse_head(head("POST / HTTP/1.1", "Host: h", "Transfer-Encoding: chunked"))
    with pytest.raises(HttpError) as excinfo:
        content_length(request)
    assert status_of(excinfo) == 411


def test_a_well_formed_upgrade_passes() -> None:
    request = parse_head(head(*UPGRADE))
    assert wants_upgrade(request)
    check_upgrade(request)


def test_a_plain_get_on_a_websocket_path_is_426() -> None:
    with pytest.raises(HttpError) as excinfo:
        check_upgrade(parse_head(head("GET /v1/ws HTTP/1.1", "Host: h")))
    assert status_of(excinfo) == 426
    assert ("Upgrade", "websocket") in excinfo.value.headers


def test_an_upgrade_of_another_version_is_426_naming_13() -> None:
    lines = [line for line in UPGRADE if not line.startswith("Sec-WebSocket-Version")]
    with pytest.raises(HttpError) as excinfo:
        check_upgrade(parse_head(head(*lines, "Sec-WebSocket-Version: 8")))
    assert status_of(excinfo) == 426
    assert ("Sec-WebSocket-Version", "13") in excinfo.value.headers


def test_an_upgrade_without_a_key_is_400() -> None:
    lines = [line for line in UPGRADE if not line.startswith("Sec-WebSocket-Key")]
    with pytest.raises(HttpError) as excinfo:
        check_upgrade(parse_head(head(*lines)))
    assert status_of(excinfo) == 400


def split(data: bytes) -> tuple[str, dict[str, str], bytes]:
    top, _, body = data.partition(b"\r\n\r\n")
    status, *lines = top.decode().split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


def test_a_response_has_length_and_connection_close() -> None:
    status, headers, body = split(response(200, b"hi", extra_headers=[("X-A", "b")]))
    assert status == "HTTP/1.1 200 OK"
    assert headers == {
        "Content-Length": "2",
        "Content-Type": "text/plain; charset=utf-8",
        "X-A": "b",
        "Connection": "close",
    }
    assert body == b"hi"


def test_an_empty_response_has_no_content_type() -> None:
    _, headers, body = split(response(200))
    assert headers == {"Content-Length": "0", "Connection": "close"}
    assert body == b""


def test_a_head_only_response_keeps_the_length_but_not_the_body() -> None:
    status, headers, body = split(json_response(503, {"status": "stopping"}, head_only=True))
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert headers["Content-Length"] == str(len(orjson.dumps({"status": "stopping"})))
    assert body == b""


def test_an_error_response_carries_its_headers_and_message() -> None:
    error = HttpError(405, "/healthz answers GET", [("Allow", "GET, HEAD")])
    status, headers, body = split(error_response(error))
    assert status == "HTTP/1.1 405 Method Not Allowed"
    assert headers["Allow"] == "GET, HEAD"
    assert body == b"/healthz answers GET\n"


def test_a_header_value_with_a_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="control characters"):
        response(200, extra_headers=[("X", "a\r\nSet-Cookie: b")])
