"""GET /metrics: counts real webhooks and a real EHR drain, shows the queues, names no one.

The drain writes to the real FHIR server (strict, tokens from the real OAuth server), which is
told to refuse the first attempt so that a retry is counted too. Counters are this process's
(the suite does not set PROMETHEUS_MULTIPROC_DIR), so each test compares a scrape after with
one before; the multiprocess case runs under gunicorn in test_metrics_gunicorn.py.
"""

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from plugin.core import metrics
from plugin.core.metrics import EHR_OUTCOMES, QUEUES, UNKNOWN_PLATFORM, WEBHOOK_RESULTS
from plugin.core.models import EhrWrite, Invitation, SessionEvent
from plugin.jobs import tick_step
from tests.support.backlog import FULL
from tests.support.data import session_ended
from tests.support.ehr_desk import Ehr
from tests.support.metrics import bearer, parse, value
from tests.support.survey import submit
from webhooks import ADAPTERS
from webhooks.errors import SIGNATURE_REASONS

TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture
def config(config):
    """The suite's settings, with /metrics turned on."""
    return {**config, "METRICS_TOKEN": TOKEN}


def scrape(client) -> dict:
    """Scrape as Prometheus would; return the samples."""
    response = client.get("/metrics", headers=bearer(TOKEN))
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.headers["Cache-Control"] == "no-store"
    return parse(response.get_data(as_text=True))


def webhooks_counted(before: dict, after: dict, result: str, platform: str = "standard") -> float:
    """Return how many deliveries with `result` were counted between two scrapes."""
    name = "alliance_webhooks_total"
    return value(after, name, platform=platform, result=result) - value(
        before, name, platform=platform, result=result
    )


def writes_counted(before: dict, after: dict, outcome: str) -> float:
    """Return how many EHR write attempts with `outcome` were counted between two scrapes."""
    name = "alliance_ehr_writes_total"
    return value(after, name, outcome=outcome) - value(before, name, outcome=outcome)


def test_webhooks_are_counted_by_platform_and_result(client, webhooks, practice):
    before = scrape(client)
    payload = session_ended("s-1")
    body = json.dumps(payload).encode()
    assert webhooks.post(body, msg_id="msg_one").status_code == 204
    assert webhooks.post(body, msg_id="msg_one").status_code == 204  # the platform retried
    assert webhooks.post(session_ended("s-2", account_id="nobody")).status_code == 204
    forged = webhooks.headers(body, "msg_two") | {"webhook-signature": "v1,AAAA"}
    assert webhooks.post(body, headers=forged).status_code == 401
    assert webhooks.post(b"{}").status_code == 400
    assert client.post("/webhooks/acme", data=body).status_code == 404
    assert webhooks.post(b"{" + b" " * 70_000 + b"}").status_code == 413
    after = scrape(client)

    assert webhooks_counted(before, after, "stored") == 1
    assert webhooks_counted(before, after, "duplicate") == 1
    assert webhooks_counted(before, after, "unknown_account") == 1
    assert webhooks_counted(before, after, "bad_signature") == 1
    assert webhooks_counted(before, after, "invalid_payload") == 1
    assert webhooks_counted(before, after, "too_large") == 1
    assert webhooks_counted(before, after, "unknown_platform", platform=UNKNOWN_PLATFORM) == 1
    assert not any("acme" in str(key) for key in after)


