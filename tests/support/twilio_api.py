"""A stand-in for Twilio's Messages REST API, on pytest-httpserver.

Twilio's API cannot run here, so this serves the one call we make, POST
/2010-04-01/Accounts/{AccountSid}/Messages.json, with the request and response shapes Twilio
documents (form-encoded To/From or MessagingServiceSid/Body, HTTP basic auth with the account
SID and auth token, 201 with the Message resource; errors as {"code", "message", ...}).
The payloads live in tests/data/twilio/, with the status callbacks Twilio posts back.
"""

import json
import uuid
from pathlib import Path

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

DATA = Path(__file__).parents[1] / "data" / "twilio"
ACCOUNT_SID = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
AUTH_TOKEN = "twilio-test-auth-token"
FROM = "+15005550006"
ERRORS = json.loads((DATA / "errors.json").read_text())


class TwilioApi:
    """Record every message posted; answer like Twilio, or with a chosen error."""

    def __init__(self, server: HTTPServer):
        self.server = server
        self.requests: list[Request] = []
        self.messages: list[dict] = []
        # The Message SID of each message taken, in order: unique, as Twilio's are.
        self.sids: list[str] = []
        self.error: str | None = None
        server.expect_request(
            f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json", method="POST"
        ).respond_with_handler(self._handle)

    @property
    def base_url(self) -> str:
        """Return the URL to use as TWILIO_API_BASE_URL."""
        return self.server.url_for("").rstrip("/")

    def settings(self) -> dict:
        """Return the app settings that send SMS through this stand-in."""
        return {
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM": FROM,
            "TWILIO_API_BASE_URL": self.base_url,
        }

    def _handle(self, request: Request) -> Response:
        self.requests.append(request)
        auth = request.authorization
        if auth is None or (auth.username, auth.password) != (ACCOUNT_SID, AUTH_TOKEN):
            return self._error("bad_credentials")
        if self.error:
            return self._error(self.error)
        form = request.form.to_dict()
        self.messages.append(form)
        created = json.loads((DATA / "message_created.json").read_text())
        sid = "SM" + uuid.uuid4().hex
        self.sids.append(sid)
        created.update(
            sid=sid,
            to=form.get("To"),
            body=form.get("Body"),
            messaging_service_sid=form.get("MessagingServiceSid"),
        )
        return Response(json.dumps(created), status=201, content_type="application/json")

    def _error(self, name: str) -> Response:
        error = ERRORS[name]
        return Response(
            json.dumps(error["body"]), status=error["status"], content_type="application/json"
        )


def status_callback(sid: str, status: str, error_code: str | None = None) -> dict:
    """Return the form Twilio posts to a StatusCallback for message `sid` reaching `status`."""
    name = "status_delivered.json" if status == "delivered" else "status_undelivered.json"
    form = json.loads((DATA / name).read_text())
    form.update(MessageSid=sid, SmsSid=sid, MessageStatus=status, SmsStatus=status)
    if error_code is not None:
        form["ErrorCode"] = error_code
    elif status == "delivered":
        form.pop("ErrorCode", None)
    return form


def sign(url: str, form: dict) -> str:
    """Return the X-Twilio-Signature Twilio would send for this form posted to url."""
    from twilio.request_validator import RequestValidator

    return RequestValidator(AUTH_TOKEN).compute_signature(url, form)
