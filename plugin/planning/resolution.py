"""Find the client of a session whose platform did not name them: attendees, then EHR Patients.

Zoom's meeting.ended says which meeting ended, not who attended. The planning job asks the
platform (with the practice's own token) for the attendees' emails, then searches the
practice's own EHR for a Patient with each. Exactly one distinct Patient is the client; no
attendee, no Patient or several Patients (a couples session, a shared address) is
"unmatched": nothing is sent, and the session is listed for the admin
(`alliance-check sessions list --status unmatched`). Guessing would send one person's
questionnaire, and later their answers, to someone else's record.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import phonenumbers
import requests
from sqlalchemy.orm import Session

from plugin.core.crypto import Vault
from plugin.core.models import Practice, SessionEvent
from plugin.ehr.errors import EhrTargetError, FhirError, NoTokenError
from plugin.ehr.gateway import EhrClients
from plugin.install.platform_api import PlatformAuthError, PlatformClient, PlatformError
from webhooks import ADAPTERS
from webhooks.errors import InvalidPayloadError

log = logging.getLogger(__name__)

# Enough to tell one match from several, after dropping inactive and deceased records.
SEARCH_COUNT = 10


@dataclass(frozen=True)
class Matched:
    """The one Patient the session's attendees point at, and how to reach them."""

    patient_ref: str
    # PHI: repr=False so a logged result never carries contact details.
    email: str | None = field(repr=False)
    phone: str | None = field(repr=False)


@dataclass(frozen=True)
class Unmatched:
    """No single Patient could be named; `reason` is safe to show an admin."""

    # "no_participants" | "no_match" | "several_matches" | "no_ehr_search"
    reason: str


class ResolutionError(Exception):
    """The platform or the EHR could not be asked; `retryable` says whether to try later.

    `reason` is a short code safe to store and log; the cause (with its response) is chained.
    """

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class PatientSearch(Protocol):
    """What resolution needs from an EHR: plugin.ehr.fhir.FhirClient provides it."""

    def search(self, resource_type: str, params: dict[str, str]) -> list[dict]:
        """Return the resources matching params."""
        ...


class Platform(Protocol):
    """What resolution needs from a platform (plugin.install.platform_api.PlatformClient)."""

    def get_json(self, path: str, params: dict | None = None) -> dict:
        """GET a path under the platform's API base."""
        ...


def resolve_client(
    event: SessionEvent, *, platform: Platform, fhir: PatientSearch | None
) -> Matched | Unmatched:
    """Name the session's client from its attendees and the practice's EHR, or say why not."""
    if fhir is None:
        # Checked first: an EHR we cannot search makes the platform's answer useless, so the
        # attendees' details are not even fetched.
        return Unmatched("no_ehr_search")
    attendee_emails = getattr(ADAPTERS.get(event.platform), "attendee_emails", None)
    emails = [] if attendee_emails is None else _attendees(attendee_emails, platform, event)
    if not emails:
        return _unmatched(event, "no_participants", 0, 0)
    found: dict[str, tuple[dict, str]] = {}
    for email in emails:
        for patient in _patients_with(fhir, email):
            found.setdefault(patient["id"], (patient, email))
    if len(found) != 1:
        return _unmatched(
            event, "several_matches" if found else "no_match", len(emails), len(found)
        )
    patient, email = next(iter(found.values()))
    log.info(
        "client_resolution.matched",
        extra={"session_event_id": event.id, "candidates": len(emails)},
    )
    return Matched(patient_ref=f"Patient/{patient['id']}", email=email, phone=_mobile(patient))


def _unmatched(event: SessionEvent, reason: str, candidates: int, patients: int) -> Unmatched:
    log.info(
        "client_resolution.unmatched",
        extra={
            "session_event_id": event.id,
            "reason": reason,
            "candidates": candidates,
            "patients": patients,
        },
    )
    return Unmatched(reason)


