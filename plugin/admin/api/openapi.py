"""The OpenAPI 3.1 document of /api/v1, built in this one place and served as openapi.json.

A test checks that its paths and methods are exactly the blueprint's routes, and the fuzz test
(schemathesis) that every answer matches it.
"""

import functools

from plugin.planning.policy import CHANNELS, LANGUAGES, REASONS

JSON = "application/json"
PROBLEM = "application/problem+json"
CLOCK = {"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$", "examples": ["21:00"]}
# Each policy setting, as Policy.to_dict() writes it (docs/schedules.md explains them).
SETTINGS = {
    "questionnaire": {"type": "string", "description": 'The Questionnaire\'s "url|version".'},
    "first_sessions": {"type": "integer", "minimum": 0, "maximum": 100},
    "then_every": {"type": "integer", "minimum": 0, "maximum": 100},
    "min_gap_days": {"type": "integer", "minimum": 0, "maximum": 90},
    "delay_minutes": {"type": "integer", "minimum": 0, "maximum": 1440},
    "quiet_start": CLOCK,
    "quiet_end": CLOCK,
    "reminder_after_hours": {"type": "integer", "minimum": 0, "maximum": 335},
    "expires_after_hours": {"type": "integer", "minimum": 1, "maximum": 336},
    "max_send_delay_hours": {"type": "integer", "minimum": 1, "maximum": 336},
    "channels": {
        "type": "array",
        "items": {"enum": list(CHANNELS)},
        "minItems": 1,
        "uniqueItems": True,
    },
    "language": {"enum": list(LANGUAGES)},
}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
RATE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
COUNT = {"type": "integer", "minimum": 0}


def _object(properties: dict, required: tuple | list | None = None) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else list(required),
        "additionalProperties": False,
    }


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS = {
    "Policy": _object(SETTINGS),
    "PolicyChanges": {**_object(SETTINGS, ()), "description": "Only the settings to change."},
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "description": "Each bad field: a JSON Pointer into the body, and what is wrong.",
                "items": _object({"pointer": {"type": "string"}, "detail": {"type": "string"}}),
            },
        },
        "required": ["type", "title", "status"],
        "additionalProperties": False,
    },
    "BearerError": {
        "type": "object",
        "description": "RFC 6750 error, as authlib answers it.",
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
        "required": ["error"],
    },
    "Practice": _object(
        {
            "platform": {"type": "string"},
            "account_id": {"type": "string"},
            "name": {"type": "string"},
            "timezone": {"type": "string"},
            "language": {"enum": list(LANGUAGES)},
            "ehr_target": {"type": "string"},
            "status": {"enum": ["active", "needs_reauth"]},
        }
    ),
    "PracticeChanges": _object(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "timezone": {"type": "string", "examples": ["Europe/Paris"]},
            "language": {"enum": list(LANGUAGES)},
            "ehr_target": {"type": "string", "examples": ["ndjson:var/ehr"]},
        },
        (),
    ),
    "Schedule": _object({"version": COUNT, "settings": _ref("Policy")}),
    "Version": _object(
        {
            "version": {"type": "integer", "minimum": 1},
            "created_at": {"type": "string", "format": "date-time"},
            "settings": {"type": "object", "description": "Empty: an override removed here."},
        }
    ),
    "History": _object({"versions": {"type": "array", "items": _ref("Version")}}),
    "PreviewRequest": _object(
        {
            "settings": {**_ref("PolicyChanges"), "description": "Settings to try on top."},
            "practitioner": {"type": "string", "examples": ["Practitioner/42"]},
            "timezone": {"type": "string", "description": "The client's; else the practice's."},
            "start": {"type": "string", "format": "date", "description": "Else next Monday."},
        },
        (),
    ),
    "Preview": _object(
        {
            "timezone": {"type": "string"},
            "settings": _ref("Policy"),
            "sessions": {
                "type": "array",
                "items": _object(
                    {
                        "number": {"type": "integer", "minimum": 1},
                        "ended_at": {"type": "string", "format": "date-time"},
                        "asked": {"type": "boolean"},
                        "reason": {"enum": list(REASONS)},
                        "sent_at": NULLABLE_TIME,
                        "reminder_at": NULLABLE_TIME,
                    }
                ),
            },
        }
    ),
    "Override": _object(
        {
            "practitioner": {"type": "string", "examples": ["Practitioner/42"]},
            "version": {"type": "integer", "minimum": 1},
            "created_at": {"type": "string", "format": "date-time"},
            "settings": _ref("PolicyChanges"),
            "effective": _ref("Policy"),
        }
    ),
    "Overrides": _object({"overrides": {"type": "array", "items": _ref("Override")}}),
    "ProblemItem": _object(
        {
            "kind": {"enum": ["invitation", "session", "ehr_write"]},
            "id": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
            "why": {"type": "string"},
            "detail": {"type": "string"},
            "retryable": {"type": "boolean"},
            "cannot_retry": {"type": ["string", "null"]},
        }
    ),
    "Problems": _object(
        {
            kind: {"type": "array", "items": _ref("ProblemItem")}
            for kind in ("invitation", "session", "ehr_write")
        }
    ),
    "Stats": _object(
        {
            "timezone": {"type": "string"},
            "response_rate": RATE,
            "weeks": {
                "type": "array",
                "items": _object(
                    {
                        "start": {"type": "string", "format": "date"},
                        "sessions": COUNT,
                        "sent": COUNT,
                        "answered": COUNT,
                        "expired": COUNT,
                        "opted_out": COUNT,
                        "response_rate": RATE,
                    }
                ),
            },
        }
    ),
}


