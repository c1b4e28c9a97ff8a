"""The therapist's view inside the EHR: SMART App Launch (EHR launch), then the alliance page.

`/launch?iss=…&launch=…` is registered with the EHR. An `iss` that no installed practice has
connected (with a launch client id) gets a friendly 403 and nothing is stored. Otherwise the
browser goes to the EHR's authorization endpoint (PKCE S256, state, `aud`, `launch`) with an
opaque cookie; `/launch/callback` checks the state once, exchanges the code and keeps the
token sealed on the server; `/launch/view` draws the page from the patient-scoped searches.
"""

import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Flask, Response, current_app, g, redirect, render_template, request
from sqlalchemy import select

from plugin.core.db import get_session, read_only
from plugin.core.errors import page, private_page_headers
from plugin.core.models import EhrConnection, Practice, PracticeStatus
from plugin.ehr.errors import EhrError, FhirError
from plugin.ehr.fhir import FhirClient
from plugin.ehr.launch import authorization_url, exchange_code, new_verifier
from plugin.ehr.smart import discover_launch
from plugin.therapist import history, sessions
from plugin.therapist.chart import trend_rows, trend_svg
from plugin.therapist.invitations import count_invitations

bp = Blueprint("launch", __name__)
# A FHIR logical id (R4 `id` type); anything else in `patient` is not a usable context.
PATIENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_PARAM = 2000


@bp.after_request
def _headers(response: Response) -> Response:
    """Keep the page private, and let only the connected EHR frame it."""
    private_page_headers(response)
    ancestors = g.get("frame_origin") or "'none'"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        f"base-uri 'none'; frame-ancestors {ancestors}"
    )
    return response


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _redirect_uri() -> str:
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + "/launch/callback"


def _http() -> requests.Session:
    return current_app.extensions["launch_http"]


def _problem(status: int, title: str, message: str) -> Response:
    return page(status, "error.html", title=title, message=message)


def _again(status: int, title: str, what: str) -> Response:
    return _problem(status, title, f"{what} Open Alliance Check again from the client's chart.")


def _connection_for(iss: str) -> EhrConnection | None:
    """Return the one active practice's connection whose FHIR base is exactly `iss`."""
    base = iss.rstrip("/")
    found = (
        get_session()
        .scalars(
            select(EhrConnection)
            .join(Practice, Practice.id == EhrConnection.practice_id)
            .where(
                EhrConnection.fhir_base == base,
                EhrConnection.launch_client_id.is_not(None),
                Practice.status == PracticeStatus.ACTIVE,
                Practice.ehr_target == base,
            )
        )
        .all()
    )
    # Two practices on one EHR cannot be told apart from a launch: refuse rather than guess.
    return found[0] if len(found) == 1 else None


@bp.get("/launch")
def launch() -> Response:
    """Start the EHR launch: check `iss`, discover the EHR, send the browser to authorize."""
    iss, launch_id = request.args.get("iss", ""), request.args.get("launch", "")
    if not iss or not launch_id or len(iss) > MAX_PARAM or len(launch_id) > MAX_PARAM:
        return _problem(
            400,
            "Open this from your EHR",
            "Alliance Check's view opens from a client's chart in your EHR.",
        )
    connection = _connection_for(iss)
    if connection is None:
        return _problem(
            403,
            "This EHR is not connected",
            "No practice using Alliance Check has registered this EHR for the therapist's "
            "view. Your practice's administrator can connect it.",
        )
    g.frame_origin = _origin(connection.fhir_base)
    try:
        endpoints = discover_launch(_http(), connection.fhir_base)
    except EhrError:
        return _again(502, "Your EHR could not be reached", "Its sign-in details did not load.")
    state, verifier = secrets.token_urlsafe(32), new_verifier()
    url = authorization_url(
        connection.launch_client_id,
        endpoints.authorization_endpoint,
        _redirect_uri(),
        state=state,
        verifier=verifier,
        iss=connection.fhir_base,
        launch=launch_id,
    )
    token = sessions.start(
        get_session(),
        connection.practice_id,
        {
            "state": state,
            "verifier": verifier,
            "token_endpoint": endpoints.token_endpoint,
            "fhir_base": connection.fhir_base,
            "client_id": connection.launch_client_id,
        },
        datetime.now(UTC),
    )
    response = redirect(url, 302)
    sessions.set_cookie(response, token)
    return response


