"""Find the client of a session whose platform did not name them, and say how they were found.

Zoom's meeting.ended says which meeting ended, not who attended. The planning job asks, in
order, and stops at the first that names exactly one current Patient:

1. the EHR's schedule ("appointment"): the host's email (Zoom's user record) names the
   Practitioner (the one an admin mapped it to, planning.host_map, else the one whose record
   holds it), whose Appointments overlapping the meeting name the Patient
   (fhir_mappings.appointments; a meeting id or join URL in an Appointment settles a double
   booking). Skipped, with the reason logged, where the EHR did not grant Appointment and
   Practitioner reads, or Zoom no longer knows the host (404);
2. the meeting's registrants ("registrant"): their emails, looked up as Patients;
3. the attendees ("email"): their emails, looked up as Patients, as before.

An admin may link an unmatched session to a Patient ("admin"); planning then only reads that
Patient's contact details. No Patient or several (a couples session, a shared address, an
unsettled double booking) is "unmatched": nothing is sent, and the session is listed for the
admin (`alliance-check sessions list --status unmatched`, the console's Problems page).
Guessing would send one person's questionnaire, and later their answers, to someone else's
record.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Protocol

import phonenumbers
import requests
from sqlalchemy.orm import Session

from fhir_mappings.appointments import DEFAULT_TOLERANCE, match_schedule
from plugin.core.crypto import Vault
from plugin.core.models import Practice, SessionEvent
from plugin.ehr.errors import EhrTargetError, FhirError, NoTokenError
from plugin.ehr.gateway import EhrClients
from plugin.install.platform_api import PlatformAuthError, PlatformClient, PlatformError
from plugin.planning.host_map import practitioner_for
from webhooks import ADAPTERS
from webhooks.errors import InvalidPayloadError

log = logging.getLogger(__name__)

# Enough to tell one match from several, after dropping inactive and deceased records.
SEARCH_COUNT = 10
# Appointments of one practitioner looked at around a session; a day holds fewer.
APPOINTMENT_COUNT = 50
# How far before a session's start an Appointment may begin and still overlap it.
LOOKBACK = timedelta(hours=4)
METHODS = ("appointment", "registrant", "email", "admin")


@dataclass(frozen=True)
class Matched:
    """The one Patient the session's attendees point at, and how to reach them."""

    patient_ref: str
    # PHI: repr=False so a logged result never carries contact details.
    email: str | None = field(repr=False)
    phone: str | None = field(repr=False)
    # Which step named them: one of METHODS.
    method: str = "email"


@dataclass(frozen=True)
class Unmatched:
    """No single Patient could be named; `reason` is safe to show an admin."""

    # "no_participants" | "no_match" | "several_matches" | "several_appointments" |
    # "no_ehr_search" | "linked_patient_not_found"
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


@dataclass(frozen=True)
class Schedule:
    """The practice's schedule searcher, or why step 1 is skipped."""

    fhir: PatientSearch | None
    # Why there is no searcher ("schedule_not_granted", "schedule_not_offered"), for the log.
    skipped: str | None = None
    # The Practitioner reference an admin mapped a host's email to, if any (planning.host_map).
    mapped: Callable[[str], str | None] = lambda _email: None


