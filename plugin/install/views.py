"""The platform consent an admin walks through (OAuth + PKCE), to install or to sign in.

Both start here and come back to the one redirect URI the platform knows: which of the two a
consent was for is kept in the session beside authlib's state. After the identity call, the
installation is stored (install) or looked up (sign-in), and the admin area, registered as
the sign-in handler, decides whether this user may enter.
"""

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from flask import Blueprint, Flask, Response, current_app, session, url_for
from sqlalchemy import select

from plugin.core.db import get_session
from plugin.core.errors import page, private_page_headers
from plugin.core.models import Practice
from plugin.install.lifecycle import install
from plugin.install.platform_api import Identity, PlatformError, fetch_identity
from plugin.install.platforms import oauth_client, settings_for

log = logging.getLogger(__name__)
bp = Blueprint("install", __name__)

# Which platform, and what for, the pending consent is: the one redirect URI serves all.
PENDING = "oauth_pending"
PURPOSES = ("install", "sign_in")
# app.extensions key of the handler that opens the admin's session once we know who they are.
SIGN_IN = "admin_sign_in"
PROBLEM = "install/problem.html"

SignIn = Callable[[Practice, Identity], Response]


def _problem(status: int, title: str, message: str, **context) -> Response:
    return page(status, PROBLEM, title=title, message=message, **context)


def _redirect_uri() -> str:
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + "/oauth/callback"


def begin_consent(platform: str, purpose: str) -> Response:
    """Send the browser to the platform's consent page, with state and a PKCE S256 challenge."""
    client = oauth_client(platform)
    if client is None:
        return _problem(
            404,
            "Not available",
            "Alliance Check cannot be installed from, or signed in through, this platform on "
            "this server.",
        )
    session[PENDING] = {"platform": platform, "purpose": purpose}
    return client.authorize_redirect(redirect_uri=_redirect_uri())


@bp.get("/install/<platform>")
def start(platform: str) -> Response:
    """Start an installation from the marketplace's install button."""
    return begin_consent(platform, "install")


@bp.get("/oauth/callback")
def callback() -> Response:
    """Exchange the code, learn who consented, then install or sign in."""
    pending = session.pop(PENDING, None)
    if not isinstance(pending, dict) or pending.get("purpose") not in PURPOSES:
        return _start_again("no consent was started in this browser", None)
    platform, purpose = pending.get("platform"), pending["purpose"]
    client = oauth_client(platform) if isinstance(platform, str) else None
    if client is None:
        return _start_again("no consent was started in this browser", purpose)
    try:
        token = client.authorize_access_token()
    except MismatchingStateError:
        return _start_again("state missing, unknown or already used", purpose)
    except OAuthError as exc:
        if exc.error == "access_denied":
            log.info("consent.denied", extra={"platform": platform, "purpose": purpose})
            if purpose == "sign_in":
                return _problem(400, "Sign-in cancelled", "You were not signed in.")
            return _problem(
                400,
                "Installation cancelled",
                "Alliance Check was not allowed to connect, so nothing was installed. "
                "You can start again from the marketplace at any time.",
            )
        return _start_again(f"token exchange refused: {exc.error}", purpose)
    except requests.RequestException as exc:
        log.warning(
            "consent.unreachable", extra={"platform": platform, "error": type(exc).__name__}
        )
        return _problem(
            502, "The platform did not answer", "Nothing changed. Please try again in a minute."
        )

    settings = settings_for(current_app.config, platform)
    with requests.Session() as http:
        try:
            identity = fetch_identity(settings, token, http)
        except PlatformError as exc:
            log.warning(
                "consent.identity_failed", extra={"platform": platform, "reason": exc.reason}
            )
            return _problem(
                502,
                "The platform did not say who you are",
                "Nothing changed. Please try again in a minute.",
            )
    if not identity.is_admin:
        # An install is for the whole account: only its admins may make it, or enter.
        log.info("consent.not_admin", extra={"platform": platform, "purpose": purpose})
        return _problem(
            403,
            "Only your account's admins can do this",
            f"Your {settings.display_name} account does not make you an admin of it, so "
            "Alliance Check cannot be installed or configured from it. Ask one of your "
            "account's admins.",
        )
    if purpose == "sign_in":
        practice = get_session().scalar(
            select(Practice).where(
                Practice.platform == platform, Practice.account_id == identity.account_id
            )
        )
        if practice is None:
            return _problem(
                404,
                "Alliance Check is not installed for this account",
                f"Your {settings.display_name} account has not installed Alliance Check yet.",
                install_url=url_for("install.start", platform=platform),
            )
    else:
        practice = install(
            get_session(),
            platform=platform,
            account_id=identity.account_id,
            name=identity.name,
            token=token,
            now=datetime.now(UTC),
            timezone=identity.timezone,
        )
    sign_in: SignIn | None = current_app.extensions.get(SIGN_IN)
    if sign_in is None:
        return _problem(200, "Alliance Check is installed", "You can close this page.")
    return sign_in(practice, identity)


def _start_again(reason: str, purpose: str | None) -> Response:
    log.info("consent.rejected", extra={"reason": reason})
    if purpose == "sign_in":
        return _problem(
            400,
            "This sign-in link has already been used or has expired",
            "You were not signed in. Please sign in again.",
        )
    return _problem(
        400,
        "This link has already been used or has expired",
        "Nothing was installed. Please start the installation again from the marketplace.",
    )


# The callback URL carries the code: the same care as a questionnaire link.
bp.after_request(private_page_headers)


def init_app(app: Flask) -> None:
    """Register the consent flow's pages."""
    app.register_blueprint(bp)
