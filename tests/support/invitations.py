"""Build invitations straight in the database, as planning and dispatch would leave them."""

import uuid
from datetime import UTC, datetime, timedelta


class InvitationFactory:
    """Build sent (or pending) invitations directly, as planning and dispatch would leave them."""

    def __init__(self, app, db):
        self.app = app
        self.db = db
        self.vault = app.extensions["vault"]

    def __call__(
        self,
        practice,
        *,
        patient_ref: str = "Patient/c1",
        status: str = "sent",
        language: str = "en",
        email: str | None = "sam.rivera@example.org",
        phone: str | None = None,
        now: datetime | None = None,
    ):
        """Return (invitation, link token) for a new invitation of this client."""
        from plugin.core.crypto import new_token
        from plugin.core.models import Invitation, SessionEvent
        from plugin.planning.optouts import phone_digest
        from plugin.survey.instruments import default_instrument

        now = now or datetime.now(UTC)
        with self.app.app_context():
            canonical = default_instrument().canonical
            digest = phone_digest(phone) if phone else None
        event = SessionEvent(
            practice_id=practice.id,
            platform="standard",
            event_id=f"evt-{uuid.uuid4().hex}",
            session_id=f"s-{uuid.uuid4().hex[:8]}",
            started_at=now - timedelta(minutes=50),
            ended_at=now,
            patient_ref=patient_ref,
            status="planned",
            next_attempt_at=now,
            received_at=now,
        )
        self.db.add(event)
        self.db.flush()
        token, token_hash = new_token()
        invitation = Invitation(
            practice_id=practice.id,
            session_event_id=event.id,
            status=status,
            questionnaire=canonical,
            patient_ref=patient_ref,
            contact=self.vault.seal({"email": email, "phone": phone}),
            phone_digest=digest,
            language=language,
            channels=["sms", "email"] if phone else ["email"],
            due_at=now,
            next_attempt_at=now,
            created_at=now,
        )
        if status == "sent":
            invitation.token_hash, invitation.token = token_hash, self.vault.seal(token)
            invitation.sent_at, invitation.expires_at = now, now + timedelta(hours=72)
        self.db.add(invitation)
        self.db.commit()
        return invitation, token
