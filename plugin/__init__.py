"""Alliance Check: the Flask service that ties webhooks, questionnaires and EHR writes together."""

from flask import Flask

from plugin import logs
from plugin.config import instance_path, load_config
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

    from plugin import (
        crypto,
        db,
        ehr_cli,
        errors,
        i18n,
        install,
        instruments,
        invitations_cli,
        launch,
        manifest_cli,
        optout_views,
        platforms,
        practices,
        schedules,
        sessions_cli,
        signing_keys,
        survey,
        webhook_views,
    )

    # Storage and secrets first: everything after may use them.
    for subsystem in (
        db,
        crypto,
        errors,
        i18n,
        instruments,
        platforms,
        practices,
        schedules,
        signing_keys,
        ehr_cli,
        invitations_cli,
        sessions_cli,
        manifest_cli,
        webhook_views,
        survey,
        optout_views,
        install,
        launch,
    ):
        subsystem.init_app(app)

    @app.get("/healthz")
    def healthz():
        """Report liveness for load balancers."""
        return {"status": "ok"}

    return app
