"""Sample payloads in tests/data, and the webhook secrets the test apps are configured with."""

import json
import uuid
from pathlib import Path

DATA = Path(__file__).parents[1] / "data"
WEBHOOK_SECRETS = json.loads((DATA / "webhooks" / "secrets.json").read_text())


def load_json(relative: str) -> dict:
    """Read a JSON payload from tests/data."""
    return json.loads((DATA / relative).read_text())


def session_ended(session_id: str | None = None, account_id: str = "demo", **client) -> dict:
    """Return the sample session.ended payload, optionally for another session or account."""
    payload = load_json("webhooks/session_ended.json")
    payload["data"]["account_id"] = account_id
    payload["data"]["session_id"] = session_id or f"s-{uuid.uuid4().hex[:8]}"
    payload["data"]["client"].update(client)
    return payload


# A client's consent to texts as a platform sends it (data.client.sms_consent).
SMS_CONSENT = {"given_at": "2026-01-15T10:00:00Z", "source": "intake_form"}
