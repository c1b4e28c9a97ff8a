"""Verify and parse Zoom webhooks, and read who attended a meeting from Zoom's API answers.

Zoom signs "v0:{x-zm-request-timestamp}:{raw body}" with HMAC-SHA256 under the app's secret
token and sends "x-zm-signature: v0=<hex>"; the timestamp is in seconds. It also signs its
endpoint.url_validation challenge, which is verified like any other delivery. Zoom retries
only after a 5xx or a timeout, never after a 4xx, and may send meeting.ended twice for one
meeting instance, so the instance's uuid is the session id the store dedupes on.

A meeting.ended does not say who the client was. The worker asks Zoom what it knows, with
the HTTP call injected: the meeting's numeric id and host (meeting_facts: past meeting details;
host_email: the host's user record), the meeting's registrants (registrant_emails)
and its participants (attendee_emails); plugin.planning.resolution looks these up in the EHR.
"""

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from webhooks import validation
from webhooks.errors import InvalidPayloadError, InvalidSignatureError
from webhooks.events import Ignored, SessionEnded, Uninstalled, UrlValidation

PLATFORM = "zoom"
MEETING_ENDED = "meeting.ended"
URL_VALIDATION = "endpoint.url_validation"
APP_DEAUTHORIZED = "app_deauthorized"
SCHEMAS = {
    MEETING_ENDED: "zoom-meeting-ended.schema.json",
    URL_VALIDATION: "zoom-url-validation.schema.json",
    APP_DEAUTHORIZED: "zoom-app-deauthorized.schema.json",
}
# Zoom documents no window; this is the Standard Webhooks one, so both adapters agree.
TOLERANCE = timedelta(minutes=5)
# Zoom's secret tokens are 22 characters; anything much shorter is a setup mistake.
MIN_SECRET_CHARS = 16
# Zoom's own maximum page size, and a bound on pages so a looping next_page_token ends.
PAGE_SIZE = 300
MAX_PAGES = 20

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,253}")
_MEETING_ID = re.compile(r"[0-9]{9,12}")
_USER_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def _key(secret: str) -> bytes:
    """Return the HMAC key of a Zoom secret token or raise ValueError."""
    if not isinstance(secret, str) or len(secret.strip()) < MIN_SECRET_CHARS:
        raise ValueError(f"Zoom secret token must be at least {MIN_SECRET_CHARS} characters")
    return secret.strip().encode()


def _hmac_hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _signed_content(timestamp: str, body: bytes) -> bytes:
    return b"v0:" + timestamp.encode("ascii") + b":" + body


