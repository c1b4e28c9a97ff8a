"""POST /webhooks/standard: each kind of delivery gets its documented answer."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from plugin.core.models import Invitation, SessionEvent
from plugin.install.practices import add_practice
from tests.support.data import WEBHOOK_SECRETS, session_ended
from tests.support.webhooks import Webhooks


def count(db, model) -> int:
    """Count the rows of a model visible in the test transaction."""
    return db.scalar(select(func.count()).select_from(model))


def test_stored_event_gets_204_and_waits_for_planning(webhooks, db, practice):
    payload = session_ended("s-1")
    response = webhooks.post(payload)
    assert response.status_code == 204
    event = db.scalar(select(SessionEvent))
    assert (event.session_id, event.practice_id, event.patient_ref) == (
        "s-1",
        practice.id,
        "Patient/c1",
    )
    assert event.ended_at == datetime.fromisoformat(payload["data"]["ended_at"])
    assert event.ended_at.microsecond == 250000
    assert (event.status, event.language, event.timezone) == ("pending", "es", "America/New_York")
    # The schedule decides in the worker; the webhook only records the session.
    assert count(db, Invitation) == 0


def test_contact_details_are_encrypted_at_rest(webhooks, db, practice):
    webhooks.post(session_ended("s-1", email="sam.rivera@example.org", phone="+12025550143"))
    stored = db.scalar(select(SessionEvent)).contact
    assert stored is not None
    assert b"sam.rivera" not in stored and b"2025550143" not in stored


def test_same_delivery_three_times_is_stored_once(webhooks, db, practice):
    body = json.dumps(session_ended("s-1")).encode()
    answers = {webhooks.post(body, msg_id="msg_same").status_code for _ in range(3)}
    assert answers == {204}
    assert count(db, SessionEvent) == 1


def test_same_session_under_new_webhook_ids_is_stored_once(webhooks, db, practice):
    # Platforms retry with a fresh id sometimes; the session itself is the business key.
    for _ in range(3):
        assert webhooks.post(session_ended("s-1")).status_code == 204
    assert count(db, SessionEvent) == 1


@pytest.mark.parametrize(
    "case",
    ["forged", "stale", "future", "missing_signature", "malformed_signature", "tampered"],
)
def test_bad_signature_is_401_and_stores_nothing(client, db, practice, case):
    body = json.dumps(session_ended("s-1")).encode()
    signer = Webhooks(client, WEBHOOK_SECRETS["forger" if case == "forged" else "platform"])
    at = {"stale": -10, "future": 10}.get(case, 0)
    headers = signer.headers(body, at=datetime.now(UTC) + timedelta(minutes=at))
    if case == "missing_signature":
        del headers["webhook-signature"]
    if case == "malformed_signature":
        headers["webhook-signature"] = "v1 not-base64"
    if case == "tampered":
        body = body.replace(b"s-1", b"s-2")
    response = signer.post(body, headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert count(db, SessionEvent) == 0


def test_body_over_64_kib_is_413(webhooks, db, practice):
    payload = session_ended("s-1")
    payload["padding"] = "x" * 70_000
    response = webhooks.post(payload)
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert count(db, SessionEvent) == 0


def test_malformed_json_is_400_problem(webhooks, db, practice):
    response = webhooks.post(b'{"type": "session.ended", "data": ')
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.json["field"] == "body"
    assert count(db, SessionEvent) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "not-an-email"}, "data.client.email"),
        ({"phone": "555 0143 call me"}, "data.client.phone"),
        ({"timezone": "Mars/Olympus"}, "data.client.timezone"),
    ],
)
def test_schema_violation_names_field_without_echoing_phi(webhooks, db, practice, change, field):
    response = webhooks.post(session_ended("s-1", **change))
    assert response.status_code == 400
    assert response.json["field"] == field
    bad_value = next(iter(change.values()))
    assert bad_value not in response.get_data(as_text=True)
    assert "sam.rivera" not in response.get_data(as_text=True)
    assert count(db, SessionEvent) == 0


def test_unknown_event_type_is_acknowledged_and_ignored(webhooks, db, practice):
    payload = session_ended("s-1")
    payload["type"] = "session.started"
    assert webhooks.post(payload).status_code == 204
    assert count(db, SessionEvent) == 0


def test_unknown_account_is_acknowledged_and_dropped_logged_by_id(webhooks, db, practice, caplog):
    caplog.set_level("INFO")
    response = webhooks.post(session_ended("s-1", account_id="nobody-here"))
    assert response.status_code == 204
    assert count(db, SessionEvent) == 0
    dropped = [r for r in caplog.records if r.getMessage() == "webhook.unknown_account"]
    assert [r.account_id for r in dropped] == ["nobody-here"]


def test_an_account_installed_on_another_platform_only_is_unknown_here(app, webhooks, db):
    # The practice is found by platform and account together: a Zoom account's id arriving
    # on the Standard Webhooks endpoint belongs to nobody.
    add_practice(
        db,
        account_id="zoom-only",
        name="Lakeside Therapy",
        timezone="America/Chicago",
        ehr_target="ndjson:var/ehr-z",
        root=Path(app.instance_path).parent,
        platform="zoom",
    )
    assert webhooks.post(session_ended("s-1", account_id="zoom-only")).status_code == 204
    assert count(db, SessionEvent) == 0


def test_unknown_platform_is_404_problem(client):
    response = client.post("/webhooks/nowhere", data=b"{}")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_webhook_for_one_practice_touches_no_other(webhooks, db, practice, other_practice):
    # Practice B has a session with the same platform session id: it must stay B's alone.
    webhooks.post(session_ended("shared-id", account_id="other"))
    webhooks.post(session_ended("shared-id", account_id="demo"))
    by_practice = dict(
        db.execute(
            select(SessionEvent.practice_id, func.count()).group_by(SessionEvent.practice_id)
        ).all()
    )
    assert by_practice == {practice.id: 1, other_practice.id: 1}


def test_same_webhook_id_for_another_practice_is_not_a_duplicate(
    webhooks, db, practice, other_practice
):
    # Dedupe is per practice: one practice's delivery ids can never suppress another's events.
    webhooks.post(session_ended("s-1", account_id="demo"), msg_id="msg_1")
    webhooks.post(session_ended("s-1", account_id="other"), msg_id="msg_1")
    assert count(db, SessionEvent) == 2


def test_database_down_is_5xx_so_the_platform_retries(app, webhooks, practice):
    # A real connection failure: nothing listens on port 1.
    app.extensions["db"].sessions = sessionmaker(
        create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    )
    response = webhooks.post(session_ended("s-1"))
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    assert "sam.rivera" not in response.get_data(as_text=True)
