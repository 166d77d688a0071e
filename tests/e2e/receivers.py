"""Local receivers for the notifications' destinations, started by the tests (loopback only).

:class:`HttpReceiver` is a small HTTP/1.1 server in the test's trio loop that keeps every
request it gets (webhook and ntfy POSTs, Web Push deliveries) and answers with the status the
test sets. :func:`smtp_receiver` is aiosmtpd (in its own thread), with STARTTLS and a login
required. Tests poll what was received under a deadline.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from functools import partial
from typing import Any, Final

import attrs
import orjson
import trio
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HEAD_MAX_BYTES: Final = 65536
BODY_MAX_BYTES: Final = 1 << 20


@attrs.frozen
class Received:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    status: int
    """What the receiver answered."""

    def json(self) -> Any:
        return orjson.loads(self.body)


@attrs.define
class HttpReceiver:
    port: int = 0
    status: int = 200
    """The status every request is answered with (set 503 to make deliveries fail)."""
    requests: list[Received] = attrs.Factory(list)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str, status: int = 200) -> list[Received]:
        """The requests to ``path`` answered with ``status``."""
        return [r for r in self.requests if r.path == path and r.status == status]

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk or len(data) > HEAD_MAX_BYTES:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = min(int(headers.get("content-length", "0")), BODY_MAX_BYTES)
            while len(body) < length:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                body += chunk
            status = self.status
            self.requests.append(Received(method, path, headers, body, status))
            await stream.send_all(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )


@asynccontextmanager
async def http_receiver() -> AsyncIterator[HttpReceiver]:
    receiver = HttpReceiver()
    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_tcp, receiver._serve_one, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        receiver.port = listeners[0].socket.getsockname()[1]
        yield receiver
        nursery.cancel_scope.cancel()


@attrs.define
class Mailbox:
    """The mails an :func:`smtp_receiver` took, and the logins it saw."""

    port: int = 0
    mails: list[EmailMessage] = attrs.Factory(list)
    logins: list[tuple[str, str]] = attrs.Factory(list)
    tls: list[bool] = attrs.Factory(list)
    """Whether each mail came over TLS (after STARTTLS)."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        mail = BytesParser(policy=default_policy).parsebytes(content)
        assert isinstance(mail, EmailMessage)
        self.mails.append(mail)
        self.tls.append(session.ssl is not None)
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=True)


@contextmanager
def smtp_receiver(tls: ssl.SSLContext, port: int) -> Iterator[Mailbox]:
    """aiosmtpd on loopback that requires STARTTLS before a login, and a login before mail."""
    mailbox = Mailbox(port=port)
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=mailbox.authenticate,
    )
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()
