"""The WSGI app gunicorn serves during a benchmark: the real service plus one bare route.

gunicorn loads it as `bench.app:create_bench_app()`. Settings come the usual way: the
instance folder named by ALLIANCE_INSTANCE_PATH holds alliance.toml (written by
bench.server.prepare_instance) with the secrets and the DATABASE_URL. create_app() sends the
JSON logs to stderr, which the bench points at a file, so each stored webhook pays for its
log line as it would in production.
"""

from flask import Flask, Response, request

from plugin import create_app

BARE_PATH = "/bench/bare"
WEBHOOK_PATH = "/webhooks/standard"


def add_bare_route(app: Flask) -> Flask:
    """Add `POST /bench/bare`, the baseline: Flask and the WSGI server, nothing else."""

    @app.post(BARE_PATH)
    def bare() -> Response:
        """Read the body (as the webhook must) and answer 204."""
        request.get_data(cache=False)
        return Response(status=204)

    return app


def create_bench_app(config: dict | None = None) -> Flask:
    """Return the service app plus the bare route."""
    return add_bare_route(create_app(config))
