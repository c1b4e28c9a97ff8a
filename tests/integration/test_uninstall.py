"""Uninstall: tokens revoked, the practice purged at once but for the answers still owed to its
EHR, which are delivered (within 24 hours) before it goes too; the others untouched."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Table, func, select

from plugin.core.crypto import hash_token
from plugin.core.db import Base
from plugin.core.models import (
    ApiToken,
    AuditEvent,
    EhrConnection,
    EhrWrite,
    HostPractitioner,
    InstallEvent,
    Invitation,
    LaunchSession,
    OptOut,
    Practice,
    SchedulePolicy,
    SessionEvent,
    SmsConsent,
)
from plugin.install.lifecycle import DELIVER_WITHIN, purge_uninstalled, uninstall
from plugin.jobs import tick_step
from tests.support.backlog import FULL
from tests.support.data import load_json
from tests.support.install import ACCOUNTS, begin
from tests.support.platform_server import zoom_settings
from tests.support.survey import submit
from webhooks.zoom import sign as zoom_sign

CLIENTS = load_json("install/clients.json")
ZOOM_WEBHOOK_SECRET = "zoom-secret-token-for-tests-0001"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def config(config, zoom_platform):
    """Make Zoom installable against the test platform server, and its webhooks verifiable."""
    return {**config, **zoom_settings(zoom_platform), "ZOOM_WEBHOOK_SECRET": ZOOM_WEBHOOK_SECRET}


def install_through_consent(app, zoom_platform, account: dict) -> None:
    zoom_platform.account = account
    browser = app.test_client()
    assert browser.get(begin(browser)).status_code == 302


def populate(db, vault, practice: Practice, client: dict) -> None:
    """Give a practice one of every kind of row: events, invitations, writes, settings."""
    contact = vault.seal({"email": client["email"], "phone": client["phone"]})
    for status in ("pending", "sent", "answered"):
        event = SessionEvent(
            practice_id=practice.id,
            platform=practice.platform,
            event_id=f"evt-{uuid.uuid4().hex}",
            session_id=f"s-{uuid.uuid4().hex}",
            started_at=NOW - timedelta(hours=1),
            ended_at=NOW,
            patient_ref=client["patient_ref"],
            contact=contact,
            status="planned",
            next_attempt_at=NOW,
            received_at=NOW,
        )
        db.add(event)
        db.flush()
        token = f"{client['link_token']}-{status}"
        invitation = Invitation(
            practice_id=practice.id,
            session_event_id=event.id,
            status=status,
            questionnaire="https://alliance-check.org/fhir/Questionnaire/alliance-check|1.0.0",
            patient_ref=client["patient_ref"],
            token_hash=hash_token(token),
            token=vault.seal(token),
            contact=None if status == "answered" else contact,
            language="en",
            due_at=NOW,
            next_attempt_at=NOW,
            created_at=NOW,
        )
        db.add(invitation)
        db.flush()
        if status == "answered":
            db.add(
                EhrWrite(
                    practice_id=practice.id,
                    invitation_id=invitation.id,
                    bundle=vault.seal({"resourceType": "Bundle", "answer": "felt heard"}),
                    next_attempt_at=NOW,
                    created_at=NOW,
                )
            )
    db.add(
        EhrConnection(
            practice_id=practice.id,
            fhir_base=f"https://ehr.example/{practice.account_id}/fhir",
            client_id="alliance",
            token_endpoint="https://ehr.example/token",
            facts={"transaction": True},
            scope="system/Observation.c",
            checked_at=NOW,
        )
    )
    db.add(SchedulePolicy(practice_id=practice.id, version=1, settings={}, created_at=NOW))
    db.add(
        OptOut(
            practice_id=practice.id,
            patient_ref=client["patient_ref"],
            channel="sms",
            created_at=NOW,
        )
    )
    db.add(
        SmsConsent(
            practice_id=practice.id,
            patient_ref=client["patient_ref"],
            granted=True,
            source="intake_form",
            recorded_via="webhook",
            given_at=NOW,
            recorded_at=NOW,
        )
    )
    db.add(
        ApiToken(
            practice_id=practice.id,
            name="reporting",
            token_hash=hash_token(f"{client['link_token']}-api"),
            created_by="cli",
            created_at=NOW,
        )
    )
    db.add(
        HostPractitioner(
            practice_id=practice.id,
            host_digest=hash_token(f"{client['link_token']}-host"),
            host_email=vault.seal("host@example.org"),
            practitioner_ref="Practitioner/p-1",
            created_at=NOW,
        )
    )
    db.add(AuditEvent(practice_id=practice.id, actor="cli", action="schedule.set", created_at=NOW))
    # A therapist's open launch of the in-EHR view: its sealed token goes with the practice.
    db.add(
        LaunchSession(
            id=practice.id.replace("-", "").ljust(64, "0"),
            practice_id=practice.id,
            status="active",
            sealed=vault.seal({"access_token": "t", "patient": client["patient_ref"]}),
            created_at=NOW,
            expires_at=NOW,
        )
    )
    db.commit()


def run_uninstall(app, db, **arguments) -> bool:
    """Call uninstall as a job would: inside an app context (config and vault), no request."""
    with app.app_context():
        return uninstall(db, **arguments)


def practice_tables() -> list[Table]:
    return [
        t
        for t in Base.metadata.sorted_tables
        if "practice_id" in t.c and t.name != "install_events"
    ]


def rows_of(db, practice_id: str) -> dict[str, list[tuple]]:
    """Every row that belongs to a practice, table by table, as raw tuples."""
    db.expire_all()
    snapshot = {
        "practices": db.execute(select(Practice.__table__).where(Practice.id == practice_id)).all()
    }
    for table in practice_tables():
        rows = db.execute(select(table).where(table.c.practice_id == practice_id)).all()
        snapshot[table.name] = sorted(tuple(row) for row in rows)
    return snapshot


@pytest.fixture
def two_practices(app, db, zoom_platform) -> tuple[str, str]:
    """Riverside and Harbour, installed through consent, each with a full set of rows: ids."""
    vault = app.extensions["vault"]
    for key in ("riverside", "harbour"):
        install_through_consent(app, zoom_platform, ACCOUNTS[key])
    riverside, harbour = (
        db.scalar(select(Practice).where(Practice.account_id == ACCOUNTS[key]["account_id"]))
        for key in ("riverside", "harbour")
    )
    populate(db, vault, riverside, CLIENTS["riverside"])
    populate(db, vault, harbour, CLIENTS["harbour"])
    return riverside.id, harbour.id


def assert_gone(db, practice_id: str) -> None:
    for name, rows in rows_of(db, practice_id).items():
        assert rows == [], f"{name} still holds rows of the uninstalled practice"


# What an uninstalled practice keeps until its answers reach the EHR: nothing else.
OWED = {"practices": 1, "ehr_connections": 1, "ehr_writes": 1, "invitations": 1,
        "session_events": 1}  # fmt: skip


def assert_only_the_owed_answer_left(db, practice_id: str) -> None:
    """The practice is stripped to the one answer still owed to its EHR, and what it needs."""
    left = {name: len(rows) for name, rows in rows_of(db, practice_id).items() if rows}
    assert left == OWED
    practice = db.get(Practice, practice_id)
    assert (practice.status, practice.platform_token) == ("uninstalled", None)
    # The account is free for a clean reinstall; its webhooks find nothing.
    assert practice.account_id == f"uninstalled:{practice_id}"
    invitation = db.scalar(select(Invitation).where(Invitation.practice_id == practice_id))
    assert invitation.status == "answered"
    assert (invitation.contact, invitation.token, invitation.token_hash) == (None, None, None)
    event = db.scalar(select(SessionEvent).where(SessionEvent.practice_id == practice_id))
    assert event.contact is None
    write = db.scalar(select(EhrWrite).where(EhrWrite.practice_id == practice_id))
    assert (write.status, write.bundle is not None) == ("pending", True)


def assert_no_phi(db, practice_id: str, zoom_platform) -> None:
    events = db.scalars(select(InstallEvent).where(InstallEvent.practice_id == practice_id)).all()
    text = json.dumps([[e.action, e.detail, e.account_id, e.platform] for e in events])
    secrets = [value for client in CLIENTS.values() for value in client.values()]
    secrets += [t.access_token for t in zoom_platform.tokens]
    secrets += [t.refresh_token for t in zoom_platform.tokens]
    secrets += ["felt heard", "Riverside Therapy", "robin.admin@riverside.example"]
    for secret in secrets:
        assert secret not in text


def test_uninstall_purges_the_practice_and_leaves_the_other_untouched(
    app, db, two_practices, zoom_platform
):
    riverside, harbour = two_practices
    harbour_before = rows_of(db, harbour)
    assert all(harbour_before.values())

    assert (
        run_uninstall(app, db, platform="zoom", account_id="zoom-acct-riverside", now=NOW) is True
    )

    assert_only_the_owed_answer_left(db, riverside)
    assert rows_of(db, harbour) == harbour_before
    event = db.scalar(
        select(InstallEvent).where(
            InstallEvent.practice_id == riverside, InstallEvent.action == "uninstalled"
        )
    )
    assert event.created_at == NOW
    assert event.detail == {
        "tokens_revoked": True,
        "session_events": 3,
        "invitations": 3,
        "invitations_purged": 2,
        "ehr_writes_owed": 1,
    }
    assert_no_phi(db, riverside, zoom_platform)

    # The EHR never takes it (no write step runs here): at the deadline it is purged anyway.
    sessions = app.extensions["db"].sessions
    assert purge_uninstalled(sessions, NOW + DELIVER_WITHIN - timedelta(seconds=1)) == 0
    assert purge_uninstalled(sessions, NOW + DELIVER_WITHIN) == 1
    assert_gone(db, riverside)
    assert rows_of(db, harbour) == harbour_before
    purged = db.scalar(select(InstallEvent).where(InstallEvent.action == "purged"))
    assert (purged.practice_id, purged.detail) == (
        riverside,
        {"ehr_writes_delivered": 0, "ehr_writes_dropped": 1},
    )
    assert_no_phi(db, riverside, zoom_platform)


def test_uninstall_revokes_the_grant_at_the_platform(app, db, two_practices, zoom_platform):
    run_uninstall(app, db, platform="zoom", account_id="zoom-acct-riverside", now=NOW)

    assert zoom_platform.revocations == [("refresh_token", "alliance-check-zoom")]
    accounts = {t.account["account_id"] for t in zoom_platform.live_tokens()}
    assert accounts == {"zoom-acct-harbour"}


def test_uninstall_purges_even_when_the_platform_cannot_revoke(app, db, two_practices):
    riverside, _ = two_practices
    app.config["ZOOM_REVOKE_URL"] = "http://127.0.0.1:9/revoke"  # discard port: refused

    assert run_uninstall(app, db, platform="zoom", account_id="zoom-acct-riverside", now=NOW)

    assert_only_the_owed_answer_left(db, riverside)
    event = db.scalar(select(InstallEvent).where(InstallEvent.action == "uninstalled"))
    assert event.detail["tokens_revoked"] is False


def test_uninstalling_an_unknown_account_stores_nothing(app, db, two_practices):
    before = db.scalar(select(func.count()).select_from(InstallEvent))

    assert run_uninstall(app, db, platform="zoom", account_id="zoom-acct-nobody", now=NOW) is False
    # Same account id on another platform is another installation.
    assert (
        run_uninstall(app, db, platform="standard", account_id="zoom-acct-riverside", now=NOW)
        is False
    )

    assert db.scalar(select(func.count()).select_from(InstallEvent)) == before
    assert db.scalar(select(func.count()).select_from(Practice)) == 2


def test_reinstalling_after_uninstall_starts_clean(app, db, two_practices, zoom_platform):
    riverside, _ = two_practices
    run_uninstall(app, db, platform="zoom", account_id="zoom-acct-riverside", now=datetime.now(UTC))

    install_through_consent(app, zoom_platform, ACCOUNTS["riverside"])

    again = db.scalar(select(Practice).where(Practice.account_id == "zoom-acct-riverside"))
    assert again.id != riverside
    assert again.status == "active"
    assert again.ehr_target == ""
    assert db.scalar(select(func.count()).where(SessionEvent.practice_id == again.id)) == 0
    assert db.scalar(select(func.count()).where(Invitation.practice_id == again.id)) == 0
    assert db.scalar(select(EhrConnection).where(EhrConnection.practice_id == again.id)) is None
    actions = db.scalars(
        select(InstallEvent.action)
        .where(InstallEvent.account_id == "zoom-acct-riverside")
        .order_by(InstallEvent.created_at)
    ).all()
    assert actions == ["installed", "uninstalled", "installed"]


def test_zoom_app_deauthorized_webhook_uninstalls(app, client, db, two_practices, zoom_platform):
    riverside, harbour = two_practices
    harbour_before = rows_of(db, harbour)
    body = json.dumps(load_json("install/app_deauthorized.json")).encode()
    headers = zoom_sign(ZOOM_WEBHOOK_SECRET, datetime.now(UTC), body)

    response = client.post(
        "/webhooks/zoom", data=body, headers=headers, content_type="application/json"
    )

    assert response.status_code == 204
    assert_only_the_owed_answer_left(db, riverside)
    assert rows_of(db, harbour) == harbour_before
    assert zoom_platform.revocations == [("refresh_token", "alliance-check-zoom")]
    assert_no_phi(db, riverside, zoom_platform)


def test_a_forged_deauthorization_deletes_nothing(client, db, two_practices):
    riverside, _ = two_practices
    before = rows_of(db, riverside)
    body = json.dumps(load_json("install/app_deauthorized.json")).encode()
    headers = zoom_sign("not-the-secret-token-at-all-000", datetime.now(UTC), body)

    response = client.post(
        "/webhooks/zoom", data=body, headers=headers, content_type="application/json"
    )

    assert response.status_code == 401
    assert rows_of(db, riverside) == before


def test_standard_app_uninstalled_webhook_uninstalls(app, db, practice, webhooks):
    populate(db, app.extensions["vault"], practice, CLIENTS["riverside"])
    practice_id = practice.id

    response = webhooks.post(load_json("install/app_uninstalled.json"))

    assert response.status_code == 204
    assert_only_the_owed_answer_left(db, practice_id)
    event = db.scalar(select(InstallEvent).where(InstallEvent.practice_id == practice_id))
    # Installed by hand, so there was no platform grant to revoke.
    assert (event.action, event.detail["tokens_revoked"]) == ("uninstalled", False)


def test_an_answer_submitted_before_uninstall_reaches_the_ehr_after_then_all_is_purged(
    app, client, db, link, webhooks
):
    path, invitation = link
    practice_id = invitation.practice_id
    assert submit(client, path, FULL).status_code == 200

    assert webhooks.post(load_json("install/app_uninstalled.json")).status_code == 204
    # Acknowledged answers are owed to the EHR; the link and the contact are gone already.
    assert db.scalar(select(EhrWrite).where(EhrWrite.practice_id == practice_id)) is not None
    assert client.get(path).status_code == 404

    assert tick_step(app, "ehr") == 1
    written = (Path(app.instance_path) / "ehr" / "QuestionnaireResponse.ndjson").read_text()
    [response] = [json.loads(line) for line in written.splitlines()]
    assert response["subject"] == {"reference": "Patient/c1"}
    # Delivered, so nothing is left to keep: the next tick purges the practice.
    assert tick_step(app, "uninstalled") == 1
    assert_gone(db, practice_id)
    purged = db.scalar(select(InstallEvent).where(InstallEvent.action == "purged"))
    assert purged.detail == {"ehr_writes_delivered": 1, "ehr_writes_dropped": 0}


def test_a_practice_that_owes_nothing_is_purged_at_once(app, db, practice, webhooks):
    assert webhooks.post(load_json("install/app_uninstalled.json")).status_code == 204
    assert_gone(db, practice.id)
