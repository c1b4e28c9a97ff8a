"""The console's pages for a signed-in admin, and isolation between two practices."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from plugin.core.models import (
    AuditEvent,
    EhrWrite,
    Invitation,
    Practice,
    SchedulePolicy,
    SessionEvent,
)
from tests.support.console import add_problems, csrf_token, sign_in
from tests.support.platform_server import zoom_settings

PAGES = ["/console/", "/console/schedule", "/console/ehr", "/console/problems",
         "/console/practice", "/console/tokens", "/console/audit"]  # fmt: skip


@pytest.fixture
def config(config, zoom_platform):
    """Make Zoom installable against the test platform server."""
    return {**config, **zoom_settings(zoom_platform)}


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_the_admin_and_needs_sign_in(app, admin, path):
    client, _ = admin
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert app.test_client().get(path).status_code == 401


def test_front_page_and_privacy_are_public(client):
    assert "Alliance Check" in client.get("/").get_data(as_text=True)
    assert "deleted" in client.get("/privacy").get_data(as_text=True)


def test_schedule_change_is_versioned_audited_and_previewed(admin, db):
    client, practice = admin
    form = {
        "csrf_token": csrf_token(client, "/console/schedule"),
        "first_sessions": "6", "then_every": "3", "min_gap_days": "2", "delay_minutes": "10",
        "quiet_start": "21:00", "quiet_end": "08:00", "reminder_after_hours": "24",
        "expires_after_hours": "72", "max_send_delay_hours": "36", "channels": "sms,email",
        "language": "en", "questionnaire": client.application.extensions["default_instrument"],
    }  # fmt: skip

    assert client.post("/console/schedule", data=form).status_code == 302

    [row] = db.scalars(select(SchedulePolicy).where(SchedulePolicy.practice_id == practice.id))
    assert (row.version, row.settings["first_sessions"]) == (1, 6)
    assert row.settings["channels"] == ["sms", "email"]
    assert row.settings["max_send_delay_hours"] == 36
    page = client.get("/console/schedule").get_data(as_text=True)
    assert "Asked after sessions 1, 2, 3, 4, 5, 6, 9, 12, 15, 18." in page
    event = db.scalar(select(AuditEvent).where(AuditEvent.action == "schedule.set"))
    assert event.actor.startswith("admin:") and "first_sessions" in event.detail["fields"]


def test_an_invalid_setting_is_refused_inline_naming_the_field(admin, db):
    client, _ = admin
    form = {"csrf_token": csrf_token(client, "/console/schedule"), "first_sessions": "many"}

    response = client.post("/console/schedule", data=form)

    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="first_sessions-error"' in page and 'aria-invalid="true"' in page
    assert db.scalars(select(SchedulePolicy)).all() == []


def test_override_holds_only_its_settings_and_can_be_removed(admin, db):
    client, _ = admin
    token = csrf_token(client, "/console/schedule")
    added = client.post(
        "/console/schedule/overrides",
        data={"csrf_token": token, "practitioner_ref": "Practitioner/42", "first_sessions": "8"},
    )
    assert added.status_code == 302
    [row] = db.scalars(select(SchedulePolicy).where(SchedulePolicy.practitioner_ref != ""))
    assert row.settings == {"first_sessions": 8}
    assert "Practitioner/42" in client.get("/console/schedule").get_data(as_text=True)

    removed = client.post(
        "/console/schedule/overrides/remove",
        data={"csrf_token": token, "practitioner_ref": "Practitioner/42"},
    )
    assert removed.status_code == 302
    assert "No overrides" in client.get("/console/schedule").get_data(as_text=True)


def test_practice_refuses_an_empty_name(admin, db):
    client, practice = admin
    token = csrf_token(client, "/console/practice")
    response = client.post(
        "/console/practice",
        data={"csrf_token": token, "name": " ", "timezone": "Not/AZone", "language": "en"},
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="name-error"' in page and 'id="timezone-error"' in page
    db.expire_all()
    assert db.get(Practice, practice.id).name == "Riverside Therapy"


def test_problems_are_listed_with_why_and_retried(admin, db):
    client, practice = admin
    event, invitation, write = add_problems(db, practice, datetime.now(UTC))
    invitation_event = invitation.session_event_id
    page = client.get("/console/problems").get_data(as_text=True)
    assert "No patient in your EHR has an attendee" in page
    assert "The email could not be delivered." in page
    assert "Your EHR refused the response" in page
    token = csrf_token(client, "/console/problems")

    for kind, problem in (("session", event), ("invitation", invitation), ("ehr_write", write)):
        response = client.post(
            f"/console/problems/{kind}/{problem.id}/retry", data={"csrf_token": token}
        )
        assert response.status_code == 302, kind

    db.expire_all()
    assert db.get(SessionEvent, event.id).status == "pending"
    assert db.scalar(select(Invitation).where(Invitation.status == "failed")) is None
    assert db.get(SessionEvent, invitation_event).status == "pending"  # planned afresh
    assert db.get(EhrWrite, write.id).status == "pending"
    actions = set(db.scalars(select(AuditEvent.action)))
    assert {"session.retried", "invitation.retried", "ehr_write.retried"} <= actions


def test_one_practice_never_sees_or_changes_anothers(app, admin, db, zoom_platform):
    client, _ = admin
    harbour_browser = app.test_client()
    sign_in(harbour_browser, zoom_platform, "harbour")
    harbour = db.scalar(select(Practice).where(Practice.account_id == "zoom-acct-harbour"))
    event, invitation, write = add_problems(db, harbour, datetime.now(UTC))
    token = csrf_token(client, "/console/problems")

    page = client.get("/console/problems").get_data(as_text=True)
    assert event.id not in page and invitation.id not in page and write.id not in page
    for kind, problem in (("session", event), ("invitation", invitation), ("ehr_write", write)):
        response = client.post(
            f"/console/problems/{kind}/{problem.id}/retry", data={"csrf_token": token}
        )
        assert response.status_code == 404
    client.post(
        "/console/schedule/overrides",
        data={"csrf_token": token, "practitioner_ref": "Practitioner/9", "first_sessions": "2"},
    )
    harbour_token = csrf_token(harbour_browser, "/console/schedule")
    removed = harbour_browser.post(
        "/console/schedule/overrides/remove",
        data={"csrf_token": harbour_token, "practitioner_ref": "Practitioner/9"},
    )
    assert removed.status_code == 404

    db.expire_all()
    assert db.get(SessionEvent, event.id).status == "unmatched"
    assert db.get(Invitation, invitation.id).status == "failed"
    assert db.get(EhrWrite, write.id).status == "dead"
    assert "Harbour" not in "".join(client.get(p).get_data(as_text=True) for p in PAGES)
    audit_page = harbour_browser.get("/console/audit").get_data(as_text=True)
    assert "override.set" not in audit_page
