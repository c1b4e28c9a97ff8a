"""POST /webhooks/zoom, then the worker finds the client through Zoom and the practice's EHR.

Zoom's webhooks are signed here exactly as Zoom signs them; Zoom's REST API is the stand-in
in tests/zoom_api.py (Zoom cannot run here). The EHR is the real test FHIR server, trusting the
real test OAuth server and enforcing SMART scopes, so the Patient search works only with the
read scope Alliance Check asks for.
"""

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import func, select

from plugin.core.models import EhrWrite, InstallEvent, Invitation, Practice, SessionEvent
from plugin.ehr.keys import current_signer
from plugin.ehr.smart import fetch_token
from plugin.jobs import tick
from tests.support import fhir_server
from tests.support.data import load_json, session_ended
from tests.support.ehr_desk import PARTICIPANTS, UUID, Ehr
from tests.support.zoom_api import ZOOM_SECRETS, ZoomWebhooks, add_zoom_practice, zoom_payload
from webhooks.zoom import sign

ACCOUNT = "zoom-acct-A"
TOKEN = "zoom-access-A"


@pytest.fixture
def config(config, zoom_api):
    """The test settings, with Zoom's webhook secret and API pointed at the stand-in."""
    return {**config, **zoom_api.config}


@pytest.fixture
def zoom_hooks(client) -> ZoomWebhooks:
    """Post deliveries signed as Zoom signs them."""
    return ZoomWebhooks(client)


@pytest.fixture
def ehr_desk(app, client, db, runner, ehr, oauth_server) -> Ehr:
    """The test FHIR server, emptied, with our client registered to write and search."""
    return Ehr(app, client, db, runner, ehr, oauth_server)


@pytest.fixture
def zoom_practice(app, db, zoom_api, ehr_desk):
    """A Zoom practice installed with its token, connected to the FHIR server, one meeting."""
    practice = add_zoom_practice(db, app.extensions["vault"], ACCOUNT, TOKEN)
    ehr_desk.connect(ACCOUNT)
    zoom_api.add_meeting(TOKEN, UUID, PARTICIPANTS)
    db.refresh(practice)
    return practice


def count(db, model, *where) -> int:
    """Count rows visible in the test transaction."""
    return db.scalar(select(func.count()).select_from(model).where(*where))


def soon(minutes: int = 1) -> datetime:
    """A moment just ahead of the real clock (intake stamps rows with it)."""
    return datetime.now(UTC) + timedelta(minutes=minutes)


# --- the endpoint --------------------------------------------------------------------------


def test_url_validation_is_answered_with_the_hmac_of_the_plain_token(zoom_hooks):
    response = zoom_hooks.post(zoom_payload("url_validation.json"))
    assert response.status_code == 200
    expected = hmac.new(
        ZOOM_SECRETS["secret_token"].encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256
    ).hexdigest()
    assert response.json == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}


