"""Consent to texts read from the EHR's FHIR Consents: what counts, where it is recorded, STOP.

The EHR is the real test FHIR server enforcing SMART scopes, its tokens from the real test
OAuth server; the practice is connected with `ehr connect` as an operator would. Texts go to
the Twilio stand-in (Twilio's API cannot run here), mail to a real SMTP server.
"""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from plugin.core.models import Invitation, SessionEvent, SmsConsent
from plugin.planning.consent import has_sms_consent
from plugin.planning.optouts import phone_digest
from tests.support.data import load_json, session_ended
from tests.support.ehr_desk import WITH_CONSENT, WRITE_AND_SEARCH, Ehr
from tests.support.jobs import plan, run_dispatch
from tests.support.schedule import consent, patient
from tests.support.twilio_api import sign

PHONE = "+12025550143"
NOW = datetime.now(UTC).replace(microsecond=0)
GIVEN = NOW - timedelta(days=30)


@pytest.fixture
def desk(app, client, db, runner, ehr, oauth_server, practice) -> Ehr:
    """The FHIR server, emptied; the practice connected with the Consent read granted."""
    desk = Ehr(app, client, db, runner, ehr, oauth_server, scopes=WITH_CONSENT)
    desk.output = desk.connect(practice.account_id, "standard")
    db.refresh(practice)
    return desk


@pytest.fixture
def client_id(desk) -> str:
    """A client with a mobile number, filed in the EHR."""
    return desk.post(patient("sam@example.org", PHONE))


def planned(
    app, db, webhooks, patient_id: str, *, email=None, session_id=None, now=None
) -> Invitation:
    """Post a session of this Patient (their number, no consent in the webhook); plan it."""
    payload = session_ended(session_id, reference=f"Patient/{patient_id}", phone=PHONE)
    if email is None:
        del payload["data"]["client"]["email"]
    assert webhooks.post(payload).status_code < 300
    plan(app, now)
    db.expire_all()
    return db.scalars(select(Invitation).order_by(Invitation.created_at.desc())).first()


def consents(db) -> list[SmsConsent]:
    db.expire_all()
    return db.scalars(select(SmsConsent).order_by(SmsConsent.recorded_at)).all()


def texted(client, body: str) -> None:
    """Text body (STOP, START) from the client's number, signed as Twilio signs."""
    form = {**load_json("twilio/inbound_sms.json"), "Body": body, "From": PHONE}
    headers = {"X-Twilio-Signature": sign("http://localhost/sms/twilio", form)}
    assert client.post("/sms/twilio", data=form, headers=headers).status_code == 200


def test_connect_reports_the_consent_read(desk, practice):
    assert "sms consent      system/Consent.rs granted" in desk.output
    assert practice.ehr_connection.facts["consent_search"] is True


def test_a_granted_consent_in_the_ehr_lets_the_text_go_and_is_recorded(
    mail_app, twilio, webhooks, practice, db, desk, client_id, caplog
):
    consent_id = desk.post(consent(client_id, GIVEN))

    with caplog.at_level(logging.DEBUG):
        invitation = planned(mail_app, db, webhooks, client_id)
        run_dispatch(mail_app)

    db.refresh(invitation)
    assert (invitation.status, invitation.channel) == ("sent", "sms")
    assert [m["To"] for m in twilio.messages] == [PHONE]
    [recorded] = consents(db)
    assert (recorded.granted, recorded.source, recorded.recorded_via) == (True, "ehr", "ehr")
    assert (recorded.ehr_ref, recorded.given_at, recorded.phone_digest) == (
        f"Consent/{consent_id}", GIVEN, None
    )  # fmt: skip
    # The Consent's contents (and even its id) never reach a log line.
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    for secret in (consent_id, "contact-point-system", "59284-0", PHONE):
        assert secret not in logged