def _answer(description: str, schema: str | None = None, media: str = JSON) -> dict:
    answer = {"description": description}
    if schema:
        answer["content"] = {media: {"schema": _ref(schema)}}
    return answer


def _problem(description: str) -> dict:
    return _answer(description, "Problem", PROBLEM)


UNAUTHORIZED = {
    "description": "No token, or one unknown, expired or revoked (RFC 6750).",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    "content": {JSON: {"schema": _ref("BearerError")}},
}
BODY_ERRORS = {
    "400": _problem("The body is not a JSON object."),
    "413": _problem("The body is too large."),
    "422": _problem("A field is invalid; `errors` points at each."),
}


def _operation(summary: str, ok: dict, *, body: str | None = None, **errors: dict) -> dict:
    operation = {"summary": summary, "responses": {**ok, "401": UNAUTHORIZED, **errors}}
    if body:
        operation["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": _ref(body)}},
        }
        operation["responses"].update(BODY_ERRORS)
    return operation


PRACTITIONER = {
    "name": "practitioner_id",
    "in": "path",
    "required": True,
    "description": "The id in Practitioner/<id>, as the platform's webhooks name them.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9.\\-]{1,64}$"},
}
NO_OVERRIDE = {"404": _problem("This practitioner has no override here.")}


def _paths() -> dict:
    return {
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document.",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {JSON: {}}}},
            }
        },
        "/api/v1/practice": {
            "get": _operation(
                "The token's practice.", {"200": _answer("The practice", "Practice")}
            ),
            "patch": _operation(
                "Change the practice's name, time zone, default language or EHR target.",
                {"200": _answer("The practice, changed", "Practice")},
                body="PracticeChanges",
            ),
        },
        "/api/v1/schedule": {
            "get": _operation(
                "The practice's policy in effect; version 0 is the built-in default.",
                {"200": _answer("The policy", "Schedule")},
            ),
            "patch": _operation(
                "Change the settings given; stores the next version if anything changed.",
                {"200": _answer("The policy in effect", "Schedule")},
                body="PolicyChanges",
            ),
        },
        "/api/v1/schedule/history": {
            "get": _operation(
                "The stored versions of the practice's policy, newest first.",
                {"200": _answer("The versions", "History")},
            )
        },
        "/api/v1/schedule/preview": {
            "post": _operation(
                "What a policy does for a made-up weekly client's sessions 1-20; stores nothing.",
                {"200": _answer("The sessions", "Preview")},
                body="PreviewRequest",
            )
        },
        "/api/v1/overrides": {
            "get": _operation(
                "The practitioners' overrides in effect.",
                {"200": _answer("The overrides", "Overrides")},
            )
        },
        "/api/v1/overrides/{practitioner_id}": {
            "parameters": [PRACTITIONER],
            "get": _operation(
                "One practitioner's override, and the policy in effect for them.",
                {"200": _answer("The override", "Override")},
                **NO_OVERRIDE,
            ),
            "put": _operation(
                "Set the override to exactly these settings; the rest follow the practice.",
                {"200": _answer("The override", "Override")},
                body="PolicyChanges",
            ),
            "delete": _operation(
                "End the override.", {"204": {"description": "Removed"}}, **NO_OVERRIDE
            ),
        },
        "/api/v1/problems": {
            "get": _operation(
                "Failed invitations, unmatched sessions and dead-lettered EHR writes.",
                {"200": _answer("The problems", "Problems")},
            )
        },
        "/api/v1/problems/{kind}/{problem_id}/retry": {
            "parameters": [
                {
                    "name": "kind",
                    "in": "path",
                    "required": True,
                    "schema": {"enum": ["invitation", "session", "ehr_write"]},
                },
                {
                    "name": "problem_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "format": "uuid"},
                },
            ],
            "post": _operation(
                "Try one problem again.",
                {"204": {"description": "Queued again"}},
                **{
                    "404": _problem("No such problem at this practice."),
                    "409": _problem("A retry cannot help; `detail` says why."),
                },
            ),
        },
        "/api/v1/stats": {
            "get": _operation(
                "Practice-level counts for each of the last 12 weeks.",
                {"200": _answer("The counts", "Stats")},
            )
        },
    }


@functools.cache
def document() -> dict:
    """Return the OpenAPI 3.1 document of /api/v1."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Alliance Check admin API",
            "version": "1",
            "description": "One practice's settings, schedule, overrides, problems and "
            "statistics. A bearer token reaches exactly one practice (docs/api.md).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
    }
