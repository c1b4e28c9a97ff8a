"""Turn an acknowledged session-ended event into a durable SessionEvent and its Invitation."""

import enum
import logging
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from plugin.crypto import Vault
from plugin.models import Invitation, Practice, SessionEvent, new_id
from webhooks.events import SessionEnded

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """What became of an event; every outcome is acknowledged with a 2xx."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    UNKNOWN_ACCOUNT = "unknown_account"


def _insert(session: Session):
    dialect = session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert


def record_session_ended(
    session: Session, event: SessionEnded, *, vault: Vault, questionnaire: str, now: datetime
) -> Outcome:
    """Store the event and a due invitation once; a replay by id or by session stores nothing."""
    # Everything that needs no database happens first: on SQLite the first statement takes
    # the write lock, and this is the hot path of every webhook.
    contact = vault.seal({"email": event.client.email, "phone": event.client.phone})
    event_row_id, invitation_id = new_id(), new_id()

    # Core on the session's connection: the ORM layer adds milliseconds here and nothing else.
    connection = session.connection()
    practice_id = connection.scalar(
        select(Practice.id).where(Practice.account_id == event.account_id)
    )
    if practice_id is None:
        log.info(
            "webhook.unknown_account",
            extra={"account_id": event.account_id, "event_id": event.event_id},
        )
        return Outcome.UNKNOWN_ACCOUNT

    # ON CONFLICT DO NOTHING covers both unique keys (webhook id, and practice+session), so
    # concurrent replays race safely inside the database instead of in Python. Core inserts,
    # not ORM objects: the ORM's unit of work was most of this function's cost (bench/).
    inserted = connection.scalar(
        _insert(session)(SessionEvent.__table__)
        .values(
            id=event_row_id,
            practice_id=practice_id,
            platform=event.platform,
            event_id=event.event_id,
            session_id=event.session_id,
            started_at=event.started_at,
            ended_at=event.ended_at,
            patient_ref=event.client.reference,
            practitioner_ref=event.practitioner.reference,
            encounter_ref=event.encounter.reference if event.encounter else None,
            received_at=now,
        )
        .on_conflict_do_nothing()
        .returning(SessionEvent.__table__.c.id)
    )
    if inserted is None:
        session.rollback()
        log.info("webhook.duplicate", extra={"practice_id": practice_id})
        return Outcome.DUPLICATE

    connection.execute(
        insert(Invitation.__table__).values(
            id=invitation_id,
            practice_id=practice_id,
            session_event_id=event_row_id,
            questionnaire=questionnaire,
            contact=contact,
            language=event.client.language,
            due_at=now,
            next_attempt_at=now,
            created_at=now,
        )
    )
    session.commit()
    log.info(
        "webhook.stored",
        extra={
            "practice_id": practice_id,
            "session_event_id": event_row_id,
            "invitation_id": invitation_id,
        },
    )
    return Outcome.STORED