@pytest.mark.parametrize(
    ("case", "payload"),
    [
        ("forged", "url_validation.json"),
        ("forged", "meeting_ended.json"),
        ("stale", "meeting_ended.json"),
        ("future", "meeting_ended.json"),
        ("tampered", "meeting_ended.json"),
        ("forged", "app_deauthorized.json"),
    ],
)
def test_unproven_deliveries_are_401_and_change_nothing(client, db, zoom_practice, case, payload):
    body = json.dumps(zoom_payload(payload)).encode()
    secret = ZOOM_SECRETS["forger" if case == "forged" else "secret_token"]
    minutes = {"stale": -6, "future": 6}.get(case, 0)
    hooks = ZoomWebhooks(client, secret)
    headers = sign(secret, datetime.now(UTC) + timedelta(minutes=minutes), body)
    if case == "tampered":
        body = body.replace(b"85417329902", b"85417329903")
    response = hooks.post(body, headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert "encryptedToken" not in response.get_data(as_text=True)
    assert count(db, SessionEvent) == 0
    assert count(db, Practice, Practice.account_id == ACCOUNT) == 1


def test_a_malformed_body_is_400_so_zoom_does_not_retry_it(zoom_hooks, db, zoom_practice):
    payload = zoom_payload("meeting_ended.json")
    del payload["payload"]["object"]["uuid"]
    response = zoom_hooks.post(payload)
    assert response.status_code == 400
    assert response.json["field"] == "payload.object.uuid"
    assert count(db, SessionEvent) == 0


def test_events_we_do_not_use_are_acknowledged(zoom_hooks, db, zoom_practice):
    assert zoom_hooks.post(zoom_payload("meeting_started.json")).status_code == 204
    assert count(db, SessionEvent) == 0


# --- meeting.ended to invitation -----------------------------------------------------------


def test_meeting_ended_twice_is_one_session_and_one_invitation_for_the_patient_found(
    app,
    zoom_hooks,
    db,
    zoom_practice,
    zoom_api,
    ehr_desk,
):
    ids = ehr_desk.file("sam", "therapist")
    assert zoom_hooks.post(zoom_payload("meeting_ended.json")).status_code == 204
    assert zoom_hooks.post(zoom_payload("meeting_ended_again.json")).status_code == 204
    event = db.scalar(select(SessionEvent))
    assert count(db, SessionEvent) == 1
    # Acknowledged within Zoom's 3 s with nothing looked up yet: the worker does that.
    assert (event.status, event.patient_ref, event.contact) == ("pending", None, None)
    assert zoom_api.api_calls() == []

    tick(app, soon())
    db.refresh(event)
    invitation = db.scalar(select(Invitation))
    # The therapist's own test Patient is never a candidate: the host is Zoom-internal.
    assert (event.status, event.patient_ref) == ("planned", f"Patient/{ids['sam']}")
    assert count(db, Invitation) == 1
    assert invitation.patient_ref == f"Patient/{ids['sam']}"
    # The email Zoom and the EHR agree on; the EHR's mobile, never its landline.
    assert app.extensions["vault"].open(invitation.contact) == {
        "email": "sam.rivera@example.org",
        "phone": "+12025550143",
    }
    # The search ran on a token of its own that may only read Patients, nothing else.
    ours = [t["scope"] for t in ehr_desk.oauth.issued if t["client_id"] == "alliance"]
    assert "system/Patient.rs" in ours
    [call] = zoom_api.participant_calls()
    assert call.token == TOKEN
    assert call.raw_path == "/v2/past_meetings/4444AAAiAAAAAiAiAiiAii%3D%3D/participants"

    tick(app, soon(60))
    assert count(db, Invitation) == 1
    assert len(zoom_api.participant_calls()) == 1


def test_a_uuid_zoom_wants_double_encoded_reaches_the_right_meeting(
    app,
    zoom_hooks,
    db,
    zoom_practice,
    zoom_api,
    ehr_desk,
):
    odd = "/Ab//cD+ef9GhIjKlMnOpQ=="
    zoom_api.add_meeting(TOKEN, odd, PARTICIPANTS)
    ehr_desk.file("sam")
    zoom_hooks.post(zoom_payload("meeting_ended.json", uuid=odd))
    tick(app, soon())
    assert db.scalar(select(SessionEvent.status)) == "planned"
    assert zoom_api.api_calls()[0].raw_path.startswith("/v2/past_meetings/%252FAb%252F%252FcD")


def list_sessions(runner, *args: str) -> str:
    """Run `alliance-check sessions list` and return its rows, below the header row."""
    result = runner.invoke(args=["sessions", "list", *args])
    assert result.exit_code == 0, result.output
    if result.output == "no sessions match\n":
        return result.output
    header, _, rows = result.output.partition("\n")
    assert header.startswith("id\tplatform\t"), result.output
    return rows


@pytest.mark.parametrize(
    ("filed", "participants", "reason"),
    [
        pytest.param(("sam",), PARTICIPANTS[:1], "no_participants", id="only-the-host"),
        pytest.param(("therapist",), PARTICIPANTS, "no_match", id="no-patient-has-the-email"),
        pytest.param(("sam", "sam_duplicate"), PARTICIPANTS, "several_matches", id="two-records"),
    ],
)
def test_no_single_patient_means_unmatched_no_invitation_and_listed_for_the_admin(
    app,
    zoom_hooks,
    db,
    runner,
    zoom_practice,
    zoom_api,
    ehr_desk,
    filed,
    participants,
    reason,
):
    zoom_api.add_meeting(TOKEN, UUID, participants)
    ehr_desk.file(*filed)
    zoom_hooks.post(zoom_payload("meeting_ended.json"))
    tick(app, soon())
    event = db.scalar(select(SessionEvent))
    assert (event.status, event.reason, event.patient_ref) == ("unmatched", reason, None)
    assert count(db, Invitation) == 0
    listed = list_sessions(runner, "--status", "unmatched", ACCOUNT)
    assert listed.split("\t") == [
        event.id,
        "zoom",
        ACCOUNT,
        event.ended_at.strftime("%Y-%m-%d %H:%M:%SZ"),
        "unmatched",
        f"{reason}\n",
    ]
    # The admin sees ids and reasons only.
    assert "@" not in listed and "Rivera" not in listed
    # Unmatched is final: later ticks ask neither Zoom nor the EHR again.
    calls = len(zoom_api.api_calls())
    tick(app, soon(600))
    assert len(zoom_api.api_calls()) == calls


def test_an_unmatched_session_is_planned_again_once_the_patient_is_filed(
    app, zoom_hooks, db, runner, zoom_practice, ehr_desk
):
    zoom_hooks.post(zoom_payload("meeting_ended.json"))
    tick(app, soon())
    event = db.scalar(select(SessionEvent))
    assert (event.status, event.reason) == ("unmatched", "no_match")

    # The practice files the client's record, then asks for the session to be looked at again.
    ids = ehr_desk.file("sam")
    result = runner.invoke(args=["sessions", "retry", "--all-unmatched"])
    assert result.exit_code == 0, result.output
    assert "queued 1 session(s)" in result.output
    tick(app, soon(2))
    db.refresh(event)
    assert (event.status, event.patient_ref) == ("planned", f"Patient/{ids['sam']}")
    assert count(db, Invitation) == 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], "name session ids, or pass --all-unmatched"),
        (["no-such-session"], "not unmatched or failed, or unknown"),
    ],
)
def test_retrying_sessions_refuses_what_it_cannot_retry(runner, args, error):
    result = runner.invoke(args=["sessions", "retry", *args])
    assert result.exit_code != 0
    assert error in result.output


