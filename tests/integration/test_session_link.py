"""Naming an unmatched session's client by hand: `sessions link` and the console's Problems page."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from plugin.core.models import AuditEvent, Practice, SessionEvent
from tests.support.console import add_problems, csrf_token, sign_in
from tests.support.platform_server import zoom_settings

BAD_REFERENCES = ["", "123", "Patient/", "Practitioner/9", "Patient/a b", "Patient/1/_history/2"]


@pytest.fixture
def config(config, zoom_platform):
    """Make Zoom installable against the test platform server."""
    return {**config, **zoom_settings(zoom_platform)}


def link(client, event_id: str, patient: str):
    token = csrf_token(client, "/console/problems")
    return client.post(
        f"/console/problems/session/{event_id}/link",
        data={"csrf_token": token, "patient": patient},
    )


def test_the_console_links_an_unmatched_session_and_queues_it(admin, db):
    client, practice = admin
    event, _, _ = add_problems(db, practice, datetime.now(UTC))
    page = client.get("/console/problems").get_data(as_text=True)
    assert "Link to Patient" in page

    response = link(client, event.id, "Patient/p-42")

    assert response.status_code == 302
    db.expire_all()
    stored = db.get(SessionEvent, event.id)
    assert (stored.status, stored.patient_ref, stored.match_method) == (
        "pending",
        "Patient/p-42",
        "admin",
    )
    assert "session.linked" in set(db.scalars(select(AuditEvent.action)))
    # Linked, it is no longer a problem to link.
    assert "Link to Patient" not in client.get("/console/problems").get_data(as_text=True)


@pytest.mark.parametrize("patient", BAD_REFERENCES)
def test_a_bad_reference_is_refused_inline_and_changes_nothing(admin, db, patient):
    client, practice = admin
    event, _, _ = add_problems(db, practice, datetime.now(UTC))

    response = link(client, event.id, patient)

    assert response.status_code == 422
    assert "Patient/ID" in response.get_data(as_text=True)
    assert 'aria-invalid="true"' in response.get_data(as_text=True)
    db.expire_all()
    stored = db.get(SessionEvent, event.id)
    assert (stored.status, stored.patient_ref, stored.match_method) == ("unmatched", None, None)


def test_the_link_needs_the_csrf_token(admin, db):
    client, practice = admin
    event, _, _ = add_problems(db, practice, datetime.now(UTC))
    response = client.post(
        f"/console/problems/session/{event.id}/link", data={"patient": "Patient/1"}
    )
    assert response.status_code == 400
    db.expire_all()
    assert db.get(SessionEvent, event.id).status == "unmatched"


def test_another_practices_session_or_a_planned_one_is_not_found(app, admin, db, zoom_platform):
    client, _ = admin
    harbour_browser = app.test_client()
    sign_in(harbour_browser, zoom_platform, "harbour")
    harbour = db.scalar(select(Practice).where(Practice.account_id == "zoom-acct-harbour"))
    event, invitation, _ = add_problems(db, harbour, datetime.now(UTC))

    assert link(client, event.id, "Patient/1").status_code == 404
    assert link(harbour_browser, invitation.session_event_id, "Patient/1").status_code == 404
    db.expire_all()
    assert db.get(SessionEvent, event.id).patient_ref is None
    assert "session.linked" not in set(db.scalars(select(AuditEvent.action)))


def test_sessions_link_queues_an_unmatched_session_with_an_audit_line(runner, admin, db):
    _, practice = admin
    event, _, _ = add_problems(db, practice, datetime.now(UTC))

    result = runner.invoke(args=["sessions", "link", event.id, "Patient/p-7"])

    assert result.exit_code == 0, result.output
    db.expire_all()
    stored = db.get(SessionEvent, event.id)
    assert (stored.status, stored.patient_ref, stored.match_method) == (
        "pending",
        "Patient/p-7",
        "admin",
    )
    line = db.scalar(select(AuditEvent).where(AuditEvent.action == "session.linked"))
    assert line.practice_id == practice.id


@pytest.mark.parametrize("patient", BAD_REFERENCES[1:])
def test_sessions_link_refuses_a_bad_reference(runner, admin, db, patient):
    _, practice = admin
    event, _, _ = add_problems(db, practice, datetime.now(UTC))
    result = runner.invoke(args=["sessions", "link", event.id, patient])
    assert result.exit_code != 0
    assert "Patient/ID" in result.output


def test_sessions_link_refuses_an_unknown_or_planned_session(runner, admin, db):
    _, practice = admin
    _, invitation, _ = add_problems(db, practice, datetime.now(UTC))
    for session_id in ("no-such-session", invitation.session_event_id):
        result = runner.invoke(args=["sessions", "link", session_id, "Patient/1"])
        assert result.exit_code != 0
        assert "no unmatched session" in result.output
