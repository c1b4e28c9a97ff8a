"""FHIR resources of a practice's schedule, for the matching tests and the matching bench."""

from datetime import datetime

ZOOM_MEETING_SYSTEM = "https://zoom.us/meeting-id"


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def patient(email: str | None = None, mobile: str | None = None, family: str = "Client") -> dict:
    """Return a Patient with an optional email and mobile number."""
    telecom = []
    if email:
        telecom.append({"system": "email", "value": email})
    if mobile:
        telecom.append({"system": "phone", "use": "mobile", "value": mobile})
    return {
        "resourceType": "Patient",
        "active": True,
        "name": [{"family": family}],
        "telecom": telecom,
    }


def practitioner(email: str) -> dict:
    """Return a Practitioner whose work email is the Zoom host's."""
    return {
        "resourceType": "Practitioner",
        "active": True,
        "name": [{"family": "Therapist"}],
        "telecom": [{"system": "email", "use": "work", "value": email}],
    }


def appointment(
    practitioner_id: str,
    patient_ids: list[str],
    start: datetime,
    end: datetime,
    *,
    meeting_id: str | None = None,
    join_url: bool = False,
    status: str = "booked",
) -> dict:
    """Return an Appointment of one practitioner with these Patients, optionally with a meeting."""
    resource = {
        "resourceType": "Appointment",
        "status": status,
        "start": _instant(start),
        "end": _instant(end),
        "participant": [
            {"actor": {"reference": f"Practitioner/{practitioner_id}"}, "status": "accepted"},
            *(
                {"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"}
                for pid in patient_ids
            ),
        ],
    }
    if meeting_id and join_url:
        resource["comment"] = f"Join: https://us02web.zoom.us/j/{meeting_id}?pwd=abc"
    elif meeting_id:
        resource["identifier"] = [{"system": ZOOM_MEETING_SYSTEM, "value": meeting_id}]
    return resource


# FHIR's own code for the SMS contact point: EHR_SMS_CONSENT_CODES' default.
SMS_CODE = {"system": "http://hl7.org/fhir/contact-point-system", "code": "sms"}
OPT_IN_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# A general privacy consent category, carried beside it as EHRs do.
LOINC_CONSENT = {"system": "http://loinc.org", "code": "59284-0"}


def consent(
    patient_id: str,
    given: datetime,
    *,
    status: str = "active",
    kind: str = "permit",
    code: dict | None = SMS_CODE,
    period: tuple[datetime | None, datetime | None] | None = None,
) -> dict:
    """Return a Consent of one Patient, permitting (or denying) texts when it carries `code`."""
    provision: dict = {"type": kind}
    if period:
        provision["period"] = {
            key: _instant(moment)
            for key, moment in zip(("start", "end"), period, strict=True)
            if moment is not None
        }
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [LOINC_CONSENT, *([code] if code else [])]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": _instant(given),
        "policyRule": {"coding": [{"system": OPT_IN_SYSTEM, "code": "OPTIN"}]},
        "provision": provision,
    }
