"""Unsubscribe links: signed, free of PHI, valid long enough for a message read weeks late."""

from datetime import datetime

from flask import current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer

from plugin.planning.optouts import OPT_OUT_CHANNELS

UNSUBSCRIBE_SALT = "unsubscribe"
# Long enough for a message read weeks late; after that the client can still reply STOP or
# ask the practice.
UNSUBSCRIBE_MAX_AGE_SECONDS = 90 * 24 * 3600


class UnsubscribeLinkError(Exception):
    """An unsubscribe link is not ours, or too old; `expired` says which."""

    def __init__(self, reason: str, *, expired: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


def _serializer() -> URLSafeTimedSerializer:
    # Links signed before a SECRET_KEY rotation keep working through Flask's fallback keys.
    config = current_app.config
    keys = [*(config.get("SECRET_KEY_FALLBACKS") or []), config["SECRET_KEY"]]
    return URLSafeTimedSerializer(keys, salt=UNSUBSCRIBE_SALT)


def unsubscribe_link(base_url: str, invitation_id: str, channel: str = "email") -> str:
    """Return the one-tap opt-out URL for an invitation: signed, no PHI, valid 90 days."""
    if channel not in OPT_OUT_CHANNELS:
        raise ValueError(f"unknown opt-out channel {channel!r}")
    signed = _serializer().dumps([invitation_id, channel])
    return f"{base_url.rstrip('/')}/u/{signed}"


def read_unsubscribe_token(signed: str, now: datetime) -> tuple[str, str]:
    """Return (invitation_id, channel) from the signed part of an unsubscribe link."""
    try:
        payload, signed_at = _serializer().loads(signed, return_timestamp=True)
    except BadSignature as exc:
        raise UnsubscribeLinkError("bad signature") from exc
    # The age is checked here rather than by itsdangerous, so that `now` can be injected.
    if (now - signed_at).total_seconds() > UNSUBSCRIBE_MAX_AGE_SECONDS:
        raise UnsubscribeLinkError("expired", expired=True)
    match payload:
        case [str() as invitation_id, str() as channel] if channel in OPT_OUT_CHANNELS:
            return invitation_id, channel
    raise UnsubscribeLinkError("unexpected payload")
