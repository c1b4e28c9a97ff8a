"""The durable record of every step: practices, session events, invitations and EHR writes."""

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from plugin.core.db import Base, UTCDateTime


class PracticeStatus(StrEnum):
    """Whether a practice's platform grant still works."""

    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"  # the platform refused our refresh token
    # Uninstalled: kept, as nothing but its EHR connection and the answers still owed to its
    # EHR, until those are delivered or purge_after passes (plugin.install.lifecycle).
    UNINSTALLED = "uninstalled"


class SessionStatus(StrEnum):
    """Where a session stands in planning."""

    PENDING = "pending"
    PLANNED = "planned"
    SKIPPED = "skipped"
    UNMATCHED = "unmatched"  # no single client found; an admin can fix the record and retry
    FAILED = "failed"


class InvitationStatus(StrEnum):
    """Where an invitation stands, from planned to finished."""

    PENDING = "pending"
    SENT = "sent"
    ANSWERED = "answered"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Invitations a client may still receive or answer.
OPEN_INVITATIONS = (InvitationStatus.PENDING, InvitationStatus.SENT)


class WriteStatus(StrEnum):
    """Where an EHR write stands: waiting (maybe retrying), written, or given up."""

    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


def new_id() -> str:
    """Return a random UUID string for a primary key."""
    return str(uuid.uuid4())