@pytest.mark.parametrize(
    "change",
    [
        {"status": "inactive"},
        {"status": "rejected"},
        {"kind": "deny"},
        {"period": (GIVEN, NOW - timedelta(days=1))},
        {"period": (NOW + timedelta(days=1), None)},
        {"code": None},
        {"code": {"system": "http://hl7.org/fhir/contact-point-system", "code": "email"}},
    ],
    ids=["inactive", "rejected", "denied", "expired", "not-yet", "no-sms-code", "email-code"],
)
def test_a_consent_that_does_not_grant_texts_sends_email_only(
    app, webhooks, practice, db, desk, client_id, change
):
    desk.post(consent(client_id, GIVEN, **change))

    invitation = planned(app, db, webhooks, client_id, email="sam@example.org")

    assert invitation.channels == ["email"]
    assert not any(c.granted for c in consents(db))


def test_a_consent_made_inactive_in_the_ehr_stops_counting_at_the_next_session(
    app, webhooks, practice, db, desk, client_id
):
    granted = consent(client_id, GIVEN)
    consent_id = desk.post(granted)
    assert "sms" in planned(app, db, webhooks, client_id).channels
    desk.put(consent_id, {**granted, "status": "inactive"})

    planned(app, db, webhooks, client_id, email="sam@example.org", session_id="s-2")

    [recorded] = consents(db)
    assert (recorded.ehr_ref, recorded.revoked_by) == (f"Consent/{consent_id}", "ehr")


def test_another_patients_consent_is_not_this_clients(app, webhooks, practice, db, desk, client_id):
    other = desk.post(patient("someone@example.org", "+12025550199"))
    desk.post(consent(other, GIVEN))

    invitation = planned(app, db, webhooks, client_id, email="sam@example.org")

    assert invitation.channels == ["email"]
    assert consents(db) == []


def test_a_denial_in_the_ehr_revokes_an_earlier_consent_from_the_platform(
    app, webhooks, practice, db, desk, client_id
):
    portal = {"given_at": "2026-01-15T10:00:00Z", "source": "portal"}
    payload = session_ended(reference=f"Patient/{client_id}", phone=PHONE, sms_consent=portal)
    assert webhooks.post(payload).status_code < 300
    plan(app)
    assert consents(db)[0].revoked_at is None
    desk.post(consent(client_id, NOW - timedelta(days=1), kind="deny"))

    planned(app, db, webhooks, client_id, email="sam@example.org")

    platform_grant, refusal = consents(db)
    assert (platform_grant.revoked_by, refusal.granted, refusal.source) == (
        "refused", False, "ehr"
    )  # fmt: skip
    with app.app_context():
        assert not has_sms_consent(db, practice.id, f"Patient/{client_id}", phone_digest(PHONE))


def test_without_the_consent_scope_planning_goes_on_without_texts(
    app, client, runner, webhooks, practice, db, ehr, oauth_server, caplog
):
    desk = Ehr(app, client, db, runner, ehr, oauth_server, scopes=WRITE_AND_SEARCH)
    output = desk.connect(practice.account_id, "standard")
    assert "sms consent      system/Consent.rs not granted" in output
    assert "sms consent      off" in output
    pid = desk.post(patient("sam@example.org", PHONE))
    desk.post(consent(pid, GIVEN))

    with caplog.at_level(logging.INFO, logger="plugin.planning.ehr_consent"):
        invitation = planned(app, db, webhooks, pid, email="sam@example.org")

    assert (invitation.status, invitation.channels) == ("pending", ["email"])
    skipped = [r for r in caplog.records if r.getMessage() == "sms_consent.ehr_skipped"]
    assert [r.reason for r in skipped] == ["consent_not_granted"]
    assert not any(m == "GET" and "/Consent" in p for m, p, _s in ehr.stats()["log"])


