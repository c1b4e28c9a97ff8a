"""Opting out: the one-tap unsubscribe page, RFC 8058 one-click, and SMS STOP/START/HELP."""

import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from plugin.core.models import OptOut
from plugin.delivery.unsubscribe import unsubscribe_link
from plugin.planning.optouts import is_opted_out, opt_in, opt_out, phone_digest
from tests.support.data import DATA
from tests.support.twilio_api import AUTH_TOKEN

PHONE = "+12025550143"
INBOUND = json.loads((DATA / "twilio" / "inbound_sms.json").read_text())


def link_path(app, invitation, channel="email") -> str:
    """Return the path of the invitation's unsubscribe link."""
    with app.app_context():
        return unsubscribe_link("", invitation.id, channel)


def opt_outs(db) -> list[OptOut]:
    """Return every opt-out recorded."""
    return db.scalars(select(OptOut).order_by(OptOut.created_at)).all()


# --- the one-tap page ------------------------------------------------------------------------


def test_link_is_absolute_signed_and_free_of_client_data(app, practice, invitations):
    invitation, _ = invitations(practice)
    with app.app_context():
        link = unsubscribe_link("https://check.example.org/", invitation.id)
    assert re.fullmatch(r"https://check\.example\.org/u/[A-Za-z0-9_.-]+", link)
    assert "Patient" not in link and "sam.rivera" not in link


def test_get_shows_one_button_and_changes_nothing(client, app, practice, invitations, db):
    invitation, _ = invitations(practice)
    response = client.get(link_path(app, invitation))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Stop these questionnaires?" in html and "Riverside Therapy" in html
    assert html.count("<form") == 1 and html.count("<button") == 1
    # Mail scanners fetch links: a GET must never opt anyone out.
    assert opt_outs(db) == []
    db.refresh(invitation)
    assert invitation.status == "sent"


def test_pages_carry_the_private_page_headers(client, app, practice, invitations):
    invitation, _ = invitations(practice)
    for response in (
        client.get(link_path(app, invitation)),
        client.post(link_path(app, invitation)),
    ):
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_post_opts_out_and_cancels_only_that_clients_open_invitations(
    client, app, practice, other_practice, invitations, db
):
    sent, _ = invitations(practice)
    pending, _ = invitations(practice, status="pending")
    answered, _ = invitations(practice, status="answered")
    neighbour, _ = invitations(practice, patient_ref="Patient/c2")
    same_ref_elsewhere, _ = invitations(other_practice)

    response = client.post(link_path(app, sent))
    assert response.status_code == 200
    assert "Riverside Therapy will send you no more questionnaires." in response.get_data(
        as_text=True
    )
    [recorded] = opt_outs(db)
    assert (recorded.practice_id, recorded.patient_ref, recorded.channel) == (
        practice.id,
        "Patient/c1",
        "email",
    )
    assert recorded.created_at is not None and recorded.revoked_at is None
    for invitation in (sent, pending):
        db.refresh(invitation)
        assert invitation.status == "cancelled"
        assert (invitation.contact, invitation.token, invitation.token_hash) == (None, None, None)
    for untouched, status in (
        (answered, "answered"),
        (neighbour, "sent"),
        (same_ref_elsewhere, "sent"),
    ):
        db.refresh(untouched)
        assert untouched.status == status
    with app.app_context():
        assert is_opted_out(db, practice.id, "Patient/c1")
        assert not is_opted_out(db, other_practice.id, "Patient/c1")
        assert not is_opted_out(db, practice.id, "Patient/c2")


def test_the_questionnaire_link_stops_working_after_opting_out(client, app, practice, invitations):
    invitation, token = invitations(practice)
    assert client.get(f"/q/{token}").status_code == 200
    client.post(link_path(app, invitation))
    assert client.get(f"/q/{token}").status_code == 404