def resolve_client(
    event: SessionEvent,
    *,
    platform: Platform,
    fhir: PatientSearch | None,
    schedule: Schedule | None = None,
) -> Matched | Unmatched:
    """Name the session's client from the schedule, registrants or attendees, or say why not."""
    if fhir is None:
        # Checked first: an EHR we cannot search makes the platform's answer useless, so the
        # attendees' details are not even fetched.
        return Unmatched("no_ehr_search")
    if event.match_method == "admin" and event.patient_ref:
        return _linked(event, fhir)
    adapter = ADAPTERS.get(event.platform)
    attendee_emails = getattr(adapter, "attendee_emails", None)
    several = False
    facts = None
    if getattr(adapter, "meeting_facts", None) is not None:
        facts = _ask_platform(adapter.meeting_facts, platform, event.session_id)
        schedule = schedule or Schedule(None, "schedule_not_connected")
        skipped, host_email = schedule.skipped, None
        if schedule.fhir is not None and facts.host_id:
            # A host deleted since (or moved to another account) is a 404 that no retry
            # mends: the schedule is skipped and the registrants and attendees still tried.
            host_email = _ask_platform_unless(
                adapter.host_email, platform, facts.host_id, absent=(404,), default=None
            )
            skipped = None if host_email else "host_not_found"
        if skipped:
            log.info(
                "client_resolution.schedule_skipped",
                extra={"session_event_id": event.id, "reason": skipped},
            )
        elif host_email:
            found = _from_schedule(schedule, fhir, event, facts.meeting_id, host_email)
            if isinstance(found, Matched):
                return _matched(event, found)
            several = several or found
        if facts.meeting_id:
            # Zoom answers 400 (code 3000) for a meeting without registration and 404 for a
            # deleted one: either way there are no registrants, and the attendees are next.
            emails = _ask_platform_unless(
                adapter.registrant_emails, platform, facts.meeting_id, absent=(400, 404), default=[]
            )
            found = _by_emails(fhir, emails, "registrant")
            if isinstance(found, Matched):
                return _matched(event, found)
            several = several or found
    emails = (
        []
        if attendee_emails is None
        else _ask_platform(attendee_emails, platform, event.session_id)
    )
    if not emails and not several:
        return _unmatched(event, "no_participants", 0, 0)
    found = _by_emails(fhir, emails, "email")
    if isinstance(found, Matched):
        return _matched(event, found)
    several = several or found
    return _unmatched(event, "several_matches" if several else "no_match", len(emails), 0)


def _matched(event: SessionEvent, found: Matched) -> Matched:
    log.info(
        "client_resolution.matched",
        extra={"session_event_id": event.id, "method": found.method},
    )
    return found


def _by_emails(fhir: PatientSearch, emails: list[str], method: str) -> Matched | bool:
    """Return the one current Patient with one of these emails, or whether several had them."""
    found: dict[str, tuple[dict, str]] = {}
    for email in emails:
        for patient in _patients_with(fhir, email):
            found.setdefault(patient["id"], (patient, email))
    if len(found) != 1:
        return len(found) > 1
    patient, email = next(iter(found.values()))
    return Matched(f"Patient/{patient['id']}", email=email, phone=_mobile(patient), method=method)


def _from_schedule(
    schedule: Schedule,
    fhir: PatientSearch,
    event: SessionEvent,
    meeting_id: str | None,
    host_email: str,
) -> Matched | bool:
    """Return the Patient the host's overlapping Appointments name, or whether several did.

    The host is the Practitioner an admin mapped their email to, else the one whose own
    record holds that email.
    """
    mapped = schedule.mapped(host_email)
    practitioners = (
        [mapped.removeprefix("Practitioner/")]
        if mapped
        else [
            practitioner["id"]
            for practitioner in _search(
                schedule.fhir, "Practitioner", {"email": host_email, "_count": str(SEARCH_COUNT)}
            )
            if isinstance(practitioner.get("id"), str)
            and practitioner.get("active") is not False
            and _has_email(practitioner, host_email)
        ]
    )
    appointments: list[dict] = []
    for practitioner_id in practitioners:
        appointments += _search(
            schedule.fhir,
            "Appointment",
            {
                "practitioner": f"Practitioner/{practitioner_id}",
                "date": [
                    f"ge{_fhir_instant(event.started_at - LOOKBACK)}",
                    f"le{_fhir_instant(event.ended_at + DEFAULT_TOLERANCE)}",
                ],
                "_count": str(APPOINTMENT_COUNT),
            },
        )
    match = match_schedule(
        appointments, set(practitioners), event.started_at, event.ended_at, meeting_id
    )
    if match.patient_id is None:
        return len(match.patient_ids) > 1
    patient = _patient(fhir, match.patient_id)
    if patient is None:
        return False
    return Matched(
        f"Patient/{patient['id']}",
        email=_email(patient),
        phone=_mobile(patient),
        method="appointment",
    )


