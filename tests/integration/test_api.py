"""The JSON API: bearer tokens (RFC 6750), each call, problem+json for bad input, the document."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import select

from plugin.admin.api.openapi import document
from plugin.admin.api.tokens import PREFIX, TokenError, create_token, hash_token, revoke_token
from plugin.core.audit import recent
from plugin.core.models import ApiToken
from tests.support.api import ApiClient, stuck_session, token_for
from tests.support.data import load_json

BAD_REQUESTS = load_json("api/bad_requests.json")
BAD_TOKENS = load_json("api/bad_tokens.json")


@pytest.fixture
def api(client, db, practice) -> ApiClient:
    """Return a client carrying a live token of the practice "demo"."""
    return ApiClient(client, token_for(db, practice))


@pytest.fixture
def blocked(app):
    """Make ndjson:blocked/ehr unwritable: `blocked` is a file, not a folder."""
    (Path(app.instance_path).parent / "blocked").write_text("not a folder")


# ---- tokens -----------------------------------------------------------------------------------


def test_a_token_is_256_random_bits_behind_a_prefix_and_only_its_hash_is_kept(db, practice):
    first, second = token_for(db, practice), token_for(db, practice)
    assert first.startswith(PREFIX) and first != second
    assert len(first.removeprefix(PREFIX)) == 43  # 32 bytes, base64url without padding
    stored = db.scalars(select(ApiToken.token_hash)).all()
    assert sorted(stored) == sorted([hash_token(first), hash_token(second)])
    assert first not in json.dumps([e.detail for e in recent(db, practice.id)])


@pytest.mark.parametrize(
    "case", BAD_TOKENS, ids=lambda c: f"{c['field']}={c['name'][:8]!r},{c['expires_days']!r}"
)
def test_a_token_with_a_bad_name_or_expiry_is_refused_naming_it(db, practice, case):
    with pytest.raises(TokenError) as refused:
        create_token(db, practice.id, case["name"], "cli", case["expires_days"])
    assert refused.value.field == case["field"]
    assert db.scalars(select(ApiToken)).all() == []


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        (None, None),
        ("Bearer acat_" + "x" * 43, "invalid_token"),
        ("Bearer not-ours", "invalid_token"),
        ("Bearer", None),
    ],
)
def test_a_call_without_a_live_token_gets_an_rfc_6750_answer(
    client, practice, authorization, error
):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/api/v1/practice", headers=headers)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    # RFC 7235: the scheme is case-insensitive; authlib writes "bearer".
    assert challenge.lower().startswith("bearer ")
    assert 'realm="alliance-check"' in challenge
    if error:
        assert f'error="{error}"' in challenge
        assert response.json["error"] == error


def test_expired_and_revoked_tokens_are_invalid(client, db, practice):
    expiring = token_for(db, practice, expires_days=1)
    revoked = token_for(db, practice)
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(revoked)))
    revoke_token(db, practice.id, row.id, actor="cli")
    db.commit()
    assert ApiClient(client, expiring).call("GET", "/api/v1/practice").status_code == 200
    with time_machine.travel(datetime.now(UTC) + timedelta(days=1, seconds=1), tick=False):
        late = ApiClient(client, expiring).call("GET", "/api/v1/practice")
    refused = ApiClient(client, revoked).call("GET", "/api/v1/practice")
    for response in (late, refused):
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_last_used_is_noted_at_most_once_a_minute(client, db, practice):
    plaintext = token_for(db, practice)
    start = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    seen = []
    for seconds in (0, 30, 61):
        with time_machine.travel(start + timedelta(seconds=seconds), tick=False):
            assert ApiClient(client, plaintext).call("GET", "/api/v1/schedule").status_code == 200
        db.expire_all()
        seen.append(db.scalar(select(ApiToken.last_used_at)))
    assert seen == [start, start, start + timedelta(seconds=61)]


def test_the_cli_prints_a_token_once_lists_and_revokes_it(runner, client, db, practice):
    made = runner.invoke(
        args=["api-token", "create", "demo", "--name", "reports", "--expires-days", "30"]
    )
    assert made.exit_code == 0, made.output
    plaintext = made.stdout.strip()
    assert plaintext.startswith(PREFIX)
    assert "it is not shown again" in made.stderr
    assert ApiClient(client, plaintext).call("GET", "/api/v1/practice").status_code == 200
    listed = runner.invoke(args=["api-token", "list", "demo"]).output.splitlines()
    assert listed[0] == "id\tname\tstate\tcreated\texpires\tlast used\tcreated by"
    token_id, name, state = listed[1].split("\t")[:3]
    assert (name, state) == ("reports", "active")
    assert plaintext not in runner.invoke(args=["api-token", "list", "demo"]).output
    assert runner.invoke(args=["api-token", "revoke", "demo", token_id]).exit_code == 0
    assert ApiClient(client, plaintext).call("GET", "/api/v1/practice").status_code == 401
    assert "\trevoked\t" in runner.invoke(args=["api-token", "list", "demo"]).output


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["create", "demo", "--name", " "], "must not be empty"),
        (["create", "demo", "--expires-days", "0"], "--expires-days"),
        (["create", "nope"], "no practice with account 'nope'"),
        (["revoke", "demo", "no-such-token"], "no API token no-such-token"),
        (["list", "demo", "--platform", "zoom"], "no practice with account 'demo'"),
    ],
)
def test_the_token_cli_refuses_bad_input(runner, practice, args, error):
    result = runner.invoke(args=["api-token", *args])
    assert result.exit_code != 0
    assert error in result.output


def test_a_token_of_one_practice_cannot_be_revoked_through_another(
    runner, db, practice, other_practice
):
    token_for(db, other_practice)
    token_id = db.scalar(select(ApiToken.id))
    result = runner.invoke(args=["api-token", "revoke", "demo", token_id])
    assert result.exit_code != 0
    assert db.scalar(select(ApiToken.revoked_at)) is None


# ---- calls ------------------------------------------------------------------------------------


def test_practice_read_and_change(api, db, practice):
    assert api.call("GET", "/api/v1/practice").json == {
        "platform": "standard",
        "account_id": "demo",
        "name": "Riverside Therapy",
        "timezone": "America/New_York",
        "language": "en",
        "ehr_target": "ndjson:var/ehr",
        "status": "active",
    }
    changed = api.call("PATCH", "/api/v1/practice", {"name": "Riverside", "language": "es"})
    assert changed.status_code == 200
    assert (changed.json["name"], changed.json["language"]) == ("Riverside", "es")
    actors = {e.actor for e in recent(db, practice.id) if e.action != "api_token.created"}
    assert len(actors) == 1 and actors.pop().startswith("api-token:")


def test_schedule_change_history_and_preview(api):
    assert api.call("GET", "/api/v1/schedule").json["version"] == 0
    changed = api.call("PATCH", "/api/v1/schedule", {"first_sessions": 2, "then_every": 1})
    assert changed.json["version"] == 1
    assert changed.json["settings"]["first_sessions"] == 2
    same = api.call("PATCH", "/api/v1/schedule", {"first_sessions": 2})
    assert same.json["version"] == 1  # nothing changed, nothing stored
    versions = api.call("GET", "/api/v1/schedule/history").json["versions"]
    assert [v["version"] for v in versions] == [1]
    preview = api.call(
        "POST",
        "/api/v1/schedule/preview",
        {"settings": {"min_gap_days": 10}, "start": "2026-03-02", "timezone": "Asia/Tokyo"},
    ).json
    asked = [s["number"] for s in preview["sessions"] if s["asked"]]
    assert asked == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
    assert preview["sessions"][1]["reason"] == "min_gap"
    assert preview["sessions"][0]["sent_at"] == "2026-03-02T23:00:00Z"  # 08:00 in Tokyo
    assert api.call("GET", "/api/v1/schedule").json["version"] == 1  # a preview stores nothing


def test_overrides_set_read_list_and_remove(api):
    api.call("PATCH", "/api/v1/schedule", {"first_sessions": 6})
    put = api.call("PUT", "/api/v1/overrides/7", {"language": "es"})
    assert put.status_code == 200
    assert put.json["settings"] == {"language": "es"}
    assert put.json["effective"]["first_sessions"] == 6  # inherited from the practice
    assert api.call("GET", "/api/v1/overrides/7").json == put.json
    assert [o["practitioner"] for o in api.call("GET", "/api/v1/overrides").json["overrides"]] == [
        "Practitioner/7"
    ]
    assert api.call("DELETE", "/api/v1/overrides/7").status_code == 204
    assert api.call("GET", "/api/v1/overrides/7").status_code == 404
    assert api.call("DELETE", "/api/v1/overrides/7").status_code == 404


def test_problems_and_stats_are_the_practices(api):
    assert api.call("GET", "/api/v1/problems").json == {
        "invitation": [],
        "session": [],
        "ehr_write": [],
    }
    stats = api.call("GET", "/api/v1/stats").json
    assert len(stats["weeks"]) == 12
    assert stats["timezone"] == "America/New_York"


def test_a_problem_is_retried_or_refused_in_plain_words(api, db, practice):
    unmatched = stuck_session(db, practice)
    known = stuck_session(db, practice, status="failed", patient_ref="Patient/1")
    listed = api.call("GET", "/api/v1/problems").json["session"]
    assert {p["id"]: p["retryable"] for p in listed} == {unmatched.id: True, known.id: False}
    assert api.call("POST", f"/api/v1/problems/session/{unmatched.id}/retry").status_code == 204
    refused = api.call("POST", f"/api/v1/problems/session/{known.id}/retry")
    assert refused.status_code == 409
    assert refused.mimetype == "application/problem+json"
    db.expire_all()
    assert (db.get(type(unmatched), unmatched.id).status, known.status) == ("pending", "failed")
    retried = [e for e in recent(db, practice.id) if e.action == "session.retried"]
    assert [e.actor.split(":")[0] for e in retried] == ["api-token"]


def _send(api, case):
    if "raw" in case or "raw_hex" in case or "raw_size" in case or "nested" in case:
        if "raw" in case:
            data = case["raw"].encode()
        elif "raw_hex" in case:
            data = bytes.fromhex(case["raw_hex"])
        elif "nested" in case:
            data = b"[" * case["nested"] + b"]" * case["nested"]
        else:
            data = b'{"name": "' + b"x" * case["raw_size"] + b'"}'
        return api.call(case["method"], case["path"], data=data, content_type="application/json")
    return api.call(case["method"], case["path"], case.get("body"))


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=lambda c: c["id"])
def test_bad_input_gets_a_problem_naming_the_field_and_changes_nothing(api, db, blocked, case):
    response = _send(api, case)
    assert response.status_code == case["status"], response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == case["status"]
    if "pointer" in case:
        assert [e["pointer"] for e in response.json["errors"]] == [case["pointer"]]
    if case["status"] == 405:
        assert "GET" in response.headers["Allow"]
    assert api.call("GET", "/api/v1/schedule").json["version"] == 0
    assert api.call("GET", "/api/v1/practice").json["name"] == "Riverside Therapy"


# ---- the document -----------------------------------------------------------------------------


def _openapi_path(rule: str) -> str:
    return rule.replace("<", "{").replace(">", "}")


def test_the_document_lists_exactly_the_routes(app, client):
    served = client.get("/api/v1/openapi.json")
    assert served.status_code == 200
    assert served.json == json.loads(json.dumps(document()))
    assert served.json["openapi"].startswith("3.1")
    routes = {
        (_openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routes == documented
