"""The JSON API at /api/v1: one practice's settings, schedule, overrides, problems and stats.

Every call but the OpenAPI document needs a bearer token (RFC 6750, checked by authlib's
ResourceProtector). A token reaches exactly one practice: every query below is scoped by it,
so an id of another practice is simply not found.
"""

import re
from datetime import UTC, date, datetime

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, g, json, jsonify, request
from sqlalchemy.orm import Session

from plugin.admin import problems as problem_service
from plugin.admin.api.errors import (
    InvalidInput,
    MalformedBody,
    invalid,
    invalid_response,
    json_object,
    malformed_response,
)
from plugin.admin.api.openapi import document
from plugin.admin.api.tokens import ApiTokenValidator
from plugin.admin.stats import weekly_counts
from plugin.core.db import get_session, read_only
from plugin.core.errors import problem
from plugin.core.models import Practice, SchedulePolicy
from plugin.install.practices import PracticeInputError
from plugin.planning.policy import Policy, PolicyError
from plugin.planning.practice_settings import practice_language, update_practice
from plugin.planning.schedules import (
    NoOverrideError,
    Override,
    change_practice_policy,
    check_policy,
    check_practitioner_ref,
    current_policy,
    find_override,
    history,
    list_overrides,
    practice_policy,
    preview_schedule,
    remove_override,
    set_override,
)

bp = Blueprint("api", __name__, url_prefix="/api/v1")
protector = ResourceProtector()
protector.register_token_validator(ApiTokenValidator(realm="alliance-check"))

# Calls that need no token: the document that describes the others.
PUBLIC = {"api.openapi"}
PRACTICE_FIELDS = ("name", "timezone", "language", "ehr_target")
PREVIEW_FIELDS = ("settings", "practitioner", "timezone", "start")
# Our row ids are UUIDs; anything else cannot be one, and is not sent to the database.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A preview's first session: far enough either way for any real plan, near enough that the
# 20 weekly sessions after it stay within the calendar.
PREVIEW_YEARS = (2000, 2100)

bp.register_error_handler(MalformedBody, malformed_response)
bp.register_error_handler(InvalidInput, invalid_response)


@bp.before_request
def _authenticate() -> Response | None:
    """Refuse a call without a live token, with authlib's RFC 6750 answer unchanged."""
    if request.endpoint in PUBLIC:
        return None
    try:
        token = protector.acquire_token()
    except OAuth2Error as error:
        return Response(
            json.dumps(dict(error.get_body())),
            status=error.status_code,
            headers=error.get_headers(),
            mimetype="application/json",
        )
    g.api_practice_id = token.row.practice_id
    g.api_actor = f"api-token:{token.row.id}"
    return None


@bp.after_request
def _no_store(response: Response) -> Response:
    # Answers describe one practice; no shared cache should keep them.
    response.headers["Cache-Control"] = "no-store"
    return response


def _session() -> Session:
    return get_session()


def _practice() -> Practice:
    return _session().get(Practice, g.api_practice_id)


def _now() -> datetime:
    return datetime.now(UTC)


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI 3.1 document of this API."""
    return jsonify(document())


# ---- practice ---------------------------------------------------------------------------------


def _practice_json(practice: Practice) -> dict:
    return {
        "platform": practice.platform,
        "account_id": practice.account_id,
        "name": practice.name,
        "timezone": practice.timezone,
        "language": practice_language(_session(), practice),
        "ehr_target": practice.ehr_target,
        "status": practice.status,
    }


@bp.get("/practice")
@read_only
def get_practice() -> Response:
    """Return the token's practice: name, time zone, default language, EHR target, status."""
    return jsonify(_practice_json(_practice()))


@bp.patch("/practice")
def patch_practice() -> Response:
    """Change the fields given, all checked at once; 422 names each bad one."""
    body = json_object()
    errors = {key: f"unknown field; the fields are {', '.join(PRACTICE_FIELDS)}" for key in body}
    errors = {key: message for key, message in errors.items() if key not in PRACTICE_FIELDS}
    errors |= {
        key: f"{key} must not be null" for key in PRACTICE_FIELDS if body.get(key, 1) is None
    }
    if errors:
        raise InvalidInput(errors)
    practice = _practice()
    try:
        update_practice(_session(), practice, actor=g.api_actor, now=_now(), **body)
    except PracticeInputError as exc:
        _session().rollback()
        raise InvalidInput(exc.errors) from exc
    _session().commit()
    return jsonify(_practice_json(practice))


