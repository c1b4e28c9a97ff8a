"""Tenant isolation: a webhook, an uninstall or a link of practice A never touches practice B.

A and B deliberately share everything a careless key would collide on: session ids, webhook
ids, Zoom meeting UUIDs, the client's email, even the Patient's record in their EHRs.
"""

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from plugin.core.crypto import new_token
from plugin.core.models import EhrWrite, Invitation, Practice, SessionEvent
from plugin.jobs import tick
from plugin.planning.host_map import practitioner_for, set_mapping
from tests.support import fhir_server
from tests.support.backlog import FULL
from tests.support.data import load_json, session_ended
from tests.support.ehr_desk import PARTICIPANTS, UUID, Ehr
from tests.support.zoom_api import HOST_EMAIL, ZoomWebhooks, add_zoom_practice, zoom_payload

SHARED_EMAIL = "sam.rivera@example.org"


@pytest.fixture
def config(config, zoom_api):
    """The test settings, with Zoom's webhook secret and API pointed at the stand-in."""
    return {**config, **zoom_api.config}


@pytest.fixture
def practices(practice, other_practice) -> tuple[Practice, Practice]:
    """Standard practices A ("demo", Riverside Therapy) and B ("other", Hillside Counselling)."""
    return practice, other_practice


def rows(db, model, practice: Practice) -> list:
    """Return a practice's rows of a model."""
    return list(db.scalars(select(model).where(model.practice_id == practice.id)))


def snapshot(db, practice: Practice) -> list[tuple]:
    """Everything a webhook could change about a practice's sessions and invitations."""
    db.expire_all()
    events = [
        (e.id, e.event_id, e.session_id, e.status, e.patient_ref, e.contact, e.attempts)
        for e in rows(db, SessionEvent, practice)
    ]
    invitations = [(i.id, i.status, i.contact) for i in rows(db, Invitation, practice)]
    return sorted(events) + sorted(invitations)


def soon(minutes: int = 1) -> datetime:
    """A moment just ahead of the real clock."""
    return datetime.now(UTC) + timedelta(minutes=minutes)


# --- webhooks ------------------------------------------------------------------------------


def test_a_standard_webhook_for_a_creates_nothing_under_b_even_with_the_same_ids(
    app, webhooks, db, practices
):
    a, b = practices
    webhooks.post(session_ended("s-1", account_id="other", email=SHARED_EMAIL), msg_id="msg_1")
    tick(app, soon())
    before = snapshot(db, b)
    assert len(before) == 2  # B's session and its invitation
    # Same webhook id, same session id, same client: A's delivery is A's alone.
    response = webhooks.post(
        session_ended("s-1", account_id="demo", email=SHARED_EMAIL), msg_id="msg_1"
    )
    assert response.status_code == 204
    tick(app, soon(2))
    assert snapshot(db, b) == before
    assert [e.session_id for e in rows(db, SessionEvent, a)] == ["s-1"]
    assert len(rows(db, Invitation, a)) == 1


def test_a_replayed_event_of_a_does_not_suppress_bs(webhooks, db, practices):
    a, b = practices
    body = session_ended("s-1", account_id="demo")
    assert webhooks.post(body, msg_id="msg_1").status_code == 204
    assert webhooks.post(body, msg_id="msg_1").status_code == 204  # A's replay: deduped
    assert (
        webhooks.post(session_ended("s-1", account_id="other"), msg_id="msg_1").status_code == 204
    )
    assert len(rows(db, SessionEvent, a)) == 1
    assert len(rows(db, SessionEvent, b)) == 1


def test_a_zoom_meeting_of_a_creates_nothing_under_b_with_the_same_uuid(app, client, db, zoom_api):
    vault = app.extensions["vault"]
    a = add_zoom_practice(db, vault, "zoom-A", "token-A")
    b = add_zoom_practice(db, vault, "zoom-B", "token-B")
    hooks = ZoomWebhooks(client)
    hooks.post(zoom_payload("meeting_ended.json", account_id="zoom-B"))
    before = snapshot(db, b)
    assert len(before) == 1
    for name in ("meeting_ended.json", "meeting_ended_again.json"):
        assert hooks.post(zoom_payload(name, account_id="zoom-A")).status_code == 204
    assert snapshot(db, b) == before
    assert [e.session_id for e in rows(db, SessionEvent, a)] == [UUID]


# --- uninstall -----------------------------------------------------------------------------


def test_as_standard_uninstall_leaves_b_untouched(app, webhooks, db, practices):
    a, b = practices
    for account in ("demo", "other"):
        webhooks.post(session_ended("s-1", account_id=account, email=SHARED_EMAIL))
    tick(app, soon())
    a_id = a.id
    before = snapshot(db, b)
    uninstall = load_json("webhooks/app_uninstalled.json")
    assert uninstall["data"]["account_id"] == "demo"
    assert webhooks.post(uninstall).status_code == 204
    assert db.get(Practice, a_id) is None
    assert db.scalar(select(func.count()).select_from(SessionEvent)) == 1
    assert snapshot(db, b) == before
    db.refresh(b)
    assert (b.status, b.name) == ("active", "Hillside Counselling")


