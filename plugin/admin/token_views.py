"""The console's API tokens page: list, make (shown once) and revoke the practice's tokens.

The services in plugin.admin.api.tokens (the ones the `api-token` command calls) check the
input, store only the token's SHA-256 and write the audit line. A new token's plaintext is
rendered straight into the POST's answer (sent with Cache-Control: no-store, like every
console page): never in a URL, the session or flash cookie, or a log line, and never again.
"""

from datetime import UTC, datetime

from flask import Response, abort, g, redirect, request, url_for

from plugin.admin.api.tokens import (
    EXPIRES_DAYS_MAX,
    NAME_MAX,
    TokenNotFoundError,
    create_token,
    list_tokens,
    revoke_token,
    token_input_errors,
    token_state,
)
from plugin.admin.auth import admin_required
from plugin.admin.console import bp, render_console
from plugin.core.db import get_session, read_only

EXPIRES_MESSAGE = (
    f"Expires after: enter a whole number of days from 1 to {EXPIRES_DAYS_MAX}, "
    "or leave it empty for a token that does not expire"
)


def _days_from_form(raw: str) -> int | str | None:
    """Return the expiry in days, None if left empty, or the raw text if it is no number."""
    if not raw:
        return None
    # ASCII digits only: int() would also take "1_000", "+5" and other scripts' digits.
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else raw


def _messages(errors: dict[str, str]) -> dict[str, str]:
    """Turn the service's messages into the form's words, each naming its field."""
    shown = {}
    if "name" in errors:
        shown["name"] = "Name: " + errors["name"]
    if "expires_days" in errors:
        shown["expires_days"] = EXPIRES_MESSAGE
    return shown


def _tokens_page(status: int = 200, **context) -> Response:
    now = datetime.now(UTC)
    tokens = list_tokens(get_session(), g.practice.id)
    return render_console(
        "admin/tokens.html",
        status=status,
        title="API tokens",
        rows=[(t, token_state(t, now)) for t in tokens],
        name_max=NAME_MAX,
        expires_days_max=EXPIRES_DAYS_MAX,
        values=context.pop("values", {"name": "", "expires_days": ""}),
        errors=context.pop("errors", {}),
        revoked=request.args.get("revoked"),
        **context,
    )


@bp.get("/tokens")
@read_only
@admin_required
def tokens() -> Response:
    """List the practice's API tokens (never the tokens themselves) and offer to make one."""
    return _tokens_page()


@bp.post("/tokens")
@admin_required
def create_api_token() -> Response:
    """Make a token and show it this once, in this answer; nothing else ever shows it."""
    name = request.form.get("name", "").strip()
    raw_days = request.form.get("expires_days", "").strip()
    values = {"name": name, "expires_days": raw_days}
    days = _days_from_form(raw_days)
    errors = _messages(token_input_errors(name, days))
    if errors:
        return _tokens_page(422, values=values, errors=errors)
    db = get_session()
    token, plaintext = create_token(db, g.practice.id, name, g.admin, days, now=datetime.now(UTC))
    db.commit()
    return _tokens_page(201, created=token, plaintext=plaintext)


@bp.post("/tokens/<token_id>/revoke")
@admin_required
def revoke_api_token(token_id: str) -> Response:
    """Revoke one of this practice's tokens; another practice's id is not found (404)."""
    db = get_session()
    try:
        revoke_token(db, g.practice.id, token_id, actor=g.admin, now=datetime.now(UTC))
    except TokenNotFoundError:
        db.rollback()
        abort(404)
    db.commit()
    return redirect(url_for("console.tokens", revoked=1))
