"""One practice's token never sees nor changes another practice: every API call, tried across."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from plugin.admin.api.openapi import document
from plugin.core.models import Practice, SessionEvent
from plugin.planning.schedules import history, list_overrides, set_override
from tests.support.api import ApiClient, stuck_session, token_for
from tests.support.data import load_json

CALLS = load_json("api/cross_practice_calls.json")
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
# The other practice's override: a delay no answer to the first practice may carry.
OTHER_DELAY = 777


def _values(data, key: str) -> list:
    """Return every value stored under key anywhere in a JSON document."""
    if isinstance(data, dict):
        found = [data[key]] if key in data else []
        return found + [v for value in data.values() for v in _values(value, key)]
    if isinstance(data, list):
        return [v for item in data for v in _values(item, key)]
    return []


@pytest.fixture
def other(app, db, other_practice):
    """Give the second practice a schedule, an override and an unmatched session."""
    with app.app_context():
        set_override(
            db,
            other_practice.id,
            "Practitioner/9",
            {"delay_minutes": OTHER_DELAY},
            actor="cli",
            now=NOW,
        )
    event = stuck_session(db, other_practice)
    return other_practice, event


def _snapshot(db, practice_id: str) -> dict:
    db.expire_all()
    practice = db.get(Practice, practice_id)
    return {
        "practice": (practice.name, practice.timezone, practice.ehr_target),
        "versions": [(r.practitioner_ref, r.version) for r in history(db, practice_id)],
        "overrides": [(o.practitioner_ref, o.version) for o in list_overrides(db, practice_id)],
        "sessions": db.scalars(
            select(SessionEvent.status).where(SessionEvent.practice_id == practice_id)
        ).all(),
    }


def test_the_table_tries_every_documented_call():
    documented = {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    tried = {(c["method"], c["path"].replace("/9", "/{practitioner_id}")) for c in CALLS}
    tried = {(m, p.replace("session/{other_session}", "{kind}/{problem_id}")) for m, p in tried}
    assert tried == documented


@pytest.mark.parametrize("call", CALLS, ids=lambda c: f"{c['method']} {c['path']}")
def test_a_call_with_one_practices_token_never_reaches_the_other(client, db, practice, other, call):
    other_practice, event = other
    before = _snapshot(db, other_practice.id)
    api = ApiClient(client, token_for(db, practice))
    path = call["path"].format(other_session=event.id)
    response = api.call(call["method"], path, call.get("body"))
    assert response.status_code == call.get("status", response.status_code)
    assert response.status_code < 500
    text = response.get_data(as_text=True)
    for marker in (other_practice.name, other_practice.id, event.id, '"other"'):
        assert marker not in text
    if response.is_json:
        assert OTHER_DELAY not in _values(response.json, "delay_minutes")
    assert _snapshot(db, other_practice.id) == before


def test_the_other_practices_own_token_does_see_its_data(client, db, other):
    # The control for the test above: the markers are really there to be found.
    other_practice, event = other
    api = ApiClient(client, token_for(db, other_practice))
    assert OTHER_DELAY in _values(api.call("GET", "/api/v1/overrides").json, "delay_minutes")
    problems = api.call("GET", "/api/v1/problems").json
    assert [p["id"] for p in problems["session"]] == [event.id]
    assert api.call("GET", "/api/v1/practice").json["name"] == other_practice.name