def test_a_session_whose_known_client_failed_cannot_be_retried(db, runner, practice, webhooks):
    webhooks.post(session_ended("s-1"))
    event = db.scalar(select(SessionEvent))
    # As planning leaves a session it gave up on: the contact details are gone with it.
    event.status, event.reason, event.contact = "failed", "TypeError", None
    db.commit()
    result = runner.invoke(args=["sessions", "retry", event.id])
    assert result.exit_code != 0
    assert "contact details were deleted" in result.output
    db.refresh(event)
    assert event.status == "failed"


def test_an_inactive_duplicate_record_is_not_a_second_match(
    app, zoom_hooks, db, zoom_practice, ehr_desk
):
    ids = ehr_desk.file("sam", "sam_merged")
    zoom_hooks.post(zoom_payload("meeting_ended.json"))
    tick(app, soon())
    assert db.scalar(select(SessionEvent.patient_ref)) == f"Patient/{ids['sam']}"
    assert count(db, Invitation) == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [(503, "platform_unavailable"), (429, "platform_unavailable"), (404, "platform_not_found")],
)
def test_zoom_failing_is_retried_later_and_the_session_is_not_lost(
    app,
    zoom_hooks,
    db,
    zoom_practice,
    zoom_api,
    ehr_desk,
    status,
    reason,
):
    ehr_desk.file("sam")
    zoom_hooks.post(zoom_payload("meeting_ended.json"))
    zoom_api.fail_next(1, status)
    tick(app, soon())
    event = db.scalar(select(SessionEvent))
    assert (event.status, event.attempts, event.last_error) == ("pending", 1, reason)
    assert count(db, Invitation) == 0
    # Not before the backoff, then found.
    tick(app, soon(0))
    assert db.scalar(select(SessionEvent.attempts)) == 1
    tick(app, soon(30))
    db.refresh(event)
    assert event.status == "planned"
    assert count(db, Invitation) == 1


def test_the_ehr_failing_during_the_search_is_retried_later(
    app, zoom_hooks, db, zoom_practice, ehr_desk, ehr
):
    ehr_desk.file("sam")
    zoom_hooks.post(zoom_payload("meeting_ended.json"))
    ehr.fail_next(1, status=503, method="GET")
    tick(app, soon())
    event = db.scalar(select(SessionEvent))
    assert (event.status, event.last_error) == ("pending", "ehr_unavailable")
    tick(app, soon(30))
    db.refresh(event)
    assert event.status == "planned"


