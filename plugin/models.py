"""The durable record of every step: practices, session events, invitations and EHR writes."""

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
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

    ehr_connection: Mapped["EhrConnection | None"] = relationship(lazy="joined")


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
    # How it reached the EHR: transaction, individual, observations-only or ndjson.
    path: Mapped[str | None] = mapped_column(String(32))
    # Fernet ciphertext of the OperationOutcome a dead-lettered write was refused with: its
    # diagnostics may quote the resource, so it is sealed like the bundle.
    outcome: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Fernet ciphertext of the transaction Bundle (it holds answers); purged once written.
    bundle: Mapped[bytes | None] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set at the first failure: retries stop (dead letter) after this moment.
    retry_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    practice: Mapped[Practice] = relationship(lazy="joined")


class EhrConnection(Base):
    """How to reach one practice's FHIR server, as checked by `alliance-check ehr connect`."""

    __tablename__ = "ehr_connections"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(
        ForeignKey("practices.id", ondelete="CASCADE"), unique=True
    )
    fhir_base: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(200))
    token_endpoint: Mapped[str] = mapped_column(String(500))
    # What discovery and the CapabilityStatement said, e.g. {"transaction": true, ...}.
    facts: Mapped[dict] = mapped_column(JSON)
    scope: Mapped[str] = mapped_column(String(500))
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SigningKey(Base):
    """A key we sign client assertions with; published in our JWKS until retired."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(8))
    # Fernet ciphertext of the PKCS#8 PEM private key.
    private_key: Mapped[bytes] = mapped_column(LargeBinary)
    public_jwk: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
