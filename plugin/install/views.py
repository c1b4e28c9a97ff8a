"""The install flow an admin walks through: platform consent (OAuth + PKCE), then the setup page."""

import logging
import time
from datetime import UTC, datetime

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from flask import Blueprint, Flask, Response, current_app, redirect, session

from plugin.core.db import get_session
from plugin.core.errors import page, private_page_headers
from plugin.core.models import Practice
from plugin.install.lifecycle import install
from plugin.install.platform_api import PlatformError, fetch_identity
from plugin.install.platforms import oauth_client, settings_for

log = logging.getLogger(__name__)
bp = Blueprint("install", __name__)

# Which platform the pending consent is for: the one redirect URI serves every platform.
PENDING = "install_platform"
# The admin session: which practice this browser may see, and since when.
ADMIN = "admin"
PROBLEM = "install/problem.html"


def _problem(status: int, title: str, message: str) -> Response:
    return page(status, PROBLEM, title=title, message=message)


def _redirect_uri() -> str:
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + "/oauth/callback"


@bp.get("/install/<platform>")
def start(platform: str) -> Response:
    """Send the admin to the platform's consent page, with state and a PKCE S256 challenge."""
    client = oauth_client(platform)
    if client is None:
        return _problem(
            404,
            "Not available",
            "Alliance Check cannot be installed from this platform on this server.",
        )
    session[PENDING] = platform
    return client.authorize_redirect(redirect_uri=_redirect_uri())


@bp.get("/oauth/callback")
def callback() -> Response:
    """Exchange the code, learn the account, store the installation, open the setup page."""
    platform = session.pop(PENDING, None)
    client = oauth_client(platform) if platform else None
    if client is None:
        return _start_again("no install was started in this browser")
    try:
        token = client.authorize_access_token()
    except MismatchingStateError:
        return _start_again("state missing, unknown or already used")
    except OAuthError as exc:
        if exc.error == "access_denied":
            log.info("install.denied", extra={"platform": platform})
            return _problem(
                400,
                "Installation cancelled",
                "Alliance Check was not allowed to connect, so nothing was installed. "
                "You can start again from the marketplace at any time.",
            )
        return _start_again(f"token exchange refused: {exc.error}")
    except requests.RequestException as exc:
        log.warning(
            "install.unreachable", extra={"platform": platform, "error": type(exc).__name__}
        )
        return _problem(
            502,
            "The platform did not answer",
            "Nothing was installed. Please try again in a few minutes.",
        )

    settings = settings_for(current_app.config, platform)
    with requests.Session() as http:
        try:
            identity = fetch_identity(settings, token, http)
        except PlatformError as exc:
            log.warning(
                "install.identity_failed", extra={"platform": platform, "reason": exc.reason}
            )
            return _problem(
                502,
                "The platform did not say who you are",
                "Nothing was installed. Please try again in a few minutes.",
            )
    practice = install(
        get_session(),
        platform=platform,
        account_id=identity.account_id,
        name=identity.name,
        token=token,
        now=datetime.now(UTC),
        timezone=identity.timezone,
    )
    # A fresh admin session: nothing from before the consent carries over into it.
    session.clear()
    session[ADMIN] = {"practice_id": practice.id, "since": int(time.time())}
    return redirect("/setup")


def _start_again(reason: str) -> Response:
    log.info("install.rejected", extra={"reason": reason})
    return _problem(
        400,
        "This link has already been used or has expired",
        "Nothing was installed. Please start the installation again from the marketplace.",
    )


def _admin_practice() -> Practice | None:
    admin = session.get(ADMIN)
    if not isinstance(admin, dict):
        return None
    max_age = current_app.config["ADMIN_SESSION_HOURS"] * 3600
    if not isinstance(admin.get("since"), int) or time.time() - admin["since"] > max_age:
        return None
    return get_session().get(Practice, admin.get("practice_id"))


@bp.get("/setup")
def setup() -> Response:
    """Show an installed practice's status and what its admin should do next."""
    practice = _admin_practice()
    if practice is None:
        return _problem(
            401,
            "Please sign in through your platform",
            "Open Alliance Check from your telehealth platform's app marketplace to see this page.",
        )
    settings = settings_for(current_app.config, practice.platform)
    return page(
        200,
        "install/setup.html",
        title="Alliance Check is installed",
        practice=practice,
        platform_name=settings.display_name if settings else practice.platform,
        ehr_connected=bool(practice.ehr_target),
    )


# The callback URL carries the code: the same care as a questionnaire link.
bp.after_request(private_page_headers)


def init_app(app: Flask) -> None:
    """Register the install flow's pages."""
    app.register_blueprint(bp)
