"""Sign and post Standard Webhooks deliveries to the app under test, as a platform does."""

import json
import uuid
from datetime import UTC, datetime

from tests.support.data import WEBHOOK_SECRETS
from webhooks.standard import sign


class Webhooks:
    """Sign and post webhook deliveries the way a platform does."""

    def __init__(self, client, secret: str = WEBHOOK_SECRETS["platform"]):
        self.client = client
        self.secret = secret

    def headers(self, body: bytes, msg_id: str | None = None, at: datetime | None = None) -> dict:
        """Return Standard Webhooks headers for body."""
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        return sign(self.secret, msg_id, at or datetime.now(UTC), body)

    def post(self, payload: dict | bytes, msg_id: str | None = None, **kwargs):
        """Sign and post a delivery; returns the response."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = kwargs.pop("headers", None) or self.headers(body, msg_id, kwargs.pop("at", None))
        return self.client.post(
            "/webhooks/standard",
            data=body,
            headers=headers,
            content_type="application/json",
            **kwargs,
        )
