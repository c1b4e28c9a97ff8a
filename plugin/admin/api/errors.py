"""The API's own error answers: RFC 9457 problem+json for bad input, naming each field."""

from flask import Response, json, request

from plugin.core.errors import problem


class MalformedBody(Exception):
    """The request body is not one JSON object."""


class InvalidInput(Exception):
    """Some fields are invalid; `errors` maps each (a JSON Pointer name) to what is wrong."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def invalid(field: str | None, message: str) -> InvalidInput:
    """Return the 422 for one field (None: the body as a whole)."""
    return InvalidInput({field or "": message})


def json_object() -> dict:
    """Return the request body as a JSON object, or raise MalformedBody."""
    # Parsed by hand so a wrong or missing Content-Type gets the same plain 400 as bad JSON.
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except (ValueError, RecursionError) as exc:
        raise MalformedBody("the body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise MalformedBody("the body must be a JSON object")
    return body


def malformed_response(exc: MalformedBody) -> Response:
    """Answer 400 for a body that is not a JSON object."""
    return problem(400, "Malformed JSON", str(exc))


def invalid_response(exc: InvalidInput) -> Response:
    """Answer 422, naming every bad field with a JSON Pointer into the body."""
    return problem(
        422,
        "Invalid input",
        str(exc),
        errors=[
            {"pointer": f"/{field}" if field else "", "detail": message}
            for field, message in exc.errors.items()
        ],
    )
