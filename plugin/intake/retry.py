"""Plan sessions again: unmatched or failed ones, or the session of a failed invitation."""

import re
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from plugin.core.models import Invitation, InvitationStatus, SessionEvent, SessionStatus
from webhooks import ADAPTERS

RETRYABLE_SESSIONS = (SessionStatus.UNMATCHED, SessionStatus.FAILED)


class RetryError(ValueError):
    """Nothing can be retried as asked; the message says why in words an admin understands."""


def client_looked_up(platform: str) -> bool:
    """Whether this platform's clients are found by a look-up, which can simply run again."""
    return bool(getattr(ADAPTERS.get(platform), "attendee_emails", None))


def _reset(event: SessionEvent, now: datetime) -> None:
    event.status, event.reason, event.last_error = SessionStatus.PENDING, None, None
    event.attempts, event.next_attempt_at = 0, now


def retry_sessions(
    session: Session,
    now: datetime,
    *,
    session_ids: tuple[str, ...] | list[str] = (),
    all_unmatched: bool = False,
    practice_id: str | None = None,
) -> list[SessionEvent]:
    """Queue unmatched or failed sessions for planning again; the caller commits.

    `practice_id` scopes the retry to one practice (the console); the operator's CLI passes
    None. Raises RetryError, changing nothing, when an id is unknown, not unmatched or failed,
    or its client can no longer be reached.
    """
    query = select(SessionEvent).where(SessionEvent.status.in_(RETRYABLE_SESSIONS))
    if practice_id is not None:
        query = query.where(SessionEvent.practice_id == practice_id)
    if all_unmatched:
        query = query.where(SessionEvent.status == SessionStatus.UNMATCHED)
    elif session_ids:
        query = query.where(SessionEvent.id.in_(session_ids))
    else:
        raise RetryError("name session ids, or ask for all unmatched sessions")
    events = session.scalars(query).unique().all()
    missing = set(session_ids) - {event.id for event in events}
    if missing:
        raise RetryError(f"not unmatched or failed, or unknown: {sorted(missing)}")
    # A session whose client was known kept their contact only until it failed; with it
    # deleted there is no one to send to. Only a look-up (Zoom) can find them again.
    known = sorted(event.id for event in events if event.patient_ref is not None)
    if known:
        raise RetryError(
            f"cannot retry {known}: the client's contact details were deleted when planning "
            "failed; nothing changed"
        )
    for event in events:
        _reset(event, now)
    return list(events)


def retry_failed_invitation(
    session: Session, practice_id: str, invitation_id: str, now: datetime
) -> SessionEvent:
    """Plan a failed invitation's session again, finding the client afresh; the caller commits.

    A failed invitation's contact details were deleted when the last channel gave up (our
    privacy promise), so only a platform whose clients we look up (Zoom: the attendees, then
    the EHR) can reach the client again. The failed row is replaced by the new plan.
    """
    invitation = session.scalar(
        select(Invitation).where(
            Invitation.id == invitation_id,
            Invitation.practice_id == practice_id,
            Invitation.status == InvitationStatus.FAILED,
        )
    )
    if invitation is None:
        raise RetryError("no failed invitation with this id")
    event = invitation.session_event
    if not client_looked_up(event.platform):
        raise RetryError(
            "the client's contact details were deleted when delivery failed, and this platform "
            "does not let us look them up again; their next session is asked as usual"
        )
    session.execute(delete(Invitation).where(Invitation.id == invitation.id))
    session.expunge(invitation)
    event.patient_ref, event.contact, event.session_number = None, None, None
    _reset(event, now)
    return event


_PATIENT_REF = re.compile(r"Patient/[A-Za-z0-9\-.]{1,64}")


def link_session(
    session: Session,
    now: datetime,
    session_id: str,
    patient_ref: str,
    *,
    practice_id: str | None = None,
) -> SessionEvent:
    """Name an unmatched session's client by hand, and queue it to be planned; the caller commits.

    The reference is a FHIR id (Patient/ID). Planning then reads that Patient from the EHR
    for their contact details. `practice_id` scopes the link to one practice (the console).
    Raises RetryError, changing nothing, for a bad reference or a session that is not
    unmatched (or not that practice's).
    """
    if not _PATIENT_REF.fullmatch(patient_ref or ""):
        raise RetryError("the client must be given as Patient/ID, e.g. Patient/123")
    query = select(SessionEvent).where(
        SessionEvent.id == session_id, SessionEvent.status == SessionStatus.UNMATCHED
    )
    if practice_id is not None:
        query = query.where(SessionEvent.practice_id == practice_id)
    event = session.scalar(query)
    if event is None:
        raise RetryError(f"no unmatched session {session_id!r}")
    if not client_looked_up(event.platform):
        raise RetryError("this platform names each session's client itself")
    event.patient_ref, event.contact, event.match_method = patient_ref, None, "admin"
    _reset(event, now)
    return event
