"""No text without consent on record; STOP revokes it; Twilio's status reports act once.

Texts go to the Twilio stand-in (tests/support/twilio_api.py), mail to a real SMTP server.
"""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from plugin.core.models import Invitation, SmsConsent
from plugin.delivery.dispatch import NO_SMS_CONSENT
from plugin.planning.consent import has_sms_consent, record_sms_consent, revoke_sms_consent
from plugin.planning.optouts import phone_digest
from tests.support.data import SMS_CONSENT, session_ended
from tests.support.jobs import plan, run_dispatch
from tests.support.twilio_api import sign, status_callback

EMAIL, PHONE, OTHER_PHONE = "sam.rivera@example.org", "+12025550143", "+12025550199"
STATUS_URL = "http://localhost/sms/twilio/status"


@pytest.fixture
def texting(mail_app, smtp, twilio):
    """Return the app sending mail over SMTP and texts through the Twilio stand-in."""
    return mail_app


def receive(app, webhooks, *, email=EMAIL, phone=PHONE, consent=None, session_id=None):
    """Post one session.ended for Patient/c1 and plan it."""
    payload = session_ended(session_id, email=email, phone=phone)
    client = payload["data"]["client"]
    for key, value in (("email", email), ("phone", phone)):
        if value is None:
            del client[key]
    if consent is not None:
        client["sms_consent"] = consent
    assert webhooks.post(payload).status_code < 300
    plan(app)


def invitation_of(db, session_id: str | None = None) -> Invitation:
    db.expire_all()
    return db.scalars(select(Invitation).order_by(Invitation.created_at.desc())).first()


def consents(db) -> list[SmsConsent]:
    db.expire_all()
    return db.scalars(select(SmsConsent).order_by(SmsConsent.recorded_at)).all()


# --- enforcement ------------------------------------------------------------------------------


def test_without_consent_a_phone_is_never_texted_and_email_goes_instead(
    texting, smtp, twilio, webhooks, practice, db
):
    receive(texting, webhooks)
    invitation = invitation_of(db)
    # The default order is email then SMS; planning leaves SMS out for want of consent.
    assert invitation.channels == ["email"]
    smtp.refuse_with = "550 5.1.1 mailbox unavailable"
    run_dispatch(texting)
    invitation = invitation_of(db)
    assert twilio.messages == []
    assert invitation.status == "failed"
    assert invitation.last_error == "email: recipient refused [550]"


def test_without_consent_a_phone_only_client_fails_with_the_reason(
    texting, twilio, webhooks, practice, db
):
    receive(texting, webhooks, email=None)
    run_dispatch(texting)
    invitation = invitation_of(db)
    assert twilio.messages == []
    assert (invitation.status, invitation.last_error) == ("failed", NO_SMS_CONSENT)
    assert invitation.contact is None


def test_admins_are_told_why_no_text_went(texting, webhooks, practice, db):
    from plugin.admin.problems import failed_invitations

    receive(texting, webhooks, email=None)
    run_dispatch(texting)
    [problem] = failed_invitations(db, practice.id)
    assert "no consent to texts is on record" in problem.why
    assert problem.detail == NO_SMS_CONSENT


def test_with_consent_the_text_goes_and_its_source_is_recorded(
    texting, smtp, twilio, webhooks, practice, db
):
    receive(texting, webhooks, email=None, consent={**SMS_CONSENT, "source": "portal"})
    run_dispatch(texting)
    invitation = invitation_of(db)
    assert (invitation.status, invitation.channel) == ("sent", "sms")
    assert [m["To"] for m in twilio.messages] == [PHONE]
    assert invitation.sms_sid_hash is not None and twilio.sids[0] not in invitation.sms_sid_hash
    [consent] = consents(db)
    assert (consent.granted, consent.source, consent.recorded_via) == (True, "portal", "webhook")
    assert consent.given_at == datetime(2026, 1, 15, 10, tzinfo=UTC)
    assert consent.revoked_at is None
    with texting.app_context():
        assert consent.phone_digest == phone_digest(PHONE)


def test_a_repeated_consent_is_recorded_once(texting, webhooks, practice, db):
    for _ in range(3):
        receive(texting, webhooks, consent=SMS_CONSENT)
    assert len(consents(db)) == 1


def test_consent_revoked_after_planning_is_honoured_at_dispatch(
    texting, smtp, twilio, webhooks, practice, db
):
    receive(texting, webhooks, consent=SMS_CONSENT)
    invitation = invitation_of(db)
    invitation.channels = ["sms", "email"]
    db.commit()
    with texting.app_context():
        revoke_sms_consent(db, practice_id=practice.id, patient_ref="Patient/c1", now=_now())
        db.commit()
    run_dispatch(texting)
    invitation = invitation_of(db)
    assert twilio.messages == []
    assert (invitation.status, invitation.channel) == ("sent", "email")
    assert len(smtp.messages) == 1