# ---- schedule ---------------------------------------------------------------------------------


def _version_json(row: SchedulePolicy) -> dict:
    return {"version": row.version, "created_at": _when(row.created_at), "settings": row.settings}


def _schedule_json() -> dict:
    policy, row = practice_policy(_session(), g.api_practice_id)
    return {"version": row.version if row else 0, "settings": policy.to_dict()}


@bp.get("/schedule")
@read_only
def get_schedule() -> Response:
    """Return the practice's policy in effect and its version (0: the built-in default)."""
    return jsonify(_schedule_json())


def _policy_error(exc: PolicyError) -> InvalidInput:
    return invalid(exc.field, str(exc))


@bp.patch("/schedule")
def patch_schedule() -> Response:
    """Change the settings given; the others stay. Stores the next version if anything changed."""
    body = json_object()
    current, _ = practice_policy(_session(), g.api_practice_id)
    try:
        change_practice_policy(
            _session(), g.api_practice_id, current.to_dict() | body, actor=g.api_actor, now=_now()
        )
    except PolicyError as exc:
        _session().rollback()
        raise _policy_error(exc) from exc
    _session().commit()
    return jsonify(_schedule_json())


@bp.get("/schedule/history")
@read_only
def get_schedule_history() -> Response:
    """Return the stored versions of the practice's policy, newest first."""
    rows = history(_session(), g.api_practice_id)
    return jsonify({"versions": [_version_json(row) for row in rows]})


def _preview_input(body: dict) -> tuple[Policy, str, date | None]:
    unknown = sorted(set(body) - set(PREVIEW_FIELDS))
    if unknown:
        raise invalid(unknown[0], f"unknown field; the fields are {', '.join(PREVIEW_FIELDS)}")
    practitioner = body.get("practitioner")
    try:
        if practitioner is not None:
            check_practitioner_ref(practitioner)
        policy, _, _ = current_policy(_session(), g.api_practice_id, practitioner)
        settings = body.get("settings", {})
        if not isinstance(settings, dict):
            raise invalid("settings", "settings must be an object of policy settings")
        if settings:
            policy = check_policy(policy.to_dict() | settings)
    except PolicyError as exc:
        field = exc.field if exc.field == "practitioner" else f"settings/{exc.field or ''}"
        raise invalid(field.rstrip("/"), str(exc)) from exc
    timezone = body.get("timezone", _practice().timezone)
    return policy, timezone, _start(body.get("start"))


def _start(value: object) -> date | None:
    if value is None:
        return None
    low, high = PREVIEW_YEARS
    message = f'start must be a date "YYYY-MM-DD" from {low} to {high}'
    if not isinstance(value, str) or len(value) != len("YYYY-MM-DD"):
        raise invalid("start", message)
    try:
        start = date.fromisoformat(value)
    except ValueError as exc:
        raise invalid("start", message) from exc
    if not low <= start.year <= high:
        raise invalid("start", message)
    return start


@bp.post("/schedule/preview")
def preview() -> Response:
    """Return what a policy does for a made-up weekly client; nothing is stored."""
    policy, timezone, start = _preview_input(json_object())
    if not isinstance(timezone, str) or len(timezone) > 64:
        raise invalid("timezone", f"unknown time zone {timezone!r}")
    try:
        rows = preview_schedule(policy, timezone, start)
    except ValueError as exc:
        raise invalid("timezone", f"{exc}; use an IANA name like Europe/Paris") from exc
    return jsonify(
        {
            "timezone": timezone,
            "settings": policy.to_dict(),
            "sessions": [
                {
                    "number": row.session_number,
                    "ended_at": _when(row.ended_at),
                    "asked": row.decision.ask,
                    "reason": row.decision.reason,
                    "sent_at": _when(row.decision.due_at),
                    "reminder_at": _when(row.reminder_at),
                }
                for row in rows
            ],
        }
    )


# ---- overrides --------------------------------------------------------------------------------


def _override_json(override: Override) -> dict:
    effective, _, _ = current_policy(_session(), g.api_practice_id, override.practitioner_ref)
    return {
        "practitioner": override.practitioner_ref,
        "version": override.version,
        "created_at": _when(override.created_at),
        "settings": override.settings,
        "effective": effective.to_dict(),
    }


