"""The durable record of every step: practices, session events, invitations and EHR writes."""

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from plugin.db import Base, UTCDateTime


def new_id() -> str:
    """Return a random UUID string for a primary key."""
    return str(uuid.uuid4())


class Practice(Base):
    """One installation: a practice's account on a platform, and where its EHR lives."""

    __tablename__ = "practices"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    ehr_target: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SessionEvent(Base):
    """A session-ended webhook we acknowledged; stored before the 2xx, once per session."""

    __tablename__ = "session_events"
    __table_args__ = (
        UniqueConstraint("practice_id", "platform", "event_id"),
        UniqueConstraint("practice_id", "platform", "session_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(256))
    session_id: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    patient_ref: Mapped[str] = mapped_column(String(200))
    practitioner_ref: Mapped[str] = mapped_column(String(200))
    encounter_ref: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Invitation(Base):
    """One questionnaire offered to one client for one session, from due to answered."""

    __tablename__ = "invitations"
    __table_args__ = (Index("ix_invitations_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    session_event_id: Mapped[str] = mapped_column(
        ForeignKey("session_events.id", ondelete="CASCADE"), unique=True
    )
    # pending -> sent -> answered | expired; pending -> failed after the last attempt.
    status: Mapped[str] = mapped_column(String(16), default="pending")
    questionnaire: Mapped[str] = mapped_column(String(300))
    # Only the SHA-256 of the link token; the token itself exists only in the message sent.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Fernet ciphertext of the client's email/phone; purged once answered, expired or failed.
    contact: Mapped[bytes | None] = mapped_column(LargeBinary)
    language: Mapped[str] = mapped_column(String(35))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(16))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    session_event: Mapped[SessionEvent] = relationship(lazy="joined")
    practice: Mapped[Practice] = relationship(lazy="joined")


class EhrWrite(Base):
    """A scored response waiting to reach the EHR; recorded before the client is thanked."""

    __tablename__ = "ehr_writes"
    __table_args__ = (Index("ix_ehr_writes_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    invitation_id: Mapped[str] = mapped_column(
        ForeignKey("invitations.id", ondelete="CASCADE"), unique=True
    )
    # pending -> done | dead
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # Fernet ciphertext of the transaction Bundle (it holds answers); purged once written.
    bundle: Mapped[bytes | None] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    practice: Mapped[Practice] = relationship(lazy="joined")
