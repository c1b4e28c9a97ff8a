"""Verify and parse Standard Webhooks deliveries (https://www.standardwebhooks.com)."""

import base64
import binascii
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from webhooks import validation
from webhooks.errors import InvalidPayloadError, InvalidSignatureError
from webhooks.events import (
    ClientContact,
    Ignored,
    Reference,
    SessionEnded,
    SmsConsent,
    Uninstalled,
)

PLATFORM = "standard"
SCHEMA = "session-ended.schema.json"
UNINSTALLED_SCHEMA = "app-uninstalled.schema.json"
SESSION_ENDED = "session.ended"
APP_UNINSTALLED = "app.uninstalled"
# Fixed inside standardwebhooks 1.1.0; repeated here only to tell stale from forged.
TOLERANCE = timedelta(minutes=5)
# The spec asks for 24 to 64 random bytes; shorter keys are a setup mistake.
MIN_SECRET_BYTES = 24

_ID = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII: safe as a log field and a DB key
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # integer seconds, as the spec says
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def decode_secret(secret: str) -> bytes:
    """Return the key bytes of a "whsec_<base64>" secret or raise ValueError."""
    encoded = secret.removeprefix("whsec_") if isinstance(secret, str) else ""
    try:
        # The library decodes leniently (skips junk); strict decoding catches typos at start-up.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        key = b""
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"webhook secret must be whsec_ + base64 of >= {MIN_SECRET_BYTES} bytes")
    return key


class StandardVerifier:
    """Check that a delivery was signed with the shared secret, recently."""

    def __init__(self, secret: str) -> None:
        """Hold the decoded key; raise ValueError for an empty or invalid secret."""
        self._webhook = Webhook(decode_secret(secret))

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the webhook-id of a genuine delivery or raise InvalidSignatureError."""
        msg_id, timestamp, signature = _read_headers(headers)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            # The library would raise this mid-verify; name it before it gets there.
            raise InvalidSignatureError("body_not_utf8") from exc
        sent = {
            "webhook-id": msg_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": signature,
        }
        try:
            self._webhook.verify(body, sent, json_parse=False)
        except WebhookVerificationError as exc:
            raise InvalidSignatureError(_reason(str(exc))) from exc
        except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors too
            raise InvalidSignatureError("malformed_header") from exc
        return msg_id


def sign(secret: str, msg_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    """Return the three Standard Webhooks headers for body, signed with secret."""
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    # Webhook.sign() stamps any datetime as UTC without converting it.
    moment = timestamp.astimezone(UTC)
    signature = Webhook(decode_secret(secret)).sign(msg_id, moment, body.decode("utf-8"))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }


def parse(
    body: bytes, event_id: str, now: datetime | None = None
) -> SessionEnded | Uninstalled | Ignored:
    """Turn a verified body into a SessionEnded or Uninstalled, or Ignored for other types.

    `now` (default: the clock) bounds when a session may have ended.
    """
    document = validation.load_object(body)
    event_type = document.get("type")
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
        raise InvalidPayloadError("type", "type must be an event type such as session.ended")
    if event_type == APP_UNINSTALLED:
        validation.validate(document, UNINSTALLED_SCHEMA)
        return Uninstalled(
            event_id=event_id, platform=PLATFORM, account_id=document["data"]["account_id"]
        )
    if event_type != SESSION_ENDED:
        return Ignored(event_id=event_id, platform=PLATFORM, event_type=event_type)
    validation.validate(document, SCHEMA)
    return _session_ended(document["data"], event_id, now or datetime.now(UTC))


def _read_headers(headers: Mapping[str, str]) -> tuple[str, str, str]:
    """Pick the three headers case-insensitively and reject malformed ones."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id, timestamp, signature = (
        lowered.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    if not (msg_id and timestamp and signature):
        raise InvalidSignatureError("missing_headers")
    if not (_ID.fullmatch(msg_id) and _TIMESTAMP.fullmatch(timestamp)):
        raise InvalidSignatureError("malformed_header")
    _check_age(int(timestamp))
    return msg_id, timestamp, _check_signatures(signature)


def _check_age(seconds: int) -> None:
    """Reject timestamps outside the tolerance, naming which side."""
    skew = time.time() - seconds
    if skew > TOLERANCE.total_seconds():
        raise InvalidSignatureError("stale_timestamp")
    if skew < -TOLERANCE.total_seconds():
        raise InvalidSignatureError("future_timestamp")


def _check_signatures(header: str) -> str:
    """Return the header with single spaces, or raise if it holds no usable v1 entry."""
    entries = header.split()
    usable = False
    for entry in entries:
        version, comma, value = entry.partition(",")
        if not (version and comma and value) or "," in value:
            raise InvalidSignatureError("malformed_header")
        if version == "v1":
            try:
                base64.b64decode(value, validate=True)
            # Not only binascii.Error: a non-ASCII character raises a plain ValueError.
            except ValueError as exc:
                raise InvalidSignatureError("malformed_header") from exc
            usable = True
    if not usable:
        # e.g. only "v1a" (asymmetric) entries: well-formed, but not a scheme we accept.
        raise InvalidSignatureError("unsupported_version")
    return " ".join(entries)


def _reason(message: str) -> str:
    """Map a standardwebhooks error message to a metrics reason."""
    if "too old" in message:
        return "stale_timestamp"
    if "too new" in message:
        return "future_timestamp"
    return "missing_headers" if "Missing" in message else "bad_signature"


def _session_ended(data: dict[str, Any], event_id: str, now: datetime) -> SessionEnded:
    """Build the event from schema-valid data, enforcing what the schema cannot."""
    started_at = validation.parse_datetime(data["started_at"])
    ended_at = validation.parse_datetime(data["ended_at"])
    validation.check_session_times(started_at, ended_at, now, ("data.started_at", "data.ended_at"))
    client = data["client"]
    encounter = data.get("encounter")
    return SessionEnded(
        event_id=event_id,
        platform=PLATFORM,
        account_id=data["account_id"],
        session_id=data["session_id"],
        started_at=started_at,
        ended_at=ended_at,
        practitioner=Reference(**data["practitioner"]),
        client=ClientContact(
            reference=client["reference"],
            email=client.get("email"),
            phone=client.get("phone"),
            language=client.get("language", "en"),
            timezone=client["timezone"],
            sms_consent=_sms_consent(client.get("sms_consent"), now),
        ),
        encounter=Reference(**encounter) if encounter else None,
    )


def _sms_consent(data: dict[str, Any] | None, now: datetime) -> SmsConsent | None:
    """Build the client's consent to texts from schema-valid data; refuse one from the future."""
    if data is None:
        return None
    given_at = validation.parse_datetime(data["given_at"])
    if given_at > now + validation.CLOCK_SKEW:
        field = "data.client.sms_consent.given_at"
        raise InvalidPayloadError(field, f"{field} must not be in the future")
    return SmsConsent(granted=data.get("granted", True), given_at=given_at, source=data["source"])


# The name every adapter module exposes, so plugin code stays platform-neutral.
Verifier = StandardVerifier
