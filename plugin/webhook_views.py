"""Receive platform webhooks in a fixed order: size, signature, parse, store, then 2xx."""

import logging
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app, request

from plugin.crypto import vault
from plugin.db import get_session
from plugin.errors import problem
from plugin.instruments import default_instrument
from plugin.intake import record_session_ended
from webhooks import ADAPTERS
from webhooks.errors import InvalidPayloadError, InvalidSignatureError
from webhooks.events import Ignored

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


@bp.post("/<platform>")
def receive(platform: str) -> Response:
    """Verify, parse and durably store one webhook delivery before acknowledging it."""
    adapter = ADAPTERS.get(platform)
    verifier = current_app.extensions["webhook_verifiers"].get(platform)
    if adapter is None or verifier is None:
        return problem(404, "Unknown platform")

    # MAX_CONTENT_LENGTH (webhooks.MAX_BODY_BYTES) turns a larger body into 413 unread.
    body = request.get_data(cache=False)

    try:
        event_id = verifier.verify(body, request.headers)
    except InvalidSignatureError as exc:
        log.warning("webhook.rejected", extra={"platform": platform, "reason": exc.reason})
        return problem(401, "Invalid signature", "The webhook signature could not be verified.")

    try:
        event = adapter.parse(body, event_id)
    except InvalidPayloadError as exc:
        log.warning("webhook.invalid", extra={"platform": platform, "field": exc.field})
        return problem(400, "Invalid webhook payload", exc.detail, field=exc.field)

    if isinstance(event, Ignored):
        log.info("webhook.ignored", extra={"platform": platform, "event_type": event.event_type})
        return Response(status=204)

    record_session_ended(
        get_session(),
        event,
        vault=vault(),
        questionnaire=default_instrument().canonical,
        now=datetime.now(UTC),
    )
    return Response(status=204)


def init_app(app: Flask) -> None:
    """Build one verifier per configured platform from <PLATFORM>_WEBHOOK_SECRET."""
    app.extensions["webhook_verifiers"] = {
        name: adapter.Verifier(app.config[f"{name.upper()}_WEBHOOK_SECRET"])
        for name, adapter in ADAPTERS.items()
        if app.config.get(f"{name.upper()}_WEBHOOK_SECRET")
    }
    app.register_blueprint(bp)
