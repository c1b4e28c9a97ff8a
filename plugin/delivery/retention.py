"""Forget what is no longer needed: finished invitations and EHR writes past the retention."""

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select

from plugin.core.models import EhrWrite, Invitation, InvitationStatus, WriteStatus

log = logging.getLogger(__name__)

# States nothing will move an invitation out of again.
FINISHED = (
    InvitationStatus.ANSWERED,
    InvitationStatus.EXPIRED,
    InvitationStatus.FAILED,
    InvitationStatus.CANCELLED,
)


def purge_finished(sessions, now: datetime, keep: timedelta) -> int:
    """Delete finished invitations older than `keep` (with their done or dead EHR writes).

    An invitation whose answers still wait for the EHR is kept whatever its age: those are
    acknowledged answers. Session events stay: a client's session count is built from them,
    and they hold no contact details once planned.
    """
    cutoff = now - keep
    waiting = exists(
        select(EhrWrite.id).where(
            EhrWrite.invitation_id == Invitation.id, EhrWrite.status == WriteStatus.PENDING
        )
    )
    with sessions() as session, session.begin():
        result = session.execute(
            delete(Invitation)
            .where(Invitation.status.in_(FINISHED), Invitation.created_at < cutoff, ~waiting)
            .execution_options(synchronize_session=False)
        )
    if result.rowcount:
        log.info("retention.purged", extra={"invitations": result.rowcount})
    return result.rowcount
