"""What needs an admin's hand: failed invitations, unmatched sessions, dead-lettered EHR writes.

Plain functions on a SQLAlchemy session, scoped to one practice, for the console and the API.
Each problem carries ids, times and reason codes only; the "why" is in plain words.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.core import audit
from plugin.core.models import (
    EhrWrite,
    Invitation,
    InvitationStatus,
    SessionEvent,
    SessionStatus,
    WriteStatus,
)
from plugin.ehr.dead_letters import RequeueError, requeue_dead
from plugin.intake.retry import (
    RetryError,
    client_looked_up,
    link_session,
    retry_failed_invitation,
    retry_sessions,
)

KINDS = ("invitation", "session", "ehr_write")
LIMIT = 100

# Reason codes stored by planning, in words an admin can act on.
SESSION_REASONS = {
    "no_participants": "The platform listed nobody but your own staff in this session.",
    "no_email": "None of the attendees had an email address the platform would share.",
    "no_patient": "No patient in your EHR has an attendee's email address.",
    "several_patients": "More than one patient in your EHR has an attendee's email address.",
    "platform_needs_reauth": "The platform no longer accepts our access: install it again.",
    "platform_unavailable": "The platform did not answer when we asked who attended.",
    "platform_refused": "The platform refused to say who attended this session.",
    "ehr_not_connected": "Your EHR is not connected yet, so the client could not be looked up.",
    "ehr_no_token": "Your EHR did not let us search for the client.",
    "ehr_unavailable": "Your EHR did not answer when we looked the client up.",
    "ehr_refused": "Your EHR refused the search for the client.",
    "no_match": "Neither your schedule, the registrants nor the attendees named a patient.",
    "several_matches": "More than one patient could have been the client (a double booking, "
    "a couples session or a shared email address).",
    "linked_patient_not_found": "The patient this session was linked to is not a current "
    "patient in your EHR.",
}


class ProblemNotFound(LookupError):
    """No such problem in this practice (or it is no longer a problem)."""


class RetryRefused(ValueError):
    """The problem exists but cannot be retried; the message says why in plain words."""


@dataclass(frozen=True)
class Problem:
    """One thing that went wrong: what, when, why (plain words), and whether a retry can help."""

    kind: str  # "invitation" | "session" | "ehr_write"
    id: str
    at: datetime
    why: str
    detail: str  # the stored code or error text (no PHI), for support
    retryable: bool
    # When a retry cannot help, why not.
    cannot_retry: str | None = None
    # Whether an admin may name the client by hand (an unmatched session).
    linkable: bool = False


def _invitation_why(error: str | None) -> str:
    text = error or ""
    if "no address" in text:
        return "The client had no email address or phone number for the channels in use."
    if "no consent to texts" in text:
        return (
            "The client could not be emailed, and no consent to texts is on record "
            "(send it as sms_consent with the session, record it as a Consent in your EHR, "
            "or the client can text START)."
        )
    if text.startswith("sms"):
        return "The text message could not be delivered."
    if text.startswith("email"):
        return "The email could not be delivered."
    return "The invitation could not be delivered."


def _write_why(error: str | None) -> str:
    text = error or ""
    if any(code in text for code in ("400", "422", "OperationOutcome")):
        return "Your EHR refused the response as written; check what it requires, then retry."
    if any(code in text for code in ("401", "403", "token")):
        return "Your EHR did not accept our credentials; check the connection, then retry."
    return "Your EHR could not be reached for 72 hours; retry once it is back."


def failed_invitations(session: Session, practice_id: str, limit: int = LIMIT) -> list[Problem]:
    """Return a practice's failed invitations, newest first."""
    rows = session.scalars(
        select(Invitation)
        .where(Invitation.practice_id == practice_id, Invitation.status == InvitationStatus.FAILED)
        .order_by(Invitation.due_at.desc())
        .limit(limit)
    ).unique()
    problems = []
    for invitation in rows:
        looked_up = client_looked_up(invitation.session_event.platform)
        problems.append(
            Problem(
                kind="invitation",
                id=invitation.id,
                at=invitation.next_attempt_at,
                why=_invitation_why(invitation.last_error),
                detail=invitation.last_error or "",
                retryable=looked_up,
                cannot_retry=None
                if looked_up
                else "The client's contact details were deleted when delivery failed.",
            )
        )
    return problems