class Practice(Base):
    """One installation: a practice's account on a platform, and where its EHR lives."""

    __tablename__ = "practices"
    __table_args__ = (UniqueConstraint("platform", "account_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # The adapter (webhooks.ADAPTERS key) whose webhooks and OAuth this account lives on.
    platform: Mapped[str] = mapped_column(String(32), default="standard")
    account_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    ehr_target: Mapped[str] = mapped_column(String(500))
    # active, needs_reauth once the platform refused our refresh token, or uninstalled.
    status: Mapped[str] = mapped_column(String(16), default=PracticeStatus.ACTIVE)
    # When an uninstalled practice is deleted whatever its EHR writes; None while installed.
    purge_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Fernet ciphertext of the platform OAuth token (access, refresh, expires_at); None for
    # practices added by hand.
    platform_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    ehr_connection: Mapped["EhrConnection | None"] = relationship(lazy="joined")


class SessionEvent(Base):
    """A session-ended webhook we acknowledged; stored before the 2xx, once per session.

    The webhook only records it (status pending). The planning job then resolves the client
    where the platform did not name them (Zoom), numbers the session for that client and asks
    the schedule policy whether it gets a questionnaire: planned, skipped or unmatched.
    """

    __tablename__ = "session_events"
    __table_args__ = (
        UniqueConstraint("practice_id", "platform", "event_id"),
        UniqueConstraint("practice_id", "platform", "session_id"),
        Index("ix_session_events_due", "status", "next_attempt_at"),
        Index("ix_session_events_client", "practice_id", "patient_ref", "ended_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(256))
    session_id: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # None until resolved when the platform does not name the client (Zoom).
    patient_ref: Mapped[str | None] = mapped_column(String(200))
    practitioner_ref: Mapped[str | None] = mapped_column(String(200))
    encounter_ref: Mapped[str | None] = mapped_column(String(200))
    # Fernet ciphertext of {"email", "phone"}; handed to the invitation, then purged.
    contact: Mapped[bytes | None] = mapped_column(LargeBinary)
    language: Mapped[str | None] = mapped_column(String(35))
    # The client's IANA zone, for quiet hours; the practice's zone when the platform gave none.
    timezone: Mapped[str | None] = mapped_column(String(64))
    # pending -> planned | skipped | unmatched; pending -> failed after the last attempt.
    status: Mapped[str] = mapped_column(String(16), default=SessionStatus.PENDING)
    # Why it was planned or not, in words safe to show an admin (no PHI), e.g. "min_gap".
    reason: Mapped[str | None] = mapped_column(String(64))
    # This client's how-manieth session at this practice, by ended_at (set when planned).
    session_number: Mapped[int | None] = mapped_column()
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # How a looked-up client was found: appointment | registrant | email | admin (None when
    # the platform named the client, or nobody was found).
    match_method: Mapped[str | None] = mapped_column(String(16))

    practice: Mapped[Practice] = relationship(lazy="joined")


class Invitation(Base):
    """One questionnaire offered to one client for one session, from due to answered."""

    __tablename__ = "invitations"
    __table_args__ = (
        Index("ix_invitations_due", "status", "next_attempt_at"),
        Index("ix_invitations_reminder", "status", "reminder_due_at"),
        Index("ix_invitations_client", "practice_id", "patient_ref", "due_at"),
        Index("ix_invitations_phone", "phone_digest"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    session_event_id: Mapped[str] = mapped_column(
        ForeignKey("session_events.id", ondelete="CASCADE"), unique=True
    )
    # pending -> sent -> answered | expired; pending -> failed after the last channel gave up;
    # pending | sent -> cancelled when the client opts out.
    status: Mapped[str] = mapped_column(String(16), default=InvitationStatus.PENDING)
    questionnaire: Mapped[str] = mapped_column(String(300))
    # The client, so schedules and opt-outs can find their earlier invitations.
    patient_ref: Mapped[str | None] = mapped_column(String(200))
    # The schedule policy version that chose this session.
    policy_id: Mapped[str | None] = mapped_column(String(36))
    policy_version: Mapped[int | None] = mapped_column()
    # Only the SHA-256 of the link token is searchable ...
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # ... and the token itself is kept sealed only so the reminder can repeat the same link;
    # purged with the contact details.
    token: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Fernet ciphertext of the client's email/phone; purged once answered, expired or failed.
    contact: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Keyed HMAC of the phone number, so an inbound SMS STOP finds the client without a
    # readable number at rest.
    phone_digest: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(35))
    # The client's IANA zone: quiet hours for the reminder are computed in it.
    timezone: Mapped[str | None] = mapped_column(String(64))
    # The channel order to try, e.g. ["email", "sms"], and the position reached.
    channels: Mapped[list] = mapped_column(JSON, default=lambda: ["email"])
    channel_index: Mapped[int] = mapped_column(default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Attempts on the current channel; reset when falling back to the next one.
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(16))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the one reminder is due (None: no reminder), and when it went out.
    reminder_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # SHA-256 of the Twilio Message SID of the invitation's text, so a delivery-status
    # callback finds it; cleared when the text fails and the invitation falls back.
    sms_sid_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    # When the carrier confirmed delivery of the invitation's text (Twilio "delivered").
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

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
    status: Mapped[str] = mapped_column(String(16), default=WriteStatus.PENDING)
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
    # What the rupture rule decided for the therapist's Flag, or why no flag was computed
    # (earlier scores unreadable, Flag refused); counts and reasons only, never scores.
    flag_note: Mapped[str | None] = mapped_column(String(300))

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
    # The client id the EHR gave Alliance Check's SMART App Launch registration (a public
    # client with PKCE); None until the practice registers the launch app.
    launch_client_id: Mapped[str | None] = mapped_column(String(200))


class LaunchSession(Base):
    """One therapist's launch of the in-EHR view: pending until the callback, then active.

    The browser holds only a random token in a cookie; the row is keyed by its SHA-256, and
    everything else (state and PKCE verifier, then the access token and patient) is sealed.
    """

    __tablename__ = "launch_sessions"
    __table_args__ = (Index("ix_launch_sessions_expiry", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


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


class SchedulePolicy(Base):
    """One version of a practice's (or one practitioner's) questionnaire schedule.

    Rows are never updated: `schedule set` adds the next version, and each invitation records
    the version that chose it. practitioner_ref "" is the practice-wide policy.
    """

    __tablename__ = "schedule_policies"
    __table_args__ = (UniqueConstraint("practice_id", "practitioner_ref", "version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    practitioner_ref: Mapped[str] = mapped_column(String(200), default="")
    version: Mapped[int] = mapped_column()
    # The policy's fields as plugin.planning.policy.Policy.to_dict() writes them.
    settings: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OptOut(Base):
    """A client's wish to receive nothing more from a practice; revoked only by the client."""

    __tablename__ = "opt_outs"
    __table_args__ = (Index("ix_opt_outs_client", "practice_id", "patient_ref"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    patient_ref: Mapped[str] = mapped_column(String(200))
    # How it was asked for: email (the unsubscribe link or List-Unsubscribe), sms (STOP), web.
    channel: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set when the client opts back in (SMS START); the row stays as the record.
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class InstallEvent(Base):
    """The audit trail of installs and uninstalls: ids and counts only, never PHI.

    Not tied to the practice row by a foreign key, so it outlives an uninstall.
    """

    __tablename__ = "install_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(String(36))
    platform: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[str] = mapped_column(String(128))
    # installed, reinstalled, needs_reauth, uninstalled
    action: Mapped[str] = mapped_column(String(32))
    # e.g. {"invitations_purged": 3, "tokens_revoked": true}
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """A bearer token for one practice's admin API; only its SHA-256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    # A label the admin chose ("reporting script"), never the token.
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Who made it: "admin:<platform user id>" or "cli".
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """Who changed what in a practice, and when: ids and setting names only, never PHI."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_practice", "practice_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    # "admin:<platform user id>", "api-token:<token id>" or "cli".
    actor: Mapped[str] = mapped_column(String(200))
    # e.g. schedule.set, override.removed, invitation.retried, api_token.created
    action: Mapped[str] = mapped_column(String(64))
    # e.g. {"version": 3, "fields": ["first_sessions"]}; ids and names only.
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SmsConsent(Base):
    """A client's consent to texts from a practice (or their refusal): where and when given.

    Rows are the record: a grant stays active until revoked (SMS STOP, or a later refusal).
    No phone number is kept: `phone_digest` (as on Invitation) ties a grant to the number it
    was given for; None means any number of this client (e.g. consent recorded in the EHR).
    """

    __tablename__ = "sms_consents"
    __table_args__ = (Index("ix_sms_consents_client", "practice_id", "patient_ref"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    patient_ref: Mapped[str] = mapped_column(String(200))
    phone_digest: Mapped[str | None] = mapped_column(String(64))
    # False records an explicit refusal or withdrawal sent by the practice.
    granted: Mapped[bool] = mapped_column()
    # Where the practice recorded it (intake_form, portal, verbal, written, ehr), or
    # sms_start when the client texted START.
    source: Mapped[str] = mapped_column(String(32))
    # How it reached us: webhook, ehr (a FHIR Consent) or sms.
    recorded_via: Mapped[str] = mapped_column(String(16))
    given_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When and how a grant stopped counting: sms_stop, refused (a later refusal), or ehr
    # (the EHR's Consent it came from no longer counts).
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(16))
    # The EHR's Consent a grant recorded via "ehr" came from ("Consent/<id>"); None otherwise.
    ehr_ref: Mapped[str | None] = mapped_column(String(200))


class HostPractitioner(Base):
    """An admin's mapping from a video host's email to the Practitioner they are in the EHR.

    Used before the EHR's own `Practitioner?email=` search, for hosts whose platform email is
    not on their Practitioner record. The email is staff data, but kept with care: looked up
    by a keyed digest and stored only sealed (shown to the practice's admins, never logged).
    """

    __tablename__ = "host_practitioners"
    __table_args__ = (UniqueConstraint("practice_id", "host_digest"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    practice_id: Mapped[str] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    # Keyed HMAC-SHA256 of the email, trimmed and case-folded (plugin.planning.host_map).
    host_digest: Mapped[str] = mapped_column(String(64))
    # Fernet ciphertext of the email as the admin typed it, for the list they see.
    host_email: Mapped[bytes] = mapped_column(LargeBinary)
    practitioner_ref: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
