"""Email through a real SMTP server, SMS through the Twilio stand-in, and the file outbox."""

import re
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest

from plugin.delivery.channels import (
    DeliveryError,
    Outgoing,
    TwilioRejectedError,
    TwilioUnavailableError,
    channels_from_config,
)
from plugin.delivery.messages import SMS_SEGMENT, is_gsm7
from tests.support.ports import free_port
from tests.support.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM

EMAIL = "sam.rivera@example.org"
PHONE = "+12025550143"
# A realistic deployment: an https base URL and a 43-character token_urlsafe(32) link.
BASE = "https://alliancecheck.example.com"
SENT_AT = datetime(2025, 3, 2, 18, 30, tzinfo=UTC)


def outgoing(**changes) -> Outgoing:
    """Return an invitation to send, with realistic links."""
    fields = {
        "key": "0b7f6a52-3c1e-4b7a-9d1f-2f8e5a6c7d90",
        "to": EMAIL,
        "link": f"{BASE}/q/{secrets.token_urlsafe(32)}",
        # As long as a real one: a signed [uuid, channel] pair.
        "unsubscribe_link": f"{BASE}/u/WyIwYjdmNmE1Mi0zYzFlLTRiN2EtOWQxZi0yZjhlNWE2YzdkOTAiLCJl"
        "bWFpbCJd.Z8SqOg.4Vq2d9m2hG9XkqI4w6oVJt0YJ9o",
        "practice_name": "Riverside Therapy",
        "language": "en",
        "sent_at": SENT_AT,
        "expires_at": SENT_AT + timedelta(hours=72),
        "timezone": "America/New_York",
    }
    return Outgoing(**{**fields, **changes})


def send(app, channel: str, message: Outgoing) -> None:
    """Send through the channel the app's config chooses, as the dispatcher does."""
    with app.app_context():
        channels_from_config(app.config)[channel].send(message)


def parts(message) -> tuple[str, str]:
    """Return the plain and HTML bodies of a received message."""
    return (
        message.get_body(("plain",)).get_content(),
        message.get_body(("html",)).get_content(),
    )


# --- email -----------------------------------------------------------------------------------


def test_email_has_both_parts_with_the_link_and_the_unsubscribe_link(mail_app, smtp):
    message = outgoing()
    send(mail_app, "email", message)
    [received] = smtp.messages
    assert received["To"] == EMAIL
    assert received["Subject"] == "Riverside Therapy: how did your session feel?"
    text, html = parts(received)
    for body in (text, html):
        assert message.link in body
        assert message.unsubscribe_link in body
    assert "March 5, 2025 at 1:30\u202fPM (EST)" in text  # the deadline, in the client's zone


def test_email_headers_offer_one_click_unsubscribe(mail_app, smtp):
    message = outgoing()
    send(mail_app, "email", message)
    [received] = smtp.messages
    # Unfolded and unencoded on the wire, or mail apps cannot use it.
    raw = dict(received.raw_items())["List-Unsubscribe"]
    assert raw.strip() == f"<{message.unsubscribe_link}>"
    assert received["List-Unsubscribe"] == f"<{message.unsubscribe_link}>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received["Auto-Submitted"] == "auto-generated"
    assert received["Content-Language"] == "en"
    assert re.fullmatch(r"<[^<>@\s]+@alliance-check\.invalid>", received["Message-ID"])


def test_a_retried_email_keeps_its_message_id_and_the_reminder_gets_its_own(mail_app, smtp):
    message = outgoing()
    send(mail_app, "email", message)
    send(mail_app, "email", message)
    send(mail_app, "email", replace(message, reminder=True))
    first, retry, reminder = smtp.messages
    assert first["Message-ID"] == retry["Message-ID"]
    assert reminder["Message-ID"] != first["Message-ID"]
    assert reminder["Subject"] == "Reminder: how did your session with Riverside Therapy feel?"
    assert "We recently asked" in parts(reminder)[0]


def test_spanish_email_is_spanish_throughout(mail_app, smtp):
    message = outgoing(language="es")
    send(mail_app, "email", message)
    [received] = smtp.messages
    assert received["Subject"] == "Riverside Therapy: ¿cómo se sintió en su sesión?"
    assert received["Content-Language"] == "es"
    text, html = parts(received)
    assert "Gracias por su sesión con Riverside Therapy" in text
    assert "hasta el 5 de marzo de 2025 a las 13:30 (EST)" in text
    assert "Para no recibir más cuestionarios de Riverside Therapy" in text
    assert 'lang="es"' in html and "Dejar de recibir estos cuestionarios" in html
    assert message.unsubscribe_link in html and message.link in html
    assert "Thank you" not in text


def test_practice_name_cannot_inject_headers_or_markup(mail_app, smtp):
    send(mail_app, "email", outgoing(practice_name="Evil\r\nBcc: x@example.org <b>Co</b>"))
    [received] = smtp.messages
    assert received["Bcc"] is None
    assert "<b>" not in parts(received)[1]


def test_refused_recipient_is_permanent_and_the_reason_has_no_address(mail_app, smtp):
    smtp.refuse_with = "550 5.1.1 mailbox unavailable"
    with pytest.raises(DeliveryError) as caught:
        send(mail_app, "email", outgoing())
    assert caught.value.permanent
    assert EMAIL not in caught.value.reason


def test_smtp_outage_is_worth_a_retry(app):
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"
    with pytest.raises(DeliveryError) as caught:
        send(app, "email", outgoing())
    assert not caught.value.permanent


