"""Call the JSON API with a practice's bearer token, as a script of that practice would."""

from plugin.admin.api.tokens import create_token


class ApiClient:
    """A test client that sends one practice's bearer token with every call."""

    def __init__(self, client, plaintext: str):
        self.client = client
        self.headers = {"Authorization": f"Bearer {plaintext}"}

    def call(self, method: str, path: str, body=None, **kwargs):
        """Send one call; a dict or list body goes as JSON."""
        if body is not None:
            kwargs["json"] = body
        return self.client.open(path, method=method, headers=self.headers, **kwargs)


def token_for(db, practice, name: str = "tests", **kwargs) -> str:
    """Make and commit a token for practice; return its plaintext."""
    _, plaintext = create_token(db, practice.id, name, "cli", **kwargs)
    db.commit()
    return plaintext


def stuck_session(db, practice, *, status: str = "unmatched", patient_ref: str | None = None):
    """Add a session planning could not finish (unmatched, or failed) and return it."""
    from datetime import UTC, datetime
    from uuid import uuid4

    from plugin.core.models import SessionEvent

    now = datetime.now(UTC)
    event = SessionEvent(
        practice_id=practice.id,
        platform="zoom",
        event_id=f"evt-{uuid4().hex}",
        session_id=f"s-{uuid4().hex[:8]}",
        started_at=now,
        ended_at=now,
        patient_ref=patient_ref,
        status=status,
        reason="no_match" if status == "unmatched" else None,
        next_attempt_at=now,
        received_at=now,
    )
    db.add(event)
    db.commit()
    return event
