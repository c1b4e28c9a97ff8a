"""Opt-outs: a client's wish to hear nothing more from a practice, on any channel."""

import hashlib
import hmac
import logging
from datetime import datetime

import phonenumbers
from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from plugin.core.models import OPEN_INVITATIONS, Invitation, InvitationStatus, OptOut

log = logging.getLogger(__name__)

# How the client asked, as OptOut.channel records it.
OPT_OUT_CHANNELS = ("email", "sms", "web")


def phone_digest(phone: str) -> str | None:
    """Return the keyed HMAC-SHA256 of a phone number's E.164 form, or None if unparseable."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return hmac.new(_digest_key(), e164.encode(), hashlib.sha256).hexdigest()


def _digest_key() -> bytes:
    # A key of its own, so a digest says nothing about anything else signed with SECRET_KEY;
    # without the key, the few billion possible numbers cannot be hashed to reverse it.
    secret = current_app.config["SECRET_KEY"].encode()
    return hmac.new(secret, b"alliance-check phone digest v1", hashlib.sha256).digest()


def is_opted_out(session: Session, practice_id: str, patient_ref: str) -> bool:
    """Say whether the client asked this practice to send them nothing more."""
    # The id alone: the dispatcher asks this before every send, and loading an OptOut
    # object would cost more than the query.
    active = select(OptOut.id).where(
        OptOut.practice_id == practice_id,
        OptOut.patient_ref == patient_ref,
        OptOut.revoked_at.is_(None),
    )
    return session.scalar(active.limit(1)) is not None


def opt_out(
    session: Session, *, practice_id: str, patient_ref: str, channel: str, now: datetime
) -> None:
    """Record the opt-out once and cancel the client's open invitations; the caller commits."""
    if channel not in OPT_OUT_CHANNELS:
        raise ValueError(f"unknown opt-out channel {channel!r}")
    if not is_opted_out(session, practice_id, patient_ref):
        session.add(
            OptOut(
                practice_id=practice_id, patient_ref=patient_ref, channel=channel, created_at=now
            )
        )
    # Nothing else goes out, and the contact details and links are no longer needed.
    cancelled = session.execute(
        update(Invitation)
        .where(
            Invitation.practice_id == practice_id,
            Invitation.patient_ref == patient_ref,
            Invitation.status.in_(OPEN_INVITATIONS),
        )
        .values(status=InvitationStatus.CANCELLED, contact=None, token=None, token_hash=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.flush()
    log.info(
        "optout.recorded",
        extra={"practice_id": practice_id, "channel": channel, "invitations_cancelled": cancelled},
    )


def opt_in(
    session: Session, *, practice_id: str, patient_ref: str, channel: str, now: datetime
) -> None:
    """Revoke the client's active opt-outs at this practice; the caller commits."""
    revoked = session.execute(
        update(OptOut)
        .where(
            OptOut.practice_id == practice_id,
            OptOut.patient_ref == patient_ref,
            OptOut.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.flush()
    log.info(
        "optout.revoked", extra={"practice_id": practice_id, "channel": channel, "revoked": revoked}
    )


def clients_by_phone(session: Session, digest: str) -> list[tuple[str, str]]:
    """Return every (practice_id, patient_ref) whose invitations went to this phone digest."""
    rows = session.execute(
        select(Invitation.practice_id, Invitation.patient_ref)
        .where(Invitation.phone_digest == digest, Invitation.patient_ref.is_not(None))
        .distinct()
    )
    return [(practice_id, patient_ref) for practice_id, patient_ref in rows]


def language_for_phone(session: Session, digest: str) -> str | None:
    """Return the language of the latest invitation to this phone digest, if any."""
    return session.scalar(
        select(Invitation.language)
        .where(Invitation.phone_digest == digest)
        .order_by(Invitation.created_at.desc())
        .limit(1)
    )
