"""Standard Webhooks adapter: who may deliver, and what a delivery must contain."""

import base64
import copy
import hashlib
import hmac
import json
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from werkzeug.datastructures import Headers

from webhooks import ADAPTERS, MAX_BODY_BYTES, standard
from webhooks.errors import SIGNATURE_REASONS, InvalidPayloadError, InvalidSignatureError
from webhooks.events import ClientContact, Ignored, SessionEnded, SmsConsent
from webhooks.standard import StandardVerifier, parse, sign

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data" / "webhooks"
SECRETS = json.loads((DATA / "secrets.json").read_text())
SECRET = SECRETS["platform"]
MSG_ID = "msg_2mVh3vWfQ0bX"


def body_of(name: str) -> bytes:
    """Read a payload file exactly as the platform would send it."""
    return (DATA / name).read_bytes()


def document_of(name: str) -> dict:
    """Read a payload file as a dict to mutate."""
    return json.loads(body_of(name))


def signed(body: bytes, *, secret: str = SECRET, age: timedelta = timedelta(0), msg_id=MSG_ID):
    """Sign body as the platform would, `age` ago."""
    return sign(secret, msg_id, datetime.now(UTC) - age, body)


def replaced(headers: dict, **changes: str) -> dict:
    """Copy headers with some values changed; names use _ for -."""
    return {**headers, **{name.replace("_", "-"): value for name, value in changes.items()}}


def without(headers: dict, name: str) -> dict:
    """Copy headers without one of them."""
    return {key: value for key, value in headers.items() if key != name}


def signature_value(headers: dict) -> str:
    """Return the base64 part of a single v1 signature."""
    return headers["webhook-signature"].split(",", 1)[1]


@pytest.fixture
def verifier() -> StandardVerifier:
    """Build the verifier the plugin would hold for one platform."""
    return StandardVerifier(SECRET)


@pytest.fixture
def body() -> bytes:
    """Return a valid session.ended body."""
    return body_of("session_ended.json")


# --- signatures ----------------------------------------------------------------------------

# Each row turns a valid body into (body, headers) as an attacker or a broken sender would.
REJECTED = [
    pytest.param(lambda b: (b, signed(b, secret=SECRETS["forger"])), "bad_signature", id="forged"),
    pytest.param(lambda b: (b.replace(b"s-1", b"s-9"), signed(b)), "bad_signature", id="tampered"),
    pytest.param(
        lambda b: (b, replaced(signed(b), webhook_id="msg_other")),
        "bad_signature",
        id="id-swapped-to-dodge-dedupe",
    ),
    pytest.param(
        lambda b: (b, signed(b, age=timedelta(minutes=10))), "stale_timestamp", id="stale"
    ),
    pytest.param(
        lambda b: (b, signed(b, age=-timedelta(minutes=10))), "future_timestamp", id="future"
    ),
    *[
        pytest.param(lambda b, n=name: (b, without(signed(b), n)), "missing_headers", id=name)
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    ],
    pytest.param(
        lambda b: (b, replaced(signed(b), webhook_signature="")), "missing_headers", id="empty"
    ),
    pytest.param(
        lambda b: (b, replaced(signed(b), webhook_timestamp="1.7e9")),
        "malformed_header",
        id="timestamp-not-integer",
    ),
    pytest.param(
        lambda b: (b, replaced(signed(b), webhook_id="msg 1\n")),
        "malformed_header",
        id="id-with-whitespace",
    ),
    pytest.param(
        lambda b: (b, replaced(signed(b), webhook_signature="v1")),
        "malformed_header",
        id="v1-without-comma",
    ),
    pytest.param(
        lambda b: (b, replaced(signed(b), webhook_signature="v1,@@not-base64@@")),
        "malformed_header",
        id="bad-base64",
    ),
    pytest.param(
        lambda b: (b, replaced(signed(b), webhook_signature="v1,abc=,def=")),
        "malformed_header",
        id="two-commas",
    ),
    pytest.param(
        lambda b: (b, replaced(signed(b), webhook_signature="v2," + signature_value(signed(b)))),
        "unsupported_version",
        id="v2-only",
    ),
    pytest.param(lambda b: (b + b"\xff", signed(b)), "body_not_utf8", id="non-utf8-body"),
]


