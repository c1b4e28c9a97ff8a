"""Read a client's consent to texts from FHIR R4 Consent resources: pure reading of FHIR JSON.

FHIR R4 has no standard code for "may be texted", so what counts is decided here, with the
codes the practice configures (`EHR_SMS_CONSENT_CODES`, "system|code"). A Consent speaks to
texts when one of those codes is in its `category` or its top-level `provision.code`; it then
counts only when:

- its `status` is `active` (draft, proposed, rejected, inactive and entered-in-error do not);
- its `patient` is this client (a server that ignored the search parameter is caught here);
- its `provision.period`, where given, covers now;
- its `provision.type` is `permit` (a grant) or `deny` (a refusal); a nested provision that
  denies one of the codes makes the whole Consent a refusal;
- it says when it was given: `dateTime`, else the period's start (a STOP is ordered against
  that moment, so a Consent that cannot be ordered does not count); never in the future.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


@dataclass(frozen=True)
class TextingConsent:
    """One Consent that decides the client's consent to texts: its reference, verdict and time."""

    ref: str
    granted: bool
    given_at: datetime


def parse_codes(codes: list[str]) -> frozenset[tuple[str, str]]:
    """Return ("system", "code") pairs from "system|code" strings; ValueError names a bad one."""
    pairs = set()
    for entry in codes:
        system, bar, code = entry.partition("|") if isinstance(entry, str) else ("", "", "")
        if not (bar and system.strip() and code.strip()):
            raise ValueError(f"an SMS consent code is 'system|code', not {entry!r}")
        pairs.add((system.strip(), code.strip()))
    return frozenset(pairs)


def texting_consents(
    resources: list[dict],
    patient_id: str,
    codes: frozenset[tuple[str, str]],
    now: datetime,
) -> list[TextingConsent]:
    """Return the Consents among resources that grant or refuse this Patient texts, oldest first."""
    found = []
    for resource in resources:
        consent = _reading(resource, patient_id, codes, now)
        if consent is not None:
            found.append(consent)
    return sorted(found, key=lambda c: c.given_at)


def _reading(resource: dict, patient_id: str, codes, now: datetime) -> TextingConsent | None:
    if not isinstance(resource, dict) or resource.get("resourceType") != "Consent":
        return None
    consent_id = resource.get("id")
    if not (isinstance(consent_id, str) and _FHIR_ID.fullmatch(consent_id)):
        return None
    if resource.get("status") != "active" or not _is_patient(resource.get("patient"), patient_id):
        return None
    provision = resource.get("provision")
    if not isinstance(provision, dict) or provision.get("type") not in ("permit", "deny"):
        return None
    if not (_has_code(resource.get("category"), codes) or _has_code(provision.get("code"), codes)):
        return None
    period = provision.get("period") if isinstance(provision.get("period"), dict) else {}
    start, end = _moment(period.get("start")), _moment(period.get("end"), end=True)
    if (start and start > now) or (end and end < now):
        return None
    given_at = _moment(resource.get("dateTime")) or start
    if given_at is None or given_at > now:
        return None
    granted = provision["type"] == "permit" and not _denied_inside(provision, codes)
    return TextingConsent(f"Consent/{consent_id}", granted, given_at)


def _is_patient(reference: object, patient_id: str) -> bool:
    value = reference.get("reference") if isinstance(reference, dict) else None
    return isinstance(value, str) and (
        value == f"Patient/{patient_id}" or value.endswith(f"/Patient/{patient_id}")
    )


def _has_code(concepts: object, codes) -> bool:
    """Whether a CodeableConcept (or a list of them) carries one of the codes."""
    if isinstance(concepts, dict):
        concepts = [concepts]
    if not isinstance(concepts, list):
        return False
    return any(
        isinstance(coding, dict) and (coding.get("system"), coding.get("code")) in codes
        for concept in concepts
        if isinstance(concept, dict)
        for coding in concept.get("coding") or []
    )


def _denied_inside(provision: dict, codes) -> bool:
    """Whether a nested provision denies one of the codes (an exception to the permit)."""
    for inner in provision.get("provision") or []:
        if not isinstance(inner, dict):
            continue
        if inner.get("type") == "deny" and _has_code(inner.get("code"), codes):
            return True
        if _denied_inside(inner, codes):
            return True
    return False


def _moment(value: object, *, end: bool = False) -> datetime | None:
    """Parse a FHIR date or dateTime as UTC; a date alone is its first (or, as an end, last) day."""
    if not isinstance(value, str):
        return None
    if "T" in value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment.astimezone(UTC) if moment.tzinfo else None
    match = _DATE.fullmatch(value)
    if not match:
        return None
    year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
    try:
        moment = datetime(year, month, day, tzinfo=UTC)
    except ValueError:
        return None
    if not end:
        return moment
    # An end date covers its whole day (or month, or year).
    if match[3]:
        following = moment + timedelta(days=1)
    elif match[2]:
        following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    else:
        following = datetime(year + 1, 1, 1, tzinfo=UTC)
    return following - timedelta(seconds=1)
