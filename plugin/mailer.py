"""Hand finished messages to SMTP, or to .eml files in the outbox for the embedded default."""

import os
import smtplib
import ssl
import tempfile
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit


class DeliveryError(Exception):
    """A message could not be handed over; `permanent` says whether retrying can help."""

    def __init__(self, reason: str, *, permanent: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Mailer(Protocol):
    """Deliver one message; `key` names it so a retry replaces rather than duplicates."""

    channel: str

    def send(self, message: EmailMessage, key: str) -> None: ...


class SmtpMailer:
    """Send through an SMTP server named by a smtp:// or smtps:// URL."""

    channel = "email"

    def __init__(self, url: str, timeout: float = 10):
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("ALLIANCE_SMTP_URL must look like smtp://host:port or smtps://host")
        self.host = parts.hostname
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.implicit_tls = parts.scheme == "smtps"
        self.starttls = parse_qs(parts.query).get("starttls", ["false"])[0] == "true"
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout

    def _connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.starttls:
            smtp.starttls(context=ssl.create_default_context())
        return smtp

    def send(self, message: EmailMessage, key: str) -> None:
        """Send one message; classify failures as permanent (5xx) or worth a retry."""
        try:
            with self._connect() as smtp:
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            # Only codes survive into the reason: the refused address is PHI.
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise DeliveryError(f"recipient refused {codes}", permanent=codes[0] >= 500) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"smtp {exc.smtp_code}", permanent=exc.smtp_code >= 500) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"smtp unavailable ({type(exc).__name__})") from exc


class OutboxMailer:
    """Write each message to <outbox>/<key>.eml, so `make run` needs no mail server."""

    channel = "file"

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def send(self, message: EmailMessage, key: str) -> None:
        """Write the message atomically; a retry overwrites the same file."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(message.as_bytes())
            os.replace(tmp, self.directory / f"{key}.eml")
        except OSError as exc:
            raise DeliveryError(f"outbox not writable ({type(exc).__name__})") from exc


def mailer_from_config(config: dict) -> Mailer:
    """Choose SMTP when ALLIANCE_SMTP_URL is set, else the outbox directory."""
    if config["SMTP_URL"]:
        return SmtpMailer(config["SMTP_URL"], timeout=config["SMTP_TIMEOUT_SECONDS"])
    return OutboxMailer(config["OUTBOX_DIR"])