def _attendees(attendee_emails: Callable, platform: Platform, event: SessionEvent) -> list[str]:
    """Ask the platform who attended, turning its failures into ResolutionErrors."""
    try:
        return attendee_emails(platform.get_json, event.session_id)
    except PlatformAuthError as exc:
        # Only a person can re-authorise; the retries (bounded by PLAN_MAX_ATTEMPTS) give them
        # the retry window to do so before the session is marked failed.
        raise ResolutionError("platform_needs_reauth", retryable=True) from exc
    except PlatformError as exc:
        if exc.retryable:
            raise ResolutionError("platform_unavailable", retryable=True) from exc
        if exc.status == 404:
            # Zoom can answer 404 for a meeting that ended moments ago, before its
            # participant report exists; later attempts find it.
            raise ResolutionError("platform_not_found", retryable=True) from exc
        raise ResolutionError("platform_refused", retryable=False) from exc
    except InvalidPayloadError as exc:
        raise ResolutionError("platform_bad_answer", retryable=True) from exc


def _patients_with(fhir: PatientSearch, email: str) -> list[dict]:
    """Return the current Patients whose own record holds this email."""
    try:
        patients = fhir.search("Patient", {"email": email, "_count": str(SEARCH_COUNT)})
    except NoTokenError as exc:
        # Worth retrying, as for writes: EHR admins fix grants, keys get generated.
        raise ResolutionError("ehr_no_token", retryable=True) from exc
    except FhirError as exc:
        reason = "ehr_unavailable" if exc.retryable else "ehr_refused"
        raise ResolutionError(reason, retryable=exc.retryable) from exc
    wanted = email.casefold()
    # Checked again here: a server that ignores an unknown parameter returns every Patient,
    # and one that did so with a single Patient on file would otherwise be a false match.
    return [
        patient
        for patient in patients
        if isinstance(patient.get("id"), str)
        and _current(patient)
        and any(
            telecom.get("system") == "email"
            and isinstance(telecom.get("value"), str)
            and telecom["value"].strip().casefold() == wanted
            for telecom in patient.get("telecom") or []
        )
    ]


def _current(patient: dict) -> bool:
    """Whether a record is in use: not deactivated (merged duplicates are) and not deceased."""
    return (
        patient.get("active") is not False
        and patient.get("deceasedBoolean") is not True
        and "deceasedDateTime" not in patient
    )


def _mobile(patient: dict) -> str | None:
    """Return the Patient's first textable number in E.164, or None (never a landline)."""
    for telecom in patient.get("telecom") or []:
        system, use, value = telecom.get("system"), telecom.get("use"), telecom.get("value")
        if not isinstance(value, str) or not (
            system == "sms" or (system == "phone" and use == "mobile")
        ):
            continue
        try:
            number = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException:
            continue  # a national number: without the country it cannot be dialled safely
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def patient_search_for(practice: Practice, clients: EhrClients) -> PatientSearch | None:
    """Return a searcher of the practice's own FHIR server, or None if it cannot be searched."""
    if practice.ehr_target.startswith("ndjson:"):
        return None
    try:
        searcher = clients.searcher_for(practice, ["Patient"])
    except EhrTargetError as exc:
        # Writes wait for `ehr connect` too; so does the look-up.
        raise ResolutionError("ehr_not_connected", retryable=True) from exc
    if not practice.ehr_connection.facts.get("patient_search", True):
        return None
    return searcher


def resolver_for(
    practice: Practice,
    *,
    session: Session,
    config,
    vault: Vault,
    http: requests.Session,
    ehr_clients: EhrClients,
) -> Callable[[SessionEvent], Matched | Unmatched]:
    """Return the function that resolves this practice's sessions, with its own clients only."""
    platform = PlatformClient(session, practice, config=config, vault=vault, http=http)

    def resolve(event: SessionEvent) -> Matched | Unmatched:
        if event.practice_id != practice.id:
            # Never look one practice's session up with another's token or EHR.
            raise ResolutionError("wrong_practice", retryable=False)
        return resolve_client(
            event, platform=platform, fhir=patient_search_for(practice, ehr_clients)
        )

    return resolve
