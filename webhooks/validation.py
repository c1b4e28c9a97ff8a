"""Decode webhook bodies and check them against a JSON Schema without echoing values."""

import functools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.exceptions import relevance
from jsonschema.protocols import Validator

from webhooks.errors import InvalidPayloadError
from webhooks.events import is_iana_timezone

# An unexpected key is named back to the sender only when it cannot be free text (PHI).
_SAFE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

# A session cannot end in the future; this much covers clocks that disagree.
CLOCK_SKEW = timedelta(hours=1)
# Longer than any therapy session: a start earlier than this is a bad clock or a forgery.
MAX_SESSION_LENGTH = timedelta(hours=24)

_FORMAT_TEXT = {
    "date-time": "must be an RFC 3339 date-time with an offset, e.g. 2026-01-05T14:00:00Z",
    "iana-time-zone": "must be an IANA time zone name, e.g. America/New_York",
}


def load_object(body: bytes) -> dict[str, Any]:
    """Decode body as a JSON object or raise InvalidPayloadError(field="body")."""
    try:
        document = json.loads(body)
    # ValueError covers bad JSON, bad UTF-8 and over-long integers; deep nesting recurses.
    except (ValueError, RecursionError) as exc:
        raise InvalidPayloadError("body", "body is not valid UTF-8 JSON") from exc
    if not isinstance(document, dict):
        raise InvalidPayloadError("body", "body must be a JSON object")
    _require_encodable(document, [])
    return document