@pytest.mark.parametrize(("make", "reason"), REJECTED)
def test_verify_rejects_deliveries_not_proven_to_come_from_the_platform(
    verifier, body, make, reason
):
    sent_body, headers = make(body)
    with pytest.raises(InvalidSignatureError) as caught:
        verifier.verify(sent_body, headers)
    assert caught.value.reason == reason
    assert reason in SIGNATURE_REASONS


ACCEPTED = [
    pytest.param(lambda b: signed(b), id="plain"),
    pytest.param(lambda b: signed(b, age=timedelta(minutes=4)), id="four-minutes-late"),
    pytest.param(
        lambda b: replaced(
            signed(b),
            webhook_signature=(
                f"{signed(b, secret=SECRETS['rotated'])['webhook-signature']} "
                f"{signed(b)['webhook-signature']}"
            ),
        ),
        id="key-rotation-one-of-two-valid",
    ),
    pytest.param(
        lambda b: replaced(
            signed(b), webhook_signature=f"v1a,c29tZQ==   {signed(b)['webhook-signature']}"
        ),
        id="unknown-version-beside-v1",
    ),
    pytest.param(
        lambda b: {name.title(): value for name, value in signed(b).items()},
        id="title-case-names",
    ),
    pytest.param(lambda b: Headers(list(signed(b).items())), id="werkzeug-headers"),
]


@pytest.mark.parametrize("make_headers", ACCEPTED)
def test_verify_returns_the_webhook_id_of_a_genuine_delivery(verifier, body, make_headers):
    assert verifier.verify(body, make_headers(body)) == MSG_ID


def test_verify_accepts_a_replayed_delivery_because_dedupe_is_the_stores_job(verifier, body):
    """A retry re-sends the same id and body; verify passes both and the store stores once."""
    headers = signed(body)
    assert verifier.verify(body, headers) == verifier.verify(body, headers) == MSG_ID


def test_verify_accepts_the_signing_recipe_in_the_docs(verifier, body):
    """Integrators follow docs/webhooks.md, not our library: the recipe must verify."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    timestamp = str(int(time.time()))
    digest = hmac.new(key, f"{MSG_ID}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    assert verifier.verify(body, headers) == MSG_ID


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("", id="empty"),
        pytest.param("whsec_", id="prefix-only"),
        pytest.param("whsec_not base64!!", id="not-base64"),
        pytest.param("whsec_" + base64.b64encode(b"k" * 16).decode(), id="16-bytes"),
        pytest.param(None, id="unset"),
    ],
)
def test_verifier_refuses_to_start_with_an_unusable_secret(secret):
    with pytest.raises(ValueError, match="webhook secret"):
        StandardVerifier(secret)


def test_verifier_accepts_a_secret_without_prefix_or_padding(body):
    bare = SECRET.removeprefix("whsec_").rstrip("=")
    assert StandardVerifier(bare).verify(body, signed(body)) == MSG_ID


def test_sign_converts_non_utc_timestamps_before_signing(body):
    """standardwebhooks' own sign() would stamp 09:00-05:00 as 09:00Z."""
    instant = datetime.now(UTC).replace(microsecond=0)
    eastern = instant.astimezone(timezone(timedelta(hours=-5)))
    headers = sign(SECRET, MSG_ID, eastern, body)
    assert headers == sign(SECRET, MSG_ID, instant, body)
    assert headers["webhook-timestamp"] == str(int(instant.timestamp()))


def test_sign_refuses_a_naive_timestamp(body):
    with pytest.raises(ValueError, match="timezone-aware"):
        sign(SECRET, MSG_ID, datetime(2026, 3, 2, 9, 0), body)


# --- parsing -------------------------------------------------------------------------------

VALID = document_of("session_ended.json")
CONTACT = [VALID["data"]["client"]["email"], VALID["data"]["client"]["phone"]]
DELETE = object()


def mutated(changes: dict[str, object]) -> bytes:
    """Return the valid body with /-separated paths set (or deleted with DELETE)."""
    document = copy.deepcopy(VALID)
    for path, value in changes.items():
        *parents, last = path.split("/")
        target = document
        for part in parents:
            target = target[part]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return json.dumps(document).encode()