def test_rfc8058_one_click_post_needs_no_cookie_or_csrf_token(app, practice, invitations, db):
    invitation, _ = invitations(practice)
    # A mail provider's server posts exactly this, with no session.
    fresh = app.test_client(use_cookies=False)
    response = fresh.post(
        link_path(app, invitation),
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert [o.channel for o in opt_outs(db)] == ["email"]


def test_opting_out_twice_keeps_one_active_record(client, app, practice, invitations, db):
    first, _ = invitations(practice)
    second, _ = invitations(practice)
    client.post(link_path(app, first))
    assert client.post(link_path(app, first)).status_code == 200
    assert client.post(link_path(app, second)).status_code == 200
    assert len(opt_outs(db)) == 1


def test_the_questionnaire_page_offers_its_own_way_out(client, app, practice, invitations, db):
    _, token = invitations(practice)
    html = client.get(f"/q/{token}").get_data(as_text=True)
    path = re.search(r'<a href="(/u/[^"]+)">Stop receiving these questionnaires</a>', html)[1]
    client.post(path)
    assert [o.channel for o in opt_outs(db)] == ["web"]


def tampered(path: str) -> str:
    """Change the first character of the signature.

    Not the last: base64's final character also carries padding bits that decoders drop,
    so changing it alone can leave the signature's bytes, and its validity, as they were.
    """
    head, _, signature = path.rpartition(".")
    return f"{head}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


@pytest.mark.parametrize(
    "make_path",
    [
        tampered,
        lambda path: path.replace("/u/", "/u/x"),
        lambda path: "/u/not-a-link",
        lambda path: "/u/" + "A" * 5000,
    ],
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_bad_links_are_a_friendly_404_and_change_nothing(
    client, app, practice, invitations, db, make_path, method
):
    invitation, _ = invitations(practice)
    response = getattr(client, method)(make_path(link_path(app, invitation)))
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Link not found" in response.get_data(as_text=True)
    assert opt_outs(db) == []


def test_a_link_signed_with_another_key_is_refused(client, app, practice, invitations, db):
    invitation, _ = invitations(practice)
    app.config["SECRET_KEY"] = "another-deployment"
    path = link_path(app, invitation)
    app.config["SECRET_KEY"] = "test-secret-key"
    assert client.post(path).status_code == 404
    assert opt_outs(db) == []


def test_an_expired_link_is_410_and_says_how_else_to_stop(client, app, practice, invitations, db):
    invitation, _ = invitations(practice)
    path = link_path(app, invitation)
    with time_machine.travel(datetime.now(UTC) + timedelta(days=91), tick=False):
        response = client.post(path)
    assert response.status_code == 410
    assert "reply STOP" in response.get_data(as_text=True)
    assert opt_outs(db) == []
    with time_machine.travel(datetime.now(UTC) + timedelta(days=89), tick=False):
        assert client.post(path).status_code == 200


def test_unsubscribe_page_is_in_the_invitations_language(client, app, practice, invitations):
    invitation, _ = invitations(practice, language="es")
    html = client.get(link_path(app, invitation)).get_data(as_text=True)
    assert '<html lang="es">' in html
    assert "¿Dejar de recibir estos cuestionarios?" in html
    assert "No recibirá más cuestionarios de Riverside Therapy" in html


# --- model functions -------------------------------------------------------------------------


def test_opt_in_revokes_and_a_later_opt_out_records_anew(app, practice, db):
    now = datetime.now(UTC)
    with app.app_context():
        opt_out(db, practice_id=practice.id, patient_ref="Patient/c1", channel="sms", now=now)
        opt_in(db, practice_id=practice.id, patient_ref="Patient/c1", channel="sms", now=now)
        assert not is_opted_out(db, practice.id, "Patient/c1")
        opt_out(db, practice_id=practice.id, patient_ref="Patient/c1", channel="web", now=now)
        db.commit()
        assert is_opted_out(db, practice.id, "Patient/c1")
    first, second = opt_outs(db)
    assert (first.channel, first.revoked_at is not None) == ("sms", True)
    assert (second.channel, second.revoked_at) == ("web", None)


@pytest.mark.parametrize("channel", ["", "fax", "EMAIL"])
def test_unknown_opt_out_channels_are_refused(app, practice, db, channel):
    with app.app_context(), pytest.raises(ValueError):
        opt_out(
            db,
            practice_id=practice.id,
            patient_ref="Patient/c1",
            channel=channel,
            now=datetime.now(UTC),
        )


@pytest.mark.parametrize(
    ("phone", "same_as_e164"),
    [("+1 (202) 555-0143", True), ("+12025550143", True), ("+44 20 7946 0958", False)],
)
def test_phone_digest_keys_on_the_e164_form(app, phone, same_as_e164):
    with app.app_context():
        digest = phone_digest(phone)
        assert (digest == phone_digest(PHONE)) is same_as_e164
        assert re.fullmatch(r"[0-9a-f]{64}", digest)
        assert "0143" not in digest


@pytest.mark.parametrize("phone", ["", "2025550143", "not a number", "+1", "+999999"])
def test_phone_digest_of_an_unparseable_number_is_none(app, phone):
    with app.app_context():
        assert phone_digest(phone) is None


def test_phone_digest_depends_on_the_secret_key(app):
    with app.app_context():
        before = phone_digest(PHONE)
        app.config["SECRET_KEY"] = "another-deployment"
        assert phone_digest(PHONE) != before


# --- inbound SMS -----------------------------------------------------------------------------


class Twilio:
    """Post inbound messages to /sms/twilio signed the way Twilio signs them."""

    def __init__(self, client, url: str = "http://localhost/sms/twilio"):
        self.client = client
        self.url = url

    def post(self, body: str, phone: str = PHONE, signature: str | None = None, **kwargs):
        """Send one inbound SMS; returns the response."""
        params = {**INBOUND, "Body": body, "From": phone}
        if signature is None:
            signature = RequestValidator(AUTH_TOKEN).compute_signature(self.url, params)
        return self.client.post(
            "/sms/twilio", data=params, headers={"X-Twilio-Signature": signature}, **kwargs
        )


@pytest.fixture
def texts(app, client):
    """Return a signer of inbound SMS, with the app holding Twilio's auth token."""
    app.config["TWILIO_AUTH_TOKEN"] = AUTH_TOKEN
    return Twilio(client)


@pytest.fixture
def texted(practice, other_practice, invitations):
    """Invitations texted to PHONE by two practices, and one to someone else."""
    return {
        "first": invitations(practice, phone=PHONE)[0],
        "second": invitations(other_practice, patient_ref="Patient/x9", phone=PHONE)[0],
        "stranger": invitations(practice, patient_ref="Patient/c2", phone="+12025550199")[0],
    }


def message_text(response) -> str:
    """Return the text of the TwiML reply, or '' when there is none."""
    found = re.search(r"<Message>(.*)</Message>", response.get_data(as_text=True))
    return found[1] if found else ""


@pytest.mark.parametrize(
    "signature",
    ["", "bm90IGEgc2lnbmF0dXJl", RequestValidator("wrong-token").compute_signature("x", {})],
)
def test_forged_inbound_sms_is_403_and_changes_nothing(texts, texted, db, signature):
    response = texts.post("STOP", signature=signature)
    assert response.status_code == 403
    assert opt_outs(db) == []


def test_a_signed_body_cannot_be_altered(texts, texted, db, client):
    params = {**INBOUND, "Body": "HELLO", "From": PHONE}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(texts.url, params)
    response = client.post(
        "/sms/twilio", data={**params, "Body": "STOP"}, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 403
    assert opt_outs(db) == []


def test_the_signed_url_is_the_public_one_not_the_host_header(app, client, texted, db):
    app.config.update(TWILIO_AUTH_TOKEN=AUTH_TOKEN, PUBLIC_BASE_URL="https://check.example.org")
    assert Twilio(client).post("STOP").status_code == 403
    public = Twilio(client, "https://check.example.org/sms/twilio")
    assert public.post("STOP").status_code == 200
    assert len(opt_outs(db)) == 2


def test_without_an_auth_token_nothing_is_accepted(app, client, texted, db):
    assert app.config["TWILIO_AUTH_TOKEN"] == ""
    assert Twilio(client).post("STOP").status_code == 403


@pytest.mark.parametrize("body", ["STOP", "stop", "  Stop\n", "UNSUBSCRIBE", "cancel", "parar"])
def test_stop_opts_the_number_out_at_every_practice_that_texted_it(
    texts, texted, db, practice, other_practice, body
):
    response = texts.post(body)
    assert response.status_code == 200
    assert response.mimetype == "application/xml"
    assert "Reply START" in message_text(response)
    assert sorted((o.practice_id, o.patient_ref, o.channel) for o in opt_outs(db)) == sorted(
        [(practice.id, "Patient/c1", "sms"), (other_practice.id, "Patient/x9", "sms")]
    )
    for name, status in (("first", "cancelled"), ("second", "cancelled"), ("stranger", "sent")):
        db.refresh(texted[name])
        assert texted[name].status == status


def test_start_revokes_the_opt_out(texts, texted, db, practice, app):
    texts.post("STOP")
    response = texts.post("start")
    assert "receive questionnaires again" in message_text(response)
    assert all(o.revoked_at is not None for o in opt_outs(db))
    with app.app_context():
        assert not is_opted_out(db, practice.id, "Patient/c1")


def test_start_also_lifts_an_opt_out_made_by_email(client, app, texts, texted, db, practice):
    client.post(link_path(app, texted["first"]))
    texts.post("START")
    with app.app_context():
        assert not is_opted_out(db, practice.id, "Patient/c1")


@pytest.mark.parametrize("body", ["HELP", "info"])
def test_help_answers_and_records_nothing(texts, texted, db, body):
    response = texts.post(body)
    assert "Reply STOP to opt out" in message_text(response)
    assert opt_outs(db) == []


def test_stop_from_an_unknown_number_is_answered_alike_and_records_nothing(texts, texted, db):
    known = message_text(texts.post("STOP", phone="+12025550143"))
    for optout in opt_outs(db):
        db.delete(optout)
    db.commit()
    unknown = texts.post("STOP", phone="+12025550100")
    assert unknown.status_code == 200
    # The same reply either way: a text cannot find out whose number is a client.
    assert message_text(unknown) == known
    assert opt_outs(db) == []


@pytest.mark.parametrize("body", ["Thanks!", "STOP please", "", "yes please"])
def test_other_texts_get_an_empty_reply_and_change_nothing(texts, texted, db, body):
    response = texts.post(body)
    assert response.status_code == 200
    assert "<Message" not in response.get_data(as_text=True)
    assert opt_outs(db) == []


def test_replies_follow_the_clients_language(texts, practice, invitations):
    invitations(practice, phone=PHONE, language="es")
    assert message_text(texts.post("STOP")).startswith("No le enviaremos más cuestionarios.")


def test_inbound_sms_logs_no_phone_or_body(texts, texted, caplog):
    with caplog.at_level(logging.DEBUG):
        texts.post("STOP")
        texts.post("My therapist is great")
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    for secret in ("2025550143", "therapist is great"):
        assert secret not in logged