def unmatched_sessions(session: Session, practice_id: str, limit: int = LIMIT) -> list[Problem]:
    """Return a practice's unmatched and failed sessions, newest first."""
    rows = session.scalars(
        select(SessionEvent)
        .where(
            SessionEvent.practice_id == practice_id,
            SessionEvent.status.in_((SessionStatus.UNMATCHED, SessionStatus.FAILED)),
        )
        .order_by(SessionEvent.ended_at.desc())
        .limit(limit)
    ).unique()
    return [
        Problem(
            kind="session",
            id=event.id,
            at=event.ended_at,
            why=SESSION_REASONS.get(event.reason or "", "We could not plan this session."),
            detail=event.reason or event.last_error or "",
            retryable=event.patient_ref is None,
            cannot_retry=None
            if event.patient_ref is None
            else "The client's contact details were deleted when planning failed.",
            linkable=event.status == SessionStatus.UNMATCHED,
        )
        for event in rows
    ]


def dead_writes(session: Session, practice_id: str, limit: int = LIMIT) -> list[Problem]:
    """Return a practice's dead-lettered EHR writes, newest first."""
    rows = session.scalars(
        select(EhrWrite)
        .where(EhrWrite.practice_id == practice_id, EhrWrite.status == WriteStatus.DEAD)
        .order_by(EhrWrite.created_at.desc())
        .limit(limit)
    ).unique()
    return [
        Problem(
            kind="ehr_write",
            id=write.id,
            at=write.next_attempt_at,
            why=_write_why(write.last_error),
            # Status and exception type only are stored; diagnostics stay sealed in `outcome`.
            detail=(write.last_error or "")[:200],
            retryable=True,
        )
        for write in rows
    ]


def list_problems(session: Session, practice_id: str, limit: int = LIMIT) -> dict:
    """Return {"invitation": [...], "session": [...], "ehr_write": [...]} for one practice."""
    return {
        "invitation": failed_invitations(session, practice_id, limit),
        "session": unmatched_sessions(session, practice_id, limit),
        "ehr_write": dead_writes(session, practice_id, limit),
    }


def count_problems(session: Session, practice_id: str) -> int:
    """Return how many problems a practice has (up to LIMIT of each kind)."""
    return sum(len(found) for found in list_problems(session, practice_id).values())


def retry(
    session: Session, practice_id: str, kind: str, problem_id: str, now: datetime, actor: str
) -> None:
    """Retry one problem of this practice, audit it and commit.

    Raises ProblemNotFound when the id is not this practice's problem of that kind, and
    RetryRefused when a retry cannot help; nothing changes then.
    """
    if kind not in KINDS:
        raise ProblemNotFound(kind)
    try:
        if kind == "invitation":
            _require(session, Invitation, problem_id, practice_id, (InvitationStatus.FAILED,))
            retry_failed_invitation(session, practice_id, problem_id, now)
        elif kind == "session":
            statuses = (SessionStatus.UNMATCHED, SessionStatus.FAILED)
            _require(session, SessionEvent, problem_id, practice_id, statuses)
            retry_sessions(session, now, session_ids=[problem_id], practice_id=practice_id)
        else:
            requeue_dead(session, now, write_ids=[problem_id], practice_id=practice_id)
    except RequeueError as exc:
        session.rollback()
        raise ProblemNotFound(problem_id) from exc
    except RetryError as exc:
        session.rollback()
        raise RetryRefused(str(exc)) from exc
    audit.record(session, practice_id, actor, f"{kind}.retried", now=now, id=problem_id)
    session.commit()


def link(
    session: Session, practice_id: str, problem_id: str, patient_ref: str, now: datetime, actor
) -> None:
    """Name an unmatched session's client by hand, audit it and commit; it is planned next.

    Raises ProblemNotFound for a session that is not this practice's unmatched one, and
    RetryRefused for a reference that is not Patient/ID; nothing changes then.
    """
    _require(session, SessionEvent, problem_id, practice_id, (SessionStatus.UNMATCHED,))
    try:
        link_session(session, now, problem_id, patient_ref.strip(), practice_id=practice_id)
    except RetryError as exc:
        session.rollback()
        raise RetryRefused(str(exc)) from exc
    audit.record(session, practice_id, actor, "session.linked", now=now, id=problem_id)
    session.commit()


def _require(session: Session, model, problem_id: str, practice_id: str, statuses) -> None:
    """Raise ProblemNotFound unless the row is this practice's, in one of these states."""
    found = session.scalar(
        select(model.id).where(
            model.id == problem_id, model.practice_id == practice_id, model.status.in_(statuses)
        )
    )
    if found is None:
        raise ProblemNotFound(problem_id)
