"""Find the client of a video session in the EHR's schedule: pure reading of FHIR JSON.

The practice's schedule knows who a session was with: the Appointment whose practitioner is
the meeting's host, whose time overlaps the meeting, and which has exactly one Patient
participant. A double booking (two such Appointments for different Patients) names no one,
unless a Zoom meeting id or join URL in an Appointment settles it: an Appointment carrying
this meeting's id wins, and one carrying another meeting's id is not this session.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

# Statuses of an Appointment that can have taken place (R4 AppointmentStatus).
LIVE_STATUSES = frozenset({"booked", "arrived", "fulfilled", "checked-in"})
# A session rarely starts or ends on the minute it was booked for.
DEFAULT_TOLERANCE = timedelta(minutes=15)

_JOIN_URL_ID = re.compile(r"/(?:j|w|s)/([0-9]{9,12})(?![0-9])")
_CONFNO = re.compile(r"[?&]confno=([0-9]{9,12})(?![0-9])")
_SPOKEN_ID = re.compile(r"meeting\s*id\W{0,3}([0-9][0-9 \-]{7,16}[0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class ScheduleMatch:
    """The distinct Patient ids the schedule points at, and whether a meeting id settled it."""

    patient_ids: tuple[str, ...]
    settled: bool = False

    @property
    def patient_id(self) -> str | None:
        """The one Patient id, or None when the schedule names nobody or several."""
        return self.patient_ids[0] if len(self.patient_ids) == 1 else None


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _actors(appointment: dict, resource_type: str) -> list[str]:
    """Return the ids of the participants of one type who did not decline."""
    ids = []
    for participant in appointment.get("participant") or []:
        if not isinstance(participant, dict) or participant.get("status") == "declined":
            continue
        reference = (participant.get("actor") or {}).get("reference")
        if isinstance(reference, str) and reference.startswith(f"{resource_type}/"):
            ids.append(reference.split("/", 2)[1])
    return ids


def meeting_ids(appointment: dict) -> set[str]:
    """Return the Zoom meeting ids an Appointment carries: identifiers, join URLs, comments."""
    found = set()
    for identifier in appointment.get("identifier") or []:
        system, value = identifier.get("system"), identifier.get("value")
        if isinstance(value, str) and isinstance(system, str) and "zoom" in system.lower():
            digits = re.sub(r"[ \-]", "", value)
            if digits.isdigit():
                found.add(digits)
    texts = [identifier.get("value") for identifier in appointment.get("identifier") or []]
    texts += [appointment.get(key) for key in ("comment", "description", "patientInstruction")]
    for extension in appointment.get("extension") or []:
        texts += [extension.get(key) for key in ("valueUrl", "valueUri", "valueString")]
    for text in texts:
        if not isinstance(text, str):
            continue
        found.update(_JOIN_URL_ID.findall(text))
        found.update(_CONFNO.findall(text))
        found.update(re.sub(r"[ \-]", "", m) for m in _SPOKEN_ID.findall(text))
    return found


def match_schedule(
    appointments: list[dict],
    practitioner_ids: set[str],
    started_at: datetime,
    ended_at: datetime,
    meeting_id: str | None = None,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> ScheduleMatch:
    """Return the Patients of the host's live Appointments overlapping the session.

    Each Appointment counts only with exactly one Patient participant (a couples session
    names no single client). Where some overlap at least half the session (or of themselves),
    only those count, so the next client's session on the hour is not a second candidate.
    Where some carry this meeting's id, only those count.
    """
    candidates: list[tuple[str, set[str], bool]] = []
    for appointment in appointments:
        if not isinstance(appointment, dict) or appointment.get("status") not in LIVE_STATUSES:
            continue
        start, end = _instant(appointment.get("start")), _instant(appointment.get("end"))
        if start is None or end is None:
            continue
        if start > ended_at + tolerance or end < started_at - tolerance:
            continue
        if not practitioner_ids & set(_actors(appointment, "Practitioner")):
            continue
        patients = set(_actors(appointment, "Patient"))
        if len(patients) != 1:
            continue
        overlap = min(end, ended_at) - max(start, started_at)
        # Back-to-back sessions on the hour overlap within the tolerance; the one this
        # session mostly fell in is the one it was.
        mostly = overlap * 2 >= min(end - start, ended_at - started_at)
        candidates.append((patients.pop(), meeting_ids(appointment), mostly))
    if any(mostly for _, _, mostly in candidates):
        candidates = [c for c in candidates if c[2]]
    settled = False
    if meeting_id:
        same = [c for c in candidates if meeting_id in c[1]]
        if same:
            candidates, settled = same, True
        else:
            # An Appointment booked for another meeting is not this session.
            candidates = [c for c in candidates if not c[1]]
    return ScheduleMatch(tuple(sorted({patient for patient, _, _ in candidates})), settled)