def test_an_ehr_that_refuses_the_search_scope_fails_the_session_for_the_admin(
    app, zoom_hooks, db, runner, zoom_practice, ehr_desk, oauth_server, client
):
    ehr_desk.file("sam")
    # The EHR's administrator allowed writes only: no token for a Patient search.
    oauth_server.register_client(
        "alliance",
        jwks=client.get("/.well-known/jwks.json").json,
        scopes="system/QuestionnaireResponse.c system/Observation.c",
    )
    app.config["PLAN_MAX_ATTEMPTS"] = 2
    zoom_hooks.post(zoom_payload("meeting_ended.json"))
    tick(app, soon())
    assert db.scalar(select(SessionEvent.last_error)) == "ehr_no_token"
    tick(app, soon(60))
    event = db.scalar(select(SessionEvent))
    assert (event.status, event.reason) == ("failed", "ehr_no_token")
    assert count(db, Invitation) == 0
    assert "ehr_no_token" in list_sessions(runner, "--status", "failed")


def test_connecting_a_zoom_practice_to_an_ehr_that_refuses_the_search_is_refused(
    app, db, runner, ehr, ehr_desk, oauth_server, client
):
    practice = add_zoom_practice(db, app.extensions["vault"], ACCOUNT, TOKEN)
    oauth_server.register_client(
        "alliance",
        jwks=client.get("/.well-known/jwks.json").json,
        scopes="system/QuestionnaireResponse.c system/Observation.c",
    )
    result = runner.invoke(
        args=[
            *("ehr", "connect", ACCOUNT, ehr.base_url),
            *("--client-id", "alliance", "--platform", "zoom"),
        ]
    )
    # Said at once, to the operator, instead of every session failing hours later.
    assert result.exit_code != 0
    assert "system/Patient.rs" in result.output and "not connected" in result.output
    db.refresh(practice)
    assert practice.ehr_connection is None


def test_a_practice_that_must_reauthorise_is_retried_a_bounded_number_of_times(
    app,
    zoom_hooks,
    db,
    runner,
    zoom_practice,
    zoom_api,
    ehr_desk,
):
    ehr_desk.file("sam")
    zoom_practice.status = "needs_reauth"
    db.commit()
    app.config["PLAN_MAX_ATTEMPTS"] = 3
    zoom_hooks.post(zoom_payload("meeting_ended.json"))
    for days in range(1, 6):
        tick(app, soon(days * 24 * 60))
    event = db.scalar(select(SessionEvent))
    assert (event.status, event.reason, event.attempts) == ("failed", "platform_needs_reauth", 3)
    # A refused refresh token is not spent again and again: Zoom was never called.
    assert zoom_api.api_calls() == []
    assert count(db, Invitation) == 0
    assert "platform_needs_reauth" in list_sessions(runner, "--status", "failed", ACCOUNT)


def test_a_practice_reauthorised_within_the_retries_gets_its_session_through(
    app, zoom_hooks, db, zoom_practice, ehr_desk
):
    ehr_desk.file("sam")
    zoom_practice.status = "needs_reauth"
    db.commit()
    zoom_hooks.post(zoom_payload("meeting_ended.json"))
    tick(app, soon())
    assert db.scalar(select(SessionEvent.last_error)) == "platform_needs_reauth"
    zoom_practice.status = "active"
    db.commit()
    tick(app, soon(30))
    assert db.scalar(select(SessionEvent.status)) == "planned"


def test_a_practice_without_a_searchable_ehr_is_unmatched_without_asking_zoom(
    app,
    zoom_hooks,
    db,
    zoom_api,
):
    add_zoom_practice(db, app.extensions["vault"], "zoom-acct-ndjson", "zoom-access-N")
    zoom_api.add_meeting("zoom-access-N", UUID, PARTICIPANTS)
    zoom_hooks.post(zoom_payload("meeting_ended.json", account_id="zoom-acct-ndjson"))
    tick(app, soon())
    event = db.scalar(select(SessionEvent))
    assert (event.status, event.reason) == ("unmatched", "no_ehr_search")
    # Nothing about the attendees is fetched when it could not be used.
    assert zoom_api.api_calls() == []


# --- uninstall -----------------------------------------------------------------------------


def test_app_deauthorized_deletes_the_account_and_revokes_its_token(
    zoom_hooks,
    db,
    zoom_practice,
    zoom_api,
):
    zoom_hooks.post(zoom_payload("meeting_ended.json"))
    assert count(db, SessionEvent) == 1
    response = zoom_hooks.post(zoom_payload("app_deauthorized.json"))
    assert response.status_code == 204
    assert count(db, Practice, Practice.account_id == ACCOUNT) == 0
    assert count(db, SessionEvent) == 0
    audit = db.scalar(select(InstallEvent).where(InstallEvent.action == "uninstalled"))
    assert (audit.platform, audit.account_id) == ("zoom", ACCOUNT)
    assert f"refresh-{TOKEN}" in zoom_api.revoked


