"""One error shape per surface: problem+json for APIs and webhooks, friendly HTML for pages."""

from flask import Flask, Response, json, render_template, request
from werkzeug.exceptions import HTTPException

# Surfaces whose callers are programs, not people.
API_PREFIXES = ("/webhooks/", "/api/", "/sms/")


def problem(status: int, title: str, detail: str | None = None, **extra: object) -> Response:
    """Return an RFC 9457 problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response(json.dumps(body), status=status, mimetype="application/problem+json")


def page(status: int, template: str, **context: object) -> Response:
    """Return a friendly HTML page with the given status."""
    return Response(render_template(template, **context), status=status, mimetype="text/html")


def private_page_headers(response: Response) -> Response:
    """Keep a page whose URL is a credential out of caches, referrers and frames."""
    # Questionnaire, unsubscribe and OAuth-callback URLs carry tokens or codes: no caching,
    # no referrer, no framing, nothing loaded from elsewhere.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return response


def _wants_problem() -> bool:
    return request.path.startswith(API_PREFIXES) or (
        request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"
    )


def _handle_http_error(exc: HTTPException) -> Response:
    # Werkzeug's own descriptions never contain request data, so they are safe to show.
    if _wants_problem():
        response = problem(exc.code or 500, exc.name, exc.description)
        # Keep the headers the status relies on: Allow on a 405, Retry-After on a 429.
        for name, value in exc.get_headers():
            if name in ("Allow", "Retry-After"):
                response.headers[name] = value
        return response
    return page(exc.code or 500, "error.html", title=exc.name, message=exc.description)


def init_app(app: Flask) -> None:
    """Route every HTTP error through the shape its surface expects."""
    app.register_error_handler(HTTPException, _handle_http_error)
