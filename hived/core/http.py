"""HTTP/1.1 request heads in, plain responses out: the sans-IO half of the listener.

How it works: the listener reads bytes until :func:`head_length` finds the blank line that ends a
request head (or says the head grew past :data:`MAX_HEAD_BYTES`: 431), then :func:`parse_head`
turns those bytes into a frozen :class:`Request` or raises :class:`HttpError` with the status to
answer (400 for garbage, 431 for too many headers, 505 for another HTTP version). Every answer
hived gives over plain HTTP is built by :func:`response`: a status line, ``Content-Length`` and
``Connection: close`` — one request per connection, so there is no keep-alive state to get
wrong. WebSocket upgrades are checked here (:func:`check_upgrade`) and then handed, head and
all, to the WebSocket library, which parses the head again for its own handshake. Nothing here
does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import attrs
import orjson

from hived.core.errors import HivedError

MAX_HEAD_BYTES: Final = 16 * 1024
"""Largest request head (request line and headers) accepted; larger is answered with 431."""
MAX_HEADERS: Final = 100
"""Most header lines accepted in one head; more is answered with 431."""
HEAD_END: Final = b"\r\n\r\n"

SINGLETON_HEADERS: Final = frozenset(
    {
        "host",
        "authorization",
        "content-length",
        "origin",
        "transfer-encoding",
        "sec-websocket-key",
        "sec-websocket-version",
    }
)
"""Headers a request may carry once: two of them is ambiguous (and a smuggling trick)."""

WEBSOCKET_VERSION: Final = "13"

_TOKEN: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE: Final = re.compile(rf"({_TOKEN}) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_HEADER_LINE: Final = re.compile(rf"({_TOKEN}):[ \t]*(.*?)[ \t]*")
_BAD_VALUE_CHARS: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BARE_LF: Final = re.compile(rb"(?:^|[^\r])\n")


class HttpError(HivedError, ValueError):
    """A request hived answers with an HTTP error ``status`` and a one-line ``message``.

    ``headers`` are extra response headers that belong to the answer (``Allow`` with 405,
    ``WWW-Authenticate`` with 401, ``Upgrade`` with 426).
    """

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.status = status
        self.message = message
        self.headers = tuple(headers)
        super().__init__(f"{status}: {message}")


@attrs.frozen
class Request:
    """One parsed request head."""

    method: str
    """As sent (methods are case-sensitive): ``GET``, ``POST``…"""
    target: str
    """The request target as sent: path and query, percent-encoded."""
    path: str
    """The target's path, percent-decoded."""
    query: Mapping[str, tuple[str, ...]]
    """The target's query parameters, decoded; a name may repeat."""
    version: str
    """``HTTP/1.1`` or ``HTTP/1.0``."""
    headers: tuple[tuple[str, str], ...]
    """``(name, value)`` pairs in the order sent, names lower-cased, values trimmed."""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case); repeated headers joined with ``", "``."""
        key = name.lower()
        values = [value for header, value in self.headers if header == key]
        return ", ".join(values) if values else None

    def header_tokens(self, name: str) -> frozenset[str]:
        """The comma-separated tokens of a list header, lower-cased (``Connection: keep-alive,
        Upgrade`` → ``{"keep-alive", "upgrade"}``)."""
        value = self.header(name) or ""
        return frozenset(part.strip().lower() for part in value.split(",") if part.strip())


def head_length(buffer: bytes) -> int | None:
    """The length of the complete head at the start of ``buffer`` (blank line included).

    None while the head is incomplete; :class:`HttpError` 431 once it cannot fit
    :data:`MAX_HEAD_BYTES`, 400 for a line that ends in a bare LF (RFC 9112 §2.2 lets a server
    refuse one; reading on would wait for a CRLF CRLF that never comes).
    """
    end = buffer.find(HEAD_END, 0, MAX_HEAD_BYTES)
    bare = _BARE_LF.search(buffer, 0, MAX_HEAD_BYTES if end < 0 else end + 2)
    if bare is not None:
        raise HttpError(400, "request head line ends with a bare LF; end lines with CRLF")
    if end >= 0:
        return end + len(HEAD_END)
    if len(buffer) >= MAX_HEAD_BYTES:
        raise HttpError(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
    return None


def parse_head(head: bytes) -> Request:
    """Parse a request head (through its blank line) or raise :class:`HttpError`."""
    if len(head) > MAX_HEAD_BYTES:
        raise HttpError(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
    if not head.endswith(HEAD_END):
        raise HttpError(400, "request head does not end with an empty line (CRLF CRLF)")
    lines = head[: -len(HEAD_END)].decode("latin-1").split("\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise HttpError(400, "expected a request line such as 'GET /healthz HTTP/1.1'")
    method, target, major, minor = match.groups()
    if (major, minor) not in (("1", "1"), ("1", "0")):
        raise HttpError(505, f"HTTP/{major}.{minor} is not supported; use HTTP/1.1")
    if not target.startswith("/"):
        raise HttpError(400, "expected a request target that starts with '/'")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    headers = tuple(_parse_header_line(line) for line in lines[1:])
    seen: set[str] = set()
    for name, _ in headers:
        if name in SINGLETON_HEADERS and name in seen:
            raise HttpError(400, f"header {name} appears more than once")
        seen.add(name)
    version = f"HTTP/{major}.{minor}"
    if version == "HTTP/1.1" and "host" not in seen:
        raise HttpError(400, "HTTP/1.1 requests need a Host header")
    raw_path, _, raw_query = target.partition("?")
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "the request path is not valid UTF-8 once decoded") from None
    if "\x00" in path:
        raise HttpError(400, "the request path holds a NUL character")
    query = {key: tuple(values) for key, values in parse_qs(raw_query).items()}
    return Request(method, target, path, query, version, headers)


def _parse_header_line(line: str) -> tuple[str, str]:
    if line[:1] in (" ", "\t"):
        raise HttpError(400, "folded (multi-line) header values are not accepted")
    match = _HEADER_LINE.fullmatch(line)
    if match is None:
        raise HttpError(400, f"malformed header line {_shown(line)}")
    name, value = match.groups()
    if _BAD_VALUE_CHARS.search(value):
        raise HttpError(400, f"header {name.lower()}: control characters in the value")
    return name.lower(), value


def _shown(line: str) -> str:
    text = line if len(line) <= 40 else line[:37] + "..."
    return repr(text)


def content_length(request: Request) -> int | None:
    """The body length the request announces; None without ``Content-Length``.

    A ``Transfer-Encoding`` (chunked bodies) is refused with 411: hived wants the length first
    so that it can refuse a body too large before reading it.
    """
    if request.header("transfer-encoding") is not None:
        raise HttpError(411, "send the body with Content-Length, not Transfer-Encoding")
    value = request.header("content-length")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise HttpError(400, f"Content-Length: expected a number of bytes, got {_shown(value)}")
    return int(value)


def wants_upgrade(request: Request) -> bool:
    """Does the request ask to switch to WebSocket (``Upgrade: websocket``)?"""
    return "websocket" in request.header_tokens("upgrade")


def check_upgrade(request: Request) -> None:
    """Raise :class:`HttpError` unless ``request`` is a well-formed WebSocket opening handshake.

    Checked here so that the WebSocket library is only ever handed heads it will accept.
    """
    if not wants_upgrade(request) or "upgrade" not in request.header_tokens("connection"):
        raise HttpError(
            426,
            "this path speaks WebSocket: send Connection: Upgrade and Upgrade: websocket",
            [("Upgrade", "websocket")],
        )
    if request.method != "GET" or request.version != "HTTP/1.1":
        raise HttpError(400, "a WebSocket handshake is a GET over HTTP/1.1")
    if request.header("sec-websocket-version") != WEBSOCKET_VERSION:
        raise HttpError(
            426,
            f"only WebSocket version {WEBSOCKET_VERSION} is spoken",
            [("Sec-WebSocket-Version", WEBSOCKET_VERSION)],
        )
    if not request.header("sec-websocket-key"):
        raise HttpError(400, "the WebSocket handshake lacks Sec-WebSocket-Key")


def response(
    status: int,
    body: bytes = b"",
    content_type: str | None = "text/plain; charset=utf-8",
    extra_headers: Sequence[tuple[str, str]] = (),
    *,
    head_only: bool = False,
) -> bytes:
    """The bytes of a complete response, with ``Content-Length`` and ``Connection: close``.

    ``head_only`` leaves the body out but keeps its length (the answer to a ``HEAD``).
    ``content_type`` is sent only with a body.
    """
    reason = HTTPStatus(status).phrase
    headers = [("Content-Length", str(len(body)))]
    if body and content_type is not None:
        headers.append(("Content-Type", content_type))
    headers.extend(extra_headers)
    headers.append(("Connection", "close"))
    lines = [f"HTTP/1.1 {status} {reason}"]
    for name, value in headers:
        if _BAD_VALUE_CHARS.search(name) or _BAD_VALUE_CHARS.search(value):
            raise ValueError(f"response header {name!r}: control characters are not allowed")
        lines.append(f"{name}: {value}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def json_response(
    status: int,
    value: Any,
    extra_headers: Sequence[tuple[str, str]] = (),
    *,
    head_only: bool = False,
) -> bytes:
    """A response whose body is ``value`` as JSON."""
    return response(
        status,
        orjson.dumps(value),
        "application/json",
        extra_headers,
        head_only=head_only,
    )


def error_response(error: HttpError, *, head_only: bool = False) -> bytes:
    """The answer to an :class:`HttpError`: its status, headers and message as plain text."""
    return response(
        error.status,
        (error.message + "\n").encode(),
        extra_headers=error.headers,
        head_only=head_only,
    )
