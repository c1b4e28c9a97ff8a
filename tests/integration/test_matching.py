"""Finding a Zoom session's client: the EHR's schedule, then registrants, then attendees.

Zoom's API is the stand-in (tests/support/zoom_api.py); the EHR is the real test FHIR server,
enforcing SMART scopes, with Practitioners, Patients and Appointments filed by its own records
desk. The sample meeting ran for the 50 minutes up to END, a moment ago (a session that ended
days ago is skipped as stale), hosted by HOST_EMAIL.
"""

import logging
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from plugin.core.models import Invitation, SessionEvent, SmsConsent
from plugin.jobs import tick
from tests.support import month
from tests.support.data import recent_end
from tests.support.ehr_desk import UUID, WITH_CONSENT, WITH_SCHEDULE, Ehr
from tests.support.schedule import appointment, consent, patient, practitioner
from tests.support.zoom_api import HOST_EMAIL, ZoomWebhooks, add_zoom_practice, zoom_payload

ACCOUNT = "zoom-acct-A"
TOKEN = "zoom-access-A"
MEETING_ID = "85417329902"
# Fixed once for the module, so the appointments and the meeting agree to the second.
END = recent_end().replace(microsecond=0)
START = END - timedelta(minutes=50)
HOST = {"id": "uLobJx7XTHi8yF0Tc1Vb8w", "user_email": HOST_EMAIL, "status": "in_meeting",
        "internal_user": True}  # fmt: skip
PHONE_ONLY = {"id": "", "name": "+1 202 555 0143", "user_email": "", "status": "in_meeting",
              "internal_user": False}  # fmt: skip
GUEST = {"id": "", "name": "Guest", "user_email": "", "status": "in_meeting",
         "internal_user": False}  # fmt: skip


def attendee(email: str) -> dict:
    return {"id": "", "name": "Client", "user_email": email, "status": "in_meeting",
            "internal_user": False}  # fmt: skip


@pytest.fixture
def config(config, zoom_api):
    """The test settings, with Zoom's webhook secret and API pointed at the stand-in."""
    return {**config, **zoom_api.config}


@pytest.fixture
def desk(app, client, db, runner, ehr, oauth_server) -> Ehr:
    """The FHIR server, emptied; our client may read the schedule as well as Patients."""
    return Ehr(app, client, db, runner, ehr, oauth_server, scopes=WITH_SCHEDULE)


@pytest.fixture
def practice(app, db, zoom_api, desk):
    """A Zoom practice connected to the FHIR server, its host filed as a Practitioner."""
    found = add_zoom_practice(db, app.extensions["vault"], ACCOUNT, TOKEN)
    desk.output = desk.connect(ACCOUNT)
    db.refresh(found)
    desk.host = desk.post(practitioner(HOST_EMAIL))
    return found


def session_of(
    app, client, db, zoom_api, participants, registrants=None, **meeting
) -> SessionEvent:
    """Let Zoom report the sample meeting with these people, post its end, plan it."""
    zoom_api.add_meeting(
        TOKEN,
        UUID,
        participants,
        registrants=registrants,
        start_time=f"{START:%Y-%m-%dT%H:%M:%SZ}",
        end_time=f"{END:%Y-%m-%dT%H:%M:%SZ}",
        **meeting,
    )
    payload = zoom_payload("meeting_ended.json")
    payload["payload"]["object"].update(
        start_time=f"{START:%Y-%m-%dT%H:%M:%SZ}", end_time=f"{END:%Y-%m-%dT%H:%M:%SZ}"
    )
    assert ZoomWebhooks(client).post(payload).status_code == 204
    tick(app, datetime.now(UTC) + timedelta(minutes=1))
    return db.scalar(select(SessionEvent))


def contact(app, db) -> dict:
    return app.extensions["vault"].open(db.scalar(select(Invitation)).contact)


def test_connect_reports_the_schedule_reads_granted(db, practice, desk):
    assert "system/Appointment.rs granted" in desk.output
    assert "system/Practitioner.rs granted" in desk.output
    assert practice.ehr_connection.facts["appointment_search"] is True


def test_a_phone_only_join_is_found_by_the_hosts_appointment(
    app, client, db, zoom_api, practice, desk
):
    pid = desk.post(patient("kim@example.org", "+12025550143"))
    desk.post(appointment(desk.host, [pid], START, END))

    event = session_of(app, client, db, zoom_api, [HOST, PHONE_ONLY])

    assert (event.status, event.patient_ref, event.match_method) == (
        "planned", f"Patient/{pid}", "appointment"
    )  # fmt: skip
    assert contact(app, db) == {"email": "kim@example.org", "phone": "+12025550143"}


def test_a_spouses_account_is_not_the_client_the_appointment_is(
    app, client, db, zoom_api, practice, desk
):
    pid = desk.post(patient("kim@example.org"))
    desk.post(patient("spouse@example.org"))  # also a client of the practice
    desk.post(appointment(desk.host, [pid], START + timedelta(minutes=5), END))

    event = session_of(app, client, db, zoom_api, [HOST, attendee("spouse@example.org")])

    assert (event.patient_ref, event.match_method) == (f"Patient/{pid}", "appointment")
    # The questionnaire goes to the client's own address, never the spouse's account.
    assert contact(app, db)["email"] == "kim@example.org"


