"""Responses reach a real FHIR server (Medplum, strict) with real SMART tokens, exactly once.

The FHIR server checks every bearer token against the real authorization server's JWKS and
every write against the R4 definitions; the authorization server checks every client
assertion. Nothing here is faked.
"""

import re
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import select

from plugin.core.models import EhrConnection, EhrWrite
from plugin.ehr.keys import generate
from plugin.jobs import tick
from tests.support import fhir_server
from tests.support.backlog import FULL
from tests.support.survey import csrf


def server_flags(oauth, *extra: str, enforce_scopes: bool = True) -> tuple[str, ...]:
    """Flags for a FHIR server that trusts the test authorization server's tokens."""
    scopes = ("--enforce-scopes",) if enforce_scopes else ()
    return (*fhir_server.trusting(oauth), *scopes, *extra)


@pytest.fixture(scope="module")
def ehr(oauth_server):
    """A FHIR server that takes transactions and QuestionnaireResponses."""
    with fhir_server.running(*server_flags(oauth_server)) as server:
        yield server


@pytest.fixture
def connected(app, client, db, runner, practice, oauth_server):
    """Return a function connecting the demo practice to a FHIR server, as an operator would."""
    oauth_server.reset()
    generate(db, app.extensions["vault"], "ES384")
    oauth_server.register_client(
        "alliance",
        jwks=client.get("/.well-known/jwks.json").json,
        scopes="system/QuestionnaireResponse.c system/Observation.c system/DocumentReference.c",
    )
    app.extensions["smart_tokens"].forget(practice.id)

    def connect(server) -> str:
        server.reset()
        result = runner.invoke(
            args=["ehr", "connect", "demo", server.base_url, "--client-id", "alliance"]
        )
        assert result.exit_code == 0, result.output
        return result.output

    return connect


@pytest.fixture
def answered(client, link, db):
    """Answer the questionnaire; return the queued write."""
    path, _ = link
    assert client.post(path, data={"csrf_token": csrf(client, path), **FULL}).status_code == 200
    return db.scalar(select(EhrWrite))


def resources(server) -> dict:
    """Count what the server holds, by type."""
    return server.stats()["resources"]


def test_connect_reports_what_it_found_in_plain_words(connected, ehr, db, practice):
    output = connected(ehr)
    assert "transactions     yes" in output
    assert "QuestionnaireResponse create  yes" in output
    assert "granted 'system/QuestionnaireResponse.c system/Observation.c'" in output
    assert "the response and its scores, in one transaction" in output
    db.refresh(practice)
    assert practice.ehr_target == ehr.base_url
    connection = db.scalar(select(EhrConnection))
    assert connection.facts["transaction"] is True


def test_connect_refuses_when_the_ehr_grants_too_little(
    connected, ehr, oauth_server, runner, client, db, practice
):
    connected(ehr)
    oauth_server.register_client(
        "narrow", jwks=client.get("/.well-known/jwks.json").json, scopes="system/Observation.c"
    )
    result = runner.invoke(args=["ehr", "connect", "demo", ehr.base_url, "--client-id", "narrow"])
    assert result.exit_code != 0
    assert "did not grant system/QuestionnaireResponse.c" in result.output
    assert db.scalar(select(EhrConnection)).client_id == "alliance"


def test_connect_to_nothing_fails_clearly_and_changes_nothing(runner, practice, db):
    result = runner.invoke(
        args=["ehr", "connect", "demo", "http://127.0.0.1:9/fhir", "--client-id", "alliance"]
    )
    assert result.exit_code != 0
    assert "could not reach" in result.output
    db.refresh(practice)
    assert practice.ehr_target == "ndjson:var/ehr"


def test_response_lands_once_by_transaction(app, connected, ehr, answered, db):
    connected(ehr)
    tick(app)
    db.refresh(answered)
    assert (answered.status, answered.path, answered.bundle) == ("done", "transaction", None)
    assert resources(ehr) == {"QuestionnaireResponse": 1, "Observation": 4}
    tick(app, datetime.now(UTC) + timedelta(hours=1))
    assert resources(ehr) == {"QuestionnaireResponse": 1, "Observation": 4}


