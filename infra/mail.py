"""Sending email: the ``Mailer`` port and its SMTP adapter (``HUBBUB_SMTP_URL``).

``smtp://[user:password@]host[:port][?from=hubbub@example.com]`` (port 25; STARTTLS when the
server offers it) or ``smtps://...`` (TLS from the start, port 465). ``from`` is the sender
address (default ``hubbub@<host>``). The standard library's ``smtplib`` does the talking, in a
worker thread: a batch of messages is one connection, and mail is rare enough not to need more.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

TIMEOUT_S = 30.0


class Mailer(Protocol):
    sender: str

    async def send(self, messages: Sequence[EmailMessage]) -> None:
        """Deliver ``messages`` to the server (raises on failure; nothing is retried here)."""
        ...


@dataclass(frozen=True)
class SmtpMailer:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    sender: str

    @classmethod
    def from_url(cls, url: str) -> SmtpMailer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("HUBBUB_SMTP_URL must look like smtp://user:password@host:587?from=hubbub@example.com")
        tls = parts.scheme == "smtps"
        sender = parse_qs(parts.query).get("from", [f"hubbub@{parts.hostname}"])[0]
        return cls(
            parts.hostname,
            parts.port or (465 if tls else 25),
            tls,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            sender,
        )

    async def send(self, messages: Sequence[EmailMessage]) -> None:
        if messages:
            await asyncio.to_thread(self._send, messages)

    def _send(self, messages: Sequence[EmailMessage]) -> None:
        smtp_class = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
        with smtp_class(self.host, self.port, timeout=TIMEOUT_S) as smtp:
            smtp.ehlo()
            if not self.tls and smtp.has_extn("starttls"):
                smtp.starttls()
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password or "")
            for message in messages:
                smtp.send_message(message)
