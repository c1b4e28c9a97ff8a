"""Delivery channels: email (SMTP or outbox) and SMS (Twilio or outbox), one way to send."""

import os
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import requests

from plugin.delivery.messages import compose_email, compose_sms

__all__ = [
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "OutboxMailer",
    "Outgoing",
    "SmsChannel",
    "SmsOutbox",
    "SmtpMailer",
    "TwilioError",
    "TwilioRejectedError",
    "TwilioSms",
    "TwilioUnavailableError",
    "channels_from_config",
]


class DeliveryError(Exception):
    """A message could not be handed over; `permanent` says whether retrying can help.

    `reason` is stored and logged, so it carries codes only, never an address or number.
    """

    def __init__(self, reason: str, *, permanent: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Outgoing:
    """Everything a channel needs to compose and send one invitation or its reminder."""

    # The invitation id: stable, so a retry replaces rather than duplicates.
    key: str
    # An email address or an E.164 phone number, depending on the channel.
    to: str
    link: str
    unsubscribe_link: str
    practice_name: str
    # "en" or "es": choose_language already applied.
    language: str
    sent_at: datetime
    expires_at: datetime
    # The one reminder: the wording says so.
    reminder: bool = False
    # The client's IANA zone, for the deadline shown in the message; UTC when unknown.
    timezone: str | None = None


class Channel(Protocol):
    """Compose and send one message; raise DeliveryError when it cannot go."""

    # Which contact field it needs: "email" or "sms".
    name: str
    # What carried it, recorded on the invitation: "smtp", "twilio" or "file".
    transport: str

    def send(self, outgoing: Outgoing) -> str | None:
        """Send; return the provider's message id where it reports delivery (Twilio's SID)."""
        ...


# --- email ---------------------------------------------------------------------------------


class SmtpMailer:
    """Send finished messages through an SMTP server named by a smtp:// or smtps:// URL."""

    transport = "smtp"

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


def _write_atomically(directory: Path, name: str, content: bytes) -> None:
    """Write a file in one step, so a reader never sees half of it and a retry overwrites it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, directory / name)
    except OSError as exc:
        raise DeliveryError(f"outbox not writable ({type(exc).__name__})") from exc


class OutboxMailer:
    """Write each message to <outbox>/<key>.eml, so `make run` needs no mail server."""

    transport = "file"

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def send(self, message: EmailMessage, key: str) -> None:
        """Write the message; a retry overwrites the same file."""
        _write_atomically(self.directory, f"{key}.eml", message.as_bytes())


class EmailChannel:
    """Compose the invitation email and hand it to SMTP or the outbox."""

    name = "email"

    def __init__(self, mailer: SmtpMailer | OutboxMailer, sender: str):
        self.mailer = mailer
        self.sender = sender
        self.transport = mailer.transport

    def send(self, outgoing: Outgoing) -> None:
        """Compose and send one email."""
        suffix = ".reminder" if outgoing.reminder else ""
        self.mailer.send(compose_email(outgoing, self.sender), key=outgoing.key + suffix)


# --- SMS -----------------------------------------------------------------------------------


class TwilioError(DeliveryError):
    """Twilio's Messages API did not take the message; carries its response when there is one.

    The reason holds the HTTP status and Twilio's numeric code only: Twilio's message text
    repeats the phone number.
    """

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool,
        response: requests.Response | None = None,
        code: int | None = None,
    ):
        super().__init__(reason, permanent=permanent)
        self.response = response
        self.code = code


class TwilioRejectedError(TwilioError):
    """Twilio refused this message (4xx): sending it again cannot help."""


class TwilioUnavailableError(TwilioError):
    """Twilio could not be reached or asked us to slow down (timeout, 429, 5xx): retry later."""


class TwilioSms:
    """Send text messages through Twilio's Messages REST API."""

    transport = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        sender: str = "",
        messaging_service_sid: str = "",
        base_url: str = "https://api.twilio.com",
        timeout: float = 10,
        status_callback: str = "",
    ):
        if not (sender or messaging_service_sid):
            raise ValueError("set ALLIANCE_TWILIO_FROM or ALLIANCE_TWILIO_MESSAGING_SERVICE_SID")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.sender = sender
        self.messaging_service_sid = messaging_service_sid
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Where Twilio posts delivery status (/sms/twilio/status); "" asks for none.
        self.status_callback = status_callback

    def _request(self, method: str, path: str, data: dict) -> dict:
        url = f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/{path}"
        try:
            response = requests.request(
                method,
                url,
                data=data,
                auth=(self.account_sid, self.auth_token),
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise TwilioUnavailableError(
                f"twilio unavailable ({type(exc).__name__})", permanent=False
            ) from exc
        if response.ok:
            return response.json()
        code = _twilio_code(response)
        reason = f"twilio {response.status_code}" + (f" code {code}" if code else "")
        # 401/403 mean our credentials are wrong: an operator can fix that, so keep retrying
        # until the attempts run out rather than failing every queued message at once.
        if response.status_code in (401, 403, 408, 429) or response.status_code >= 500:
            raise TwilioUnavailableError(reason, permanent=False, response=response, code=code)
        raise TwilioRejectedError(reason, permanent=True, response=response, code=code)

    def send(self, to: str, body: str, key: str, *, track: bool = False) -> str:
        """Ask Twilio to send one message (with status callbacks if track); return its SID."""
        data = {"To": to, "Body": body}
        if track and self.status_callback:
            data["StatusCallback"] = self.status_callback
        if self.messaging_service_sid:
            data["MessagingServiceSid"] = self.messaging_service_sid
        else:
            data["From"] = self.sender
        return self._request("POST", "Messages.json", data)["sid"]


def _twilio_code(response: requests.Response) -> int | None:
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


class SmsOutbox:
    """Write each text message to <outbox>/<key>.sms.txt, so `make run` needs no Twilio."""

    transport = "file"

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def send(self, to: str, body: str, key: str, *, track: bool = False) -> None:
        """Write the message; a retry overwrites the same file. No status ever comes back."""
        _write_atomically(self.directory, f"{key}.sms.txt", f"To: {to}\n\n{body}\n".encode())


class SmsChannel:
    """Compose the one-segment invitation text and hand it to Twilio or the outbox."""

    name = "sms"

    def __init__(self, sender: TwilioSms | SmsOutbox):
        self.sender = sender
        self.transport = sender.transport

    def send(self, outgoing: Outgoing) -> str | None:
        """Compose and send one text message; return Twilio's SID when it will report status.

        Only the invitation's own text asks for status callbacks: a reminder that fails has
        no fallback, since the client already holds the link.
        """
        suffix = ".reminder" if outgoing.reminder else ""
        return self.sender.send(
            outgoing.to,
            compose_sms(outgoing),
            key=outgoing.key + suffix,
            track=not outgoing.reminder,
        )


def channels_from_config(config) -> dict[str, Channel]:
    """Return the email and SMS channels the config names; the outbox stands in for either."""
    if config["SMTP_URL"]:
        mailer = SmtpMailer(config["SMTP_URL"], timeout=config["SMTP_TIMEOUT_SECONDS"])
    else:
        mailer = OutboxMailer(config["OUTBOX_DIR"])
    if config["TWILIO_ACCOUNT_SID"]:
        if not config["TWILIO_AUTH_TOKEN"]:
            raise ValueError("ALLIANCE_TWILIO_AUTH_TOKEN is required with TWILIO_ACCOUNT_SID")
        sms_sender = TwilioSms(
            account_sid=config["TWILIO_ACCOUNT_SID"],
            auth_token=config["TWILIO_AUTH_TOKEN"],
            sender=config["TWILIO_FROM"],
            messaging_service_sid=config["TWILIO_MESSAGING_SERVICE_SID"],
            base_url=config["TWILIO_API_BASE_URL"],
            timeout=config["TWILIO_TIMEOUT_SECONDS"],
            status_callback=config["PUBLIC_BASE_URL"].rstrip("/") + "/sms/twilio/status",
        )
    else:
        sms_sender = SmsOutbox(config["OUTBOX_DIR"])
    return {
        "email": EmailChannel(mailer, config["MAIL_FROM"]),
        "sms": SmsChannel(sms_sender),
    }