def test_without_smtp_and_twilio_both_channels_write_the_outbox_once_per_message(app, tmp_path):
    app.config["OUTBOX_DIR"] = str(tmp_path / "outbox")
    message = outgoing(to=PHONE)
    with app.app_context():
        chosen = channels_from_config(app.config)
        assert (chosen["email"].transport, chosen["sms"].transport) == ("file", "file")
        for _ in range(2):
            chosen["email"].send(replace(message, to=EMAIL))
            chosen["sms"].send(message)
    key = message.key
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == [
        f"{key}.eml",
        f"{key}.sms.txt",
    ]
    eml = message_from_bytes(
        (tmp_path / "outbox" / f"{key}.eml").read_bytes(), policy=policy.default
    )
    assert eml["List-Unsubscribe"] == f"<{message.unsubscribe_link}>"
    assert message.link in (tmp_path / "outbox" / f"{key}.sms.txt").read_text()


# --- SMS -------------------------------------------------------------------------------------


def test_sms_is_posted_to_twilio_the_way_its_api_expects(app, twilio):
    message = outgoing(to=PHONE)
    send(app, "sms", message)
    [request] = twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.mimetype == "application/x-www-form-urlencoded"
    assert (request.authorization.username, request.authorization.password) == (
        ACCOUNT_SID,
        AUTH_TOKEN,
    )
    [form] = twilio.messages
    assert set(form) == {"To", "From", "Body", "StatusCallback"}
    assert (form["To"], form["From"]) == (PHONE, FROM)
    # Delivery reports come back to the public URL, where they are verified.
    assert form["StatusCallback"] == "http://localhost/sms/twilio/status"
    assert message.link in form["Body"] and "Riverside Therapy" in form["Body"]
    assert form["Body"].endswith("Reply STOP to opt out")
    assert message.unsubscribe_link not in form["Body"]  # STOP is the way out by text


def test_the_sid_comes_back_and_only_the_invitation_asks_for_status_reports(app, twilio):
    with app.app_context():
        sms = channels_from_config(app.config)["sms"]
        first = sms.send(outgoing(to=PHONE))
        sms.send(outgoing(to=PHONE, reminder=True))
    assert first == twilio.sids[0]
    # A failed reminder has no fallback: the client already holds the link.
    assert ["StatusCallback" in form for form in twilio.messages] == [True, False]


def test_a_messaging_service_replaces_the_from_number(app, twilio):
    app.config.update(TWILIO_FROM="", TWILIO_MESSAGING_SERVICE_SID="MG" + "c" * 32)
    send(app, "sms", outgoing(to=PHONE))
    [form] = twilio.messages
    assert form["MessagingServiceSid"] == "MG" + "c" * 32
    assert "From" not in form


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("reminder", [False, True])
@pytest.mark.parametrize(
    "practice_name",
    ["Riverside Therapy", "The Riverside Centre for Couples and Family Therapy", "Clínica Añil"],
)
def test_sms_fits_one_gsm7_segment(app, twilio, language, reminder, practice_name):
    message = outgoing(to=PHONE, language=language, reminder=reminder, practice_name=practice_name)
    send(app, "sms", message)
    body = twilio.messages[0]["Body"]
    assert len(message.link) == len(BASE) + 3 + 43
    assert len(body) <= SMS_SEGMENT
    assert is_gsm7(body)
    assert message.link in body
    assert "STOP" in body
    # The name is kept, shortened if need be, with its accents folded only where GSM-7 lacks them.
    assert practice_name.replace("í", "i")[:12] in body


def test_spanish_sms_reads_in_spanish(app, twilio):
    send(app, "sms", outgoing(to=PHONE, language="es"))
    body = twilio.messages[0]["Body"]
    assert body.startswith("¿Qué tal le fue con Riverside Therapy? https://")
    assert body.endswith("Responda STOP para darse de baja")


@pytest.mark.parametrize(
    ("error", "kind", "permanent", "reason"),
    [
        ("invalid_number", TwilioRejectedError, True, "twilio 400 code 21211"),
        ("unsubscribed", TwilioRejectedError, True, "twilio 400 code 21610"),
        ("too_many_requests", TwilioUnavailableError, False, "twilio 429 code 20429"),
        ("internal_error", TwilioUnavailableError, False, "twilio 500 code 20500"),
        ("service_unavailable", TwilioUnavailableError, False, "twilio 503 code 20503"),
    ],
)
def test_twilio_errors_are_classified_and_carry_no_number(
    app, twilio, error, kind, permanent, reason
):
    twilio.error = error
    with pytest.raises(kind) as caught:
        send(app, "sms", outgoing(to=PHONE))
    assert caught.value.permanent is permanent
    assert caught.value.reason == reason
    assert caught.value.response.status_code == int(reason.split()[1])
    assert "555" not in str(caught.value)


def test_wrong_twilio_credentials_are_retried_not_failed_at_once(app, twilio):
    app.config["TWILIO_AUTH_TOKEN"] = "not-the-token"
    with pytest.raises(TwilioUnavailableError) as caught:
        send(app, "sms", outgoing(to=PHONE))
    assert (caught.value.reason, caught.value.permanent) == ("twilio 401 code 20003", False)
    assert twilio.messages == []


def test_twilio_unreachable_is_worth_a_retry(app, twilio):
    app.config["TWILIO_API_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TwilioUnavailableError) as caught:
        send(app, "sms", outgoing(to=PHONE))
    assert caught.value.reason == "twilio unavailable (ConnectionError)"
    assert not caught.value.permanent


@pytest.mark.parametrize(
    "settings",
    [
        {"TWILIO_AUTH_TOKEN": ""},
        {"TWILIO_FROM": "", "TWILIO_MESSAGING_SERVICE_SID": ""},
    ],
)
def test_incomplete_twilio_settings_are_refused(app, twilio, settings):
    app.config.update(settings)
    with pytest.raises(ValueError, match="ALLIANCE_TWILIO_"):
        channels_from_config(app.config)
