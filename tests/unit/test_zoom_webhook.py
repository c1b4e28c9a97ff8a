"""Zoom adapter: who may deliver, what a delivery means, and who attended a meeting."""

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from webhooks import ADAPTERS, standard, zoom
from webhooks.errors import SIGNATURE_REASONS, InvalidPayloadError, InvalidSignatureError
from webhooks.events import Ignored, SessionEnded, Uninstalled, UrlValidation

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data" / "zoom"
SECRETS = json.loads((DATA / "secrets.json").read_text())
SECRET = SECRETS["secret_token"]
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def body_of(name: str) -> bytes:
    """Read a payload file exactly as Zoom would send it."""
    return (DATA / name).read_bytes()


def document_of(name: str) -> dict:
    """Read a payload file as a dict to change."""
    return json.loads(body_of(name))


def signed(body: bytes, *, secret: str = SECRET, age: timedelta = timedelta(0)) -> dict:
    """Sign body as Zoom would, `age` before NOW."""
    return zoom.sign(secret, NOW - age, body)


@pytest.fixture
def verifier() -> zoom.ZoomVerifier:
    """A verifier whose clock reads NOW."""
    return zoom.ZoomVerifier(SECRET, clock=NOW.timestamp)


@pytest.fixture
def body() -> bytes:
    """A valid meeting.ended body."""
    return body_of("meeting_ended.json")


# --- signatures ----------------------------------------------------------------------------


def _with(headers: dict, **changes: str) -> dict:
    return {**headers, **{name.replace("_", "-"): value for name, value in changes.items()}}


def _digest(headers: dict) -> str:
    return headers["x-zm-signature"].removeprefix("v0=")


REJECTED = [
    pytest.param(lambda b: (b, signed(b, secret=SECRETS["forger"])), "bad_signature", id="forged"),
    pytest.param(
        lambda b: (b.replace(b"zoom-acct-A", b"zoom-acct-B"), signed(b)),
        "bad_signature",
        id="account-swapped",
    ),
    pytest.param(
        lambda b: (b, _with(signed(b), x_zm_request_timestamp=str(int(NOW.timestamp()) - 1))),
        "bad_signature",
        id="timestamp-changed-after-signing",
    ),
    pytest.param(lambda b: (b, signed(b, age=timedelta(minutes=6))), "stale_timestamp", id="stale"),
    pytest.param(
        lambda b: (b, signed(b, age=-timedelta(minutes=6))), "future_timestamp", id="future"
    ),
    *[
        pytest.param(
            lambda b, n=name: (b, {k: v for k, v in signed(b).items() if k != n}),
            "missing_headers",
            id=f"no-{name}",
        )
        for name in ("x-zm-signature", "x-zm-request-timestamp")
    ],
    pytest.param(lambda b: (b, _with(signed(b), x_zm_signature="")), "missing_headers", id="empty"),
    pytest.param(
        lambda b: (b, _with(signed(b), x_zm_request_timestamp=f"{NOW.timestamp():.1f}")),
        "malformed_header",
        id="timestamp-not-integer-seconds",
    ),
    pytest.param(
        lambda b: (b, _with(signed(b), x_zm_signature="v0" + _digest(signed(b)))),
        "malformed_header",
        id="no-equals-sign",
    ),
    pytest.param(
        lambda b: (b, _with(signed(b), x_zm_signature="v0=" + "z" * 64)),
        "malformed_header",
        id="non-hex",
    ),
    pytest.param(
        lambda b: (b, _with(signed(b), x_zm_signature="v0=" + _digest(signed(b))[:-2])),
        "malformed_header",
        id="short-digest",
    ),
    pytest.param(
        lambda b: (b, _with(signed(b), x_zm_signature="v1=" + _digest(signed(b)))),
        "unsupported_version",
        id="wrong-version",
    ),
]


@pytest.mark.parametrize(("make", "reason"), REJECTED)
def test_verify_rejects_deliveries_not_proven_to_come_from_zoom(verifier, body, make, reason):
    sent_body, headers = make(body)
    with pytest.raises(InvalidSignatureError) as caught:
        verifier.verify(sent_body, headers)
    assert caught.value.reason == reason
    assert reason in SIGNATURE_REASONS


