"""Property tests: whatever bytes and headers arrive, the adapters only ever refuse cleanly.

A refusal is InvalidSignatureError (401) or InvalidPayloadError (400); anything else would
reach the view as a 500, which makes platforms retry a delivery that can never succeed.
"""

import json
from datetime import UTC, datetime
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.data import WEBHOOK_SECRETS, load_json
from tests.support.payloads import (
    JSON_VALUES,
    STANDARD_PATHS,
    ZOOM_PATHS,
    replace_somewhere,
)
from tests.support.zoom_api import ZOOM_SECRETS, zoom_payload
from webhooks import standard, validation, zoom
from webhooks.errors import InvalidPayloadError, InvalidSignatureError
from webhooks.events import Ignored, SessionEnded, Uninstalled, UrlValidation

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
EVENTS = (SessionEnded, Uninstalled, Ignored, UrlValidation)
VERIFIERS = {
    "standard": standard.Verifier(WEBHOOK_SECRETS["platform"]),
    "zoom": zoom.Verifier(ZOOM_SECRETS["secret_token"]),
}
HEADER_NAMES = st.sampled_from(
    [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-zm-signature",
        "x-zm-request-timestamp",
        "content-type",
    ]
)
# Header values as a WSGI server hands them over: latin-1 text.
HEADER_VALUES = st.text(st.characters(max_codepoint=255), max_size=80)


def parses_or_refuses(adapter, body: bytes) -> None:
    """Assert parse returns a known event or raises InvalidPayloadError, nothing else."""
    try:
        event = adapter.parse(body, "evt-1", now=NOW)
    except InvalidPayloadError as exc:
        assert exc.field and exc.detail
    else:
        assert isinstance(event, EVENTS)


@settings(max_examples=150, derandomize=True)
@given(
    platform=st.sampled_from(sorted(VERIFIERS)),
    body=st.binary(max_size=300),
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=6),
)
def test_verify_returns_an_id_or_refuses_for_any_bytes_and_headers(platform, body, headers):
    try:
        delivery_id = VERIFIERS[platform].verify(body, headers)
    except InvalidSignatureError as exc:
        assert exc.reason
    else:
        raise AssertionError(f"unsigned input verified as {delivery_id!r}")


@settings(max_examples=150, derandomize=True)
@given(adapter=st.sampled_from([standard, zoom]), body=st.binary(max_size=300))
def test_parse_refuses_any_bytes_cleanly(adapter, body):
    parses_or_refuses(adapter, body)


@settings(max_examples=200, derandomize=True)
@given(
    sample=st.sampled_from(["webhooks/session_ended.json", "webhooks/app_uninstalled.json"]),
    path=st.sampled_from(STANDARD_PATHS),
    value=JSON_VALUES,
)
def test_standard_parse_refuses_any_field_value_cleanly(sample, path, value):
    parses_or_refuses(standard, replace_somewhere(load_json(sample), path, value))


@settings(max_examples=200, derandomize=True)
@given(
    sample=st.sampled_from(["meeting_ended.json", "app_deauthorized.json", "url_validation.json"]),
    path=st.sampled_from(ZOOM_PATHS),
    value=JSON_VALUES,
)
def test_zoom_parse_refuses_any_field_value_cleanly(sample, path, value):
    parses_or_refuses(zoom, replace_somewhere(zoom_payload(sample), path, value))


STANDARD_SAMPLES = ("session_ended.json", "session_ended_minimal.json", "app_uninstalled.json")
ZOOM_SAMPLES = ("meeting_ended.json", "app_deauthorized.json", "url_validation.json")
SCHEMAS = sorted(path.name for path in resources.files("webhooks").joinpath("schemas").iterdir())


@settings(max_examples=300, derandomize=True)
@given(
    sample=st.sampled_from(["webhooks/session_ended.json", "webhooks/app_uninstalled.json"]),
    path=st.sampled_from(STANDARD_PATHS + ZOOM_PATHS),
    value=JSON_VALUES,
    schema=st.sampled_from(SCHEMAS),
)
def test_the_fast_check_never_accepts_what_jsonschema_refuses(sample, path, value, schema):
    """jsonschema-rs answers for valid bodies alone: its yes must be jsonschema's yes too."""
    document = json.loads(replace_somewhere(load_json(sample), path, value))
    if validation.is_valid(document, schema):
        assert validation.violation(document, schema) is None


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_fast_check_accepts_what_jsonschema_accepts_in_the_samples(schema):
    """The fast path is taken for the bodies platforms really send (else it saves nothing)."""
    samples = [load_json(f"webhooks/{name}") for name in STANDARD_SAMPLES]
    samples += [zoom_payload(name) for name in ZOOM_SAMPLES]
    valid = [doc for doc in samples if validation.violation(doc, schema) is None]
    assert valid
    assert all(validation.is_valid(doc, schema) for doc in valid)
