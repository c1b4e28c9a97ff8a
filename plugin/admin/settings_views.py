"""The console's Schedule and Practice pages: forms over the planning services, with preview.

The services (plugin.planning.schedules, plugin.planning.practice_settings) validate, store a
new version and write the audit line; these views turn form fields into settings and errors
back into messages beside the field they name.
"""

from datetime import UTC, datetime

from flask import Response, abort, current_app, g, redirect, request, url_for

from plugin.admin.auth import admin_required
from plugin.admin.console import bp, render_console
from plugin.core.db import get_session
from plugin.install.practices import PracticeInputError
from plugin.planning.policy import LANGUAGES, Policy, PolicyError, zone
from plugin.planning.practice_settings import practice_language, update_practice
from plugin.planning.schedules import (
    NoOverrideError,
    change_practice_policy,
    history,
    list_overrides,
    practice_policy,
    preview_schedule,
    remove_override,
    set_override,
)

WHOLE = (
    "first_sessions",
    "then_every",
    "min_gap_days",
    "delay_minutes",
    "reminder_after_hours",
    "expires_after_hours",
    "max_send_delay_hours",
)
LABELS = {
    "first_sessions": "Ask after each of the first … sessions",
    "then_every": "Then ask after every …th session (0 = never)",
    "min_gap_days": "Never ask one client twice within … days",
    "delay_minutes": "Send … minutes after the session ends",
    "quiet_start": "Quiet hours start (client's local time)",
    "quiet_end": "Quiet hours end",
    "reminder_after_hours": "Remind after … hours (0 = no reminder)",
    "expires_after_hours": "The link expires after … hours",
    "max_send_delay_hours": "Skip a session not sent within … hours of its end",
    "channels": "Channels, in the order tried",
    "language": "Language for clients whose own is not offered",
    "questionnaire": "Questionnaire",
}
CHANNEL_ORDERS = {"email,sms": "Email, then text", "sms,email": "Text, then email",
                  "email": "Email only", "sms": "Text only"}  # fmt: skip
REASONS = {
    "first_sessions": "one of the first {p.first_sessions}",
    "every_kth": "then one in every {p.then_every}",
    "not_scheduled": "not scheduled",
    "min_gap": "within {p.min_gap_days} days of the last one",
    "stale": "too long after the session ({p.max_send_delay_hours} h)",
}


def _field_of(exc: PolicyError) -> str:
    field = getattr(exc, "field", None)
    if field:
        return field
    message = str(exc)
    return next((name for name in LABELS if message.startswith(name)), "first_sessions")


def _settings_from_form(form, only_given: bool = False) -> tuple[dict, dict]:
    """Return (settings, errors) from form fields; empty fields are left out if only_given."""
    settings, errors = {}, {}
    for name in WHOLE:
        raw = form.get(name, "").strip()
        if not raw and only_given:
            continue
        try:
            settings[name] = int(raw)
        except ValueError:
            errors[name] = f"{LABELS[name]}: enter a whole number"
    for name in ("quiet_start", "quiet_end", "language", "questionnaire"):
        raw = form.get(name, "").strip()
        if raw or not only_given:
            settings[name] = raw
    raw = form.get("channels", "").strip()
    if raw or not only_given:
        if raw not in CHANNEL_ORDERS:
            errors["channels"] = "Choose the channels to use"
        else:
            settings["channels"] = raw.split(",")
    return settings, errors


def _preview(policy: Policy, timezone: str) -> list[dict]:
    def local(moment):
        return moment.astimezone(zone(timezone)).strftime("%a %d %b %H:%M") if moment else "-"

    return [
        {
            "number": row.session_number,
            "ended": local(row.ended_at),
            "asked": row.decision.ask,
            "why": REASONS[row.decision.reason].format(p=policy),
            "sent": local(row.decision.due_at),
            "reminder": local(row.reminder_at),
        }
        for row in preview_schedule(policy, timezone)
    ]


