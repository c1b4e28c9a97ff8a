"""The EHR side of a SMART EHR launch, for the launch tests and the benchmark.

Seed a client's history into the FHIR test server as the worker would have written it,
register Alliance Check as a launch app with the test authorization server, open the
client's chart (a `launch` context) and follow the redirects the way a browser does.
"""

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import requests

from fhir_mappings.bundle import ResponseContext, build_transaction
from fhir_mappings.instrument import load_bundled
from fhir_mappings.scoring import score, validate_answers
from tests.support import fhir_server

INSTRUMENT = load_bundled()
START = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
LAUNCH_CLIENT = "alliance-launch"
REDIRECT_URI = "http://localhost/launch/callback"
LAUNCH_SCOPES = (
    "launch openid fhirUser patient/Observation.rs patient/QuestionnaireResponse.rs patient/Flag.rs"
)
SEED_SCOPES = "system/QuestionnaireResponse.c system/Observation.c"


def session_bundles(
    sessions: list[dict], patient: str, identifier_system: str, start: datetime = START
) -> list[dict]:
    """Return one transaction Bundle per session spec ({"option", "differently"?}), weekly."""
    bundles = []
    for n, spec in enumerate(sessions, start=1):
        form = {item.link_id: spec["option"] for item in INSTRUMENT.choice_items}
        if "differently" in spec:
            form["differently"] = spec["differently"]
        answers, errors = validate_answers(INSTRUMENT, form)
        assert errors == {}, errors
        when = start + timedelta(weeks=n)
        bundles.append(
            build_transaction(
                INSTRUMENT,
                answers,
                score(INSTRUMENT, answers),
                ResponseContext(
                    response_id=f"{patient}-r{n}",
                    identifier_system=identifier_system,
                    patient=f"Patient/{patient}",
                    practitioner=None,
                    encounter=f"Encounter/{patient}-e{n}",
                    authored=when,
                    session_ended_at=when,
                ),
            )
        )
    return bundles


def seed(fhir_base: str, oauth, bundles: list[dict]) -> None:
    """Write the bundles to the FHIR server with a seeding token."""
    token = oauth.issue_token("seeder", SEED_SCOPES)
    with requests.Session() as http:
        for bundle in bundles:
            reply = http.post(
                fhir_base,
                json=bundle,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/fhir+json",
                },
                timeout=30,
            )
            assert reply.status_code == 200, reply.text[:2000]


@dataclass
class Launched:
    """Where a launch ended: every status on the way, and the last response."""

    statuses: list[int]
    response: object


def follow_launch(client, iss: str, launch: str, *, state: str | None = None) -> Launched:
    """Open /launch as the EHR does and follow the redirects as a browser: ours, the EHR's.

    `client` is a Flask test client (it keeps our cookie); the EHR's authorization endpoint
    is called over HTTP. With `state`, the callback gets that state instead (a forgery).
    """
    statuses = []
    response = client.get("/launch", query_string={"iss": iss, "launch": launch})
    statuses.append(response.status_code)
    if response.status_code != 302:
        return Launched(statuses, response)
    reply = requests.get(response.headers["Location"], allow_redirects=False, timeout=10)
    statuses.append(reply.status_code)
    if reply.status_code != 302:
        return Launched(statuses, reply)
    callback = urlsplit(reply.headers["Location"])
    query = callback.query
    if state is not None:
        params = parse_qs(query)
        params["state"] = [state]
        query = "&".join(f"{k}={v[0]}" for k, v in params.items())
    response = client.get(f"{callback.path}?{query}")
    statuses.append(response.status_code)
    while response.status_code in (302, 303):
        response = client.get(response.headers["Location"])
        statuses.append(response.status_code)
    return Launched(statuses, response)


def patient_token(oauth, fhir_base: str, launch: str) -> str:
    """Run the launch grant without the app (as a bare client would): a patient-scoped token."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    reply = requests.get(
        oauth.authorization_endpoint,
        params={
            "response_type": "code",
            "client_id": LAUNCH_CLIENT,
            "redirect_uri": REDIRECT_URI,
            "scope": LAUNCH_SCOPES,
            "state": "s",
            "aud": fhir_base,
            "launch": launch,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=10,
    )
    code = parse_qs(urlsplit(reply.headers["Location"]).query)["code"][0]
    token = requests.post(
        oauth.token_endpoint,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": LAUNCH_CLIENT,
            "code_verifier": verifier,
        },
        timeout=10,
    ).json()
    return token["access_token"]


def launch_flags(oauth) -> tuple[str, ...]:
    """Flags for a strict FHIR server that trusts the test authorization server and offers
    the EHR launch (its smart-configuration names the authorization endpoint)."""
    return (
        *fhir_server.trusting(oauth),
        "--enforce-scopes",
        "--authorize-endpoint",
        oauth.authorization_endpoint,
    )
