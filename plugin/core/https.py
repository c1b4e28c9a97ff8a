"""Under https, tell browsers to use nothing else for this host (HSTS, RFC 6797)."""

from flask import Flask, Response

# One year, the usual preload threshold; subdomains are left alone, they may not be ours.
HSTS = "max-age=31536000"


def _strict_transport(response: Response) -> Response:
    response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def init_app(app: Flask) -> None:
    """Send Strict-Transport-Security on every answer when the service is served over https."""
    if app.config["PUBLIC_BASE_URL"].startswith("https://"):
        app.after_request(_strict_transport)
