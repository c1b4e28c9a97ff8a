"""Receive platform webhooks in a fixed order: size, signature, parse, act, then 2xx.

The view names no platform: each adapter in webhooks.ADAPTERS verifies and parses, and the
event type it returns decides what happens. Platforms retry only on 5xx or a timeout (Zoom
never retries a 4xx), so a 5xx is kept for our own failures, such as the database being down;
a forged or malformed delivery gets a 4xx because sending it again cannot help.
"""

import logging
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from plugin.core.crypto import vault
from plugin.core.db import get_session
from plugin.core.errors import problem
from plugin.core.metrics import UNKNOWN_PLATFORM, count_webhook
from plugin.install.lifecycle import uninstall
from plugin.intake.events import record_session_ended
from webhooks import ADAPTERS
from webhooks.errors import InvalidPayloadError, InvalidSignatureError
from webhooks.events import Ignored, Uninstalled, UrlValidation

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def secret_setting(platform: str) -> str:
    """Return the config key holding a platform's webhook secret, e.g. ZOOM_WEBHOOK_SECRET."""
    return f"{platform.upper()}_WEBHOOK_SECRET"


@bp.post("/<platform>")
def receive(platform: str) -> Response:
    """Verify, parse and act on one webhook delivery before acknowledging it."""
    adapter = ADAPTERS.get(platform)
    verifier = current_app.extensions["webhook_verifiers"].get(platform)
    if adapter is None or verifier is None:
        count_webhook(UNKNOWN_PLATFORM, "unknown_platform")
        return problem(404, "Unknown platform")

    now = datetime.now(UTC)
    # MAX_CONTENT_LENGTH turns a larger body, chunked or not, into 413 (plugin.core.body_limit).
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        count_webhook(platform, "too_large")
        raise

    # Every delivery is verified first, challenges included: Zoom signs those too, and an
    # unverified challenge would let anyone make us compute HMACs of their choosing.
    try:
        event_id = verifier.verify(body, request.headers)
    except InvalidSignatureError as exc:
        log.warning("webhook.rejected", extra={"platform": platform, "reason": exc.reason})
        count_webhook(platform, exc.reason)
        return problem(401, "Invalid signature", "The webhook signature could not be verified.")

    try:
        event = adapter.parse(body, event_id, now=now)
    except InvalidPayloadError as exc:
        log.warning("webhook.invalid", extra={"platform": platform, "field": exc.field})
        count_webhook(platform, "invalid_payload")
        return problem(400, "Invalid webhook payload", exc.detail, field=exc.field)

    if isinstance(event, Ignored):
        log.info("webhook.ignored", extra={"platform": platform, "event_type": event.event_type})
        count_webhook(platform, "ignored")
        return Response(status=204)

    if isinstance(event, UrlValidation):
        log.info("webhook.url_validation", extra={"platform": platform})
        count_webhook(platform, "url_validation")
        secret = current_app.config[secret_setting(platform)]
        return jsonify(adapter.answer_challenge(secret, event))

    if isinstance(event, Uninstalled):
        # Unknown accounts are acknowledged too: the platform cannot do better by retrying.
        uninstall(get_session(), platform=platform, account_id=event.account_id, now=now)
        count_webhook(platform, "uninstalled")
        return Response(status=204)

    outcome = record_session_ended(get_session(), event, vault=vault(), now=now)
    # Counted once committed: a delivery that failed with a 5xx is not accepted.
    count_webhook(platform, outcome.value)
    return Response(status=204)


def init_app(app: Flask) -> None:
    """Build one verifier per configured platform from <PLATFORM>_WEBHOOK_SECRET."""
    app.extensions["webhook_verifiers"] = {
        name: adapter.Verifier(app.config[secret_setting(name)])
        for name, adapter in ADAPTERS.items()
        if app.config.get(secret_setting(name))
    }
    app.register_blueprint(bp)