def test_a_guest_without_email_is_found_by_the_registrants(
    app, client, db, zoom_api, practice, desk
):
    pid = desk.post(patient("lee@example.org"))
    registrants = [{"id": "r1", "email": "lee@example.org", "status": "approved"},
                   {"id": "r2", "email": "someone@example.org", "status": "denied"}]  # fmt: skip

    event = session_of(app, client, db, zoom_api, [HOST, GUEST], registrants)

    assert (event.status, event.patient_ref, event.match_method) == (
        "planned", f"Patient/{pid}", "registrant"
    )  # fmt: skip


def test_a_double_booking_names_nobody(app, client, db, zoom_api, practice, desk):
    first, second = desk.post(patient("a@example.org")), desk.post(patient("b@example.org"))
    desk.post(appointment(desk.host, [first], START, END))
    desk.post(
        appointment(desk.host, [second], START + timedelta(minutes=10), END + timedelta(minutes=10))
    )

    event = session_of(app, client, db, zoom_api, [HOST, GUEST])

    assert (event.status, event.reason, event.patient_ref) == ("unmatched", "several_matches", None)
    assert db.scalar(select(Invitation)) is None


@pytest.mark.parametrize("join_url", [False, True], ids=["identifier", "join_url"])
def test_a_double_booking_is_settled_by_the_meeting_id(
    app, client, db, zoom_api, practice, desk, join_url
):
    first, second = desk.post(patient("a@example.org")), desk.post(patient("b@example.org"))
    desk.post(appointment(desk.host, [first], START, END, meeting_id="99999999999"))
    desk.post(
        appointment(desk.host, [second], START, END, meeting_id=MEETING_ID, join_url=join_url)
    )

    event = session_of(app, client, db, zoom_api, [HOST, GUEST])

    assert (event.patient_ref, event.match_method) == (f"Patient/{second}", "appointment")


def test_cancelled_couples_and_other_hours_appointments_are_no_candidates(
    app, client, db, zoom_api, practice, desk
):
    pid, partner = desk.post(patient("kim@example.org")), desk.post(patient("pat@example.org"))
    desk.post(appointment(desk.host, [pid], START, END, status="cancelled"))
    desk.post(appointment(desk.host, [pid, partner], START, END))
    desk.post(
        appointment(desk.host, [partner], START + timedelta(hours=3), END + timedelta(hours=3))
    )
    other = desk.post(practitioner("colleague@riverside.example"))
    desk.post(appointment(other, [partner], START, END))

    event = session_of(app, client, db, zoom_api, [HOST, attendee("kim@example.org")])

    # The schedule named nobody, so the attendee's email decided, as before.
    assert (event.patient_ref, event.match_method) == (f"Patient/{pid}", "email")


def test_an_ehr_without_the_schedule_reads_still_matches_by_email(
    app, client, db, runner, zoom_api, ehr, oauth_server, caplog
):
    desk = Ehr(app, client, db, runner, ehr, oauth_server)  # no Appointment/Practitioner reads
    add_zoom_practice(db, app.extensions["vault"], ACCOUNT, TOKEN)
    output = desk.connect(ACCOUNT)
    assert "system/Appointment.rs not granted" in output
    assert "schedule         off" in output
    host = desk.post(practitioner(HOST_EMAIL))
    pid = desk.post(patient("kim@example.org"))
    desk.post(appointment(host, [pid], START, END))

    with caplog.at_level(logging.INFO, logger="plugin.planning.resolution"):
        event = session_of(app, client, db, zoom_api, [HOST, attendee("kim@example.org")])

    assert (event.patient_ref, event.match_method) == (f"Patient/{pid}", "email")
    skipped = [r for r in caplog.records if r.getMessage() == "client_resolution.schedule_skipped"]
    assert [r.reason for r in skipped] == ["schedule_not_granted"]
    assert not any(m == "GET" and "Appointment" in p for m, p, _ in ehr.stats()["log"])


def test_a_host_zoom_no_longer_knows_skips_the_schedule_without_retrying(
    app, client, db, zoom_api, practice, desk, caplog
):
    # The host's user record is gone (Zoom answers 404, code 1001): no retry can mend that.
    pid = desk.post(patient("kim@example.org"))
    desk.post(appointment(desk.host, [pid], START, END))

    with caplog.at_level(logging.INFO, logger="plugin.planning.resolution"):
        event = session_of(
            app, client, db, zoom_api, [HOST, attendee("kim@example.org")], host_email=None
        )

    assert (event.status, event.patient_ref, event.match_method) == (
        "planned", f"Patient/{pid}", "email"
    )  # fmt: skip
    assert (event.attempts, event.last_error) == (0, None)
    skipped = [r for r in caplog.records if r.getMessage() == "client_resolution.schedule_skipped"]
    assert [r.reason for r in skipped] == ["host_not_found"]
    assert any(c.raw_path.startswith("/v2/users/") for c in zoom_api.api_calls())
    assert not any(m == "GET" and "/Practitioner?" in p for m, p, _ in desk.server.stats()["log"])