def _ref(practitioner_id: str) -> str:
    return f"Practitioner/{practitioner_id}"


def _known_ref(practitioner_id: str) -> str | None:
    """Return the reference if it could name a practitioner, else None (so: not found)."""
    try:
        return check_practitioner_ref(_ref(practitioner_id))
    except PolicyError:
        return None


@bp.get("/overrides")
@read_only
def get_overrides() -> Response:
    """Return the practitioners' overrides in effect."""
    overrides = list_overrides(_session(), g.api_practice_id)
    return jsonify({"overrides": [_override_json(o) for o in overrides]})


def _not_found() -> Response:
    return problem(404, "Not Found", "this practitioner has no override here")


@bp.get("/overrides/<practitioner_id>")
@read_only
def get_override(practitioner_id: str) -> Response:
    """Return one practitioner's override: what it changes, and the policy in effect."""
    ref = _known_ref(practitioner_id)
    try:
        if ref is None:
            raise NoOverrideError(practitioner_id)
        override = find_override(_session(), g.api_practice_id, ref)
    except NoOverrideError:
        return _not_found()
    return jsonify(_override_json(override))


@bp.put("/overrides/<practitioner_id>")
def put_override(practitioner_id: str) -> Response:
    """Set the override to exactly these settings; the rest follow the practice's policy."""
    body = json_object()
    try:
        set_override(
            _session(),
            g.api_practice_id,
            _ref(practitioner_id),
            body,
            actor=g.api_actor,
            now=_now(),
        )
    except PolicyError as exc:
        _session().rollback()
        # "settings" means the body as a whole: an override must change something.
        raise invalid(None if exc.field == "settings" else exc.field, str(exc)) from exc
    _session().commit()
    return jsonify(
        _override_json(find_override(_session(), g.api_practice_id, _ref(practitioner_id)))
    )


@bp.delete("/overrides/<practitioner_id>")
def delete_override(practitioner_id: str) -> Response:
    """End the override; the practitioner's clients follow the practice's policy."""
    ref = _known_ref(practitioner_id)
    try:
        if ref is None:
            raise NoOverrideError(practitioner_id)
        remove_override(_session(), g.api_practice_id, ref, actor=g.api_actor, now=_now())
    except NoOverrideError:
        return _not_found()
    _session().commit()
    return Response(status=204)


# ---- problems and stats -----------------------------------------------------------------------


def _problem_json(found: problem_service.Problem) -> dict:
    return {
        "kind": found.kind,
        "id": found.id,
        "at": _when(found.at),
        "why": found.why,
        "detail": found.detail,
        "retryable": found.retryable,
        "cannot_retry": found.cannot_retry,
    }


@bp.get("/problems")
@read_only
def get_problems() -> Response:
    """Return what needs an admin's hand: failed invitations, unmatched sessions, dead writes."""
    found = problem_service.list_problems(_session(), g.api_practice_id)
    return jsonify({kind: [_problem_json(p) for p in rows] for kind, rows in found.items()})


@bp.post("/problems/<kind>/<problem_id>/retry")
def retry_problem(kind: str, problem_id: str) -> Response:
    """Retry one problem; 404 if it is not this practice's, 409 if a retry cannot help."""
    if kind not in problem_service.KINDS or not _UUID.fullmatch(problem_id):
        return problem(404, "Not Found", "no such problem here")
    try:
        problem_service.retry(
            _session(), g.api_practice_id, kind, problem_id, now=_now(), actor=g.api_actor
        )
    except problem_service.ProblemNotFound:
        return problem(404, "Not Found", "no such problem here")
    except problem_service.RetryRefused as exc:
        return problem(409, "Cannot retry", str(exc))
    return Response(status=204)


@bp.get("/stats")
@read_only
def get_stats() -> Response:
    """Return the practice's counts for each of the last 12 weeks, practice-level only."""
    practice = _practice()
    stats = weekly_counts(_session(), practice.id, _now(), practice.timezone)
    return jsonify(
        {
            "timezone": stats.timezone,
            "response_rate": stats.response_rate,
            "weeks": [
                {
                    "start": week.start.isoformat(),
                    "sessions": week.sessions,
                    "sent": week.sent,
                    "answered": week.answered,
                    "expired": week.expired,
                    "opted_out": week.opted_out,
                    "response_rate": week.response_rate,
                }
                for week in stats.weeks
            ],
        }
    )
