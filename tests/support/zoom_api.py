"""A stand-in for Zoom's REST API, on pytest-httpserver, and helpers to act as Zoom in tests.

Zoom's API cannot run here, so this serves what Alliance Check asks of it, in the shapes Zoom
documents, and nothing more:

- GET /v2/past_meetings/{meetingUUID}/participants: {"participants": [...], "next_page_token"},
  paged by page_size; the bearer token decides the account, and an account sees only its own
  meetings (404 otherwise, as Zoom answers for a meeting it cannot find). The UUID segment is
  decoded as Zoom does: a UUID that starts with "/" or holds "//" must come double-encoded.
- GET /v2/past_meetings/{meetingUUID}: the instance's details, with its numeric `id` and
  `host_id` (same encoding and account rules).
- GET /v2/users/{userId}: the user's record, with their `email` (the meeting's host).
- GET /v2/meetings/{meetingId}/registrants: {"registrants": [...], "next_page_token"}, by the
  numeric id; 400 with code 3000 for a meeting that took no registrations, as Zoom answers.
- POST /oauth/revoke: 200, recording the revoked token (uninstall revokes best effort).

Failures can be injected (`fail_next`), and every API call is recorded (`calls`).
"""

import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from werkzeug import Request, Response

from plugin.core.models import Practice
from tests.support.data import DATA, recent_end
from webhooks import zoom

ZOOM_SECRETS = json.loads((DATA / "zoom" / "secrets.json").read_text())
_PARTICIPANTS = re.compile(r"^/v2/past_meetings/(?P<uuid>.+)/participants$")
_DETAILS = re.compile(r"^/v2/past_meetings/(?P<uuid>[^/]+)$")
_USER = re.compile(r"^/v2/users/(?P<user>[^/]+)$")
_REGISTRANTS = re.compile(r"^/v2/meetings/(?P<id>[0-9]+)/registrants$")
# The sample meeting's host (tests/data/zoom/meeting_ended.json) and their email.
HOST_ID = "uLobJx7XTHi8yF0Tc1Vb8w"
HOST_EMAIL = "therapist@riverside.example"


