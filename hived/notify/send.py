"""Sending one message to one destination: webhook, ntfy, email (the I/O of delivery).

Each function raises :class:`DeliveryError` with words for ``hivectl notifications`` when the
message did not go (the planner retries it later); anything sent gets a 2xx or SMTP's OK.
Secret files are read at each send, so that a rotated secret needs no reload. HTTP goes
through ``httpx`` (under trio by way of anyio); SMTP through the standard library's
``smtplib`` in a worker thread, with STARTTLS before any credential.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

import httpx
import trio

from hived.core.errors import HivedError
from hived.core.notifyconfig import EmailConfig, NotifyRule
from hived.notify.message import (
    SIGNATURE_HEADER,
    Message,
    email_message,
    ntfy_request,
    signature,
    webhook_body,
)

USER_AGENT = "hived-notify"


class DeliveryError(HivedError):
    """A message did not reach its destination (the planner tries again later)."""


async def read_secret(path: str, what: str) -> bytes:
    """The first line of a secret file, without its line end."""
    try:
        data = await trio.Path(path).read_bytes()
    except OSError as exc:
        raise DeliveryError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return data.splitlines()[0] if data else b""


async def post_for_status(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    """POST ``body``; the answer's status (:class:`DeliveryError` when there is none)."""
    headers = {"User-Agent": USER_AGENT, **headers}
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"POST {url}: {type(exc).__name__}: {exc}") from None
    return response.status_code


async def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> None:
    """POST ``body``; :class:`DeliveryError` unless the answer is 2xx."""
    status = await post_for_status(url, body, headers, timeout_s)
    if not 200 <= status < 300:
        raise DeliveryError(f"POST {url}: HTTP {status}")


async def send_webhook(rule: NotifyRule, message: Message) -> None:
    hook = rule.webhook
    assert hook is not None
    body = webhook_body(rule, message)
    headers = {"Content-Type": "application/json"}
    if hook.secret_file is not None:
        key = await read_secret(hook.secret_file, "webhook.secret_file")
        headers[SIGNATURE_HEADER] = signature(key, body)
    await post(hook.url, body, headers, hook.timeout_s)


async def send_ntfy(rule: NotifyRule, message: Message) -> None:
    ntfy = rule.ntfy
    assert ntfy is not None
    headers, body = ntfy_request(rule, message)
    if ntfy.token_file is not None:
        token = await read_secret(ntfy.token_file, "ntfy.token_file")
        headers["Authorization"] = "Bearer " + token.decode("ascii", "replace")
    await post(ntfy.url, body, headers, ntfy.timeout_s)


def _smtp(config: EmailConfig, mail: EmailMessage, login: tuple[str, str] | None) -> None:
    with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
        if config.starttls:
            smtp.starttls(context=ssl.create_default_context(cafile=config.ca_file))
        if login is not None:
            smtp.login(*login)
        smtp.send_message(mail)


async def send_email(rule: NotifyRule, message: Message) -> None:
    config = rule.email
    assert config is not None
    login = None
    if config.credentials_file is not None:
        line = (await read_secret(config.credentials_file, "email.credentials_file")).decode()
        user, sep, password = line.partition(":")
        if not sep:
            raise DeliveryError(
                f"{config.credentials_file}: expected one line user:password "
                "(email.credentials_file)"
            )
        login = (user, password)
    mail = email_message(rule, message)
    try:
        with trio.fail_after(config.timeout_s * 2):
            await trio.to_thread.run_sync(_smtp, config, mail, login, abandon_on_cancel=True)
    except (OSError, smtplib.SMTPException, trio.TooSlowError) as exc:
        where = f"{config.host}:{config.port}"
        raise DeliveryError(f"SMTP {where}: {type(exc).__name__}: {exc}") from None
