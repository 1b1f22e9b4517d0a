"""SMTP through the standard library's smtplib, in a thread so the event loop never waits on the server.

A 5xx reply about the message or its recipient is permanent; 4xx replies, connection trouble and
authentication failures (the channel is broken, not the message) are retried, so they open the breaker.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from pydantic import Field, model_validator

from gateway.notify.channel import (
    Channel,
    Duration,
    Message,
    Options,
    PermanentError,
    RetryableError,
    SendResult,
    parse_options,
)


class EmailOptions(Options):
    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    sender: str = Field(min_length=3)
    #: Upgrade the connection with STARTTLS (port 587); `ssl` instead connects with TLS from the start (465).
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _tls(self) -> EmailOptions:
        if self.starttls and self.ssl:
            raise ValueError("give either starttls or ssl, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        return self


class EmailChannel(Channel):
    address_field = "email"
    parts = frozenset({"subject", "body"})

    def __init__(self, name: str, options: Mapping[str, Any], *, public_url: str = "") -> None:
        super().__init__(name, options, public_url=public_url)
        self.options = parse_options(EmailOptions, options)

    async def send(self, message: Message) -> SendResult:
        if not message.to:
            raise PermanentError("no email address")
        email = EmailMessage()
        email["From"] = self.options.sender
        email["To"] = ", ".join(message.to)
        email["Subject"] = message.subject or ""
        email["Date"] = formatdate(usegmt=True)
        domain = self.options.sender.rpartition("@")[2] or "gateway"
        # Stable across retries: a receiving system can recognise a duplicate by it.
        email["Message-ID"] = f"<{message.id}@{domain}>"
        email.set_content(message.body)
        await asyncio.to_thread(self._deliver, email)
        return SendResult(provider_id=email["Message-ID"])

    def _deliver(self, email: EmailMessage) -> None:
        options = self.options
        try:
            smtp: smtplib.SMTP
            if options.ssl:
                smtp = smtplib.SMTP_SSL(
                    options.host, options.port, timeout=options.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(options.host, options.port, timeout=options.timeout)
            with smtp:
                if options.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if options.username is not None and options.password is not None:
                    smtp.login(options.username, options.password)
                smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise _by_code(min(codes), f"recipients refused: {exc.recipients}") from exc
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            raise _by_code(exc.smtp_code, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise RetryableError(f"SMTP: {type(exc).__name__}: {exc}") from exc


def _by_code(code: int, detail: str) -> RetryableError | PermanentError:
    return PermanentError(detail) if 500 <= code < 600 else RetryableError(detail)