def zoom_payload(name: str, **changes) -> dict:
    """Read a Zoom payload from tests/data/zoom; account_id/uuid replace the sample's.

    A meeting in it ended recently (recent_end()), as one whose invitation is still due.
    """
    payload = json.loads((DATA / "zoom" / name).read_text())
    meeting = payload.get("payload", {}).get("object", {})
    if "end_time" in meeting:
        ended = recent_end().replace(microsecond=0)
        meeting["end_time"] = ended.strftime("%Y-%m-%dT%H:%M:%SZ")
        meeting["start_time"] = (ended - timedelta(minutes=50)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if "account_id" in changes:
        payload["payload"]["account_id"] = changes["account_id"]
    if "uuid" in changes:
        payload["payload"]["object"]["uuid"] = changes["uuid"]
    return payload


@dataclass
class Call:
    """One request the stand-in answered."""

    method: str
    raw_path: str
    token: str | None
    params: dict


@dataclass
class ZoomApi:
    """The stand-in's state: meetings per access token, pending failures, calls seen."""

    server: object
    meetings: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    # Access tokens of installed accounts; any other bearer gets 401.
    tokens: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    # (status, path prefix or None for any call), in the order they are to be answered.
    failures: list[tuple[int, str | None]] = field(default_factory=list)
    # (token, uuid) -> past meeting details; (token, user id) -> user; (token, id) -> registrants.
    details: dict[tuple[str, str], dict] = field(default_factory=dict)
    users: dict[tuple[str, str], dict] = field(default_factory=dict)
    registrants: dict[tuple[str, str], list[dict]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """The API base, as ZOOM_API_BASE_URL."""
        return self.server.url_for("/v2")

    @property
    def config(self) -> dict:
        """Settings pointing the app's Zoom platform at this stand-in."""
        return {
            "ZOOM_WEBHOOK_SECRET": ZOOM_SECRETS["secret_token"],
            "ZOOM_CLIENT_ID": "alliance-zoom-test",
            "ZOOM_CLIENT_SECRET": "alliance-zoom-test-secret",
            "ZOOM_API_BASE_URL": self.base_url,
            "ZOOM_TOKEN_URL": self.server.url_for("/oauth/token"),
            "ZOOM_REVOKE_URL": self.server.url_for("/oauth/revoke"),
        }

    def add_meeting(
        self,
        access_token: str,
        meeting_uuid: str,
        participants: list[dict],
        *,
        meeting_id: int = 85417329902,
        host_id: str = HOST_ID,
        host_email: str | None = HOST_EMAIL,
        registrants: list[dict] | None = None,
        start_time: str = "2026-03-02T14:00:04Z",
        end_time: str = "2026-03-02T14:50:30Z",
    ) -> None:
        """Let the account holding access_token see a past meeting with these participants.

        Its host (a user of the account) has host_email; registrants=None means the meeting
        took no registrations.
        """
        self.tokens.add(access_token)
        self.meetings[(access_token, meeting_uuid)] = participants
        self.details[(access_token, meeting_uuid)] = {
            "uuid": meeting_uuid,
            "id": meeting_id,
            "host_id": host_id,
            "type": 2,
            "topic": "Session",
            "start_time": start_time,
            "end_time": end_time,
            "duration": 50,
            "total_minutes": 50,
            "participants_count": len(participants),
        }
        if host_email is not None:
            self.users[(access_token, host_id)] = {
                "id": host_id,
                "email": host_email,
                "type": 2,
                "status": "active",
            }
        if registrants is not None:
            self.registrants[(access_token, str(meeting_id))] = registrants

    def add_account(self, access_token: str) -> None:
        """Accept access_token for an account that has no meetings yet."""
        self.tokens.add(access_token)

    def fail_next(self, count: int, status: int = 503, path: str | None = None) -> None:
        """Answer the next count API calls (only those under path, if given) with status."""
        self.failures.extend([(status, path)] * count)

    def api_calls(self) -> list[Call]:
        """Return the API calls made so far (everything under /v2/)."""
        return [c for c in self.calls if c.raw_path.startswith("/v2/")]

    def participant_calls(self) -> list[Call]:
        """Return the participant look-ups made so far (not details, users or registrants)."""
        return [c for c in self.api_calls() if c.raw_path.endswith("/participants")]

    def handle(self, request: Request) -> Response:
        """Answer one request as Zoom would."""
        raw_path = request.environ.get("RAW_URI", request.path).split("?", 1)[0]
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        self.calls.append(Call(request.method, raw_path, token, dict(request.args)))
        if raw_path == "/oauth/revoke":
            self.revoked.append(request.form.get("token", ""))
            return Response(json.dumps({"status": "success"}), 200, mimetype="application/json")
        failure = next(
            (f for f in self.failures if f[1] is None or raw_path.startswith(f[1])), None
        )
        if failure is not None:
            self.failures.remove(failure)
            return _error(failure[0], 0, "Injected failure (test stand-in)")
        if request.method != "GET":
            return _error(404, 404, "Not found")
        if token not in self.tokens:
            return _error(401, 124, "Invalid access token.")
        if match := _PARTICIPANTS.match(raw_path):
            participants = self.meetings.get((token, _meeting_uuid(match["uuid"])))
            if participants is None:
                return _error(404, 3001, "Meeting does not exist.")
            return _page(request, "participants", participants)
        if match := _DETAILS.match(raw_path):
            details = self.details.get((token, _meeting_uuid(match["uuid"])))
            if details is None:
                return _error(404, 3001, "Meeting does not exist.")
            return Response(json.dumps(details), 200, mimetype="application/json")
        if match := _USER.match(raw_path):
            user = self.users.get((token, unquote(match["user"])))
            if user is None:
                return _error(404, 1001, "User does not exist.")
            return Response(json.dumps(user), 200, mimetype="application/json")
        if match := _REGISTRANTS.match(raw_path):
            key = (token, match["id"])
            if key not in self.registrants:
                if not any(d["id"] == int(match["id"]) for d in self.details.values()):
                    return _error(404, 3001, "Meeting does not exist.")
                return _error(400, 3000, "Registration has not been enabled for this meeting.")
            wanted = request.args.get("status", "approved")
            found = [r for r in self.registrants[key] if r.get("status", "approved") == wanted]
            return _page(request, "registrants", found)
        return _error(404, 404, "Not found")


def _meeting_uuid(segment: str) -> str | None:
    """Decode a UUID path segment as Zoom does, or None where Zoom would route elsewhere."""
    once = unquote(segment)
    # Zoom decodes the path before routing: a single-encoded "/x" or "a//b" lands elsewhere.
    if once.startswith("/") or "//" in once:
        return None
    return unquote(once)


def _page(request: Request, key: str, items: list[dict]) -> Response:
    """Answer one page of a Zoom list, paged by page_size and next_page_token."""
    size = int(request.args.get("page_size", 30))
    start = int(request.args.get("next_page_token") or 0)
    end = start + size
    body = {
        "page_count": -(-len(items) // size) or 1,
        "page_size": size,
        "total_records": len(items),
        "next_page_token": str(end) if end < len(items) else "",
        key: items[start:end],
    }
    return Response(json.dumps(body), 200, mimetype="application/json")


def _error(status: int, code: int, message: str) -> Response:
    body = json.dumps({"code": code, "message": message})
    return Response(body, status, mimetype="application/json")


def serve(httpserver) -> ZoomApi:
    """Answer every request to pytest-httpserver's local server as the Zoom stand-in."""
    api = ZoomApi(httpserver)
    httpserver.expect_request(re.compile(r".*")).respond_with_handler(api.handle)
    return api


def add_zoom_practice(
    db, vault, account_id: str, access_token: str, ehr_target: str = "ndjson:var/ehr"
) -> Practice:
    """Store a Zoom practice the way an install does: its platform token sealed."""
    practice = Practice(
        platform="zoom",
        account_id=account_id,
        name=f"Practice {account_id}",
        timezone="America/New_York",
        ehr_target=ehr_target,
        platform_token=vault.seal(
            {
                "access_token": access_token,
                "refresh_token": f"refresh-{access_token}",
                # Far ahead of the real clock, so no call needs a refresh.
                "expires_at": int(datetime.now(UTC).timestamp()) + 24 * 3600,
                "token_type": "Bearer",
            }
        ),
        created_at=datetime.now(UTC),
    )
    db.add(practice)
    db.commit()
    return practice


class ZoomWebhooks:
    """Sign and post deliveries the way Zoom does."""

    def __init__(self, client, secret: str = ZOOM_SECRETS["secret_token"]):
        self.client = client
        self.secret = secret

    def post(self, payload: dict | bytes, *, at: datetime | None = None, headers=None):
        """Sign (at `at`, default now) and post a delivery; returns the response."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = headers or zoom.sign(self.secret, at or datetime.now(UTC), body)
        return self.client.post(
            "/webhooks/zoom", data=body, headers=headers, content_type="application/json"
        )


def new_uuid() -> str:
    """Return a fresh meeting-instance UUID shaped like Zoom's (base64 of 16 bytes)."""
    return base64.b64encode(uuid.uuid4().bytes).decode()
