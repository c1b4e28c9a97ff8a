"""Ways out: the one-tap unsubscribe page (/u/), inbound SMS keywords (/sms/twilio), and
Twilio's delivery-status callbacks (/sms/twilio/status)."""

import logging
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app, request
from flask_babel import force_locale, gettext
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from plugin.core.db import get_session
from plugin.core.errors import page, private_page_headers, problem
from plugin.core.i18n import DEFAULT_LANGUAGE, choose_language, use_language
from plugin.core.models import Invitation
from plugin.delivery.status import record_sms_status
from plugin.delivery.unsubscribe import UnsubscribeLinkError, read_unsubscribe_token
from plugin.planning.consent import record_sms_consent, revoke_sms_consent
from plugin.planning.optouts import (
    clients_by_phone,
    language_for_phone,
    opt_in,
    opt_out,
    phone_digest,
)

log = logging.getLogger(__name__)
unsubscribe_bp = Blueprint("unsubscribe", __name__, url_prefix="/u")
sms_bp = Blueprint("sms", __name__, url_prefix="/sms")
unsubscribe_bp.after_request(private_page_headers)

# Twilio's standard keyword lists (matched on the whole message, case and spaces ignored),
# plus the Spanish words a Spanish-speaking client is likely to send.
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "PARAR", "BAJA", "CANCELAR"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP", "ALTA"})
HELP_WORDS = frozenset({"HELP", "INFO", "AYUDA"})
# Longer than any signed link we make; anything longer is not ours and is not verified.
MAX_SIGNED_LENGTH = 200
ONE_CLICK = "One-Click"


def _link_invitation(signed: str, now: datetime) -> tuple[Invitation, str] | Response:
    """Return the invitation and channel a link names, or the page explaining why not."""
    try:
        if len(signed) > MAX_SIGNED_LENGTH:
            raise UnsubscribeLinkError("too long")
        invitation_id, channel = read_unsubscribe_token(signed, now)
    except UnsubscribeLinkError as exc:
        if exc.expired:
            return page(
                410,
                "gone.html",
                title=gettext("This link has expired"),
                message=gettext(
                    "To stop these questionnaires, reply STOP to one of our text messages, "
                    "or ask your practice."
                ),
            )
        return _not_found()
    invitation = get_session().get(Invitation, invitation_id)
    if invitation is None or invitation.patient_ref is None:
        # Purged since, or the practice uninstalled: there is nothing left to stop.
        return _not_found()
    use_language(invitation.language)
    return invitation, channel


def _not_found() -> Response:
    return page(
        404,
        "gone.html",
        title=gettext("Link not found"),
        message=gettext("This link is not valid. Please check that you copied all of it."),
    )


@unsubscribe_bp.get("/<signed>")
def confirm(signed: str) -> Response:
    """Ask for the one tap; a GET never changes anything, as mail scanners follow links."""
    found = _link_invitation(signed, datetime.now(UTC))
    if isinstance(found, Response):
        return found
    invitation, _channel = found
    return page(
        200,
        "unsubscribe.html",
        title=gettext("Stop these questionnaires?"),
        practice_name=invitation.practice.name,
    )


@unsubscribe_bp.post("/<signed>")
def unsubscribe(signed: str) -> Response:
    """Record the opt-out: from the page's button or a mail app's RFC 8058 one-click POST.

    The signed link is the credential, as with the questionnaire link, so no CSRF token is
    asked for: a forger would need the link itself.
    """
    now = datetime.now(UTC)
    found = _link_invitation(signed, now)
    if isinstance(found, Response):
        return found
    invitation, channel = found
    session = get_session()
    opt_out(
        session,
        practice_id=invitation.practice_id,
        patient_ref=invitation.patient_ref,
        channel=channel,
        now=now,
    )
    session.commit()
    one_click = request.form.get("List-Unsubscribe") == ONE_CLICK
    log.info(
        "optout.unsubscribe",
        extra={"invitation_id": invitation.id, "one_click": one_click},
    )
    return page(
        200,
        "unsubscribed.html",
        title=gettext("You will receive no more questionnaires"),
        practice_name=invitation.practice.name,
    )


