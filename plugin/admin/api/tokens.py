"""API tokens: made once and shown once, stored as a SHA-256, one practice each, revocable.

The console and the `api-token` command make, list and revoke them with these functions; the
API's ResourceProtector checks them with ApiTokenValidator.
"""

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from authlib.oauth2.rfc6749 import TokenMixin
from authlib.oauth2.rfc6750 import BearerTokenValidator
from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.core import audit
from plugin.core.db import get_session
from plugin.core.models import ApiToken

# A prefix makes a leaked token easy to find with grep and secret scanners.
PREFIX = "acat_"
# 32 random bytes: 256 bits, URL-safe base64 without padding (43 characters).
TOKEN_BYTES = 32
TOKEN_LENGTH = len(PREFIX) + 43
NAME_MAX = 100
EXPIRES_DAYS_MAX = 3650
# Writing last_used_at on every request would make each API call a write.
LAST_USED_EVERY = timedelta(minutes=1)


class TokenError(ValueError):
    """A token cannot be made as asked; `field` names the setting at fault."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class TokenNotFoundError(LookupError):
    """No such token in this practice."""


def hash_token(plaintext: str) -> str:
    """Return the SHA-256 hex digest a token is stored and looked up by."""
    return hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).hexdigest()


def _checked_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise TokenError("a token's name must not be empty, e.g. reporting script", "name")
    name = name.strip()
    if len(name) > NAME_MAX or any(unicodedata.category(c).startswith("C") for c in name):
        raise TokenError(
            f"a token's name must be plain text of at most {NAME_MAX} characters", "name"
        )
    return name


def _checked_days(expires_days: object) -> int | None:
    if expires_days is None:
        return None
    if (
        isinstance(expires_days, bool)
        or not isinstance(expires_days, int)
        or not 1 <= expires_days <= EXPIRES_DAYS_MAX
    ):
        raise TokenError(
            f"expires_days must be a whole number of days from 1 to {EXPIRES_DAYS_MAX}",
            "expires_days",
        )
    return expires_days


def token_input_errors(name: object, expires_days: object) -> dict[str, str]:
    """Return what is wrong with a token's name and expiry, by field; empty if nothing is.

    create_token checks the same; a form uses this to name every bad field at once.
    """
    errors = {}
    for check, value in ((_checked_name, name), (_checked_days, expires_days)):
        try:
            check(value)
        except TokenError as exc:
            errors[exc.field] = str(exc)
    return errors


def create_token(
    session: Session,
    practice_id: str,
    name: str,
    created_by: str,
    expires_days: int | None = None,
    now: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Make a token for one practice, audited; return it and its plaintext, shown only once.

    TokenError names a bad name or expiry. The caller commits.
    """
    now = now or datetime.now(UTC)
    name, days = _checked_name(name), _checked_days(expires_days)
    plaintext = PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    token = ApiToken(
        practice_id=practice_id,
        name=name,
        token_hash=hash_token(plaintext),
        created_by=created_by,
        created_at=now,
        expires_at=now + timedelta(days=days) if days else None,
    )
    session.add(token)
    session.flush()
    audit.record(session, practice_id, created_by, "api_token.created", now=now, token_id=token.id)
    return token, plaintext


def list_tokens(session: Session, practice_id: str) -> list[ApiToken]:
    """Return a practice's tokens, newest first, revoked and expired ones included."""
    return list(
        session.scalars(
            select(ApiToken)
            .where(ApiToken.practice_id == practice_id)
            .order_by(ApiToken.created_at.desc(), ApiToken.id)
        )
    )


def revoke_token(
    session: Session, practice_id: str, token_id: str, *, actor: str, now: datetime | None = None
) -> ApiToken:
    """Revoke one of a practice's tokens, audited; revoking twice changes nothing.

    TokenNotFoundError if the practice has no such token. The caller commits.
    """
    token = session.scalar(
        select(ApiToken).where(ApiToken.id == token_id, ApiToken.practice_id == practice_id)
    )
    if token is None:
        raise TokenNotFoundError(f"no API token {token_id} at this practice")
    if token.revoked_at is None:
        now = now or datetime.now(UTC)
        token.revoked_at = now
        audit.record(session, practice_id, actor, "api_token.revoked", now=now, token_id=token.id)
    return token


def token_state(token: ApiToken, now: datetime) -> str:
    """Return "active", "expired" or "revoked"."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    return "active"


@dataclass
class BearerToken(TokenMixin):
    """What authlib checks about a presented token: live, and (no scopes) for any call."""

    row: ApiToken
    now: datetime

    def check_client(self, client) -> bool:
        """Return False: API tokens belong to no OAuth client."""
        return False

    def get_scope(self) -> str:
        """Return no scope: a token reaches everything of its one practice."""
        return ""

    def get_expires_in(self) -> int:
        """Return seconds left, 0 for tokens that never expire."""
        if self.row.expires_at is None:
            return 0
        return max(0, int((self.row.expires_at - self.now).total_seconds()))

    def is_expired(self) -> bool:
        """Return whether the token's expiry has passed."""
        return token_state(self.row, self.now) == "expired"

    def is_revoked(self) -> bool:
        """Return whether an admin revoked the token."""
        return self.row.revoked_at is not None


class ApiTokenValidator(BearerTokenValidator):
    """Find a presented token by its hash in the request's database session."""

    def authenticate_token(self, token_string: str) -> BearerToken | None:
        """Return the token for this string, or None (authlib then answers invalid_token)."""
        # Anything not shaped like our tokens is refused without touching the database.
        if len(token_string) != TOKEN_LENGTH or not token_string.startswith(PREFIX):
            return None
        row = get_session().scalar(
            select(ApiToken).where(ApiToken.token_hash == hash_token(token_string))
        )
        return None if row is None else BearerToken(row, datetime.now(UTC))

    def validate_token(self, token, scopes, request) -> None:
        """Refuse a missing, expired or revoked token; note when a live one was last used."""
        super().validate_token(token, scopes, request)
        row = token.row
        if row.last_used_at is None or token.now - row.last_used_at >= LAST_USED_EVERY:
            row.last_used_at = token.now
            get_session().commit()