def test_zoom_failing_on_the_host_is_still_retried(app, client, db, zoom_api, practice, desk):
    # Only a 404 means "no such host": Zoom being down is retried as before.
    zoom_api.fail_next(1, status=503, path="/v2/users/")

    event = session_of(app, client, db, zoom_api, [HOST, attendee("kim@example.org")])

    assert (event.status, event.last_error, event.attempts) == (
        "pending", "platform_unavailable", 1
    )  # fmt: skip


def test_a_host_an_admin_mapped_is_found_without_their_email_in_the_ehr(
    app, client, db, runner, zoom_api, practice, desk
):
    # The therapist's Practitioner record holds another address than their Zoom account.
    host = desk.post(practitioner("a.quinn@ehr-only.example"))
    pid = desk.post(patient("kim@example.org", "+12025550143"))
    desk.post(appointment(host, [pid], START, END))
    result = runner.invoke(
        args=["practice", "map-host", ACCOUNT, HOST_EMAIL.upper(), f"Practitioner/{host}",
              "--platform", "zoom"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    event = session_of(app, client, db, zoom_api, [HOST, PHONE_ONLY])

    assert (event.patient_ref, event.match_method) == (f"Patient/{pid}", "appointment")
    # The mapping came first: the EHR was not asked who holds the host's email.
    assert not any(m == "GET" and "/Practitioner?" in p for m, p, _ in desk.server.stats()["log"])


def test_a_client_found_in_the_schedule_is_texted_on_their_consent_in_the_ehr(
    app, client, db, runner, zoom_api, ehr, oauth_server
):
    # Zoom's webhook carries no consent: the EHR's Consent is how such a client gets texts.
    desk = Ehr(app, client, db, runner, ehr, oauth_server, scopes=WITH_CONSENT)
    add_zoom_practice(db, app.extensions["vault"], ACCOUNT, TOKEN)
    desk.connect(ACCOUNT)
    host = desk.post(practitioner(HOST_EMAIL))
    pid = desk.post(patient("kim@example.org", "+12025550143"))
    desk.post(appointment(host, [pid], START, END))
    desk.post(consent(pid, END - timedelta(days=60)))

    event = session_of(app, client, db, zoom_api, [HOST, PHONE_ONLY])

    assert (event.patient_ref, event.match_method) == (f"Patient/{pid}", "appointment")
    assert db.scalar(select(Invitation)).channels == ["email", "sms"]
    assert db.scalar(select(SmsConsent)).recorded_via == "ehr"


def test_a_linked_session_is_planned_for_the_patient_the_admin_named(
    app, client, db, runner, zoom_api, practice, desk
):
    pid = desk.post(patient("kim@example.org", "+12025550143"))
    event = session_of(app, client, db, zoom_api, [HOST, GUEST])
    assert (event.status, event.reason) == ("unmatched", "no_participants")

    result = runner.invoke(args=["sessions", "link", event.id, f"Patient/{pid}"])
    assert result.exit_code == 0, result.output
    tick(app, datetime.now(UTC) + timedelta(minutes=2))

    db.refresh(event)
    assert (event.status, event.patient_ref, event.match_method) == (
        "planned", f"Patient/{pid}", "admin"
    )  # fmt: skip
    assert contact(app, db) == {"email": "kim@example.org", "phone": "+12025550143"}


def test_a_session_linked_to_no_current_patient_stays_unmatched(
    app, client, db, runner, zoom_api, practice, desk
):
    event = session_of(app, client, db, zoom_api, [HOST, GUEST])
    runner.invoke(args=["sessions", "link", event.id, "Patient/does-not-exist"])
    tick(app, datetime.now(UTC) + timedelta(minutes=2))
    db.refresh(event)
    assert (event.status, event.reason) == ("unmatched", "linked_patient_not_found")
    assert db.scalar(select(Invitation)) is None


def test_a_generated_month_is_mostly_matched_and_each_method_is_counted(
    app, client, db, zoom_api, practice, desk, capsys
):
    # MATCHING_MONTH=400 gives the month in docs/matching.md; the suite runs a smaller one.
    scenarios = month.generate(seed=13, count=int(os.environ.get("MATCHING_MONTH", "60")))

    outcomes = month.run_month(app, client, db, zoom_api, desk, TOKEN, scenarios)

    with capsys.disabled():
        print("\n" + month.table(outcomes, scenarios))
    assert sum(outcomes.values()) == len(scenarios)
    matched = sum(outcomes[m] for m in ("appointment", "registrant", "email"))
    assert outcomes["appointment"] > outcomes["email"] > 0
    assert outcomes["registrant"] > 0
    # Better than attendee emails alone, and never a wrong guess: every match is checked.
    assert matched > month.email_only_count(scenarios)
    for event in db.scalars(select(SessionEvent).where(SessionEvent.patient_ref.is_not(None))):
        assert event.match_method in month.METHODS