def _signed_url() -> str:
    # Twilio signs the URL it was configured with; behind a proxy the Host header and scheme
    # we see differ from it, so the public base URL is the one to trust.
    url = current_app.config["PUBLIC_BASE_URL"].rstrip("/") + request.path
    query = request.query_string.decode()
    return f"{url}?{query}" if query else url


def _twiml(text: str | None = None) -> Response:
    reply = MessagingResponse()
    if text:
        reply.message(text)
    return Response(str(reply), mimetype="application/xml")


def _forged() -> Response | None:
    """Return the 403 for a request Twilio did not sign with our auth token, else None."""
    token = current_app.config["TWILIO_AUTH_TOKEN"]
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not RequestValidator(token).validate(_signed_url(), request.form, signature):
        log.warning("sms.request_rejected", extra={"path": request.path})
        return problem(403, "Forbidden", "The request signature does not verify.")
    return None


@sms_bp.post("/twilio/status")
def delivery_status() -> Response:
    """Apply Twilio's report on a text we sent: delivered, or fall back to the next channel."""
    forged = _forged()
    if forged is not None:
        return forged
    session = get_session()
    status = request.form.get("MessageStatus", "")
    outcome = record_sms_status(
        session,
        message_sid=request.form.get("MessageSid", ""),
        status=status,
        error_code=request.form.get("ErrorCode", ""),
        now=datetime.now(UTC),
    )
    session.commit()
    # Twilio's status names are a fixed vocabulary; the SID and the number are not logged.
    log.info("sms.status", extra={"status": status[:16], "outcome": outcome})
    return Response(status=204)


@sms_bp.post("/twilio")
def inbound() -> Response:
    """Honour STOP, START and HELP texted back to our number; anything else gets no reply."""
    forged = _forged()
    if forged is not None:
        return forged

    keyword = " ".join(request.form.get("Body", "").split()).upper()
    if keyword not in STOP_WORDS | START_WORDS | HELP_WORDS:
        log.info("sms.inbound_ignored")
        return _twiml()

    now = datetime.now(UTC)
    session = get_session()
    digest = phone_digest(request.form.get("From", ""))
    clients = clients_by_phone(session, digest) if digest else []
    language = choose_language(
        language_for_phone(session, digest) if digest else None, DEFAULT_LANGUAGE
    )
    for practice_id, patient_ref in clients:
        if keyword in STOP_WORDS:
            opt_out(
                session, practice_id=practice_id, patient_ref=patient_ref, channel="sms", now=now
            )
            revoke_sms_consent(session, practice_id=practice_id, patient_ref=patient_ref, now=now)
        elif keyword in START_WORDS:
            opt_in(
                session, practice_id=practice_id, patient_ref=patient_ref, channel="sms", now=now
            )
            # Texting START from this phone is the client's own consent to texts at it.
            record_sms_consent(
                session,
                practice_id=practice_id,
                patient_ref=patient_ref,
                digest=digest,
                granted=True,
                given_at=now,
                source="sms_start",
                via="sms",
                now=now,
            )
    session.commit()
    log.info("sms.inbound_keyword", extra={"keyword": keyword.lower(), "clients": len(clients)})
    # The reply is the same whether or not the number is known, so it reveals nothing about
    # who is a client of which practice.
    with force_locale(language):
        if keyword in STOP_WORDS:
            text = gettext(
                "You will receive no more questionnaires from us. "
                "Reply START to receive them again."
            )
        elif keyword in START_WORDS:
            text = gettext("You will receive questionnaires again. Reply STOP to opt out.")
        else:
            text = gettext(
                "Alliance Check sends short questionnaires after your sessions. "
                "Reply STOP to opt out or START to opt back in. "
                "For anything else, please contact your therapist."
            )
    return _twiml(text)


def init_app(app: Flask) -> None:
    """Register the unsubscribe page and the inbound SMS webhook."""
    app.register_blueprint(unsubscribe_bp)
    app.register_blueprint(sms_bp)