def _schedule_page(status: int = 200, **context) -> Response:
    db = get_session()
    practice = g.practice
    policy, _ = practice_policy(db, practice.id)
    values = context.pop("values", None) or policy.to_dict()
    shown = context.pop("shown", None) or policy
    return render_console(
        "admin/schedule.html",
        status=status,
        title="Schedule",
        values=values,
        labels=LABELS,
        channel_orders=CHANNEL_ORDERS,
        channel_value=",".join(values.get("channels") or []),
        languages=LANGUAGES,
        questionnaires=sorted(current_app.extensions["instruments"]),
        preview=_preview(shown, practice.timezone),
        previewing=shown is not policy,
        versions=history(db, practice.id),
        overrides=list_overrides(db, practice.id),
        errors=context.pop("errors", {}),
        override_errors=context.pop("override_errors", {}),
        override_values=context.pop("override_values", {}),
        saved=request.args.get("saved"),
        **context,
    )


@bp.route("/schedule", methods=["GET", "POST"])
@admin_required
def schedule() -> Response:
    """Show and change the practice's schedule, with the preview of sessions 1-20."""
    if request.method == "GET":
        return _schedule_page()
    db = get_session()
    settings, errors = _settings_from_form(request.form)
    values = {**settings, "channels": settings.get("channels") or []}
    if errors:
        return _schedule_page(422, values=values, errors=errors)
    try:
        if request.form.get("action") == "preview":
            policy = Policy.from_dict(settings)
            return _schedule_page(values=values, shown=policy)
        change_practice_policy(db, g.practice.id, settings, actor=g.admin, now=datetime.now(UTC))
    except PolicyError as exc:
        db.rollback()
        return _schedule_page(422, values=values, errors={_field_of(exc): str(exc)})
    db.commit()
    return redirect(url_for("console.schedule", saved="schedule"))


@bp.post("/schedule/overrides")
@admin_required
def add_override() -> Response:
    """Store a practitioner's override of the settings given; the rest follow the practice."""
    db = get_session()
    ref = request.form.get("practitioner_ref", "").strip()
    settings, errors = _settings_from_form(request.form, only_given=True)
    values = {"practitioner_ref": ref, **request.form}
    if errors:
        return _schedule_page(422, override_errors=errors, override_values=values)
    try:
        set_override(db, g.practice.id, ref, settings, actor=g.admin, now=datetime.now(UTC))
    except PolicyError as exc:
        db.rollback()
        field = _field_of(exc)
        field = "practitioner_ref" if field == "practitioner" else field
        return _schedule_page(422, override_errors={field: str(exc)}, override_values=values)
    db.commit()
    return redirect(url_for("console.schedule", saved="override"))


@bp.post("/schedule/overrides/remove")
@admin_required
def delete_override() -> Response:
    """End a practitioner's override: their sessions follow the practice's schedule again."""
    db = get_session()
    try:
        remove_override(
            db,
            g.practice.id,
            request.form.get("practitioner_ref", ""),
            actor=g.admin,
            now=datetime.now(UTC),
        )
    except NoOverrideError:
        abort(404)
    db.commit()
    return redirect(url_for("console.schedule", saved="removed"))


@bp.route("/practice", methods=["GET", "POST"])
@admin_required
def practice_page() -> Response:
    """Show and change the practice's name, time zone and default language."""
    db = get_session()
    practice = g.practice
    errors = {}
    values = {
        "name": practice.name,
        "timezone": practice.timezone,
        "language": practice_language(db, practice),
    }
    if request.method == "POST":
        values = {k: request.form.get(k, "").strip() for k in values}
        try:
            update_practice(db, practice, **values, actor=g.admin, now=datetime.now(UTC))
        except PracticeInputError as exc:
            db.rollback()
            errors = exc.errors
        except PolicyError as exc:
            db.rollback()
            errors = {"language": str(exc)}
        else:
            db.commit()
            return redirect(url_for("console.practice_page", saved=1))
    return render_console(
        "admin/practice.html",
        status=422 if errors else 200,
        title="Practice",
        values=values,
        errors=errors,
        languages=LANGUAGES,
        saved=request.args.get("saved"),
    )