def test_a_resend_after_a_crash_creates_nothing_new(app, connected, ehr, answered, db):
    connected(ehr)
    bundle = app.extensions["vault"].open(answered.bundle)
    token = requests.post(  # the write went through, then the worker died before commit
        ehr.base_url,
        json=bundle,
        timeout=10,
        headers={
            "Authorization": f"Bearer {_token(app, db)}",
            "Content-Type": "application/fhir+json",
        },
    )
    assert token.status_code == 200
    tick(app)
    db.refresh(answered)
    assert answered.status == "done"
    assert resources(ehr) == {"QuestionnaireResponse": 1, "Observation": 4}


def _token(app, db) -> str:
    from plugin.ehr.keys import current_signer
    from plugin.ehr.smart import fetch_token

    connection = db.scalar(select(EhrConnection))
    signer = current_signer(db, app.extensions["vault"])
    return fetch_token(connection.client_id, connection.token_endpoint, connection.scope, signer)[
        "access_token"
    ]


def test_without_transactions_resources_go_one_by_one_with_references_rewritten(
    app, connected, oauth_server, answered, db
):
    # Scopes unenforced here only so the test can read back with our create-only token.
    flags = server_flags(oauth_server, "--no-transaction", enforce_scopes=False)
    with fhir_server.running(*flags) as server:
        assert "one resource at a time" in connected(server)
        tick(app)
        db.refresh(answered)
        assert (answered.status, answered.path) == ("done", "individual")
        assert resources(server) == {"QuestionnaireResponse": 1, "Observation": 4}
        headers = {"Authorization": f"Bearer {_token(app, db)}"}
        bundle = requests.get(f"{server.base_url}/Observation", headers=headers, timeout=10).json()
        for entry in bundle["entry"]:
            [derived] = entry["resource"]["derivedFrom"]
            assert re.fullmatch(r"QuestionnaireResponse/[\w-]+", derived["reference"])


def test_without_response_create_scores_and_a_summary_are_written(
    app, connected, oauth_server, answered, db
):
    with fhir_server.running(*server_flags(oauth_server, "--no-qr-create")) as server:
        output = connected(server)
        assert "granted 'system/Observation.c system/DocumentReference.c'" in output
        tick(app)
        db.refresh(answered)
        assert (answered.status, answered.path) == ("done", "observations-only+transaction")
        assert resources(server) == {"Observation": 4, "DocumentReference": 1}


def test_outage_with_retry_after_is_waited_out_and_lands_exactly_once(
    app, connected, ehr, answered, db
):
    connected(ehr)
    ehr.fail_next(3, status=503, retry_after=120, path="/")
    now = datetime.now(UTC)
    for minutes in range(0, 20):
        tick(app, now + timedelta(minutes=minutes))
    db.refresh(answered)
    assert answered.status == "done"
    assert answered.attempts == 3
    assert resources(ehr) == {"QuestionnaireResponse": 1, "Observation": 4}


def test_retry_after_is_honoured_over_a_shorter_backoff(app, connected, ehr, answered, db):
    connected(ehr)
    ehr.fail_next(1, status=429, retry_after=600, path="/")
    now = datetime.now(UTC)
    tick(app, now)
    db.refresh(answered)
    assert answered.status == "pending"
    assert answered.next_attempt_at >= now + timedelta(seconds=600)
    tick(app, now + timedelta(seconds=300))
    assert resources(ehr) == {}


