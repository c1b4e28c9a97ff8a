"""Launch sessions: a random token in a tab-long cookie, everything else sealed in the database.

A row starts `pending` (holding the launch's state and PKCE verifier) and becomes `active`
(holding the access token and patient) under a new token at the callback, so a state is
used once and a token seen before the login is worth nothing after it. Rows expire: 10
minutes to finish a launch, at most an hour of viewing; expired rows are purged whenever a
launch starts.
"""

from datetime import datetime, timedelta

from flask import Response, current_app
from sqlalchemy import delete
from sqlalchemy.orm import Session

from plugin.core.crypto import hash_token, new_token, vault
from plugin.core.models import LaunchSession

COOKIE = "alliance_launch"
PENDING, ACTIVE = "pending", "active"
PENDING_LIFETIME = timedelta(minutes=10)
SESSION_LIFETIME = timedelta(hours=1)


def purge(db: Session, now: datetime) -> None:
    """Delete every launch session past its expiry."""
    db.execute(delete(LaunchSession).where(LaunchSession.expires_at <= now))


def start(db: Session, practice_id: str, data: dict, now: datetime) -> str:
    """Store a pending launch and return the token for the browser's cookie."""
    purge(db, now)
    return _store(db, practice_id, PENDING, data, now, now + PENDING_LIFETIME)


def find(
    db: Session, token: str | None, status: str, now: datetime
) -> tuple[LaunchSession, dict] | None:
    """Return the live session of this status the cookie names, and its opened data."""
    if not token or len(token) > 100:
        return None
    row = db.get(LaunchSession, hash_token(token))
    if row is None or row.status != status or row.expires_at <= now:
        return None
    return row, vault().open(row.sealed)


def activate(db: Session, practice_id: str, data: dict, lifetime: timedelta, now) -> str:
    """Store the active session under a new token (never the pending one's); return it."""
    return _store(db, practice_id, ACTIVE, data, now, now + min(lifetime, SESSION_LIFETIME))


def _store(
    db: Session, practice_id: str, status: str, data: dict, now: datetime, expires_at: datetime
) -> str:
    """Commit a launch session keyed by a new token's hash, its data sealed; return the token."""
    token, digest = new_token()
    db.add(
        LaunchSession(
            id=digest,
            practice_id=practice_id,
            status=status,
            sealed=vault().seal(data),
            created_at=now,
            expires_at=expires_at,
        )
    )
    db.commit()
    return token


def end(db: Session, row: LaunchSession) -> None:
    """Delete a launch session (its state is used up, or the launch failed)."""
    db.delete(row)
    db.commit()


def set_cookie(response: Response, token: str) -> None:
    """Give the browser the session token: no Max-Age, so it ends with the tab."""
    secure = current_app.config["PUBLIC_BASE_URL"].startswith("https://")
    # Inside the EHR's iframe we are a third party: only SameSite=None (which needs Secure)
    # is sent there. Plain-http development gets Lax, which browsers accept without Secure.
    response.set_cookie(
        COOKIE,
        token,
        path="/launch",
        httponly=True,
        secure=secure,
        samesite="None" if secure else "Lax",
    )