class ZoomVerifier:
    """Check that a delivery was signed with the app's secret token, recently."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        """Hold the key; raise ValueError for an empty or implausibly short secret."""
        self._key = _key(secret)
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return a delivery id for a genuine delivery or raise InvalidSignatureError.

        Zoom sends no delivery id it promises to keep across retries, so the id is the
        SHA-256 of the signed body: a retry carries the same body, hence the same id.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        timestamp = lowered.get("x-zm-request-timestamp", "")
        signature = lowered.get("x-zm-signature", "")
        if not (timestamp and signature):
            raise InvalidSignatureError("missing_headers")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise InvalidSignatureError("malformed_header")
        version, equals, digest = signature.partition("=")
        if not equals:
            raise InvalidSignatureError("malformed_header")
        if version != "v0":
            raise InvalidSignatureError("unsupported_version")
        if not _HEX_DIGEST.fullmatch(digest):
            raise InvalidSignatureError("malformed_header")
        skew = self._clock() - int(timestamp)
        if skew > TOLERANCE.total_seconds():
            raise InvalidSignatureError("stale_timestamp")
        if skew < -TOLERANCE.total_seconds():
            raise InvalidSignatureError("future_timestamp")
        expected = _hmac_hex(self._key, _signed_content(timestamp, body))
        if not hmac.compare_digest(expected, digest.lower()):
            raise InvalidSignatureError("bad_signature")
        return "zm_" + hashlib.sha256(body).hexdigest()


def sign(secret: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    """Return the two headers Zoom would send with body at timestamp (for tests and demos)."""
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    seconds = str(int(timestamp.timestamp()))
    digest = _hmac_hex(_key(secret), _signed_content(seconds, body))
    return {"x-zm-request-timestamp": seconds, "x-zm-signature": f"v0={digest}"}


def answer_challenge(secret: str, event: UrlValidation) -> dict[str, str]:
    """Return the body that proves to Zoom we hold the secret token."""
    token = event.plain_token
    return {"plainToken": token, "encryptedToken": _hmac_hex(_key(secret), token.encode())}


def parse(
    body: bytes, event_id: str, now: datetime | None = None
) -> SessionEnded | UrlValidation | Uninstalled | Ignored:
    """Turn a verified body into the event it announces, or Ignored for other event types.

    `now` (default: the clock) bounds when a meeting may have ended.
    """
    document = validation.load_object(body)
    event_type = document.get("event")
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
        raise InvalidPayloadError("event", "event must be an event type such as meeting.ended")
    schema = SCHEMAS.get(event_type)
    if schema is None:
        return Ignored(event_id=event_id, platform=PLATFORM, event_type=event_type)
    validation.validate(document, schema)
    payload = document["payload"]
    if event_type == URL_VALIDATION:
        return UrlValidation(
            event_id=event_id, platform=PLATFORM, plain_token=payload["plainToken"]
        )
    if event_type == APP_DEAUTHORIZED:
        return Uninstalled(event_id=event_id, platform=PLATFORM, account_id=payload["account_id"])
    return _meeting_ended(payload, event_id, now or datetime.now(UTC))


def _meeting_ended(payload: dict[str, Any], event_id: str, now: datetime) -> SessionEnded:
    """Build the event from schema-valid data; Zoom names neither client nor practitioner."""
    meeting = payload["object"]
    started_at = validation.parse_datetime(meeting["start_time"])
    ended_at = validation.parse_datetime(meeting["end_time"])
    validation.check_session_times(
        started_at, ended_at, now, ("payload.object.start_time", "payload.object.end_time")
    )
    return SessionEnded(
        event_id=event_id,
        platform=PLATFORM,
        account_id=payload["account_id"],
        # The instance's uuid, not the meeting id: a recurring meeting keeps its id for ever.
        session_id=meeting["uuid"],
        started_at=started_at,
        ended_at=ended_at,
        # host_id is a Zoom user id, not a FHIR Practitioner; the schedule's per-practitioner
        # overrides and the FHIR write need the latter, so none is claimed.
        practitioner=None,
        client=None,
        encounter=None,
    )


def meeting_path(uuid: str) -> str:
    """Return the API path segment for a meeting instance, encoded as Zoom requires."""
    encoded = quote(uuid, safe="")
    # Zoom decodes once before routing, so a uuid that starts with "/" or holds "//" must be
    # encoded twice or it is read as a different path.
    if uuid.startswith("/") or "//" in uuid:
        encoded = quote(encoded, safe="")
    return f"/past_meetings/{encoded}"


def attendee_emails(fetch: Callable[[str, dict], dict], session_id: str) -> list[str]:
    """Return the distinct emails of those who attended the meeting, leaving out its own staff.

    fetch(path, params) is the practice's authorised GET on Zoom's API
    (plugin.install.platform_api).
    Zoom shows guests' emails only when they registered, were on the calendar invitation or
    signed in through the host's authentication, so an empty list is a normal answer.
    """
    path = meeting_path(session_id) + "/participants"
    emails: dict[str, str] = {}
    params: dict[str, Any] = {"page_size": PAGE_SIZE}
    for _ in range(MAX_PAGES):
        page = fetch(path, params)
        participants = page.get("participants")
        if not isinstance(participants, list):
            raise InvalidPayloadError("participants", "participants must be a list")
        for participant in participants:
            email = _attendee_email(participant)
            if email:
                emails.setdefault(email.casefold(), email)
        token = page.get("next_page_token")
        if not (isinstance(token, str) and token):
            break
        params = {"page_size": PAGE_SIZE, "next_page_token": token}
    return list(emails.values())


@dataclass(frozen=True)
class MeetingFacts:
    """What Zoom says about a past meeting instance that can tie it to the EHR's schedule."""

    # The numeric meeting id (as text): what join URLs and registrations carry.
    meeting_id: str | None
    # The host's Zoom user id, whose user record gives their email (host_email).
    host_id: str | None


