"""The practice's audit trail: who changed what and when, in ids and setting names only."""

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.core.models import AuditEvent


def record(
    session: Session,
    practice_id: str,
    actor: str,
    action: str,
    now: datetime | None = None,
    **detail: object,
) -> AuditEvent:
    """Add one audit line to the session; the caller commits it with the change it describes.

    `detail` holds ids, counts and setting names, never health data or contact details.
    """
    event = AuditEvent(
        practice_id=practice_id,
        actor=actor,
        action=action,
        detail=detail,
        created_at=now or datetime.now(UTC),
    )
    session.add(event)
    return event


def recent(session: Session, practice_id: str, limit: int = 100) -> list[AuditEvent]:
    """Return a practice's newest audit lines first."""
    return list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.practice_id == practice_id)
            .order_by(AuditEvent.created_at.desc(), AuditEvent.id)
            .limit(limit)
        )
    )
