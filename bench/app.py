"""The WSGI app gunicorn serves during a benchmark: the real service plus one bare route.

gunicorn loads it as `bench.app:create_bench_app()`. Settings come the usual way: the
instance folder named by ALLIANCE_INSTANCE_PATH holds alliance.toml (written by
bench.server.prepare_instance) with the secrets and the DATABASE_URL.
"""

from flask import Flask, Response, request

from plugin import create_app, logs

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
    """Return the service app plus the bare route, logging as `alliance-check serve` does."""
    app = create_app(config)
    # One JSON log line per stored webhook is part of the real cost, so keep it.
    logs.configure(app.config["LOG_LEVEL"])
    return add_bare_route(app)
