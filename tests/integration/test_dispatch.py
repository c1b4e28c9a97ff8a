"""Invitations leave through a real SMTP server (aiosmtpd) exactly once, or fail visibly."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from plugin.crypto import hash_token
from plugin.dispatch import DispatchSettings, dispatch_due, expire_stale
from plugin.mailer import OutboxMailer, SmtpMailer, mailer_from_config
from plugin.models import Invitation
from tests.conftest import free_port, session_ended

LINK = re.compile(r"http://localhost/q/([A-Za-z0-9_-]+)")


def run(app, now=None, mailer=None):
    """Run the dispatcher once, as the scheduler would."""
    with app.app_context():
        return dispatch_due(
            app.extensions["db"].sessions,
            mailer or mailer_from_config(app.config),
            app.extensions["vault"],
            DispatchSettings.from_config(app.config),
            now or datetime.now(UTC),
        )


@pytest.fixture
def pending(webhooks, practice, db):
    """Receive one session and return its pending invitation."""
    webhooks.post(session_ended("s-1", email="sam.rivera@example.org"))
    return db.scalar(select(Invitation))


def test_due_invitation_is_mailed_with_text_and_html_and_a_working_link(
    mail_app, smtp, pending, db
):
    assert run(mail_app) == 1
    [message] = smtp.messages
    assert message["To"] == "sam.rivera@example.org"
    assert "Riverside Therapy" in message["Subject"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    token = LINK.search(text).group(1)
    assert LINK.search(html).group(1) == token
    db.refresh(pending)
    assert pending.status == "sent"
    assert pending.token_hash == hash_token(token)
    assert token not in (pending.token_hash or "")
    assert pending.expires_at == pending.sent_at + timedelta(hours=72)


def test_link_token_has_at_least_128_bits(mail_app, smtp, pending):
    run(mail_app)
    token = LINK.search(smtp.messages[0].get_body(("plain",)).get_content()).group(1)
    # token_urlsafe encodes 6 bits per character.
    assert len(token) * 6 >= 128


def test_running_the_dispatcher_again_sends_nothing_more(mail_app, smtp, pending):
    run(mail_app)
    run(mail_app)
    run(mail_app, now=datetime.now(UTC) + timedelta(hours=1))
    assert len(smtp.messages) == 1


def test_not_yet_due_invitation_waits(mail_app, smtp, pending):
    assert run(mail_app, now=datetime.now(UTC) - timedelta(minutes=5)) == 0
    assert smtp.messages == []


def test_smtp_outage_is_retried_with_backoff_and_the_reason_has_no_address(app, pending, db):
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"
    now = datetime.now(UTC)
    assert run(app, now) == 0
    db.refresh(pending)
    assert pending.status == "pending"
    assert pending.attempts == 1
    # 60 s, plus up to a quarter of jitter.
    assert now + timedelta(seconds=60) <= pending.next_attempt_at <= now + timedelta(seconds=75)
    assert "sam.rivera" not in pending.last_error
    second = pending.next_attempt_at
    run(app, second)
    db.refresh(pending)
    assert (
        second + timedelta(seconds=120)
        <= pending.next_attempt_at
        <= second + timedelta(seconds=150)
    )


def test_outage_ends_and_the_invitation_goes_out(app, smtp, pending, db):
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"
    run(app)
    app.config["SMTP_URL"] = smtp.url
    run(app, datetime.now(UTC) + timedelta(minutes=2))
    assert len(smtp.messages) == 1
    db.refresh(pending)
    assert pending.status == "sent"


def test_refused_recipient_fails_permanently_and_purges_contact(mail_app, smtp, pending, db):
    smtp.refuse_with = "550 5.1.1 mailbox unavailable"
    run(mail_app)
    db.refresh(pending)
    assert pending.status == "failed"
    assert pending.contact is None
    assert pending.last_error == "recipient refused [550]"


def test_retries_stop_after_the_last_attempt(app, pending, db):
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"
    now = datetime.now(UTC)
    for day in range(app.config["DELIVERY_MAX_ATTEMPTS"]):
        run(app, now + timedelta(days=day))
    db.refresh(pending)
    assert (pending.status, pending.attempts, pending.contact) == ("failed", 6, None)


def test_outbox_writes_one_eml_per_invitation_even_when_rerun(app, pending, tmp_path):
    outbox = OutboxMailer(tmp_path / "outbox")
    run(app, mailer=outbox)
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == [f"{pending.id}.eml"]


def test_expired_links_are_marked_and_contact_purged(mail_app, smtp, pending, db):
    run(mail_app)
    assert (
        expire_stale(mail_app.extensions["db"].sessions, datetime.now(UTC) + timedelta(hours=71))
        == 0
    )
    assert (
        expire_stale(mail_app.extensions["db"].sessions, datetime.now(UTC) + timedelta(hours=73))
        == 1
    )
    db.refresh(pending)
    assert (pending.status, pending.contact) == ("expired", None)


def test_mail_carries_no_answers_scores_or_clinical_names(mail_app, smtp, pending):
    run(mail_app)
    raw = smtp.messages[0].as_string()
    for absent in ("Dr. Avery Quinn", "Patient/c1", "score", "+12025550143"):
        assert absent not in raw


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "starttls", "user"),
    [
        ("smtp://127.0.0.1:1025", "127.0.0.1", 1025, False, False, None),
        ("smtps://mail.example.org", "mail.example.org", 465, True, False, None),
        (
            "smtp://u%40x:p@mail.example.org:587?starttls=true",
            "mail.example.org",
            587,
            False,
            True,
            "u@x",
        ),
    ],
)
def test_smtp_url_forms(url, host, port, tls, starttls, user):
    mailer = SmtpMailer(url)
    assert (mailer.host, mailer.port, mailer.implicit_tls, mailer.starttls, mailer.username) == (
        host,
        port,
        tls,
        starttls,
        user,
    )


@pytest.mark.parametrize("url", ["http://mail.example.org", "smtp://", "mail.example.org:25"])
def test_bad_smtp_url_is_refused_without_echoing_credentials(url):
    with pytest.raises(ValueError, match="ALLIANCE_SMTP_URL"):
        SmtpMailer(url)


def test_client_reachable_only_by_phone_fails_visibly_until_sms_exists(
    mail_app, smtp, webhooks, practice, db
):
    payload = session_ended("s-phone")
    del payload["data"]["client"]["email"]
    webhooks.post(payload)
    run(mail_app)
    invitation = db.scalar(select(Invitation))
    assert (invitation.status, invitation.contact) == ("failed", None)
    assert invitation.last_error == "no email address; SMS is not available yet"
    assert smtp.messages == []
