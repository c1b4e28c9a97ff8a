"""Turn an acknowledged session-ended event into a durable SessionEvent, ready to plan."""

import enum
import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from plugin.core.crypto import Vault
from plugin.core.models import Practice, SessionEvent, SessionStatus, new_id
from webhooks.events import ClientContact, SessionEnded

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """What became of an event; every outcome is acknowledged with a 2xx."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    UNKNOWN_ACCOUNT = "unknown_account"


def _insert(session: Session):
    dialect = session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert


def _contact(client: ClientContact) -> dict:
    """Return what is sealed for planning: how to reach the client, and their consent to texts."""
    contact = {"email": client.email, "phone": client.phone}
    consent = client.sms_consent
    if consent is not None:
        # Recorded by planning (plugin.planning.consent), off this hot path.
        contact["sms_consent"] = {
            "granted": consent.granted,
            "given_at": consent.given_at.isoformat(),
            "source": consent.source,
        }
    return contact


def record_session_ended(
    session: Session, event: SessionEnded, *, vault: Vault, now: datetime
) -> Outcome:
    """Store the event once, due for planning; a replay by id or by session stores nothing.

    Whether and when the client is asked is the planning job's decision (plugin.planning.plan): it
    needs the schedule, the client's history and, for Zoom, a look-up that takes longer than
    the platform waits for an answer.
    """
    # Everything that needs no database happens first: on SQLite the first statement takes
    # the write lock, and this is the hot path of every webhook.
    client = event.client
    contact = vault.seal(_contact(client)) if client else None
    event_row_id = new_id()

    # Core on the session's connection: the ORM layer adds milliseconds here and nothing else.
    connection = session.connection()
    practice_id = connection.scalar(
        select(Practice.id).where(
            Practice.platform == event.platform, Practice.account_id == event.account_id
        )
    )
    if practice_id is None:
        log.info(
            "webhook.unknown_account",
            extra={"account_id": event.account_id, "event_id": event.event_id},
        )
        return Outcome.UNKNOWN_ACCOUNT

    # ON CONFLICT DO NOTHING covers both unique keys (webhook id, and practice+session), so
    # concurrent replays race safely inside the database instead of in Python. A Core insert,
    # not an ORM object: the ORM's unit of work was most of this function's cost (bench/).
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
            patient_ref=client.reference if client else None,
            practitioner_ref=event.practitioner.reference if event.practitioner else None,
            encounter_ref=event.encounter.reference if event.encounter else None,
            contact=contact,
            language=client.language if client else None,
            timezone=client.timezone if client else None,
            status=SessionStatus.PENDING,
            next_attempt_at=now,
            attempts=0,
            received_at=now,
        )
        .on_conflict_do_nothing()
        .returning(SessionEvent.__table__.c.id)
    )
    if inserted is None:
        session.rollback()
        log.info("webhook.duplicate", extra={"practice_id": practice_id})
        return Outcome.DUPLICATE

    session.commit()
    log.info(
        "webhook.stored",
        extra={"practice_id": practice_id, "session_event_id": event_row_id},
    )
    return Outcome.STORED
