"""Sample payloads in tests/data, and the webhook secrets the test apps are configured with."""

import json
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

DATA = Path(__file__).parents[1] / "data"
WEBHOOK_SECRETS = json.loads((DATA / "webhooks" / "secrets.json").read_text())


def load_json(relative: str) -> dict:
    """Read a JSON payload from tests/data."""
    return json.loads((DATA / relative).read_text())


# The default schedule's quiet hours, less its 10-minute delay and a margin.
_DAY_STARTS, _DAY_ENDS = time(8, 0), time(20, 30)


def recent_end(timezone: str = "America/New_York") -> datetime:
    """Return when a session that just ended ended: its invitation is due now, and not stale.

    15 minutes ago, unless that was in the default schedule's quiet hours in `timezone`; then
    20:30 there the evening before, so the send is not pushed to a morning still to come.
    Either way it is less than a day ago (schedules skip older sessions as stale).
    """
    zone = ZoneInfo(timezone)
    ended = (datetime.now(UTC) - timedelta(minutes=15)).astimezone(zone)
    if not _DAY_STARTS <= ended.time() <= _DAY_ENDS:
        day = ended.date() if ended.time() > _DAY_ENDS else ended.date() - timedelta(days=1)
        ended = datetime.combine(day, _DAY_ENDS, zone)
    return ended.replace(microsecond=250000).astimezone(UTC)


def session_ended(session_id: str | None = None, account_id: str = "demo", **client) -> dict:
    """Return the sample session.ended payload, optionally for another session or account.

    The session ended recently (recent_end()); the file keeps the sample's fixed times.
    """
    payload = load_json("webhooks/session_ended.json")
    ended = recent_end()
    payload["timestamp"] = ended.isoformat().replace("+00:00", "Z")
    payload["data"]["started_at"] = (ended - timedelta(minutes=50)).isoformat()
    payload["data"]["ended_at"] = ended.isoformat()
    payload["data"]["account_id"] = account_id
    payload["data"]["session_id"] = session_id or f"s-{uuid.uuid4().hex[:8]}"
    payload["data"]["client"].update(client)
    return payload


# A client's consent to texts as a platform sends it (data.client.sms_consent).
SMS_CONSENT = {"given_at": "2026-01-15T10:00:00Z", "source": "intake_form"}
