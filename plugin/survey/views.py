"""The client's questionnaire page: GET renders it, POST scores it and queues the EHR write."""

import logging
import re
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app, request
from flask_babel import gettext
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import select, update

from fhir_mappings.bundle import ResponseContext, build_transaction
from fhir_mappings.scoring import score, validate_answers
from plugin.core.crypto import hash_token, vault
from plugin.core.db import get_session, read_only
from plugin.core.errors import page, private_page_headers
from plugin.core.i18n import N_, current_language, use_language
from plugin.core.models import EhrWrite, Invitation, InvitationStatus
from plugin.core.queue import LEASE
from plugin.delivery.unsubscribe import unsubscribe_link
from plugin.survey.instruments import instrument_for

log = logging.getLogger(__name__)
bp = Blueprint("survey", __name__, url_prefix="/q")
csrf = CSRFProtect()

# token_urlsafe(32) is 43 characters; anything far longer is not ours and is not hashed.
MAX_TOKEN_LENGTH = 64


# What scoring (pure, English) says, as msgids the catalogue translates; a test keeps them
# equal to fhir_mappings.scoring's constants.
VALIDATION_MESSAGES = (
    N_("Please choose an answer."),
    N_("Please choose one of the listed answers."),
    N_("Please write an answer."),
    N_("Please remove unusual characters, such as control characters, from your answer."),
)
_TOO_LONG = re.compile(r"Please keep this under (\d+) characters\.")


def _find(token: str) -> Invitation | None:
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    invitation = get_session().scalar(
        select(Invitation).where(Invitation.token_hash == hash_token(token))
    )
    if invitation is not None:
        use_language(invitation.language)
    return invitation


def _translated(message: str) -> str:
    """Translate one of scoring's messages into the page's language."""
    if too_long := _TOO_LONG.fullmatch(message):
        return gettext("Please keep this under %(limit)s characters.", limit=too_long.group(1))
    return gettext(message)


def _unavailable(invitation: Invitation | None, now: datetime) -> Response | None:
    """Return the page for a link that cannot be answered, or None if it can."""
    if (
        invitation is not None
        and invitation.status == InvitationStatus.PENDING
        and invitation.token is not None
    ):
        # The link is fixed when a worker claims the row, before the send: a worker that died
        # after sending leaves it pending until the lease runs out and the same link is sent
        # again. The client holds a good link, so tell them to come back, not that it is wrong.
        response = page(
            503,
            "gone.html",
            title=gettext("Almost ready"),
            message=gettext(
                "This questionnaire is not open yet. Please try again in a few minutes."
            ),
        )
        response.headers["Retry-After"] = str(int(LEASE.total_seconds()))
        return response
    if invitation is None or invitation.status not in (
        InvitationStatus.SENT,
        InvitationStatus.ANSWERED,
        InvitationStatus.EXPIRED,
    ):
        return page(
            404,
            "gone.html",
            title=gettext("Link not found"),
            message=gettext("This link is not valid. Please check that you copied all of it."),
        )
    if invitation.status == InvitationStatus.ANSWERED:
        return page(
            409,
            "gone.html",
            title=gettext("Already submitted"),
            message=gettext("Your answers for this session were already submitted. Thank you."),
        )
    if invitation.status == InvitationStatus.EXPIRED or invitation.expires_at <= now:
        return page(
            410,
            "gone.html",
            title=gettext("This link has expired"),
            message=gettext("This questionnaire is no longer open. Thank you all the same."),
        )
    return None


def _form(invitation: Invitation, status: int = 200, errors=None, given=None) -> Response:
    # Shown in the client's language; scored and written to the EHR in the original.
    instrument = instrument_for(invitation.questionnaire).in_language(current_language())
    return page(
        status,
        "survey.html",
        title=instrument.title,
        instrument=instrument,
        practice_name=invitation.practice.name,
        errors={link_id: _translated(message) for link_id, message in (errors or {}).items()},
        given=given or {},
        # Relative, like every link on the page; the channel says it was asked for here.
        unsubscribe_link=unsubscribe_link("", invitation.id, channel="web"),
    )


@bp.get("/<token>")
@read_only
def show(token: str) -> Response:
    """Render the questionnaire for a valid, unanswered link."""
    invitation = _find(token)
    return _unavailable(invitation, datetime.now(UTC)) or _form(invitation)


@bp.post("/<token>")
def submit(token: str) -> Response:
    """Validate and score the answers, then record the EHR write before thanking the client."""
    csrf.protect()
    now = datetime.now(UTC)
    invitation = _find(token)
    if (gone := _unavailable(invitation, now)) is not None:
        return gone
    instrument = instrument_for(invitation.questionnaire)
    answers, errors = validate_answers(instrument, request.form)
    if errors:
        given = {key: request.form.get(key, "") for key in (i.link_id for i in instrument.items)}
        return _form(invitation, 422, errors, given)

    event = invitation.session_event
    bundle = build_transaction(
        instrument,
        answers,
        score(instrument, answers),
        ResponseContext(
            response_id=invitation.id,
            identifier_system=current_app.config["FHIR_IDENTIFIER_SYSTEM"],
            patient=event.patient_ref,
            practitioner=event.practitioner_ref,
            encounter=event.encounter_ref,
            authored=now,
            session_ended_at=event.ended_at,
        ),
    )
    session = get_session()
    # The conditional update is the single-use gate: of two racing submissions, one wins.
    claimed = session.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation.id,
            Invitation.status == InvitationStatus.SENT,
            Invitation.expires_at > now,
        )
        .values(
            status=InvitationStatus.ANSWERED,
            answered_at=now,
            contact=None,
            token=None,
            reminder_due_at=None,
        )
    ).rowcount
    if not claimed:
        session.rollback()
        session.refresh(invitation)
        return _unavailable(invitation, now) or page(
            409, "gone.html", title=gettext("Already submitted")
        )
    session.add(
        EhrWrite(
            practice_id=invitation.practice_id,
            invitation_id=invitation.id,
            bundle=vault().seal(bundle),
            next_attempt_at=now,
            created_at=now,
        )
    )
    session.commit()
    log.info("survey.answered", extra={"invitation_id": invitation.id})
    return page(200, "thanks.html", title=gettext("Thank you"))


bp.after_request(private_page_headers)


def _csrf_failed(_exc: CSRFError) -> Response:
    return page(
        400,
        "error.html",
        title=gettext("Please try again"),
        message=gettext(
            "This page could not be sent. Please open the link from your message "
            "again; your browser needs to allow cookies for this site."
        ),
    )


def init_app(app: Flask) -> None:
    """Register the questionnaire pages and their CSRF protection."""
    # Checked explicitly in submit(): webhooks are authenticated by signature, not cookies.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf.init_app(app)
    app.register_error_handler(CSRFError, _csrf_failed)
    app.register_blueprint(bp)