def test_as_zoom_uninstall_leaves_b_and_bs_token_untouched(app, client, db, zoom_api):
    vault = app.extensions["vault"]
    add_zoom_practice(db, vault, "zoom-A", "token-A")
    b = add_zoom_practice(db, vault, "zoom-B", "token-B")
    sealed = b.platform_token
    hooks = ZoomWebhooks(client)
    hooks.post(zoom_payload("meeting_ended.json", account_id="zoom-B"))
    before = snapshot(db, b)
    assert hooks.post(zoom_payload("app_deauthorized.json", account_id="zoom-A")).status_code == 204
    assert "refresh-token-A" in zoom_api.revoked
    assert not any(token.endswith("token-B") for token in zoom_api.revoked)
    db.refresh(b)
    assert b.platform_token == sealed
    assert snapshot(db, b) == before


def test_a_standard_uninstall_cannot_remove_a_zoom_practice_with_the_same_account_id(
    app, webhooks, client, db
):
    # Practices are keyed by (platform, account id): "demo" on Zoom is not "demo" on standard.
    zoom_demo = add_zoom_practice(db, app.extensions["vault"], "demo", "token-Z")
    assert webhooks.post(load_json("webhooks/app_uninstalled.json")).status_code == 204
    assert db.get(Practice, zoom_demo.id) is not None


# --- resolution and links ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ehrs(oauth_server):
    """Two practices' FHIR servers, each trusting the test OAuth server, enforcing scopes."""
    flags = (*fhir_server.trusting(oauth_server), "--enforce-scopes")
    with fhir_server.running(*flags) as first, fhir_server.running(*flags) as second:
        yield first, second


def test_each_zoom_practice_resolves_with_its_own_token_and_its_own_ehr_only(
    app, client, db, runner, oauth_server, two_ehrs, zoom_api
):
    vault = app.extensions["vault"]
    ehr_a, ehr_b = two_ehrs
    desk_a = Ehr(app, client, db, runner, ehr_a, oauth_server)
    desk_b = Ehr(app, client, db, runner, ehr_b, oauth_server)
    a = add_zoom_practice(db, vault, "zoom-A", "token-A")
    b = add_zoom_practice(db, vault, "zoom-B", "token-B")
    desk_a.connect("zoom-A")
    desk_b.connect("zoom-B")
    # The same client, the same meeting UUID, in both accounts and both EHRs.
    sam_a = desk_a.file("sam")["sam"]
    sam_b = desk_b.file("sam")["sam"]
    zoom_api.add_meeting("token-A", UUID, PARTICIPANTS)
    zoom_api.add_meeting("token-B", UUID, PARTICIPANTS)
    hooks = ZoomWebhooks(client)
    for account in ("zoom-A", "zoom-B"):
        hooks.post(zoom_payload("meeting_ended.json", account_id=account))
    tick(app, soon())
    [event_a] = rows(db, SessionEvent, a)
    [event_b] = rows(db, SessionEvent, b)
    assert (event_a.status, event_a.patient_ref) == ("planned", f"Patient/{sam_a}")
    assert (event_b.status, event_b.patient_ref) == ("planned", f"Patient/{sam_b}")
    assert sorted(call.token for call in zoom_api.participant_calls()) == ["token-A", "token-B"]
    for ehr in (ehr_a, ehr_b):
        log = ehr.stats()["log"]
        searches = [path for method, path, _ in log if method == "GET" and "Patient" in path]
        assert [path.split("?")[0] for path in searches] == ["/Patient"]


def _link(db, invitation: Invitation) -> str:
    token, token_hash = new_token()
    now = datetime.now(UTC)
    invitation.token_hash, invitation.status = token_hash, "sent"
    invitation.sent_at, invitation.expires_at = now, now + timedelta(hours=72)
    db.commit()
    return f"/q/{token}"


def test_as_link_shows_and_answers_only_as_invitation(app, client, webhooks, db, practices):
    a, b = practices
    for account in ("demo", "other"):
        webhooks.post(session_ended("s-1", account_id=account, email=SHARED_EMAIL))
    tick(app, soon())
    [invitation_a] = rows(db, Invitation, a)
    [invitation_b] = rows(db, Invitation, b)
    path = _link(db, invitation_a)
    _link(db, invitation_b)
    page = client.get(path).get_data(as_text=True)
    assert "Riverside Therapy" in page and "Hillside" not in page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post(path, data={"csrf_token": csrf, **FULL}).status_code == 200
    db.expire_all()
    assert [w.practice_id for w in db.scalars(select(EhrWrite))] == [a.id]
    statuses = [db.get(Invitation, i.id).status for i in (invitation_a, invitation_b)]
    assert statuses == ["answered", "sent"]
    # The answered link now only says so; it reaches no other invitation.
    assert client.get(path).status_code == 409


def test_a_host_mapping_of_b_is_never_used_for_a(app, db):
    """Resolution asks practitioner_for with its own practice's id (resolver_for binds it)."""
    zoom_practice = add_zoom_practice(db, app.extensions["vault"], "zoom-A", "token-A")
    other = add_zoom_practice(db, app.extensions["vault"], "zoom-B", "token-B")
    with app.test_request_context():
        vault = app.extensions["vault"]
        set_mapping(db, other.id, HOST_EMAIL, "Practitioner/b-1", actor="cli", sealer=vault)
        assert practitioner_for(db, zoom_practice.id, HOST_EMAIL) is None
        set_mapping(db, zoom_practice.id, HOST_EMAIL, "Practitioner/a-1", actor="cli", sealer=vault)
        assert practitioner_for(db, zoom_practice.id, HOST_EMAIL) == "Practitioner/a-1"
        assert practitioner_for(db, other.id, HOST_EMAIL) == "Practitioner/b-1"