# (body, field the error must name). Changed values are later checked to be absent from errors.
INVALID = [
    pytest.param(b'{"type": "session.ended",', {}, "body", id="invalid-json"),
    pytest.param(b"[]", {}, "body", id="array-body"),
    pytest.param(b"\xff\xfe{}", {}, "body", id="not-utf8"),
    pytest.param(b"[" * (MAX_BODY_BYTES - 1), {}, "body", id="nested-to-max-body"),
    pytest.param(None, {"type": DELETE}, "type", id="type-missing"),
    pytest.param(None, {"type": 7}, "type", id="type-not-string"),
    pytest.param(None, {"type": "session.ended\nforged log line"}, "type", id="type-with-newline"),
    pytest.param(None, {"timestamp": DELETE}, "timestamp", id="envelope-timestamp-missing"),
    pytest.param(None, {"data": []}, "data", id="data-wrong-type"),
    pytest.param(None, {"data/session_id": 42}, "data.session_id", id="session-id-number"),
    pytest.param(None, {"data/client": "Sam Rivera"}, "data.client", id="client-wrong-type"),
    pytest.param(None, {"data/started_at": DELETE}, "data.started_at", id="started-missing"),
    pytest.param(
        None,
        {"data/client/email": DELETE, "data/client/phone": DELETE},
        "data.client",
        id="no-client-contact",
    ),
    pytest.param(
        None, {"data/client/timezone": DELETE}, "data.client.timezone", id="timezone-missing"
    ),
    pytest.param(
        None, {"data/client/timezone": "Mars/Olympus"}, "data.client.timezone", id="tz-unknown"
    ),
    pytest.param(
        None, {"data/client/timezone": "localtime"}, "data.client.timezone", id="tz-server-local"
    ),
    pytest.param(
        None, {"data/client/timezone": "../../etc/passwd"}, "data.client.timezone", id="tz-path"
    ),
    pytest.param(
        None,
        {"data/started_at": "2026-03-02T10:00:00Z", "data/ended_at": "2026-03-02T09:59:59Z"},
        "data.ended_at",
        id="ended-before-started",
    ),
    pytest.param(
        None, {"data/started_at": "2026-03-02T09:00:00"}, "data.started_at", id="no-offset"
    ),
    pytest.param(
        None, {"data/ended_at": "2026-02-30T09:00:00Z"}, "data.ended_at", id="no-such-day"
    ),
    pytest.param(
        None, {"data/client/name": "Sam Rivera"}, "data.client.name", id="extra-field-named"
    ),
    pytest.param(None, {"data/sam@example.org": True}, "data", id="extra-key-looks-like-phi"),
    pytest.param(None, {"data/session_id": "s" * 129}, "data.session_id", id="id-too-long"),
    pytest.param(None, {"data/account_id": ""}, "data.account_id", id="account-empty"),
    pytest.param(None, {"data/session_id": "s-1\u0000x"}, "data.session_id", id="id-control-char"),
    pytest.param(
        None,
        {"data/practitioner/display": "Dr. " + "Q" * 200},
        "data.practitioner.display",
        id="display-too-long",
    ),
    pytest.param(
        None,
        {"data/client/email": "sam.rivera(at)example.org"},
        "data.client.email",
        id="bad-email",
    ),
    pytest.param(
        None,
        {"data/client/email": "sam.rivera@example.org\n"},
        "data.client.email",
        id="email-trailing-newline",
    ),
    pytest.param(
        None, {"data/client/phone": "202-555-0143"}, "data.client.phone", id="phone-not-e164"
    ),
    pytest.param(
        None,
        {"data/client/reference": "Practitioner/c1"},
        "data.client.reference",
        id="client-reference-wrong-type",
    ),
    pytest.param(
        None,
        {"data/encounter/reference": "Encounter/e1\n"},
        "data.encounter.reference",
        id="reference-trailing-newline",
    ),
    pytest.param(
        None, {"data/client/language": "english!"}, "data.client.language", id="bad-language"
    ),
]


@pytest.mark.parametrize(("raw", "changes", "field"), INVALID)
def test_parse_names_the_bad_field_without_echoing_the_value(raw, changes, field):
    with pytest.raises(InvalidPayloadError) as caught:
        parse(raw if raw is not None else mutated(changes), MSG_ID)
    error = caught.value
    assert error.field == field
    submitted = [value for value in changes.values() if isinstance(value, str) and value]
    submitted += [key.rsplit("/", 1)[1] for key in changes if "@" in key]
    for secret_text in [*CONTACT, *submitted]:
        assert secret_text not in error.detail
        assert secret_text not in str(error)


