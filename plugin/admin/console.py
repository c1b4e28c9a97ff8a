"""The console's pages: overview, EHR wizard, problems, audit; and the public front page.

Every query is scoped by g.practice (set by admin_required): an id from another practice is
simply not found (404), so nothing of one practice is ever shown to or changed by another.
"""

from datetime import UTC, datetime

import requests
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    redirect,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect

from plugin.admin import problems as problem_service
from plugin.admin.auth import admin_required
from plugin.admin.chart import weekly_chart
from plugin.admin.stats import weekly_counts
from plugin.core import audit
from plugin.core.db import get_session, read_only
from plugin.core.errors import page, private_page_headers
from plugin.ehr.connect import check_connection, explain, save_connection
from plugin.ehr.launch import LAUNCH_SCOPE
from plugin.ehr.smart import SmartError, discover
from plugin.install.platforms import settings_for
from plugin.planning import host_map
from webhooks import ADAPTERS

bp = Blueprint("console", __name__, url_prefix="/console")
front = Blueprint("front", __name__)
csrf = CSRFProtect()

# The console's pages, in menu order; one not registered (yet) is left out of the menu.
NAV = (
    ("console.overview", "Overview"),
    ("console.schedule", "Schedule"),
    ("console.ehr", "EHR"),
    ("console.problems", "Problems"),
    ("console.practice_page", "Practice"),
    ("console.tokens", "API tokens"),
    ("console.audit_trail", "Audit"),
)
PROBLEM_TITLES = {
    "invitation": "Invitations that could not be delivered",
    "session": "Sessions whose client could not be found",
    "ehr_write": "Answers your EHR did not accept",
}


def render_console(template: str, status: int = 200, **context) -> Response:
    """Render a console page with the practice, its platform's name and the menu."""
    practice = g.practice
    platform = settings_for(current_app.config, practice.platform)
    return page(
        status,
        template,
        practice=practice,
        platform_name=platform.display_name if platform else practice.platform,
        nav=[(e, label) for e, label in NAV if e in current_app.view_functions],
        **context,
    )


@bp.before_request
def _protect_forms() -> None:
    # Every console form carries the CSRF token; the session cookie alone proves nothing.
    if request.method == "POST":
        csrf.protect()


@bp.errorhandler(CSRFError)
def _csrf_failed(_exc: CSRFError) -> Response:
    return page(
        400,
        "error.html",
        title="Please try again",
        message="This form was too old or was not sent from this console. Reload the page "
        "and send it again; your browser needs to allow cookies for this site.",
    )


@bp.get("/")
@read_only
@admin_required
def overview() -> Response:
    """Show the practice's status, its EHR connection and 12 weeks of practice-level counts."""
    db = get_session()
    now = datetime.now(UTC)
    stats = weekly_counts(db, g.practice.id, now, g.practice.timezone)
    return render_console(
        "admin/overview.html",
        title="Overview",
        stats=stats,
        chart=weekly_chart(stats),
        problem_count=problem_service.count_problems(db, g.practice.id),
    )


def _public_url(path: str) -> str:
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + path


def _jwks_url() -> str:
    return _public_url("/.well-known/jwks.json")


def _set_launch_client(practice, context: dict) -> Response:
    """Turn the therapist's view on (or off, when left empty) for a connected EHR."""
    connection = practice.ehr_connection
    launch_client_id = request.form.get("launch_client_id", "").strip()
    if connection is None:
        context["errors"]["launch_client_id"] = (
            "Connect your EHR first (steps 1 to 4); the therapist's view opens from it"
        )
    elif len(launch_client_id) > 200 or not launch_client_id.isprintable():
        context["errors"]["launch_client_id"] = (
            "Enter the client id your EHR gave the SMART app registration (at most 200 characters)"
        )
    if context["errors"]:
        return render_console("admin/ehr.html", status=422, **context)
    db = get_session()
    connection.launch_client_id = launch_client_id or None
    audit.record(
        db, practice.id, g.admin, "ehr.launch_client_set", launch_client_id=launch_client_id
    )
    db.commit()
    context["launch_saved"] = True
    return render_console("admin/ehr.html", **context)


def _ehr_context(practice) -> dict:
    """Return what the EHR page shows: the connection, the wizard's fields, the host mappings."""
    connection = practice.ehr_connection
    fhir_base = request.values.get("fhir_base", connection.fhir_base if connection else "")
    client_id = request.form.get("client_id", connection.client_id if connection else "")
    by_host = getattr(ADAPTERS.get(practice.platform), "meeting_facts", None) is not None
    return {
        "title": "EHR connection",
        "fhir_base": fhir_base.strip(),
        "client_id": client_id.strip(),
        "jwks_url": _jwks_url(),
        "launch_url": _public_url("/launch"),
        "launch_redirect_uri": _public_url("/launch/callback"),
        "launch_scopes": LAUNCH_SCOPE,
        "connection": connection,
        "errors": {},
        "facts": None,
        "check": None,
        # Only platforms whose sessions are tied to the schedule by their host have hosts.
        "hosts": (
            host_map.mappings(get_session(), practice.id, current_app.extensions["vault"])
            if by_host
            else None
        ),
        "host_form": {},
        # What the last host form did (after its redirect): mapped, unchanged or removed.
        "host_saved": request.args.get("hosts"),
    }