def _require_encodable(value: Any, path: list[str]) -> None:
    """Refuse strings that are not Unicode text (lone surrogates): no database can store them."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodable(key):
                raise InvalidPayloadError(_join(path), f"{_join(path)} has a key that is not text")
            _require_encodable(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _require_encodable(item, [*path, str(index)])
    elif isinstance(value, str) and not _encodable(value):
        field = _join(path)
        raise InvalidPayloadError(field, f"{field} must be valid Unicode text")


def _encodable(text: str) -> bool:
    """Return whether text encodes as UTF-8 (JSON's \\ud800 escapes decode to lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_datetime(value: str) -> datetime:
    """Convert a schema-checked RFC 3339 string to an aware UTC datetime."""
    instant = _instant(value)
    if instant is None:
        # The schema's format check already refused it; reaching here is a schema bug.
        raise ValueError("not an RFC 3339 date-time with an offset")
    return instant


def _instant(value: str) -> datetime | None:
    """Return value as an aware UTC datetime, or None if it is not one that UTC can hold."""
    try:
        moment = datetime.fromisoformat(value)
        # 0001-01-01T00:00:00+01:00 parses, but lies before the first instant UTC can hold.
        return moment.astimezone(UTC) if moment.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


def check_session_times(
    started_at: datetime, ended_at: datetime, now: datetime, fields: tuple[str, str]
) -> None:
    """Refuse a session that ends in the future, before it starts, or lasts beyond a day."""
    start_field, end_field = fields
    if ended_at > now + CLOCK_SKEW:
        raise InvalidPayloadError(end_field, f"{end_field} must not be in the future")
    if ended_at < started_at:
        raise InvalidPayloadError(end_field, f"{end_field} must not be before {start_field}")
    if ended_at - started_at > MAX_SESSION_LENGTH:
        raise InvalidPayloadError(
            start_field, f"{start_field} must be at most 24 hours before {end_field}"
        )


def validate(instance: dict[str, Any], schema_name: str) -> None:
    """Raise InvalidPayloadError for the most relevant violation of the named schema."""
    if is_valid(instance, schema_name):
        return
    # Only a body jsonschema-rs refused gets here: jsonschema finds and names the violation.
    error = violation(instance, schema_name)
    if error is not None:
        field, text = _describe(error)
        raise InvalidPayloadError(field, f"{field} {text}")


def violation(instance: object, schema_name: str) -> ValidationError | None:
    """Return jsonschema's most relevant violation of the named schema, or None if valid."""
    return max(_validator(schema_name).iter_errors(instance), key=relevance, default=None)


def is_valid(instance: object, schema_name: str) -> bool:
    """Say whether jsonschema-rs finds the instance valid; False also when it cannot tell.

    This is the fast yes for the valid majority of bodies: 0.005 ms where jsonschema takes
    0.2 ms, a large part of a webhook's cost (docs/benchmarks.md). It checks the same schema with
    the same format checks and whole-string patterns, and tests hold the two to the same
    verdicts; any no goes to jsonschema, which has the last word and the error message.
    """
    try:
        return _fast_validator(schema_name).is_valid(instance)
    except (ValueError, OverflowError):
        # Should it ever fail to take a value over from Python, jsonschema decides.
        return False


def _schema(schema_name: str) -> dict[str, Any]:
    text = resources.files("webhooks").joinpath("schemas", schema_name).read_text("utf-8")
    return json.loads(text)


@functools.cache
def _fast_validator(schema_name: str) -> jsonschema_rs.Validator:
    """Build (once) the jsonschema-rs validator of a schema, with our format checks."""
    return jsonschema_rs.validator_for(
        _anchored(_schema(schema_name)),
        formats={"date-time": _is_datetime, "iana-time-zone": _is_timezone},
        validate_formats=True,
    )


def _anchored(schema: object) -> object:
    """Return the schema with every pattern made to match the whole string, as _validator's."""
    if isinstance(schema, list):
        return [_anchored(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    # ECMA-262 patterns search; the pattern keyword here must match the whole string.
    return {
        key: f"^(?:{value})$" if key == "pattern" and isinstance(value, str) else _anchored(value)
        for key, value in schema.items()
    }


@functools.cache
def _validator(schema_name: str) -> Validator:
    """Build (once) a Draft 2020-12 validator for a schema shipped in webhooks/schemas."""
    schema = _schema(schema_name)
    # Python's `$` also matches before a final "\n"; fullmatch gives ECMA-262's meaning.
    cls = validators.extend(Draft202012Validator, {"pattern": _fullmatch_pattern})
    checker = FormatChecker(formats=())
    checker.checks("date-time")(_is_datetime)
    checker.checks("iana-time-zone")(_is_timezone)
    return cls(schema, format_checker=checker)


def _fullmatch_pattern(
    validator: Validator, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """Require the whole string to match, as JSON Schema's anchored patterns intend."""
    if validator.is_type(instance, "string") and not re.fullmatch(pattern, instance):
        yield ValidationError("does not match the pattern")


def _is_datetime(instance: object) -> bool:
    """Accept only real calendar instants that carry an offset."""
    return not isinstance(instance, str) or _instant(instance) is not None


def _is_timezone(instance: object) -> bool:
    """Accept only zones the tz database knows."""
    return not isinstance(instance, str) or is_iana_timezone(instance)


def _describe(error: ValidationError) -> tuple[str, str]:
    """Name the failing field and say what is wrong using only the schema, never the value."""
    path = [str(part) for part in error.absolute_path]
    kind, rule = error.validator, error.validator_value
    if kind == "required":
        missing = next(name for name in rule if name not in error.instance)
        return _join(path, missing), "is required"
    if kind == "additionalProperties":
        known = error.schema.get("properties", {})
        extra = sorted(key for key in error.instance if key not in known)[0]
        if _SAFE_KEY.fullmatch(extra):
            return _join(path, extra), "is not an allowed property"
        return _join(path), "has a property that is not allowed"
    field = _join(path)
    if kind == "anyOf" and all(set(branch) == {"required"} for branch in rule):
        names = ", ".join(name for branch in rule for name in branch["required"])
        return field, f"must include at least one of: {names}"
    if kind == "type":
        return field, f"must be of type {rule}"
    if kind == "const":
        return field, f"must be {json.dumps(rule)}"
    if kind == "enum":
        return field, "must be one of " + ", ".join(json.dumps(value) for value in rule)
    if kind == "minLength":
        return field, "must not be empty" if rule == 1 else f"must be at least {rule} characters"
    if kind == "maxLength":
        return field, f"must be at most {rule} characters"
    if kind == "format":
        return field, _FORMAT_TEXT.get(rule, f"must be a valid {rule}")
    if kind == "pattern" and "description" in error.schema:
        return field, f"is not in the expected format ({error.schema['description'].rstrip('.')})"
    return field, "is not in the expected format" if kind == "pattern" else "is not valid"


def _join(path: list[str], *more: str) -> str:
    """Join path parts with dots, or name the whole body when there are none."""
    return ".".join([*path, *more]) or "body"
