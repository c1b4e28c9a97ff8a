"""Platform-neutral events that every webhook adapter parses into."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Real tz database entries that name no place a client could live in.
_NOT_CLIENT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


def is_iana_timezone(name: str) -> bool:
    """Return whether name is an IANA time zone usable for a client."""
    if name in _NOT_CLIENT_ZONES:
        return False
    try:
        ZoneInfo(name)
    # OSError: a name longer than the file system allows is looked up as a file all the same.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _require_utc(name: str, value: datetime) -> None:
    """Raise ValueError unless value is timezone-aware and in UTC."""
    if value.utcoffset() != timedelta(0):
        raise ValueError(f"{name} must be a timezone-aware UTC datetime")


@dataclass(frozen=True)
class Reference:
    """Point at a FHIR resource, e.g. "Practitioner/p1"."""

    reference: str
    # A practitioner's name: keep names out of logs like every other identifier-free field.
    display: str | None = field(default=None, repr=False)


# Where a practice recorded a client's consent to texts (the webhook's sms_consent.source).
SMS_CONSENT_SOURCES = ("intake_form", "portal", "verbal", "written", "ehr")


@dataclass(frozen=True)
class SmsConsent:
    """Say whether, when and where a client agreed to receive texts (or refused them)."""

    granted: bool
    given_at: datetime
    source: str

    def __post_init__(self) -> None:
        """Refuse an unknown source and a naive or non-UTC time."""
        if self.source not in SMS_CONSENT_SOURCES:
            raise ValueError(f"sms consent source must be one of {', '.join(SMS_CONSENT_SOURCES)}")
        _require_utc("given_at", self.given_at)


# kw_only: the brief's order puts required `timezone` after defaulted `language`.
@dataclass(frozen=True, kw_only=True)
class ClientContact:
    """Say how and when the client may be contacted."""

    reference: str
    # PHI: repr=False so a logged event never carries contact details.
    email: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    language: str = "en"
    timezone: str
    # None: the platform said nothing, so no consent to texts is on record from this event.
    sms_consent: SmsConsent | None = None

    def __post_init__(self) -> None:
        """Refuse a contact nobody could reach or schedule."""
        if not (self.email or self.phone):
            raise ValueError("a client contact needs an email or a phone")
        if not is_iana_timezone(self.timezone):
            raise ValueError("timezone must be an IANA time zone name")


@dataclass(frozen=True)
class SessionEnded:
    """Record that a telehealth session ended; the trigger for a questionnaire."""

    event_id: str
    platform: str
    account_id: str
    session_id: str
    started_at: datetime
    ended_at: datetime
    # None when the platform does not say who treated the client (Zoom names only a host id).
    practitioner: Reference | None
    # None when the platform does not name the client (Zoom): the worker resolves them later.
    client: ClientContact | None
    encounter: Reference | None

    def __post_init__(self) -> None:
        """Refuse naive or non-UTC times and sessions that end before they start."""
        _require_utc("started_at", self.started_at)
        _require_utc("ended_at", self.ended_at)
        if self.ended_at < self.started_at:
            raise ValueError("ended_at must not be before started_at")


@dataclass(frozen=True)
class Ignored:
    """Record a verified event of a type Alliance Check does not act on."""

    event_id: str
    platform: str
    event_type: str


@dataclass(frozen=True)
class UrlValidation:
    """Record a platform's challenge to prove we hold the webhook secret (Zoom's url_validation)."""

    event_id: str
    platform: str
    # Random, not secret, and no PHI; echoed back with its HMAC.
    plain_token: str


@dataclass(frozen=True)
class Uninstalled:
    """Record that an account removed the app: its tokens and data must go."""

    event_id: str
    platform: str
    account_id: str
