"""How many invitations one practice sent a client, and what became of them."""

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from plugin.core.models import Invitation, InvitationStatus


@dataclass(frozen=True)
class InvitationCounts:
    """Sent (delivered at least once), answered, missed (expired unanswered), still open."""

    sent: int
    answered: int
    missed: int
    waiting: int


def count_invitations(db: Session, practice_id: str, patient_ref: str) -> InvitationCounts:
    """Count this practice's invitations for this client; never another practice's."""
    rows = db.execute(
        select(Invitation.status, func.count())
        .where(Invitation.practice_id == practice_id, Invitation.patient_ref == patient_ref)
        .group_by(Invitation.status)
    ).all()
    by_status = {status: n for status, n in rows}
    answered = by_status.get(InvitationStatus.ANSWERED, 0)
    missed = by_status.get(InvitationStatus.EXPIRED, 0)
    waiting = by_status.get(InvitationStatus.SENT, 0)
    return InvitationCounts(answered + missed + waiting, answered, missed, waiting)
