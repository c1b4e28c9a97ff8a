"""A rupture and its repair reach the therapist as one Flag in a real FHIR server.

Five answered sessions, the fifth a sharp drop, leave one active Flag; a sixth that
recovers sets it inactive. The worker reads the earlier scores back from the EHR with its
own read token; nothing about scores is kept here.
"""

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from sqlalchemy import select

from plugin.core.logs import JsonFormatter
from plugin.core.models import EhrConnection, EhrWrite
from plugin.ehr.keys import current_signer, generate
from plugin.ehr.smart import fetch_token
from plugin.jobs import tick_step
from tests.support.backlog import every_item, queue_session
from tests.support.data import load_json

SESSIONS = load_json("ruptures/flag-sessions.json")["sessions"]
START = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
FLAG_SCOPES = "system/Observation.rs system/Flag.cu"
WRITE_SCOPES = "system/QuestionnaireResponse.c system/Observation.c"


@pytest.fixture
def connect(app, client, db, runner, practice, oauth_server, ehr):
    """Return a function connecting the demo practice, granted `scopes`, as an operator would."""

    def run(scopes: str) -> str:
        oauth_server.reset()
        ehr.reset()
        generate(db, app.extensions["vault"], "ES384")
        jwks = client.get("/.well-known/jwks.json").json
        oauth_server.register_client("alliance", jwks=jwks, scopes=scopes)
        result = runner.invoke(
            args=["ehr", "connect", "demo", ehr.base_url, "--client-id", "alliance"]
        )
        assert result.exit_code == 0, result.output
        return result.output

    return run


def answer(app, db, practice, n: int) -> EhrWrite:
    """Queue session n's answers and run the worker's EHR step at that session's time."""
    spec = SESSIONS[n - 1]
    extra = {"differently": spec["differently"]} if "differently" in spec else {}
    when = START + timedelta(weeks=n)
    write = queue_session(
        db, practice, app.extensions["vault"], n, every_item(spec["option"], **extra), when
    )
    assert tick_step(app, "ehr", when + timedelta(minutes=1)) == 1
    db.refresh(write)
    assert write.status == "done", write.last_error
    return write


def flags(app, db, ehr) -> list[dict]:
    """Every Flag the FHIR server holds, read as a therapist's app would (Flag.rs)."""
    connection = db.scalar(select(EhrConnection))
    signer = current_signer(db, app.extensions["vault"])
    token = fetch_token(connection.client_id, connection.token_endpoint, "system/Flag.rs", signer)
    reply = requests.get(
        f"{ehr.base_url}/Flag",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    ).json()
    return [entry["resource"] for entry in reply.get("entry", [])]


def test_a_sharp_drop_leaves_one_active_flag_and_a_recovery_sets_it_inactive(
    app, db, practice, connect, ehr
):
    output = connect(f"{WRITE_SCOPES} {FLAG_SCOPES} system/Flag.rs")
    assert "rupture flags    system/Flag.cu granted" in output
    notes = [answer(app, db, practice, n).flag_note for n in range(1, 5)]
    assert notes == [f"no signal ({n} earlier sessions)" for n in range(4)]
    assert flags(app, db, ehr) == []

    drop = answer(app, db, practice, 5)
    assert drop.flag_note == "rupture flag written"
    [flag] = flags(app, db, ehr)
    assert flag["status"] == "active"
    assert flag["subject"] == {"reference": "Patient/c1"}
    assert flag["encounter"] == {"reference": "Encounter/e5"}
    assert flag["category"][0]["coding"][0]["code"] == "clinical"
    assert flag["code"]["coding"][0]["code"] == "rupture"
    assert flag["author"]["identifier"]["value"] == "alliance-check"
    assert flag["period"]["start"].startswith("2026-02-09T15:00:00")
    assert "total 6 is 12 below this client's running mean 18" in flag["code"]["text"]
    assert "a comment" in flag["code"]["text"]
    assert "brother" not in str(flag)

    recovery = answer(app, db, practice, 6)
    assert recovery.flag_note == "repair: the rupture flag set inactive"
    [flag] = flags(app, db, ehr)
    assert flag["status"] == "inactive"
    assert flag["period"]["end"].startswith("2026-02-16T15:00:00")
    assert "Repaired: total 18 is back within 4.9" in flag["code"]["text"]


def test_an_ehr_that_refuses_the_read_still_gets_every_response(
    app, db, practice, connect, ehr, runner
):
    output = connect(f"{WRITE_SCOPES} system/Flag.cu")
    assert "system/Observation.rs not available" in output
    assert "rupture flags    off" in output
    writes = [answer(app, db, practice, n) for n in range(1, 6)]
    assert ehr.stats()["resources"] == {"QuestionnaireResponse": 5, "Observation": 20}
    note = "no flag: earlier scores cannot be read (Observation search not offered or not granted)"
    assert {w.flag_note for w in writes} == {note}
    shown = runner.invoke(args=["ehr-writes", "show", writes[-1].id])
    assert f"flag_note        {note}" in shown.output


def test_the_ndjson_sink_flags_from_its_own_files(app, db, practice, caplog):
    caplog.set_level(logging.DEBUG)
    for n in range(1, 6):
        answer(app, db, practice, n)
    sink = Path(app.instance_path).parent / "var" / "ehr"
    [flag] = [json.loads(line) for line in (sink / "Flag.ndjson").read_text().splitlines()]
    assert (flag["status"], flag["code"]["coding"][0]["code"]) == ("active", "rupture")
    recovery = answer(app, db, practice, 6)
    assert recovery.flag_note == "repair: the rupture flag set inactive"
    [flag] = [json.loads(line) for line in (sink / "Flag.ndjson").read_text().splitlines()]
    assert flag["status"] == "inactive"
    assert "end" in flag["period"]
    # The signal is the therapist's: no log line says a client's alliance dropped.
    logged = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert "ehr_write.done" in logged
    assert "rupture" not in logged and "repair" not in logged


def test_an_ehr_that_refuses_the_flag_still_gets_the_response(app, db, practice, connect, ehr):
    connect(f"{WRITE_SCOPES} {FLAG_SCOPES} system/Flag.rs")
    for n in range(1, 5):
        answer(app, db, practice, n)
    # The transaction holding the Flag is refused as an EHR refuses a profile or a scope.
    ehr.fail_next(1, status=403, method="POST", path=urlparse(ehr.base_url).path)
    drop = answer(app, db, practice, 5)
    assert drop.flag_note == "no flag: the EHR refused it (FHIR server answered 403)"
    assert ehr.stats()["resources"] == {"QuestionnaireResponse": 5, "Observation": 20}
    assert flags(app, db, ehr) == []