def test_expired_token_is_replaced_once_on_401(
    app, connected, ehr, answered, db, oauth_server, webhooks, client
):
    connected(ehr)
    tick(app)  # the first write caches a token the server has now accepted
    ehr.expire_tokens()
    issued = len(oauth_server.issued)
    second = answer_another(webhooks, db, client, "s-2")
    tick(app)
    db.refresh(second)
    assert second.status == "done"
    assert len(oauth_server.issued) == issued + 1  # exactly one new token
    assert ehr.stats()["responses"]["POST / 401"] == 1
    assert resources(ehr) == {"QuestionnaireResponse": 2, "Observation": 8}


def answer_another(webhooks, db, client, session_id: str) -> EhrWrite:
    """Receive and answer one more session through the real page; return its write."""
    from plugin.core.crypto import new_token
    from plugin.core.models import Invitation
    from tests.support.data import session_ended
    from tests.support.jobs import plan

    # Another client: the schedule's minimum gap would skip a second one for the same.
    webhooks.post(session_ended(session_id, reference=f"Patient/{session_id}"))
    plan(webhooks.client.application)
    invitation = db.scalar(select(Invitation).where(Invitation.status == "pending"))
    token, token_hash = new_token()
    now = datetime.now(UTC)
    invitation.token_hash, invitation.status = token_hash, "sent"
    invitation.sent_at, invitation.expires_at = now, now + timedelta(hours=72)
    db.commit()
    path = f"/q/{token}"
    assert client.post(path, data={"csrf_token": csrf(client, path), **FULL}).status_code == 200
    return db.scalar(select(EhrWrite).where(EhrWrite.invitation_id == invitation.id))


def test_rejected_write_is_dead_lettered_with_its_outcome_and_not_retried(
    app, connected, oauth_server, answered, db, runner
):
    # --check-references: Patient/c1 does not exist on this server, so the write is invalid.
    with fhir_server.running(*server_flags(oauth_server, "--check-references")) as server:
        connected(server)
        tick(app)
        db.refresh(answered)
        assert (answered.status, answered.attempts) == ("dead", 1)
        assert answered.last_error == "FHIR server answered 400"
        assert answered.outcome is not None
        posts = server.stats()["requests"]
        tick(app, datetime.now(UTC) + timedelta(days=2))
        assert server.stats()["requests"] == posts

        listed = runner.invoke(args=["ehr-writes", "list", "--status", "dead"]).output
        assert answered.id in listed and "FHIR server answered 400" in listed
        shown = runner.invoke(args=["ehr-writes", "show", answered.id]).output
        assert re.search(r"issue +error not-found at \S*subject", shown), shown
        # The server's own words may quote the resource: they are kept sealed, not shown.
        assert "does not resolve" not in shown

        assert runner.invoke(args=["ehr-writes", "retry", answered.id]).exit_code == 0
        db.refresh(answered)
        assert (answered.status, answered.retry_until) == ("pending", None)


def test_a_smart_v1_server_gets_v1_write_scopes(app, connected, oauth_server, answered, db):
    with fhir_server.running(*server_flags(oauth_server, "--smart-v1")) as server:
        oauth_server.register_client(
            "alliance",
            jwks={"keys": _published(app)},
            scopes="system/QuestionnaireResponse.write system/Observation.write",
        )
        output = connected(server)
        assert "SMART scopes     v1" in output
        assert "granted 'system/QuestionnaireResponse.write system/Observation.write'" in output
        tick(app)
        db.refresh(answered)
        assert answered.status == "done"
        assert resources(server) == {"QuestionnaireResponse": 1, "Observation": 4}


def _published(app) -> list[dict]:
    return app.test_client().get("/.well-known/jwks.json").json["keys"]


def test_refused_token_is_retried_later_with_the_reason_kept(
    app, connected, ehr, answered, db, oauth_server
):
    connected(ehr)
    app.extensions["smart_tokens"].forget(answered.practice_id)
    oauth_server.reset()  # the EHR's authorization server forgot us
    tick(app)
    db.refresh(answered)
    assert (answered.status, answered.attempts) == ("pending", 1)
    assert answered.last_error == "no token: token request refused: invalid_client"
    assert resources(ehr) == {}
