"""The therapist's view: a SMART EHR launch against a real authorization and FHIR server.

The EHR (tests/support/oauth_server.py and the strict FHIR server, which enforces
patient/ scopes) holds a client with 12 answered sessions; the test opens the launch URL,
follows the redirects and reads the page.
"""

import re
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import func, select

from plugin.core.models import Invitation, LaunchSession, SessionEvent
from plugin.ehr.keys import generate
from tests.support import fhir_server
from tests.support.data import load_json
from tests.support.launch import (
    LAUNCH_CLIENT,
    LAUNCH_SCOPES,
    REDIRECT_URI,
    follow_launch,
    launch_flags,
    patient_token,
    seed,
    session_bundles,
)

HISTORY = load_json("launch/history.json")
PATIENT = HISTORY["patient"]
BACKEND_SCOPES = "system/QuestionnaireResponse.c system/Observation.c"


@pytest.fixture(scope="module")
def ehr(oauth_server):
    """A strict FHIR server trusting the test authorization server, offering EHR launch."""
    with fhir_server.running(*launch_flags(oauth_server)) as server:
        yield server


@pytest.fixture
def connected(app, client, db, runner, practice, oauth_server, ehr):
    """Connect the demo practice with a launch client id; seed its client's 12 sessions."""
    oauth_server.reset()
    ehr.reset()
    generate(db, app.extensions["vault"], "ES384")
    jwks = client.get("/.well-known/jwks.json").json
    oauth_server.register_client("alliance", jwks=jwks, scopes=BACKEND_SCOPES)
    oauth_server.register_launch_client(LAUNCH_CLIENT, REDIRECT_URI, LAUNCH_SCOPES)
    result = runner.invoke(
        args=[
            "ehr",
            "connect",
            "demo",
            ehr.base_url,
            "--client-id",
            "alliance",
            "--launch-client-id",
            LAUNCH_CLIENT,
        ]
    )
    assert result.exit_code == 0, result.output
    assert f"therapist view   launch client {LAUNCH_CLIENT}" in result.output
    system = app.config["FHIR_IDENTIFIER_SYSTEM"]
    seed(ehr.base_url, oauth_server, session_bundles(HISTORY["sessions"], PATIENT, system))
    return practice


def add_invitations(db, practice, patient_ref: str, statuses: list[str]) -> None:
    """Store invitations of these statuses for one client of the practice."""
    now = datetime.now(UTC)
    for n, status in enumerate(statuses):
        event = SessionEvent(
            practice_id=practice.id,
            platform="standard",
            event_id=f"{practice.id}-{n}",
            session_id=f"s-{n}",
            started_at=now,
            ended_at=now,
            patient_ref=patient_ref,
            status="planned",
            next_attempt_at=now,
            received_at=now,
        )
        db.add_all(
            [
                event,
                Invitation(
                    practice_id=practice.id,
                    session_event=event,
                    status=status,
                    questionnaire="q",
                    patient_ref=patient_ref,
                    language="en",
                    due_at=now,
                    next_attempt_at=now,
                    created_at=now,
                ),
            ]
        )
    db.commit()


def open_chart(oauth_server, ehr, patient: str = PATIENT) -> str:
    """Open a client's chart in the EHR: return the launch value it passes to the app."""
    return oauth_server.register_launch(patient, aud=ehr.base_url, encounter=f"{patient}-e12")


def text_of(response) -> str:
    return response.get_data(as_text=True)


def test_a_launch_shows_the_clients_trend_signals_comments_and_invitations(
    client, db, connected, oauth_server, ehr
):
    add_invitations(db, connected, f"Patient/{PATIENT}", ["answered"] * 12 + ["expired"] * 2)
    launched = follow_launch(client, ehr.base_url, open_chart(oauth_server, ehr))

    assert launched.statuses == [302, 302, 303, 200]
    page = text_of(launched.response)
    # The chart, drawn on the server, and its table: 12 sessions, newest first.
    assert page.count("<svg") == 1 and 'aria-hidden="true"' in page
    assert "12 answered sessions, newest first" in page
    rows = re.findall(r'<tr><th scope="row">([\d-]+)</th><td>([\d.]+)</td>', page)
    assert len(rows) == 12
    assert rows[0] == ("2026-03-30", "18") and rows[-1] == ("2026-01-12", "18")
    # Session 6 dropped (a rupture), session 8 was back (a repair), with the rule's reasons.
    assert "<strong>Rupture</strong>, 2026-02-16: total 6 is 12 below" in page
    assert "<strong>Repair</strong>, 2026-03-02: total 18 is back within" in page
    assert page.index("<strong>Repair</strong>") < page.index("<strong>Rupture</strong>")
    # Comments newest first, escaped.
    comments = re.findall(r"<blockquote>(.*?)</blockquote>", page)
    assert comments == [
        "Better this week.",
        "I felt &lt;b&gt;rushed&lt;/b&gt; &amp; unheard.",
        "Could we start on time?",
    ]
    counts = dict(re.findall(r"<dt>(\w[\w ]*)</dt><dd>(\d+)</dd>", page))
    assert counts == {"Sent": "14", "Answered": "12", "Missed": "2", "Still open": "0"}
    # Only patient-scoped reads of this patient reached the EHR, with the launch token.
    [issued] = [c for c in oauth_server.issued if c.get("patient")]
    assert issued["patient"] == PATIENT and issued["client_id"] == LAUNCH_CLIENT
    assert set(issued["scope"].split()) == set(LAUNCH_SCOPES.split())