def meeting_facts(fetch: Callable[[str, dict], dict], session_id: str) -> MeetingFacts:
    """Return the meeting's numeric id and its host's user id, from Zoom's past meeting details.

    GET /past_meetings/{uuid} gives `id` and `host_id`; either may be missing or malformed.
    """
    details = fetch(meeting_path(session_id), {})
    if not isinstance(details, dict):
        raise InvalidPayloadError("meeting", "past meeting details must be an object")
    raw_id = details.get("id")
    meeting_id = (
        str(raw_id)
        if isinstance(raw_id, int | str) and _MEETING_ID.fullmatch(str(raw_id))
        else None
    )
    host_id = details.get("host_id")
    return MeetingFacts(
        meeting_id=meeting_id,
        host_id=host_id if isinstance(host_id, str) and _USER_ID.fullmatch(host_id) else None,
    )


def host_email(fetch: Callable[[str, dict], dict], host_id: str) -> str | None:
    """Return the meeting host's email from their Zoom user record (GET /users/{host_id}).

    Zoom answers 404 for a user since deleted or moved to another account; the caller then
    skips the schedule. The email is staff data, never logged.
    """
    if not _USER_ID.fullmatch(host_id):
        raise ValueError("not a Zoom user id")
    user = fetch(f"/users/{quote(host_id, safe='')}", {})
    return _valid_email(user.get("email") if isinstance(user, dict) else None)


def registrant_emails(fetch: Callable[[str, dict], dict], meeting_id: str) -> list[str]:
    """Return the distinct emails of the meeting's approved registrants.

    GET /meetings/{meetingId}/registrants takes the numeric id; a meeting without registration
    has none, which is a normal answer.
    """
    if not _MEETING_ID.fullmatch(meeting_id):
        raise ValueError("a Zoom meeting id is 9 to 12 digits")
    path = f"/meetings/{meeting_id}/registrants"
    emails: dict[str, str] = {}
    params: dict[str, Any] = {"status": "approved", "page_size": PAGE_SIZE}
    for _ in range(MAX_PAGES):
        page = fetch(path, params)
        registrants = page.get("registrants") if isinstance(page, dict) else None
        if not isinstance(registrants, list):
            raise InvalidPayloadError("registrants", "registrants must be a list")
        for registrant in registrants:
            email = _valid_email(registrant.get("email") if isinstance(registrant, dict) else None)
            if email:
                emails.setdefault(email.casefold(), email)
        token = page.get("next_page_token")
        if not (isinstance(token, str) and token):
            break
        params = {"status": "approved", "page_size": PAGE_SIZE, "next_page_token": token}
    return list(emails.values())


def _valid_email(email: object) -> str | None:
    if not isinstance(email, str):
        return None
    email = email.strip()
    return email if len(email) <= 254 and _EMAIL.fullmatch(email) else None


def _attendee_email(participant: object) -> str | None:
    """Return a participant's email if they are a plausible client, else None."""
    if not isinstance(participant, dict):
        return None
    # internal_user: a member of the host's own Zoom account (the therapist, a colleague).
    if participant.get("internal_user") is True:
        return None
    # Admitted from the waiting room or not at all: someone who never joined took no session.
    if participant.get("status") == "in_waiting_room":
        return None
    return _valid_email(participant.get("user_email"))


# The name every adapter module exposes, so plugin code stays platform-neutral.
Verifier = ZoomVerifier
