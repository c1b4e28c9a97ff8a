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
