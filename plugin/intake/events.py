"""Turn an acknowledged session-ended event into a durable SessionEvent, ready to plan."""

import enum
import functools
import logging
from datetime import datetime

from sqlalchemy import Insert, bindparam, select
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


# The columns a webhook fills; the practice's id comes from the SELECT, the rest are bound.
_COLUMNS = (
    "id",
    "practice_id",
    "platform",
    "event_id",
    "session_id",
    "started_at",
    "ended_at",
    "patient_ref",
    "practitioner_ref",
    "encounter_ref",
    "contact",
    "language",
    "timezone",
    "status",
    "next_attempt_at",
    "attempts",
    "received_at",
)


@functools.cache
def _store_statement(dialect: str) -> Insert:
    """Build (once per dialect) the one statement that stores an event for a known account.

    INSERT ... SELECT FROM practices finds the practice and stores the row in one round trip,
    and ON CONFLICT DO NOTHING covers both unique keys (webhook id, and practice+session), so
    concurrent replays race safely inside the database instead of in Python. Built once with
    bound parameters, it skips SQLAlchemy's per-call construction and cache-key work, which
    were most of a webhook's cost (bench/).
    """
    events, practices = SessionEvent.__table__, Practice.__table__
    values = [
        practices.c.id if name == "practice_id" else bindparam(name, type_=events.c[name].type)
        for name in _COLUMNS
    ]
    source = select(*values).where(
        practices.c.platform == bindparam("platform"),
        practices.c.account_id == bindparam("account_id"),
    )
    insert = (postgresql if dialect == "postgresql" else sqlite).insert
    return (
        insert(events)
        .from_select(_COLUMNS, source)
        .on_conflict_do_nothing()
        .returning(events.c.practice_id)
    )


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
        _store_statement(connection.dialect.name),
        {
            "id": event_row_id,
            "platform": event.platform,
            "account_id": event.account_id,
            "event_id": event.event_id,
            "session_id": event.session_id,
            "started_at": event.started_at,
            "ended_at": event.ended_at,
            "patient_ref": client.reference if client else None,
            "practitioner_ref": event.practitioner.reference if event.practitioner else None,
            "encounter_ref": event.encounter.reference if event.encounter else None,
            "contact": contact,
            "language": client.language if client else None,
            "timezone": client.timezone if client else None,
            "status": SessionStatus.PENDING,
            "next_attempt_at": now,
            "attempts": 0,
            "received_at": now,
        },
    )
    if practice_id is None:
        # Nothing stored: the account is unknown, or this is a replay. Only these rare
        # deliveries pay for a second query to say which.
        practice_id = connection.scalar(
            select(Practice.id).where(
                Practice.platform == event.platform, Practice.account_id == event.account_id
            )
        )
        session.rollback()
        if practice_id is None:
            log.info(
                "webhook.unknown_account",
                extra={"account_id": event.account_id, "event_id": event.event_id},
            )
            return Outcome.UNKNOWN_ACCOUNT
        log.info("webhook.duplicate", extra={"practice_id": practice_id})
        return Outcome.DUPLICATE

    session.commit()
    log.info(
        "webhook.stored",
        extra={"practice_id": practice_id, "session_event_id": event_row_id},
    )
    return Outcome.STORED