@bp.post("/ehr/hosts")
@admin_required
def map_host() -> Response:
    """Map a video host's email to their Practitioner in the EHR (step 6 of the EHR page)."""
    practice = g.practice
    email = request.form.get("host_email", "")
    practitioner = request.form.get("practitioner_ref", "")
    context = _ehr_context(practice)
    if context["hosts"] is None:
        abort(404)
    db = get_session()
    try:
        changed = host_map.set_mapping(
            db, practice.id, email, practitioner,
            actor=g.admin, sealer=current_app.extensions["vault"],
        )  # fmt: skip
    except host_map.HostMapError as exc:
        db.rollback()
        context["errors"] = {f"host_{field}": message for field, message in exc.errors.items()}
        context["host_form"] = {"email": email[:254], "practitioner": practitioner[:200]}
        return render_console("admin/ehr.html", status=422, **context)
    db.commit()
    # Post/redirect/get: a reload shows the list, and sends nothing again.
    return redirect(url_for("console.ehr", hosts="mapped" if changed else "unchanged") + "#hosts")


@bp.post("/ehr/hosts/<mapping_id>/remove")
@admin_required
def unmap_host(mapping_id: str) -> Response:
    """Remove one of this practice's host mappings; another practice's is not found (404)."""
    practice = g.practice
    db = get_session()
    if not host_map.remove_mapping_by_id(db, practice.id, mapping_id, actor=g.admin):
        abort(404)
    db.commit()
    return redirect(url_for("console.ehr", hosts="removed") + "#hosts")


@bp.route("/ehr", methods=["GET", "POST"])
@admin_required
def ehr() -> Response:
    """Walk the admin through connecting their EHR: address, discovery, registration, test."""
    practice = g.practice
    context = _ehr_context(practice)
    fhir_base, client_id = context["fhir_base"], context["client_id"]
    if request.method == "GET":
        return render_console("admin/ehr.html", **context)
    errors = context["errors"]
    action = request.form.get("action", "discover")
    if action == "launch":
        return _set_launch_client(practice, context)
    if not fhir_base.startswith(("https://", "http://")):
        errors["fhir_base"] = "Enter the FHIR base URL, starting with https://"
    if action == "test" and not client_id:
        errors["client_id"] = "Enter the client id the EHR gave you when you registered us"
    if errors:
        return render_console("admin/ehr.html", status=422, **context)
    with requests.Session() as http:
        if action == "discover":
            try:
                context["facts"] = discover(http, fhir_base)
            except SmartError as exc:
                errors["fhir_base"] = explain(exc.reason, fhir_base)
                return render_console("admin/ehr.html", status=422, **context)
            return render_console("admin/ehr.html", **context)
        db = get_session()
        check = check_connection(
            db, practice, fhir_base, client_id, current_app.extensions["vault"], http
        )
    context["check"], context["facts"] = check, check.facts
    if not check.ok:
        return render_console("admin/ehr.html", status=422, **context)
    now = datetime.now(UTC)
    save_connection(db, practice, fhir_base, client_id, check, now)
    audit.record(db, practice.id, g.admin, "ehr.connected", now=now, client_id=client_id)
    db.commit()
    context["connection"] = practice.ehr_connection
    context["saved"] = True
    return render_console("admin/ehr.html", **context)


@bp.get("/problems")
@read_only
@admin_required
def problems(status: int = 200, **errors) -> Response:
    """List what went wrong, why, and offer a retry where one can help."""
    found = problem_service.list_problems(get_session(), g.practice.id)
    return render_console(
        "admin/problems.html",
        status=status,
        title="Problems",
        problems=found,
        titles=PROBLEM_TITLES,
        done=request.args.get("done"),
        **errors,
    )


@bp.post("/problems/session/<problem_id>/link")
@admin_required
def link(problem_id: str) -> Response:
    """Name the client of one of this practice's unmatched sessions (Patient/ID)."""
    patient_ref = request.form.get("patient", "")
    try:
        problem_service.link(
            get_session(), g.practice.id, problem_id, patient_ref, datetime.now(UTC), g.admin
        )
    except problem_service.ProblemNotFound:
        abort(404)
    except problem_service.RetryRefused as exc:
        return problems(
            status=422, link_error={"id": problem_id, "message": str(exc), "value": patient_ref}
        )
    return redirect(url_for("console.problems", done="linked"))


@bp.post("/problems/<kind>/<problem_id>/retry")
@admin_required
def retry(kind: str, problem_id: str) -> Response:
    """Retry one of this practice's problems."""
    try:
        problem_service.retry(
            get_session(), g.practice.id, kind, problem_id, datetime.now(UTC), g.admin
        )
    except problem_service.ProblemNotFound:
        abort(404)
    except problem_service.RetryRefused as exc:
        return render_console(
            "error.html", status=409, title="This cannot be retried", message=str(exc)
        )
    return redirect(url_for("console.problems", done=kind))


@bp.get("/audit")
@read_only
@admin_required
def audit_trail() -> Response:
    """Show who changed what and when: ids and setting names only."""
    return render_console(
        "admin/audit.html", title="Audit", events=audit.recent(get_session(), g.practice.id)
    )


@bp.post("/sign-out")
@admin_required
def sign_out() -> Response:
    """End the admin's session."""
    session.clear()
    return redirect(url_for("front.home"))


@front.get("/")
def home() -> Response:
    """Say what this service is, for anyone who arrives at its address."""
    return page(200, "admin/home.html", title="Alliance Check")


@front.get("/privacy")
def privacy() -> Response:
    """Say what is kept about clients and practices, and for how long."""
    from plugin.install.platforms import load_manifest

    return page(
        200,
        "admin/privacy.html",
        title="Privacy",
        retention=load_manifest()["data_retention"],
    )


bp.after_request(private_page_headers)


def init_app(app: Flask) -> None:
    """Register the console's pages and the front page."""
    app.register_blueprint(bp)
    app.register_blueprint(front)
