"""Admin sign-in through the platform that installed the practice, and the console's session.

The session cookie holds ids and times only (practice id, the admin's platform user id,
when it was issued and last used); never the platform's token. It ends after ADMIN_IDLE_MINUTES
without a request, or ADMIN_SESSION_HOURS after sign-in, whichever comes first.
"""

import functools
import logging
import time
from collections.abc import Callable

from flask import Blueprint, Flask, Response, current_app, g, redirect, session, url_for

from plugin.core import audit
from plugin.core.db import get_session
from plugin.core.errors import page, private_page_headers
from plugin.core.models import Practice, PracticeStatus
from plugin.install.platform_api import Identity
from plugin.install.platforms import platform_table, settings_for
from plugin.install.views import SIGN_IN, begin_consent

log = logging.getLogger(__name__)
bp = Blueprint("admin_auth", __name__)

ADMIN = "admin"


def _clock() -> float:
    return time.time()


def start_session(practice: Practice, identity: Identity) -> Response:
    """Open a fresh admin session for a platform admin of this practice; open the console."""
    # Nothing from before the consent carries over (session fixation).
    session.clear()
    now = int(_clock())
    session[ADMIN] = {
        "practice_id": practice.id,
        "user_id": identity.user_id or "unknown",
        "issued_at": now,
        "seen_at": now,
    }
    db = get_session()
    audit.record(db, practice.id, f"admin:{identity.user_id or 'unknown'}", "admin.signed_in")
    db.commit()
    log.info("admin.signed_in", extra={"practice_id": practice.id})
    return redirect(url_for("console.overview"))


def current_admin() -> tuple[Practice, str] | None:
    """Return (practice, actor) for a live admin session, refreshing its idle clock, or None."""
    data = session.get(ADMIN)
    if not isinstance(data, dict):
        return None
    issued, seen = data.get("issued_at"), data.get("seen_at")
    if not (isinstance(issued, int) and isinstance(seen, int)):
        return None
    now = int(_clock())
    config = current_app.config
    if now - issued >= config["ADMIN_SESSION_HOURS"] * 3600:
        return None
    if now - seen >= config["ADMIN_IDLE_MINUTES"] * 60:
        return None
    practice = get_session().get(Practice, data.get("practice_id"))
    if practice is None or practice.status == PracticeStatus.UNINSTALLED:  # uninstalled since
        return None
    # Refresh the idle clock at most once a minute, so most pages set no new cookie.
    if now - seen >= 60:
        session[ADMIN] = {**data, "seen_at": now}
    return practice, f"admin:{data.get('user_id')}"


def sign_in_page(status: int = 401, expired: bool = False) -> Response:
    """Return the page offering to sign in through each platform set up on this server."""
    platforms = [
        (name, settings_for(current_app.config, name).display_name)
        for name in platform_table()
        if settings_for(current_app.config, name).installable
    ]
    return page(
        status,
        "admin/sign_in.html",
        title="Sign in to Alliance Check",
        platforms=platforms,
        expired=expired,
    )


def admin_required(view: Callable) -> Callable:
    """Let a view run only for a signed-in admin; set g.practice and g.admin (the actor)."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        found = current_admin()
        if found is None:
            had_session = ADMIN in session
            session.pop(ADMIN, None)
            return sign_in_page(expired=had_session)
        g.practice, g.admin = found
        return view(*args, **kwargs)

    return wrapped


@bp.get("/login/<platform>")
def login(platform: str) -> Response:
    """Send the admin to their platform to sign in (the marketplace's "open" link)."""
    return begin_consent(platform, "sign_in")


@bp.get("/login")
def choose() -> Response:
    """Offer a sign-in through each platform."""
    return sign_in_page(status=200)


@bp.get("/setup")
def setup() -> Response:
    """Open the console: the page an install used to land on."""
    if current_admin() is None:
        return sign_in_page()
    return redirect(url_for("console.overview"))


bp.after_request(private_page_headers)


def init_app(app: Flask) -> None:
    """Register sign-in, and become the handler the consent callback signs admins in with."""
    app.extensions[SIGN_IN] = start_session
    app.register_blueprint(bp)