def test_app_deauthorized_for_an_unknown_account_is_acknowledged(zoom_hooks, db, zoom_practice):
    response = zoom_hooks.post(zoom_payload("app_deauthorized.json", account_id="nobody"))
    assert response.status_code == 204
    assert count(db, Practice, Practice.account_id == ACCOUNT) == 1


def test_sessions_list_says_so_when_nothing_matches(runner, db):
    assert list_sessions(runner, "--status", "unmatched") == "no sessions match\n"


def test_connect_records_that_the_ehr_can_search_patients(db, zoom_practice):
    assert zoom_practice.ehr_connection.facts["patient_search"] is True


def test_an_ehr_without_patient_search_is_unmatched_without_asking_zoom(
    app, zoom_hooks, db, zoom_practice, zoom_api
):
    connection = zoom_practice.ehr_connection
    connection.facts = {**connection.facts, "patient_search": False}
    db.commit()
    zoom_hooks.post(zoom_payload("meeting_ended.json"))
    tick(app, soon())
    assert db.scalar(select(SessionEvent.reason)) == "no_ehr_search"
    assert zoom_api.api_calls() == []


def test_a_smart_v1_ehr_is_searched_with_the_v1_read_scope(
    app, client, db, runner, zoom_hooks, zoom_api, oauth_server
):
    with fhir_server.running(
        *fhir_server.trusting(oauth_server), "--enforce-scopes", "--smart-v1"
    ) as v1:
        desk = Ehr(app, client, db, runner, v1, oauth_server)
        oauth_server.register_client(
            "alliance",
            jwks=client.get("/.well-known/jwks.json").json,
            scopes="system/QuestionnaireResponse.write system/Observation.write "
            "system/Patient.read",
        )
        add_zoom_practice(db, app.extensions["vault"], ACCOUNT, TOKEN)
        desk.connect(ACCOUNT)
        zoom_api.add_meeting(TOKEN, UUID, PARTICIPANTS)
        ids = desk.file("sam")
        zoom_hooks.post(zoom_payload("meeting_ended.json"))
        tick(app, soon())
    assert db.scalar(select(SessionEvent.patient_ref)) == f"Patient/{ids['sam']}"
    ours = [t["scope"] for t in oauth_server.issued if t["client_id"] == "alliance"]
    assert "system/Patient.read" in ours


# --- end to end ------------------------------------------------------------------------------

SUBMISSION = load_json("fhir/submissions.json")["mixed"]


def test_a_zoom_session_lands_in_the_ehr_under_the_patient_found(
    mail_app, smtp, client, db, zoom_hooks, zoom_practice, ehr_desk, ehr, oauth_server
):
    ids = ehr_desk.file("sam")
    assert zoom_hooks.post(zoom_payload("meeting_ended.json")).status_code == 204

    # Planning finds Sam through Zoom and the EHR; dispatch mails Sam in the same tick.
    tick(mail_app, soon(15))
    [message] = smtp.messages
    path = re.search(r"/q/[\w-]+", message.get_body(("plain",)).get_content()).group(0)
    page = client.get(path).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post(path, data={"csrf_token": csrf, **SUBMISSION["form"]}).status_code == 200

    tick(mail_app, soon(16))
    invitation = db.scalar(select(Invitation))
    write = db.scalar(select(EhrWrite))
    assert (invitation.patient_ref, write.status, write.path) == (
        f"Patient/{ids['sam']}",
        "done",
        "transaction",
    )
    assert db.scalar(select(SessionEvent.status)) == "planned"

    # Read it back as the practice's records desk would: filed under Sam, nobody else.
    oauth_server.register_client(
        "auditor",
        jwks=client.get("/.well-known/jwks.json").json,
        scopes="system/QuestionnaireResponse.rs",
    )
    signer = current_signer(db, mail_app.extensions["vault"])
    token = fetch_token(
        "auditor", oauth_server.token_endpoint, "system/QuestionnaireResponse.rs", signer
    )
    found = requests.get(
        f"{ehr.base_url}/QuestionnaireResponse",
        params={"subject": f"Patient/{ids['sam']}"},
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    ).json()
    assert found["total"] == 1
    [entry] = found["entry"]
    assert entry["resource"]["status"] == "completed"
    assert entry["resource"]["subject"] == {"reference": f"Patient/{ids['sam']}"}