def test_verify_accepts_zooms_documented_recipe_with_any_header_case(verifier, body):
    """v0:{timestamp}:{raw body}, HMAC-SHA256 keyed with the secret token, hex, "v0=" prefix."""
    timestamp = str(int(NOW.timestamp()) - 30)
    digest = hmac.new(SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    headers = {"X-Zm-Request-Timestamp": timestamp, "X-Zm-Signature": f"v0={digest.hexdigest()}"}
    assert verifier.verify(body, headers).startswith("zm_")


def test_a_retry_of_one_delivery_keeps_its_id_and_another_delivery_gets_a_new_one(verifier, body):
    first = verifier.verify(body, signed(body))
    retry = verifier.verify(body, signed(body, age=timedelta(minutes=4)))
    other = body_of("meeting_ended_again.json")
    assert first == retry
    assert verifier.verify(other, signed(other)) != first


@pytest.mark.parametrize("secret", ["", "   ", "short", None])
def test_verifier_refuses_to_start_with_an_unusable_secret(secret):
    with pytest.raises(ValueError, match="at least 16"):
        zoom.ZoomVerifier(secret)


# --- parsing -------------------------------------------------------------------------------


def test_meeting_ended_becomes_a_session_ended_whose_client_is_found_later():
    event = zoom.parse(body_of("meeting_ended.json"), "zm_1")
    assert isinstance(event, SessionEnded)
    assert (event.event_id, event.platform, event.account_id) == ("zm_1", "zoom", "zoom-acct-A")
    # The meeting instance, so the store dedupes a second meeting.ended for it.
    assert event.session_id == "4444AAAiAAAAAiAiAiiAii=="
    assert event.started_at == datetime(2026, 3, 2, 14, 0, 4, tzinfo=UTC)
    assert event.ended_at == datetime(2026, 3, 2, 14, 50, 30, tzinfo=UTC)
    assert (event.client, event.practitioner, event.encounter) == (None, None, None)
    # The topic often names the client; it is read nowhere and kept nowhere.
    assert "Rivera" not in repr(event)


def test_two_meeting_ended_deliveries_for_one_instance_share_the_session_id():
    first = zoom.parse(body_of("meeting_ended.json"), "zm_1")
    second = zoom.parse(body_of("meeting_ended_again.json"), "zm_2")
    assert first.session_id == second.session_id


def test_url_validation_is_answered_with_the_hmac_of_the_plain_token():
    event = zoom.parse(body_of("url_validation.json"), "zm_1")
    assert event == UrlValidation(
        event_id="zm_1", platform="zoom", plain_token="qgg8vlvZRS6UYooatFL8Aw"
    )
    expected = hmac.new(SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert zoom.answer_challenge(SECRET, event) == {
        "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
        "encryptedToken": expected,
    }


def test_app_deauthorized_is_an_uninstall_of_that_account():
    event = zoom.parse(body_of("app_deauthorized.json"), "zm_1")
    assert event == Uninstalled(event_id="zm_1", platform="zoom", account_id="zoom-acct-A")


def test_events_alliance_check_does_not_act_on_are_ignored():
    event = zoom.parse(body_of("meeting_started.json"), "zm_1")
    assert event == Ignored(event_id="zm_1", platform="zoom", event_type="meeting.started")


def _changed(name: str, path: str, value) -> bytes:
    """Return a payload file with the value at a /-separated path replaced (or removed)."""
    document = document_of(name)
    *parents, last = path.split("/")
    target = document
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return json.dumps(document).encode()


INVALID = [
    pytest.param(b'{"event": "meeting.ended", ', "body", id="not-json"),
    pytest.param(b"[]", "body", id="not-an-object"),
    pytest.param(_changed("meeting_ended.json", "event", ...), "event", id="no-event"),
    pytest.param(
        _changed("meeting_ended.json", "event", "sam@example.org is here"),
        "event",
        id="event-free-text",
    ),
    pytest.param(_changed("meeting_ended.json", "payload", "x"), "payload", id="payload-string"),
    pytest.param(
        _changed("meeting_ended.json", "payload/account_id", ...),
        "payload.account_id",
        id="no-account",
    ),
    pytest.param(
        _changed("meeting_ended.json", "payload/object/uuid", "sam.rivera@example.org"),
        "payload.object.uuid",
        id="uuid-not-base64",
    ),
    pytest.param(
        _changed("meeting_ended.json", "payload/object/end_time", "2026-03-02 14:50"),
        "payload.object.end_time",
        id="end-time-without-offset",
    ),
    pytest.param(
        _changed("meeting_ended.json", "payload/object/end_time", "2026-03-02T13:00:00Z"),
        "payload.object.end_time",
        id="ends-before-it-starts",
    ),
    pytest.param(
        _changed("url_validation.json", "payload/plainToken", ...),
        "payload.plainToken",
        id="challenge-without-token",
    ),
    pytest.param(
        _changed("url_validation.json", "payload/plainToken", "has spaces in it"),
        "payload.plainToken",
        id="challenge-token-not-printable",
    ),
    pytest.param(
        _changed("app_deauthorized.json", "payload/account_id", ""),
        "payload.account_id",
        id="deauthorized-empty-account",
    ),
]


@pytest.mark.parametrize(("raw", "field"), INVALID)
def test_malformed_bodies_name_the_field_and_never_the_value(raw, field):
    with pytest.raises(InvalidPayloadError) as caught:
        zoom.parse(raw, "zm_1")
    assert caught.value.field == field
    for submitted in ("sam.rivera@example.org", "sam@example.org", "has spaces", "14:50"):
        assert submitted not in caught.value.detail


def test_every_zoom_schema_is_valid():
    for name in zoom.SCHEMAS.values():
        Draft202012Validator.check_schema(
            json.loads((ROOT / "webhooks" / "schemas" / name).read_text())
        )


# --- the standard adapter's uninstall -------------------------------------------------------


def test_standard_app_uninstalled_is_an_uninstall_of_that_account():
    event = standard.parse((ROOT / "tests/data/webhooks/app_uninstalled.json").read_bytes(), "m1")
    assert event == Uninstalled(event_id="m1", platform="standard", account_id="demo")


def test_standard_app_uninstalled_without_an_account_names_the_field():
    document = json.loads((ROOT / "tests/data/webhooks/app_uninstalled.json").read_text())
    del document["data"]["account_id"]
    with pytest.raises(InvalidPayloadError) as caught:
        standard.parse(json.dumps(document).encode(), "m1")
    assert caught.value.field == "data.account_id"


# --- attendees -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uuid", "path"),
    [
        ("4444AAAiAAAAAiAiAiiAii==", "/past_meetings/4444AAAiAAAAAiAiAiiAii%3D%3D"),
        ("ab/cd+ef==", "/past_meetings/ab%2Fcd%2Bef%3D%3D"),
        # Zoom's rule: a uuid starting with "/" or holding "//" is encoded twice.
        ("/ab+cd==", "/past_meetings/%252Fab%252Bcd%253D%253D"),
        ("ab//cd==", "/past_meetings/ab%252F%252Fcd%253D%253D"),
    ],
)
def test_meeting_paths_are_encoded_the_way_zoom_requires(uuid, path):
    assert zoom.meeting_path(uuid) == path


def test_attendees_leave_out_the_practices_own_staff_the_waiting_room_and_repeats():
    participants = document_of("participants.json")
    calls = []

    def fetch(path, params):
        calls.append((path, params))
        return participants

    emails = zoom.attendee_emails(fetch, "4444AAAiAAAAAiAiAiiAii==")
    # The host (internal_user) is out; a reconnect with other letter case is one person.
    assert emails == ["sam.rivera@example.org"]
    assert calls == [
        ("/past_meetings/4444AAAiAAAAAiAiAiiAii%3D%3D/participants", {"page_size": 300})
    ]


def test_attendees_are_read_from_every_page():
    everyone = document_of("participants.json")["participants"]
    pages = {
        None: {"participants": everyone[:1], "next_page_token": "p2"},
        "p2": {"participants": everyone[1:], "next_page_token": ""},
    }
    emails = zoom.attendee_emails(
        lambda path, params: pages[params.get("next_page_token")], "4444AAAiAAAAAiAiAiiAii=="
    )
    assert emails == ["sam.rivera@example.org"]


def test_a_page_loop_ends():
    calls = []

    def fetch(path, params):
        calls.append(params)
        return {"participants": [], "next_page_token": "same-token-forever"}

    assert zoom.attendee_emails(fetch, "abc") == []
    assert len(calls) == zoom.MAX_PAGES


@pytest.mark.parametrize("answer", [{}, {"participants": "none"}])
def test_an_answer_without_a_participant_list_is_refused(answer):
    with pytest.raises(InvalidPayloadError):
        zoom.attendee_emails(lambda path, params: answer, "abc")


def test_registry_exposes_the_zoom_adapter_by_platform_name(body):
    adapter = ADAPTERS["zoom"]
    assert adapter is zoom
    assert adapter.PLATFORM == "zoom"
    event_id = adapter.Verifier(SECRET, clock=NOW.timestamp).verify(body, signed(body))
    assert isinstance(adapter.parse(body, event_id), SessionEnded)


def test_meeting_facts_and_registrants_read_zooms_documented_shapes():
    from webhooks.zoom import host_email, meeting_facts, registrant_emails

    answers = {
        "/past_meetings/abc%3D%3D": {"id": 85417329902, "host_id": "uLob"},
        "/users/uLob": {"id": "uLob", "email": "host@riverside.example"},
        "/meetings/85417329902/registrants": {
            "registrants": [{"email": "a@example.org"}, {"email": "A@example.org"}, {"x": 1}],
            "next_page_token": "",
        },
    }
    fetch = lambda path, params: answers[path]  # noqa: E731
    facts = meeting_facts(fetch, "abc==")
    assert (facts.meeting_id, facts.host_id) == ("85417329902", "uLob")
    assert host_email(fetch, facts.host_id) == "host@riverside.example"
    assert registrant_emails(fetch, "85417329902") == ["a@example.org"]
