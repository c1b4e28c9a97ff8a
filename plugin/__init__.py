"""Alliance Check: the Flask service that ties webhooks, questionnaires and EHR writes together."""

from flask import Flask

from plugin.core import logs
from plugin.core.config import instance_path, load_config
from webhooks import MAX_BODY_BYTES


def create_app(config: dict | None = None) -> Flask:
    """Create and configure the app; `config` overrides every other layer (tests use it)."""
    app = Flask(__name__, instance_path=str(instance_path(config)))
    load_config(app, config)
    logs.configure(app.config["LOG_LEVEL"])
    # No surface takes more than a webhook body; forms are far smaller.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["WTF_CSRF_TIME_LIMIT"] = None
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = app.config["PUBLIC_BASE_URL"].startswith("https://")

    from plugin import admin, core, delivery, ehr, install, intake, planning, survey, therapist

    # Core first (storage and secrets): every area after it may use them.
    for area in (core, install, planning, ehr, delivery, intake, survey, therapist, admin):
        area.init_app(app)

    @app.get("/healthz")
    def healthz():
        """Report liveness for load balancers."""
        return {"status": "ok"}

    return app