def _linked(event: SessionEvent, fhir: PatientSearch) -> Matched | Unmatched:
    """Read the Patient an admin linked the session to, for their contact details."""
    patient = _patient(fhir, event.patient_ref.split("/", 1)[1])
    if patient is None:
        return _unmatched(event, "linked_patient_not_found", 1, 0)
    return _matched(
        event,
        Matched(event.patient_ref, email=_email(patient), phone=_mobile(patient), method="admin"),
    )


def _patient(fhir: PatientSearch, patient_id: str) -> dict | None:
    """Return the current Patient with this id, or None."""
    found = [
        patient
        for patient in _search(fhir, "Patient", {"_id": patient_id})
        if patient.get("id") == patient_id and _current(patient)
    ]
    return found[0] if found else None


def _fhir_instant(moment) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _has_email(resource: dict, email: str) -> bool:
    wanted = email.strip().casefold()
    return any(
        telecom.get("system") == "email"
        and isinstance(telecom.get("value"), str)
        and telecom["value"].strip().casefold() == wanted
        for telecom in resource.get("telecom") or []
    )


def _email(patient: dict) -> str | None:
    """Return the Patient's own first email address, or None."""
    for telecom in patient.get("telecom") or []:
        if telecom.get("system") == "email" and isinstance(telecom.get("value"), str):
            return telecom["value"].strip()
    return None


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


def _ask_platform_unless(
    ask: Callable, platform: Platform, key: str, *, absent: tuple[int, ...], default
):
    """Ask the platform one thing; return default when it answers one of the `absent` codes."""
    try:
        return _ask_platform(ask, platform, key)
    except ResolutionError as exc:
        cause = exc.__cause__
        if (
            isinstance(cause, PlatformError)
            and not isinstance(cause, PlatformAuthError)
            and not cause.retryable
            and cause.status in absent
        ):
            return default
        raise


def _ask_platform(ask: Callable, platform: Platform, key: str):
    """Ask the platform one thing, turning its failures into ResolutionErrors."""
    try:
        return ask(platform.get_json, key)
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


def _search(fhir: PatientSearch, resource_type: str, params: dict) -> list[dict]:
    """Search the EHR, turning its failures into ResolutionErrors."""
    try:
        return fhir.search(resource_type, params)
    except NoTokenError as exc:
        # Worth retrying, as for writes: EHR admins fix grants, keys get generated.
        raise ResolutionError("ehr_no_token", retryable=True) from exc
    except FhirError as exc:
        reason = "ehr_unavailable" if exc.retryable else "ehr_refused"
        raise ResolutionError(reason, retryable=exc.retryable) from exc


def _patients_with(fhir: PatientSearch, email: str) -> list[dict]:
    """Return the current Patients whose own record holds this email."""
    patients = _search(fhir, "Patient", {"email": email, "_count": str(SEARCH_COUNT)})
    # Checked again here: a server that ignores an unknown parameter returns every Patient,
    # and one that did so with a single Patient on file would otherwise be a false match.
    return [
        patient
        for patient in patients
        if isinstance(patient.get("id"), str) and _current(patient) and _has_email(patient, email)
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


def schedule_search_for(practice: Practice, clients: EhrClients, session: Session) -> Schedule:
    """Return the practice's schedule searcher (Appointment, Practitioner), or why there is none.

    The practice's own host mappings (read through session) come before the email search.
    """
    facts = practice.ehr_connection.facts if practice.ehr_connection else {}
    if not facts.get("appointment_search", False):
        # Connections checked before this step existed, or EHRs that did not grant the reads.
        return Schedule(None, "schedule_not_granted")
    return Schedule(
        clients.searcher_for(practice, ["Appointment", "Practitioner"]),
        mapped=lambda email: practitioner_for(session, practice.id, email),
    )


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
        fhir = patient_search_for(practice, ehr_clients)
        schedule = None if fhir is None else schedule_search_for(practice, ehr_clients, session)
        return resolve_client(event, platform=platform, fhir=fhir, schedule=schedule)

    return resolve