def test_consent_belongs_to_the_number_it_was_given_for(texting, twilio, webhooks, practice, db):
    receive(texting, webhooks, email=None, consent=SMS_CONSENT)
    # The client's number changed since (as a later session would say): that one is not texted.
    invitation = invitation_of(db)
    with texting.app_context():
        invitation.phone_digest = phone_digest(OTHER_PHONE)
    invitation.contact = texting.extensions["vault"].seal({"email": None, "phone": OTHER_PHONE})
    invitation.channels = ["sms"]
    db.commit()
    run_dispatch(texting)
    invitation = invitation_of(db)
    assert twilio.messages == []
    assert (invitation.status, invitation.last_error) == ("failed", NO_SMS_CONSENT)


def test_a_refusal_from_the_platform_revokes_an_earlier_consent(
    texting, twilio, smtp, webhooks, practice, db
):
    receive(texting, webhooks, consent=SMS_CONSENT)
    refusal = {"granted": False, "given_at": "2026-02-01T09:00:00Z", "source": "verbal"}
    receive(texting, webhooks, consent=refusal, session_id="s-2")
    grant, refused = consents(db)
    assert (grant.revoked_by, refused.granted, refused.source) == ("refused", False, "verbal")
    with texting.app_context():
        assert not has_sms_consent(db, practice.id, "Patient/c1", phone_digest(PHONE))


def test_an_old_consent_never_overrides_a_later_stop(app, practice, db):
    now = _now()
    with app.app_context():
        digest = phone_digest(PHONE)
        record = dict(
            practice_id=practice.id,
            patient_ref="Patient/c1",
            digest=digest,
            granted=True,
            source="intake_form",
            via="webhook",
        )
        assert record_sms_consent(db, **record, given_at=now - timedelta(days=30), now=now)
        revoke_sms_consent(db, practice_id=practice.id, patient_ref="Patient/c1", now=now)
        # The next session's webhook repeats the intake form's consent: it stays revoked.
        later = now + timedelta(hours=1)
        assert not record_sms_consent(db, **record, given_at=now - timedelta(days=30), now=later)
        assert not has_sms_consent(db, practice.id, "Patient/c1", digest)
        # Consent given after the STOP counts again.
        assert record_sms_consent(db, **record, given_at=later, now=later)
        assert has_sms_consent(db, practice.id, "Patient/c1", digest)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"source": "fax"}, "data.client.sms_consent.source"),
        ({"given_at": "yesterday"}, "data.client.sms_consent.given_at"),
        ({"given_at": "2999-01-01T00:00:00Z"}, "data.client.sms_consent.given_at"),
        ({"granted": "yes"}, "data.client.sms_consent.granted"),
        ({"phone": PHONE}, "data.client.sms_consent.phone"),
    ],
)
def test_a_malformed_consent_is_a_400_naming_the_field(webhooks, practice, db, change, field):
    payload = session_ended(sms_consent={**SMS_CONSENT, **change})
    response = webhooks.post(payload)
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert PHONE not in response.get_data(as_text=True)


# --- STOP and START -------------------------------------------------------------------------


def _inbound(client, body: str) -> int:
    from tests.support.data import load_json

    form = {**load_json("twilio/inbound_sms.json"), "Body": body, "From": PHONE}
    headers = {"X-Twilio-Signature": sign("http://localhost/sms/twilio", form)}
    return client.post("/sms/twilio", data=form, headers=headers).status_code


def test_stop_revokes_consent_and_no_text_follows_start_restores_it(
    texting, client, twilio, webhooks, practice, db
):
    receive(texting, webhooks, email=None, consent=SMS_CONSENT)
    run_dispatch(texting)
    assert len(twilio.messages) == 1
    assert _inbound(client, "STOP") == 200
    [consent] = consents(db)
    assert (consent.revoked_by, consent.revoked_at is not None) == ("sms_stop", True)

    assert _inbound(client, "START") == 200
    _stopped, started = consents(db)
    assert (started.source, started.recorded_via, started.revoked_at) == ("sms_start", "sms", None)
    # The same old consent in the next webhook changes nothing; START's grant is what counts.
    receive(texting, webhooks, email=None, consent=SMS_CONSENT, session_id="s-2")
    assert len(consents(db)) == 2


def test_after_stop_no_text_leaves(texting, client, twilio, webhooks, practice, db):
    receive(texting, webhooks, email=None, consent=SMS_CONSENT)
    run_dispatch(texting)
    _inbound(client, "STOP")
    receive(texting, webhooks, email=None, consent=SMS_CONSENT, session_id="s-2")
    run_dispatch(texting, datetime.now(UTC) + timedelta(days=30))
    assert len(twilio.messages) == 1


# --- delivery-status callbacks ----------------------------------------------------------------


