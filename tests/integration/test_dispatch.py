"""Invitations leave once, on the schedule's channels in order, remind once, or fail visibly.

Mail goes through a real SMTP server (aiosmtpd). SMS goes to the file outbox, the transport
`make run` uses when no Twilio account is configured (the Twilio transport itself is tested
against its stand-in in test_channels.py).
"""

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from plugin.core.crypto import hash_token
from plugin.core.models import Invitation
from plugin.jobs import tick
from plugin.planning.optouts import opt_out
from plugin.planning.schedules import current_policy, set_policy
from tests.support.data import SMS_CONSENT, session_ended
from tests.support.jobs import plan, run_dispatch
from tests.support.ports import free_port

LINK = re.compile(r"http://localhost/q/([A-Za-z0-9_-]+)")
EMAIL, PHONE = "sam.rivera@example.org", "+12025550143"


def outbox_texts(app, invitation) -> list[str]:
    """Return the text of every outbox file written for an invitation (mail or SMS)."""
    outbox = Path(app.config["OUTBOX_DIR"])
    if not outbox.exists():
        return []
    return [p.read_text() for p in sorted(outbox.iterdir()) if p.name.startswith(invitation.id)]


@pytest.fixture
def pending(app, webhooks, practice, db):
    """Receive one session of a client who agreed to texts, plan it, return its invitation."""
    webhooks.post(session_ended("s-1", email=EMAIL, phone=PHONE, sms_consent=SMS_CONSENT))
    plan(app)
    return db.scalar(select(Invitation))