def test_parse_maps_a_full_payload_to_session_ended_in_utc():
    event = parse(body_of("session_ended.json"), MSG_ID)
    assert isinstance(event, SessionEnded)
    assert (event.event_id, event.platform) == (MSG_ID, "standard")
    assert event.started_at == datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
    assert event.ended_at == datetime(2026, 3, 2, 14, 50, 30, 250000, tzinfo=UTC)
    assert event.ended_at.tzinfo is UTC
    assert (event.client.email, event.client.phone) == tuple(CONTACT)
    assert (event.client.language, event.client.timezone) == ("es", "America/New_York")
    assert event.practitioner.reference == "Practitioner/p1"
    assert event.encounter is not None
    assert event.encounter.reference == "Encounter/e1"


def test_parse_fills_defaults_for_a_minimal_payload():
    event = parse(body_of("session_ended_minimal.json"), MSG_ID)
    assert isinstance(event, SessionEnded)
    assert event.client.email is None
    assert event.client.language == "en"
    assert event.encounter is None
    assert event.practitioner.display is None


def test_parse_ignores_event_types_it_does_not_handle():
    event = parse(body_of("session_started.json"), MSG_ID)
    assert event == Ignored(event_id=MSG_ID, platform="standard", event_type="session.started")


def test_parse_ignores_unknown_top_level_keys():
    """The envelope may grow; only `data` is strict."""
    body = mutated({"version": 2})
    assert isinstance(parse(body, MSG_ID), SessionEnded)


def test_repr_of_an_event_carries_no_contact_details_or_names():
    """Loggers call repr(); PHI must not reach a log line that way."""
    event = parse(body_of("session_ended.json"), MSG_ID)
    text = repr(event)
    for phi in [*CONTACT, VALID["data"]["practitioner"]["display"]]:
        assert phi not in text
    assert "Patient/c1" in text


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"email": None, "phone": None, "timezone": "UTC"}, id="no-contact"),
        pytest.param({"email": "a@example.org", "timezone": "Mars/Olympus"}, id="bad-timezone"),
    ],
)
def test_client_contact_refuses_to_exist_unreachable(fields):
    with pytest.raises(ValueError):
        ClientContact(reference="Patient/c1", **fields)


# --- the contract itself -------------------------------------------------------------------


def test_schema_is_valid_and_every_pattern_matches_whole_strings():
    schema = json.loads((ROOT / "webhooks" / "schemas" / "session-ended.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    patterns = re.findall(r'"pattern": ("(?:[^"\\]|\\.)*")', json.dumps(schema))
    assert patterns
    assert all(json.loads(p).startswith("^") and json.loads(p).endswith("$") for p in patterns)


def test_docs_example_body_is_a_valid_session_ended():
    """The example integrators copy from docs/webhooks.md must be accepted."""
    docs = (ROOT / "docs" / "webhooks.md").read_text()
    example = re.search(r"```json\n(.*?)```", docs, re.DOTALL)
    assert example is not None
    assert isinstance(parse(example.group(1).encode(), MSG_ID), SessionEnded)


def test_registry_exposes_the_standard_adapter_by_platform_name(body):
    adapter = ADAPTERS["standard"]
    assert adapter is standard
    assert adapter.PLATFORM == "standard"
    assert adapter.Verifier(SECRET).verify(body, signed(body)) == MSG_ID
    assert isinstance(adapter.parse(body, MSG_ID), SessionEnded)


@pytest.mark.parametrize("granted", [True, False])
def test_sms_consent_is_parsed_to_utc_with_its_source(granted):
    document = document_of("session_ended.json")
    consent = {"given_at": "2026-01-15T05:00:00-05:00", "source": "verbal"}
    document["data"]["client"]["sms_consent"] = {**consent, "granted": granted}
    client = parse(json.dumps(document).encode(), MSG_ID).client
    assert client.sms_consent == SmsConsent(
        granted=granted, given_at=datetime(2026, 1, 15, 10, tzinfo=UTC), source="verbal"
    )
    assert "+1202" not in repr(client)


def test_without_sms_consent_none_is_on_record():
    assert parse(body_of("session_ended.json"), MSG_ID).client.sms_consent is None


def test_sms_consent_refuses_an_unknown_source_and_a_naive_time():
    with pytest.raises(ValueError):
        SmsConsent(granted=True, given_at=datetime(2026, 1, 15, tzinfo=UTC), source="fax")
    with pytest.raises(ValueError):
        SmsConsent(granted=True, given_at=datetime(2026, 1, 15), source="portal")
