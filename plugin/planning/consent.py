"""Consent to texts: recorded with where it came from, checked before any SMS, revoked by STOP.

A client may get an SMS from a practice only while a grant of theirs is active there: given
through the webhook (`client.sms_consent`), by a FHIR Consent in the practice's EHR
(plugin.planning.ehr_consent), or by texting START. A grant is tied to the phone number it
came with (by its digest, never the number), or to any number of the client when none came
with it (the EHR's). SMS STOP and a later refusal revoke it, as does the EHR's Consent ceasing
to count; the rows stay as the record.
"""

import logging
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from fhir_mappings.consent import TextingConsent
from plugin.core.models import SessionEvent, SmsConsent
from plugin.planning.optouts import phone_digest
from plugin.planning.policy import CHANNELS as CHANNEL_NAMES

log = logging.getLogger(__name__)

# How a consent reached us, as SmsConsent.recorded_via records it.
RECORDED_VIA = ("webhook", "ehr", "sms")
CHANNELS = frozenset(CHANNEL_NAMES)


def _active(practice_id: str, patient_ref: str):
    return select(SmsConsent).where(
        SmsConsent.practice_id == practice_id,
        SmsConsent.patient_ref == patient_ref,
        SmsConsent.granted.is_(True),
        SmsConsent.revoked_at.is_(None),
    )


def has_sms_consent(
    session: Session, practice_id: str, patient_ref: str | None, digest: str | None
) -> bool:
    """Say whether the client has an active consent to texts at this number (digest)."""
    if patient_ref is None or digest is None:
        return False
    query = _active(practice_id, patient_ref).where(
        or_(SmsConsent.phone_digest.is_(None), SmsConsent.phone_digest == digest)
    )
    return session.scalar(query.limit(1)) is not None


def _last_withdrawal(session: Session, practice_id: str, patient_ref: str) -> datetime | None:
    """Return when the client last withdrew consent: a refusal's time or a STOP."""
    refused = session.scalar(
        select(func.max(SmsConsent.given_at)).where(
            SmsConsent.practice_id == practice_id,
            SmsConsent.patient_ref == patient_ref,
            SmsConsent.granted.is_(False),
        )
    )
    stopped = session.scalar(
        select(func.max(SmsConsent.revoked_at)).where(
            SmsConsent.practice_id == practice_id,
            SmsConsent.patient_ref == patient_ref,
            SmsConsent.revoked_by == "sms_stop",
        )
    )
    return max((moment for moment in (refused, stopped) if moment is not None), default=None)


def record_sms_consent(
    session: Session,
    *,
    practice_id: str,
    patient_ref: str,
    digest: str | None,
    granted: bool,
    given_at: datetime,
    source: str,
    via: str,
    now: datetime,
    ehr_ref: str | None = None,
) -> bool:
    """Record a grant or refusal unless it is older news; return whether anything changed.

    Every session's webhook may repeat the same consent, so an active grant for the same
    number is kept as it is, and a grant given before the client's last withdrawal (a STOP,
    a refusal) is ignored: an old intake form never overrides a later STOP. The caller commits.
    """
    if via not in RECORDED_VIA:
        raise ValueError(f"unknown consent route {via!r}")
    withdrawn = _last_withdrawal(session, practice_id, patient_ref)
    if granted:
        if withdrawn is not None and given_at <= withdrawn:
            log.info("sms_consent.outdated", extra={"practice_id": practice_id, "via": via})
            return False
        same = _active(practice_id, patient_ref).where(
            SmsConsent.phone_digest.is_(None)
            if digest is None
            else SmsConsent.phone_digest == digest
        )
        if session.scalar(same.limit(1)) is not None:
            return False
    else:
        if withdrawn is not None and given_at <= withdrawn:
            return False
        # Grants given after this refusal stand: the client changed their mind since.
        _revoke_grants(
            session, practice_id, patient_ref, now, "refused", SmsConsent.given_at < given_at
        )
    session.add(
        SmsConsent(
            practice_id=practice_id,
            patient_ref=patient_ref,
            phone_digest=digest,
            granted=granted,
            source=source,
            recorded_via=via,
            given_at=given_at,
            recorded_at=now,
            ehr_ref=ehr_ref,
        )
    )
    session.flush()
    log.info(
        "sms_consent.recorded",
        extra={"practice_id": practice_id, "granted": granted, "source": source, "via": via},
    )
    return True


def revoke_sms_consent(session: Session, *, practice_id: str, patient_ref: str, now: datetime):
    """Revoke the client's active grants at this practice, as SMS STOP asks; the caller commits."""
    revoked = _revoke_grants(session, practice_id, patient_ref, now, "sms_stop")
    session.flush()
    log.info("sms_consent.revoked", extra={"practice_id": practice_id, "revoked": revoked})
    return revoked


def _revoke_grants(
    session: Session, practice_id: str, patient_ref: str, now: datetime, by: str, *where
) -> int:
    """Revoke the client's active grants at this practice (those matching `where` too)."""
    return session.execute(
        update(SmsConsent)
        .where(
            SmsConsent.practice_id == practice_id,
            SmsConsent.patient_ref == patient_ref,
            SmsConsent.granted.is_(True),
            SmsConsent.revoked_at.is_(None),
            *where,
        )
        .values(revoked_at=now, revoked_by=by)
        .execution_options(synchronize_session=False)
    ).rowcount


def record_ehr_consents(
    session: Session,
    practice_id: str,
    patient_ref: str,
    consents: list[TextingConsent],
    now: datetime,
) -> None:
    """Record what the client's Consents in the EHR say; the caller commits.

    `consents` is everything that counts there now (oldest first), so a grant recorded from a
    Consent that no longer counts (made inactive, expired, deleted) is revoked. A grant older
    than the client's last STOP stays ignored, as any other: the EHR keeps old forms for ever.
    """
    _revoke_grants(
        session,
        practice_id,
        patient_ref,
        now,
        "ehr",
        SmsConsent.recorded_via == "ehr",
        SmsConsent.ehr_ref.not_in([consent.ref for consent in consents if consent.granted]),
    )
    for consent in consents:
        record_sms_consent(
            session,
            practice_id=practice_id,
            patient_ref=patient_ref,
            digest=None,
            granted=consent.granted,
            given_at=consent.given_at,
            source="ehr",
            via="ehr",
            now=now,
            ehr_ref=consent.ref,
        )


def consented_channels(
    session: Session,
    event: SessionEvent,
    contact: dict,
    now: datetime,
    from_ehr: list[TextingConsent] | None = None,
) -> frozenset[str]:
    """Record the consent the webhook and the EHR gave; return the channels the client allows.

    SMS is among them only while the client has an active consent for the number on record.
    `from_ehr` is None when the EHR was not read (nothing is recorded or revoked from it).
    """
    digest = phone_digest(contact["phone"]) if contact.get("phone") else None
    given = contact.get("sms_consent")
    if given and event.patient_ref:
        record_sms_consent(
            session,
            practice_id=event.practice_id,
            patient_ref=event.patient_ref,
            digest=digest,
            granted=given["granted"],
            given_at=datetime.fromisoformat(given["given_at"]),
            source=given["source"],
            via="webhook",
            now=now,
        )
    if from_ehr is not None and event.patient_ref:
        record_ehr_consents(session, event.practice_id, event.patient_ref, from_ehr, now)
    if has_sms_consent(session, event.practice_id, event.patient_ref, digest):
        return CHANNELS
    return frozenset(CHANNELS) - {"sms"}
