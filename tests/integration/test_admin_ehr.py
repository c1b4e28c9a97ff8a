"""The console's EHR wizard against the real test FHIR and authorization servers.

It runs the same checks as `ehr connect`, says what went wrong in words an admin can act on
(never an exception's class name), changes nothing until every check passes, and turns the
therapist's view on with a launch client id.
"""

import pytest
from sqlalchemy import select

from plugin.core.models import AuditEvent, EhrConnection, Practice
from plugin.ehr.keys import generate
from tests.support.console import csrf_token, sign_in
from tests.support.ehr_desk import WRITE_AND_SEARCH
from tests.support.platform_server import zoom_settings
from tests.support.ports import free_port

WIZARD = "/console/ehr"


@pytest.fixture
def config(config, zoom_platform):
    """Make Zoom installable against the test platform server."""
    return {**config, **zoom_settings(zoom_platform)}


@pytest.fixture
def admin(app, client, db, zoom_platform, oauth_server, ehr):
    """Sign the Riverside owner in, with our signing key published; return (client, practice)."""
    oauth_server.reset()
    ehr.reset()
    generate(db, app.extensions["vault"], "ES384")
    sign_in(client, zoom_platform)
    practice = db.scalar(select(Practice).where(Practice.account_id == "zoom-acct-riverside"))
    return client, practice


def post(client, **form):
    """Post the wizard's form with its CSRF token."""
    return client.post(WIZARD, data={"csrf_token": csrf_token(client, WIZARD), **form})


def text(response) -> str:
    return response.get_data(as_text=True)


def test_looking_up_an_unreachable_server_says_so_in_plain_words(admin):
    client, _ = admin
    response = post(client, action="discover", fhir_base=f"http://127.0.0.1:{free_port()}/fhir")
    assert response.status_code == 422
    assert "We could not reach" in text(response)
    assert "Error" not in text(response).replace("error-summary", "")


def test_looking_up_a_server_shows_what_discovery_found_and_what_to_register(admin, ehr):
    client, _ = admin
    response = post(client, action="discover", fhir_base=ehr.base_url)
    assert response.status_code == 200
    page = text(response)
    assert "What we found" in page and "Sign-in server" in page
    assert "http://localhost/.well-known/jwks.json" in page


def test_an_unregistered_client_is_refused_in_plain_words_and_nothing_changes(admin, db, ehr):
    client, practice = admin
    target_before = practice.ehr_target
    response = post(client, action="test", fhir_base=ehr.base_url, client_id="not-registered")
    assert response.status_code == 422
    assert "The EHR refused to give us an access token" in text(response)
    assert "SmartError" not in text(response)
    db.expire_all()
    assert db.scalar(select(EhrConnection).where(EhrConnection.practice_id == practice.id)) is None
    assert db.get(Practice, practice.id).ehr_target == target_before


def test_a_registered_client_connects_the_practice_with_an_audit_line(
    admin, db, app, ehr, oauth_server
):
    client, practice = admin
    jwks = client.get("/.well-known/jwks.json").json
    oauth_server.register_client("alliance", jwks=jwks, scopes=WRITE_AND_SEARCH)

    response = post(client, action="test", fhir_base=ehr.base_url, client_id="alliance")

    assert response.status_code == 200, text(response)
    assert "Connected. Answers are now written to" in text(response)
    db.expire_all()
    connection = db.scalar(select(EhrConnection).where(EhrConnection.practice_id == practice.id))
    assert (connection.fhir_base, connection.client_id) == (ehr.base_url, "alliance")
    assert db.get(Practice, practice.id).ehr_target == ehr.base_url
    # Flags need Observation reads and Flag writes, which this registration does not grant.
    assert "rupture flags    off" in text(response)
    # Nor the Consent read: the wizard says texts then need consent from elsewhere.
    assert "sms consent      system/Consent.rs not granted" in text(response)
    assert "sms consent      off: clients are texted only with consent from the platform" in (
        text(response)
    )
    event = db.scalar(select(AuditEvent).where(AuditEvent.action == "ehr.connected"))
    assert event.actor.startswith("admin:") and event.detail == {"client_id": "alliance"}


def test_the_therapists_view_needs_a_connection_then_takes_a_launch_client_id(
    admin, db, ehr, oauth_server
):
    client, practice = admin
    refused = post(client, action="launch", launch_client_id="alliance-launch")
    assert refused.status_code == 422 and "Connect your EHR first" in text(refused)

    jwks = client.get("/.well-known/jwks.json").json
    oauth_server.register_client("alliance", jwks=jwks, scopes=WRITE_AND_SEARCH)
    post(client, action="test", fhir_base=ehr.base_url, client_id="alliance")
    page = text(client.get(WIZARD))
    assert "http://localhost/launch/callback" in page

    saved = post(client, action="launch", launch_client_id="  alliance-launch ")
    assert saved.status_code == 200 and "The therapist's view is on" in text(saved)
    db.expire_all()
    connection = db.scalar(select(EhrConnection).where(EhrConnection.practice_id == practice.id))
    assert connection.launch_client_id == "alliance-launch"

    turned_off = post(client, action="launch", launch_client_id="")
    assert "The therapist's view is off" in text(turned_off)
    db.expire_all()
    assert db.get(EhrConnection, connection.id).launch_client_id is None
    actions = db.scalars(select(AuditEvent.action).where(AuditEvent.practice_id == practice.id))
    assert list(actions).count("ehr.launch_client_set") == 2