def test_due_invitation_is_mailed_with_text_and_html_and_a_working_link(
    mail_app, smtp, pending, db
):
    assert run_dispatch(mail_app) == 1
    [message] = smtp.messages
    assert message["To"] == EMAIL
    assert "Riverside Therapy" in message["Subject"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    token = LINK.search(text).group(1)
    assert LINK.search(html).group(1) == token
    db.refresh(pending)
    assert (pending.status, pending.channel) == ("sent", "email")
    assert pending.token_hash == hash_token(token)
    # The sealed copy for the reminder is ciphertext, not the token.
    assert token.encode() not in pending.token
    assert pending.expires_at == pending.sent_at + timedelta(hours=72)


def test_link_token_has_at_least_128_bits(mail_app, smtp, pending):
    run_dispatch(mail_app)
    token = LINK.search(smtp.messages[0].get_body(("plain",)).get_content()).group(1)
    # token_urlsafe encodes 6 bits per character.
    assert len(token) * 6 >= 128


def test_running_the_dispatcher_again_sends_nothing_more(mail_app, smtp, pending):
    run_dispatch(mail_app)
    run_dispatch(mail_app)
    run_dispatch(mail_app, datetime.now(UTC) + timedelta(hours=1))
    assert len(smtp.messages) == 1


def test_an_invitation_still_unsent_a_day_after_the_session_is_cancelled_as_stale(
    mail_app, smtp, pending, db
):
    ended_at = pending.session_event.ended_at
    # A worker or mail outage: the first try comes more than a day after the session.
    assert run_dispatch(mail_app, ended_at + timedelta(hours=24, seconds=1)) == 0
    assert smtp.messages == []
    db.refresh(pending)
    assert (pending.status, pending.last_error) == ("cancelled", "stale")
    assert (pending.contact, pending.token) == (None, None)


def test_not_yet_due_invitation_waits(mail_app, smtp, pending):
    assert run_dispatch(mail_app, pending.due_at - timedelta(seconds=1)) == 0
    assert smtp.messages == []
    assert run_dispatch(mail_app, pending.due_at) == 1


def test_smtp_outage_is_retried_with_backoff_and_the_reason_has_no_address(app, pending, db):
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"
    now = datetime.now(UTC)
    assert run_dispatch(app, now) == 0
    db.refresh(pending)
    assert (pending.status, pending.attempts, pending.channel_index) == ("pending", 1, 0)
    # 60 s, plus up to a quarter of jitter.
    assert now + timedelta(seconds=60) <= pending.next_attempt_at <= now + timedelta(seconds=75)
    assert pending.last_error.startswith("email: smtp unavailable")
    assert "sam.rivera" not in pending.last_error
    second = pending.next_attempt_at
    run_dispatch(app, second)
    db.refresh(pending)
    assert (
        second + timedelta(seconds=120)
        <= pending.next_attempt_at
        <= second + timedelta(seconds=150)
    )


def test_outage_ends_and_the_invitation_goes_out(app, smtp, pending, db):
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"
    run_dispatch(app)
    app.config["SMTP_URL"] = smtp.url
    run_dispatch(app, datetime.now(UTC) + timedelta(minutes=2))
    assert len(smtp.messages) == 1
    db.refresh(pending)
    assert pending.status == "sent"


def test_refused_recipient_falls_back_to_sms_at_once(mail_app, smtp, pending, db):
    smtp.refuse_with = "550 5.1.1 mailbox unavailable"
    assert run_dispatch(mail_app) == 1
    db.refresh(pending)
    assert (pending.status, pending.channel, pending.channel_index) == ("sent", "sms", 1)
    [sms] = outbox_texts(mail_app, pending)
    assert LINK.search(sms)
    assert smtp.messages == []


def test_channel_retries_run_out_then_the_next_channel_is_tried(app, pending, db):
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"
    for _ in range(app.config["DELIVERY_MAX_ATTEMPTS"]):
        # Each try when the last failure said to retry, well within the schedule's day.
        db.refresh(pending)
        run_dispatch(app, max(datetime.now(UTC), pending.next_attempt_at))
    db.refresh(pending)
    # Six email attempts, then SMS in the same run.
    assert (pending.status, pending.channel) == ("sent", "sms")


def test_every_channel_failing_is_recorded_with_its_reason_and_purges_contact(
    mail_app, smtp, webhooks, practice, db, runner
):
    smtp.refuse_with = "550 5.1.1 mailbox unavailable"
    payload = session_ended("s-email-only", email=EMAIL)
    del payload["data"]["client"]["phone"]
    webhooks.post(payload)
    plan(mail_app)
    run_dispatch(mail_app)
    invitation = db.scalar(select(Invitation))
    assert (invitation.status, invitation.contact, invitation.token) == ("failed", None, None)
    assert invitation.last_error == "email: recipient refused [550]"
    listed = runner.invoke(args=["invitations", "list", "--status", "failed"]).output
    [row] = [line.split("\t") for line in listed.splitlines() if line.startswith(invitation.id)]
    # id, account, status, channel order, schedule version, ..., last error; no consent to
    # texts was given, so planning left SMS out of the order.
    assert row[1:5] == ["demo", "failed", "email", "v0"]
    assert row[-1] == "email: recipient refused [550]"
    assert EMAIL not in listed


def test_client_reachable_only_by_phone_gets_an_sms(app, webhooks, practice, db):
    payload = session_ended("s-phone", phone=PHONE, sms_consent=SMS_CONSENT)
    del payload["data"]["client"]["email"]
    webhooks.post(payload)
    plan(app)
    run_dispatch(app)
    invitation = db.scalar(select(Invitation))
    assert (invitation.status, invitation.channel) == ("sent", "sms")
    [sms] = outbox_texts(app, invitation)
    assert LINK.search(sms)


def test_email_only_schedule_never_texts(app, webhooks, practice, db):
    with app.app_context():
        policy, _, _ = current_policy(db, practice.id, None)
        set_policy(db, practice.id, None, replace(policy, channels=("email",)), datetime.now(UTC))
    payload = session_ended("s-phone", phone=PHONE)
    del payload["data"]["client"]["email"]
    webhooks.post(payload)
    plan(app)
    run_dispatch(app)
    invitation = db.scalar(select(Invitation))
    assert (invitation.status, invitation.policy_version) == ("failed", 1)
    assert outbox_texts(app, invitation) == []


def test_outbox_writes_one_file_per_invitation_even_when_rerun(app, pending):
    run_dispatch(app)
    run_dispatch(app, datetime.now(UTC) + timedelta(days=1))
    assert len(outbox_texts(app, pending)) == 1


def test_expired_links_are_marked_and_contact_and_token_purged(mail_app, smtp, pending, db):
    run_dispatch(mail_app)
    db.refresh(pending)
    tick(mail_app, pending.expires_at - timedelta(minutes=1))
    db.refresh(pending)
    assert pending.status == "sent"
    tick(mail_app, pending.expires_at)
    db.refresh(pending)
    assert (pending.status, pending.contact, pending.token) == ("expired", None, None)


def test_mail_carries_no_answers_scores_or_clinical_names(mail_app, smtp, pending):
    run_dispatch(mail_app)
    raw = smtp.messages[0].as_string()
    for absent in ("Dr. Avery Quinn", "Patient/c1", "score", PHONE):
        assert absent not in raw


def test_one_reminder_repeats_the_same_link_after_a_day(mail_app, smtp, pending, db):
    run_dispatch(mail_app)
    db.refresh(pending)
    due = pending.reminder_due_at
    assert due is not None and due >= pending.sent_at + timedelta(hours=24)
    tick(mail_app, due - timedelta(minutes=1))
    assert len(smtp.messages) == 1
    tick(mail_app, due)
    tick(mail_app, due + timedelta(hours=2))
    first, reminder = smtp.messages
    assert len(smtp.messages) == 2
    links = [LINK.search(m.get_body(("plain",)).get_content()).group(1) for m in (first, reminder)]
    assert links[0] == links[1]
    db.refresh(pending)
    assert pending.reminded_at == due and pending.reminder_due_at is None


def test_no_reminder_once_answered(mail_app, smtp, pending, db):
    run_dispatch(mail_app)
    db.refresh(pending)
    due = pending.reminder_due_at
    pending.status, pending.answered_at = "answered", datetime.now(UTC)
    db.commit()
    tick(mail_app, due + timedelta(minutes=5))
    assert len(smtp.messages) == 1


def test_opting_out_after_planning_cancels_before_sending(mail_app, smtp, pending, db):
    with mail_app.app_context():
        opt_out(
            db,
            practice_id=pending.practice_id,
            patient_ref="Patient/c1",
            channel="web",
            now=datetime.now(UTC),
        )
        db.commit()
    run_dispatch(mail_app)
    db.refresh(pending)
    assert (pending.status, pending.contact) == ("cancelled", None)
    assert smtp.messages == []