def test_the_page_may_be_framed_by_the_connected_ehr_only_and_keeps_the_token_server_side(
    client, db, connected, oauth_server, ehr
):
    first = client.get(
        "/launch", query_string={"iss": ehr.base_url, "launch": open_chart(oauth_server, ehr)}
    )
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Path=/launch" in cookie and "SameSite=Lax" in cookie
    assert "Max-Age" not in cookie and "Expires" not in cookie
    launched = follow_launch(client, ehr.base_url, open_chart(oauth_server, ehr))
    headers = launched.response.headers
    csp = headers["Content-Security-Policy"]
    assert f"frame-ancestors {ehr.origin}" in csp
    assert "default-src 'none'" in csp and "style-src 'self'" in csp and "script" not in csp
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    # The browser holds an opaque id; the row holds the token sealed, never in clear.
    [row] = db.scalars(select(LaunchSession).where(LaunchSession.status == "active")).all()
    assert b"access_token" not in row.sealed and b"eyJ" not in row.sealed
    assert row.expires_at - row.created_at <= timedelta(hours=1)
    assert "eyJ" not in text_of(launched.response)


def test_an_iss_no_practice_connected_is_refused_and_nothing_is_stored(
    client, db, connected, oauth_server, ehr
):
    for iss in (ehr.base_url + "/other", "https://ehr.example.org/fhir", ehr.origin + ":1"):
        response = client.get("/launch", query_string={"iss": iss, "launch": "x"})
        assert response.status_code == 403
        assert "This EHR is not connected" in text_of(response)
        assert "Location" not in response.headers and "Set-Cookie" not in response.headers
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert db.scalar(select(func.count()).select_from(LaunchSession)) == 0
    # A trailing slash is the same base.
    ok = client.get("/launch", query_string={"iss": ehr.base_url + "/", "launch": "x"})
    assert ok.status_code == 302


def test_a_forged_state_is_refused_and_uses_up_the_launch(client, db, connected, oauth_server, ehr):
    launched = follow_launch(client, ehr.base_url, open_chart(oauth_server, ehr), state="forged")
    assert launched.statuses[-1] == 400
    assert "could not be checked" in text_of(launched.response)
    assert db.scalar(select(func.count()).select_from(LaunchSession)) == 0
    assert client.get("/launch/view").status_code == 401


def test_a_replayed_callback_is_refused(client, connected, oauth_server, ehr):
    response = client.get(
        "/launch", query_string={"iss": ehr.base_url, "launch": open_chart(oauth_server, ehr)}
    )
    reply = requests.get(response.headers["Location"], allow_redirects=False, timeout=10)
    callback = reply.headers["Location"].removeprefix("http://localhost")
    assert client.get(callback).status_code == 303
    again = client.get(callback)
    assert again.status_code == 400
    assert "expired" in text_of(again)


def test_a_denied_consent_gets_a_friendly_page(client, connected, oauth_server, ehr):
    oauth_server.deny_next()
    launched = follow_launch(client, ehr.base_url, open_chart(oauth_server, ehr))
    assert launched.statuses == [302, 302, 403]
    assert "Access was not granted" in text_of(launched.response)
    assert client.get("/launch/view").status_code == 401


def test_another_practices_invitations_are_never_counted(
    client, db, connected, other_practice, oauth_server, ehr
):
    # The same patient reference in another practice (another EHR's Patient/c1).
    add_invitations(db, connected, f"Patient/{PATIENT}", ["answered", "sent"])
    add_invitations(db, other_practice, f"Patient/{PATIENT}", ["expired"] * 5)
    launched = follow_launch(client, ehr.base_url, open_chart(oauth_server, ehr))
    counts = dict(re.findall(r"<dt>(\w[\w ]*)</dt><dd>(\d+)</dd>", text_of(launched.response)))
    assert counts == {"Sent": "2", "Answered": "1", "Missed": "0", "Still open": "1"}


def test_a_launch_for_another_patient_reads_only_that_patients_record(
    client, connected, oauth_server, ehr
):
    launched = follow_launch(client, ehr.base_url, open_chart(oauth_server, ehr, "c2"))
    page = text_of(launched.response)
    assert launched.statuses[-1] == 200
    assert "No answered questionnaires for this client yet." in page
    assert "unheard" not in page


def test_the_ehr_refuses_a_patient_token_outside_its_patient(connected, oauth_server, ehr):
    token = patient_token(oauth_server, ehr.base_url, open_chart(oauth_server, ehr))
    base, auth = ehr.base_url, {"Authorization": f"Bearer {token}"}
    mine = requests.get(f"{base}/Observation?subject=Patient/{PATIENT}", headers=auth, timeout=10)
    assert mine.status_code == 200
    for query in ("Observation", "Observation?subject=Patient/c2", "Observation?code=x"):
        assert requests.get(f"{base}/{query}", headers=auth, timeout=10).status_code == 403