@pytest.fixture
def texted(texting, twilio, webhooks, practice, db):
    """An invitation texted (SMS first, then email) and its Twilio Message SID."""
    receive(texting, webhooks, consent=SMS_CONSENT)
    invitation = invitation_of(db)
    invitation.channels = ["sms", "email"]
    db.commit()
    run_dispatch(texting)
    invitation = invitation_of(db)
    assert (invitation.status, invitation.channel) == ("sent", "sms")
    return invitation, twilio.sids[0]


def report(client, form: dict, signature: str | None = None):
    """Post a status callback, signed as Twilio signs it unless a signature is given."""
    if signature is None:
        signature = sign(STATUS_URL, form)
    headers = {"X-Twilio-Signature": signature} if signature else {}
    return client.post("/sms/twilio/status", data=form, headers=headers)


def test_delivered_marks_the_invitation(client, texted, db):
    invitation, sid = texted
    assert report(client, status_callback(sid, "delivered")).status_code == 204
    db.refresh(invitation)
    assert invitation.delivered_at is not None and invitation.status == "sent"


@pytest.mark.parametrize("status", ["undelivered", "failed"])
def test_a_text_not_delivered_falls_back_to_email_at_once(
    texting, client, smtp, texted, db, status
):
    invitation, sid = texted
    old_hash = invitation.token_hash
    response = report(client, status_callback(sid, status, "30003"))
    assert response.status_code == 204
    db.refresh(invitation)
    assert (invitation.status, invitation.channel_index) == ("pending", 1)
    assert invitation.last_error == f"sms: {status} code 30003"
    assert invitation.next_attempt_at <= datetime.now(UTC)
    run_dispatch(texting)
    db.refresh(invitation)
    assert (invitation.status, invitation.channel) == ("sent", "email")
    assert invitation.token_hash != old_hash
    assert [m["To"] for m in smtp.messages] == [EMAIL]


def test_retried_and_out_of_order_reports_act_once(texting, client, smtp, texted, db):
    invitation, sid = texted
    undelivered = status_callback(sid, "undelivered", "30005")
    for form in (undelivered, undelivered, status_callback(sid, "delivered")):
        assert report(client, form).status_code == 204
    run_dispatch(texting)
    db.refresh(invitation)
    assert len(smtp.messages) == 1
    assert (invitation.channel, invitation.delivered_at) == ("email", None)


def test_sent_after_delivered_changes_nothing(client, texted, db):
    invitation, sid = texted
    report(client, status_callback(sid, "delivered"))
    db.refresh(invitation)
    delivered_at = invitation.delivered_at
    for status in ("sent", "undelivered", "failed"):
        assert report(client, status_callback(sid, status)).status_code == 204
    db.refresh(invitation)
    assert (invitation.status, invitation.delivered_at) == ("sent", delivered_at)


def test_an_undelivered_last_channel_fails_the_invitation_with_the_reason(
    texting, client, twilio, webhooks, practice, db
):
    receive(texting, webhooks, email=None, consent=SMS_CONSENT)
    run_dispatch(texting)
    invitation = invitation_of(db)
    report(client, status_callback(twilio.sids[0], "failed", "30008"))
    run_dispatch(texting)
    db.refresh(invitation)
    assert (invitation.status, invitation.last_error) == ("failed", "sms: failed code 30008")
    assert invitation.contact is None


def test_unknown_message_sid_is_204_and_ignored(client, texted, db):
    invitation, _ = texted
    response = report(client, status_callback("SM" + "f" * 32, "undelivered"))
    assert response.status_code == 204
    db.refresh(invitation)
    assert invitation.status == "sent"


@pytest.mark.parametrize(
    "forge",
    [
        lambda form: "",
        lambda form: "bm90IGEgc2lnbmF0dXJl",
        lambda form: sign("http://localhost/sms/twilio", form),  # another URL's signature
        lambda form: sign(STATUS_URL, {**form, "MessageStatus": "delivered"}),  # body altered
    ],
)
def test_forged_status_reports_are_403_and_change_nothing(client, texted, db, forge):
    invitation, sid = texted
    form = status_callback(sid, "undelivered", "30003")
    response = report(client, form, signature=forge(form))
    assert response.status_code == 403
    db.refresh(invitation)
    assert (invitation.status, invitation.channel, invitation.delivered_at) == ("sent", "sms", None)


def test_status_reports_are_refused_without_an_auth_token(app, client, texted, db):
    invitation, sid = texted
    form = status_callback(sid, "delivered")
    signature = sign(STATUS_URL, form)
    app.config["TWILIO_AUTH_TOKEN"] = ""
    assert report(client, form, signature=signature).status_code == 403
    db.refresh(invitation)
    assert invitation.delivered_at is None


def _now() -> datetime:
    return datetime.now(UTC)