def test_a_real_drain_is_counted_and_the_queues_follow_it(
    app, client, db, runner, link, ehr, oauth_server
):
    path, _ = link
    before = scrape(client)
    assert value(before, "alliance_queue_depth", queue="ehr_writes") == 0

    assert submit(client, path, FULL).status_code == 200
    waiting = scrape(client)
    assert value(waiting, "alliance_queue_depth", queue="ehr_writes") == 1
    assert value(waiting, "alliance_queue_lag_seconds", queue="ehr_writes") >= 0

    Ehr(app, client, db, runner, ehr, oauth_server).connect("demo", platform="standard")
    ehr.fail_next(1, status=503, method="POST")
    assert tick_step(app, "ehr") == 0
    write = db.scalar(select(EhrWrite))
    assert write.status == "pending"
    retrying = scrape(client)
    assert writes_counted(before, retrying, "retry") == 1
    # Due again only after its backoff: not waiting now, so not in the depth.
    assert value(retrying, "alliance_queue_depth", queue="ehr_writes") == 0
    later = write.next_attempt_at + timedelta(seconds=1)
    lagging = parse(_scrape_at(app, later))
    assert value(lagging, "alliance_queue_depth", queue="ehr_writes") == 1
    assert value(lagging, "alliance_queue_lag_seconds", queue="ehr_writes") == pytest.approx(
        1, abs=0.01
    )

    assert tick_step(app, "ehr", later) == 1
    after = scrape(client)
    assert writes_counted(before, after, "written") == 1
    assert writes_counted(before, after, "dead") == 0
    assert value(after, "alliance_queue_depth", queue="ehr_writes") == 0
    assert ehr.stats()["resources"]["QuestionnaireResponse"] == 1


def _scrape_at(app, now) -> str:
    """Render the exposition as a scrape at `now` would see it."""
    return metrics.scrape(app.extensions["db"].sessions, now).decode()


def test_due_invitations_show_as_depth_and_lag(app, client, webhooks, practice, db):
    webhooks.post(session_ended("s-1"))
    planning = scrape(client)
    assert value(planning, "alliance_queue_depth", queue="planning") == 1
    tick_step(app, "plan")
    invitation = db.scalar(select(Invitation))
    samples = parse(_scrape_at(app, invitation.next_attempt_at + timedelta(seconds=30)))
    assert value(samples, "alliance_queue_depth", queue="planning") == 0
    assert value(samples, "alliance_queue_depth", queue="invitations") == 1
    assert value(samples, "alliance_queue_lag_seconds", queue="invitations") == pytest.approx(
        30, abs=0.01
    )


def test_no_label_names_a_practice_a_client_or_a_session(client, webhooks, link, practice, db, app):
    path, invitation = link
    submit(client, path, FULL)
    webhooks.post(session_ended("s-2", account_id="nobody"))
    client.post("/webhooks/Patient-c1", data=b"{}")
    text = client.get("/metrics", headers=bearer(TOKEN)).get_data(as_text=True)

    allowed = {
        "platform": {*ADAPTERS, UNKNOWN_PLATFORM},
        "result": {*WEBHOOK_RESULTS, *SIGNATURE_REASONS, "unknown_platform"},
        "outcome": set(EHR_OUTCOMES),
        "queue": set(QUEUES),
    }
    for (_name, labels), _value in parse(text).items():
        for label, label_value in labels:
            assert label_value in allowed[label], (label, label_value)
    event = db.scalar(select(SessionEvent))
    ids = [practice.id, practice.account_id, event.id, event.session_id, invitation.id]
    ids += [event.event_id, "Patient/c1", "nobody", path.rsplit("/", 1)[1]]
    for identifier in ids:
        assert not re.search(rf"\b{re.escape(identifier)}\b", text), identifier


def test_off_without_a_token(client, app):
    app.config["METRICS_TOKEN"] = ""
    assert client.get("/metrics", headers=bearer("")).status_code == 404
    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong-token"),
        bearer(TOKEN[:-1]),
        bearer(TOKEN + "x"),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
        {"X-Metrics-Token": TOKEN},
    ],
    ids=["none", "wrong", "prefix", "longer", "basic", "no-scheme", "empty", "other-header"],
)
def test_a_scrape_without_the_token_is_refused(client, headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="metrics"')
    assert response.mimetype == "application/problem+json"
    assert "alliance_" not in response.get_data(as_text=True)


def test_only_get_is_served(client):
    assert client.post("/metrics", headers=bearer(TOKEN)).status_code == 405