@bp.get("/launch/callback")
def callback() -> Response:
    """Check the state once, exchange the code, keep the token sealed, then show the page."""
    db, now = get_session(), datetime.now(UTC)
    found = sessions.find(db, request.cookies.get(sessions.COOKIE), sessions.PENDING, now)
    if found is None:
        return _again(
            400,
            "This launch has expired",
            "It took too long, was already used, or your browser did not keep its cookie.",
        )
    row, data = found
    g.frame_origin = _origin(data["fhir_base"])
    # The state is used up whatever happens next: a second try needs a new launch.
    sessions.end(db, row)
    state = request.args.get("state", "")
    if not hmac.compare_digest(state.encode(), data["state"].encode()):
        return _again(400, "This launch could not be checked", "Its answer did not match.")
    if "error" in request.args:
        if request.args["error"] == "access_denied":
            return _again(
                403, "Access was not granted", "Alliance Check was not allowed to read the chart."
            )
        return _again(502, "Your EHR refused the launch", "It did not give access.")
    try:
        token = exchange_code(
            data["client_id"],
            data["token_endpoint"],
            _redirect_uri(),
            request.args.get("code", ""),
            data["verifier"],
        )
    except EhrError:
        return _again(502, "Your EHR refused the launch", "It did not give access.")
    patient = token.get("patient")
    if not isinstance(patient, str) or not PATIENT_ID.match(patient):
        return _again(
            502, "No client is open", "Your EHR did not say which client's chart is open."
        )
    lifetime = token.get("expires_in")
    active = sessions.activate(
        db,
        row.practice_id,
        {
            "fhir_base": data["fhir_base"],
            "access_token": token["access_token"],
            "patient": patient,
            "encounter": token.get("encounter"),
        },
        timedelta(seconds=lifetime) if isinstance(lifetime, int) else sessions.SESSION_LIFETIME,
        now,
    )
    # 303 to a plain URL: a reload must not replay the code, and the code leaves the URL bar.
    response = redirect("/launch/view", 303)
    sessions.set_cookie(response, active)
    return response


@bp.get("/launch/view")
@read_only
def view() -> Response:
    """Draw the client's alliance trend, signals, comments and invitations."""
    db = get_session()
    found = sessions.find(
        db, request.cookies.get(sessions.COOKIE), sessions.ACTIVE, datetime.now(UTC)
    )
    if found is None:
        return _again(401, "Your session has ended", "It lasts an hour, or until the tab closes.")
    row, data = found
    g.frame_origin = _origin(data["fhir_base"])
    practice = db.get(Practice, row.practice_id)
    client = FhirClient(data["fhir_base"], lambda: data["access_token"], lambda: None, _http())
    instruments = current_app.extensions["instruments"]
    try:
        found_history = history.load(
            client,
            data["patient"],
            instruments,
            instruments[current_app.extensions["default_instrument"]],
            current_app.config["FHIR_IDENTIFIER_SYSTEM"],
            practice.timezone,
        )
    except FhirError as exc:
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403):
            return _again(401, "Your session has ended", "Your EHR no longer accepts it.")
        return _again(502, "Your EHR could not be read", "The scores did not load.")
    counts = count_invitations(db, practice.id, f"Patient/{data['patient']}")
    return Response(
        render_template(
            "launch/view.html",
            title="Alliance over time",
            svg=trend_svg(found_history.points, found_history.highs),
            rows=trend_rows(found_history.points),
            history=found_history,
            counts=counts,
        ),
        mimetype="text/html",
    )


def init_app(app: Flask) -> None:
    """Register the launch view and its HTTP connection pool."""
    app.extensions["launch_http"] = requests.Session()
    app.register_blueprint(bp)
