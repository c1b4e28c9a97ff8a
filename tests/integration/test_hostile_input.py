"""Hostile webhook input found by a probe of `make run`: each gets a 4xx, never a 500.

Every case is signed with the real secret (but the first, which needs none), so it reaches
the code behind the signature check; none may store anything.
"""

import io
import json

import pytest
from sqlalchemy import func, select

from plugin.core.models import SessionEvent
from tests.support.data import load_json, session_ended
from tests.support.zoom_api import ZOOM_SECRETS, ZoomWebhooks, zoom_payload

# json.dumps writes a lone surrogate as the escape "\ud800": valid JSON, but not text a
# database can store.
SURROGATE = "\ud800"


@pytest.fixture
def config(config):
    """Accept Zoom deliveries too."""
    return {**config, "ZOOM_WEBHOOK_SECRET": ZOOM_SECRETS["secret_token"]}


def stored(db) -> int:
    return db.scalar(select(func.count()).select_from(SessionEvent))


def test_a_non_ascii_signature_is_401_without_knowing_the_secret(client, db, practice, webhooks):
    body = json.dumps(session_ended("s-1")).encode()
    headers = webhooks.headers(body)
    headers["webhook-signature"] = "v1,\xe9" + headers["webhook-signature"][4:]
    response = client.post("/webhooks/standard", data=body, headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert stored(db) == 0


def standard(path: list[str], value: object) -> dict:
    """Return the sample session.ended with one field replaced."""
    payload = session_ended("s-hostile")
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return payload


STANDARD_CASES = {
    "surrogate in account_id": (standard(["data", "account_id"], SURROGATE), "data.account_id"),
    "surrogate in session_id": (
        standard(["data", "session_id"], f"s-{SURROGATE}"),
        "data.session_id",
    ),
    "surrogate in an uninstall's account_id": (
        {**load_json("webhooks/app_uninstalled.json"), "data": {"account_id": SURROGATE}},
        "data.account_id",
    ),
    "started_at before UTC's first instant": (
        standard(["data", "started_at"], "0001-01-01T00:00:00+01:00"),
        "data.started_at",
    ),
    "ended_at after UTC's last instant": (
        standard(["data", "ended_at"], "9999-12-31T23:59:59-01:00"),
        "data.ended_at",
    ),
    "ended_at in year 9999": (
        standard(["data", "ended_at"], "9999-06-01T10:00:00Z"),
        "data.ended_at",
    ),
    "a session of more than a day": (
        standard(["data", "started_at"], "2026-02-27T09:00:00-05:00"),
        "data.started_at",
    ),
    "a 256-letter time zone": (
        standard(["data", "client", "timezone"], "A" * 256),
        "data.client.timezone",
    ),
}


@pytest.mark.parametrize("payload, field", STANDARD_CASES.values(), ids=STANDARD_CASES.keys())
def test_hostile_standard_payloads_are_400_naming_the_field(webhooks, db, practice, payload, field):
    response = webhooks.post(payload)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["field"] == field
    assert SURROGATE not in response.get_data(as_text=True)
    assert stored(db) == 0


def zoom(path: list[str], value: object, name: str = "meeting_ended.json") -> dict:
    """Return a sample Zoom payload with one field under "payload" replaced."""
    payload = zoom_payload(name)
    node = payload["payload"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return payload


ZOOM_CASES = {
    "surrogate in account_id": (zoom(["account_id"], SURROGATE), "payload.account_id"),
    "surrogate in a deauthorisation's account_id": (
        zoom(["account_id"], SURROGATE, "app_deauthorized.json"),
        "payload.account_id",
    ),
    "start_time before UTC's first instant": (
        zoom(["object", "start_time"], "0001-01-01T00:00:00+01:00"),
        "payload.object.start_time",
    ),
    "end_time after UTC's last instant": (
        zoom(["object", "end_time"], "9999-12-31T23:59:59-01:00"),
        "payload.object.end_time",
    ),
    "end_time in year 9999": (
        zoom(["object", "end_time"], "9999-06-01T10:00:00Z"),
        "payload.object.end_time",
    ),
}


@pytest.mark.parametrize("payload, field", ZOOM_CASES.values(), ids=ZOOM_CASES.keys())
def test_hostile_zoom_payloads_are_400_naming_the_field(client, db, payload, field):
    response = ZoomWebhooks(client).post(payload)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["field"] == field
    assert stored(db) == 0


@pytest.mark.parametrize("size", [200 * 1024, 64 * 1024 + 1])
def test_a_chunked_body_over_the_limit_is_413_not_cut_short(client, db, practice, size):
    # No Content-Length: the server reads until the sender stops, as gunicorn does for
    # Transfer-Encoding: chunked (wsgi.input_terminated).
    response = client.post(
        "/webhooks/standard",
        input_stream=io.BytesIO(b" " * size),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_base={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert stored(db) == 0


def test_a_chunked_body_within_the_limit_is_read_whole(client, db, practice, webhooks):
    body = json.dumps(session_ended("s-chunked")).encode()
    response = client.post(
        "/webhooks/standard",
        input_stream=io.BytesIO(body),
        headers={
            "Transfer-Encoding": "chunked",
            "Content-Type": "application/json",
            **webhooks.headers(body),
        },
        environ_base={"wsgi.input_terminated": True},
    )
    assert response.status_code == 204
    assert stored(db) == 1


def test_a_chunked_form_over_the_limit_is_413_on_the_survey_page_too(client, link):
    path, invitation = link
    response = client.post(
        path,
        input_stream=io.BytesIO(b"a=" + b"x" * (200 * 1024)),
        headers={
            "Transfer-Encoding": "chunked",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        environ_base={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert invitation.status == "sent"