def test_an_ehr_refusing_the_search_later_is_skipped_not_retried(
    app, webhooks, practice, db, desk, client_id, caplog
):
    desk.post(consent(client_id, GIVEN))
    desk.server.fail_next(1, status=403, method="GET", path=None)

    with caplog.at_level(logging.WARNING, logger="plugin.planning.ehr_consent"):
        invitation = planned(app, db, webhooks, client_id, email="sam@example.org")

    assert (invitation.status, invitation.channels) == ("pending", ["email"])
    [skipped] = [r for r in caplog.records if r.getMessage() == "sms_consent.ehr_skipped"]
    assert skipped.reason.startswith("consent_search_refused")


def test_an_ehr_down_is_retried_like_the_rest_of_planning(
    app, webhooks, practice, db, desk, client_id
):
    desk.server.fail_next(1, status=503, method="GET")
    assert planned(app, db, webhooks, client_id, email="sam@example.org") is None
    event = db.scalar(select(SessionEvent))
    assert (event.status, event.last_error) == ("pending", "ehr_unavailable")


def test_stop_wins_over_the_ehrs_consent_until_a_newer_one(
    app, client, twilio, webhooks, practice, db, desk, client_id
):
    desk.post(consent(client_id, GIVEN))
    planned(app, db, webhooks, client_id)
    run_dispatch(app)
    assert len(twilio.messages) == 1

    texted(client, "STOP")
    [recorded] = consents(db)
    assert recorded.revoked_by == "sms_stop"
    # The EHR still holds the same Consent, dated before the STOP: it is read again with the
    # next session, and is not consent again (nor is anything sent: the client opted out).
    planned(app, db, webhooks, client_id, email="sam@example.org", session_id="s-2")
    assert consents(db) == [recorded] and recorded.revoked_at is not None
    assert len(twilio.messages) == 1

    # A Consent given after the STOP (a new form) is the client's newer word: it is recorded
    # as consent to texts. (Nothing is texted while the STOP's opt-out stands; their START
    # lifts it, and Twilio's own block too.)
    later = recorded.revoked_at.replace(microsecond=0) + timedelta(seconds=2)
    newer = desk.post(consent(client_id, later))
    planned(app, db, webhooks, client_id, email="sam@example.org", session_id="s-3",
            now=later + timedelta(seconds=1))  # fmt: skip
    assert [(c.ehr_ref, c.revoked_at) for c in consents(db)][-1] == (f"Consent/{newer}", None)
    with app.app_context():
        assert has_sms_consent(db, practice.id, f"Patient/{client_id}", phone_digest(PHONE))


def test_a_practice_sets_the_code_its_ehr_records_texting_consent_under(
    app, webhooks, practice, db, desk, client_id
):
    own = {"system": "https://ehr.example.org/consent-kinds", "code": "TEXT-OK"}
    output = desk.connect(
        practice.account_id, "standard", "--sms-consent-code", f"{own['system']}|{own['code']}"
    )
    assert "sms consent      system/Consent.rs granted" in output
    desk.post(consent(client_id, GIVEN))  # FHIR's sms code: not this practice's
    own_id = desk.post(consent(client_id, GIVEN, code=own))

    planned(app, db, webhooks, client_id, email="sam@example.org")

    assert [c.ehr_ref for c in consents(db)] == [f"Consent/{own_id}"]
    # A later connect without the option keeps the practice's code.
    desk.connect(practice.account_id, "standard")
    db.refresh(practice.ehr_connection)
    assert practice.ehr_connection.facts["sms_consent_codes"] == [f"{own['system']}|{own['code']}"]


@pytest.mark.parametrize("bad", ["TEXT-OK", "|TEXT-OK", "https://ehr.example.org|"])
def test_a_malformed_consent_code_is_refused_before_anything_is_asked(runner, practice, bad):
    result = runner.invoke(
        args=["ehr", "connect", practice.account_id, "https://ehr.example.org/fhir",
              "--client-id", "alliance", "--sms-consent-code", bad]
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--sms-consent-code" in result.output and "system|code" in result.output
