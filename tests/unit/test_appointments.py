"""The pure schedule matcher: overlap, the host, one Patient, and the meeting id settling."""

from datetime import UTC, datetime, timedelta

from fhir_mappings.appointments import match_schedule, meeting_ids
from tests.support.schedule import appointment

START = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
END = START + timedelta(minutes=50)
HOUR = timedelta(hours=1)


def test_back_to_back_sessions_on_the_hour_are_not_a_double_booking():
    booked = [
        appointment("h", ["before"], START - HOUR, END - HOUR),
        appointment("h", ["this"], START, END),
        appointment("h", ["after"], START + HOUR, END + HOUR),
    ]
    # The meeting ran four minutes over into the next slot, and started early.
    found = match_schedule(booked, {"h"}, START - timedelta(minutes=5), END + timedelta(minutes=14))
    assert found.patient_id == "this"


def test_a_double_booking_names_nobody_unless_the_meeting_id_settles_it():
    booked = [
        appointment("h", ["a"], START, END),
        appointment("h", ["b"], START, END, meeting_id="85417329902", join_url=True),
    ]
    assert match_schedule(booked, {"h"}, START, END).patient_ids == ("a", "b")
    settled = match_schedule(booked, {"h"}, START, END, meeting_id="85417329902")
    assert (settled.patient_id, settled.settled) == ("b", True)
    # An Appointment booked for another meeting is not this one.
    assert match_schedule(booked, {"h"}, START, END, meeting_id="11111111111").patient_id == "a"


def test_other_hosts_couples_and_cancelled_appointments_are_not_candidates():
    booked = [
        appointment("other", ["a"], START, END),
        appointment("h", ["b", "c"], START, END),
        appointment("h", ["d"], START, END, status="cancelled"),
    ]
    assert match_schedule(booked, {"h"}, START, END).patient_ids == ()


def test_meeting_ids_are_read_from_identifiers_join_urls_and_comments():
    assert meeting_ids(appointment("h", ["a"], START, END, meeting_id="85417329902")) == {
        "85417329902"
    }
    by_url = appointment("h", ["a"], START, END, meeting_id="85417329902", join_url=True)
    assert meeting_ids(by_url) == {"85417329902"}
    spoken = {**appointment("h", ["a"], START, END), "comment": "Meeting ID: 854 1732 9902"}
    assert meeting_ids(spoken) == {"85417329902"}
