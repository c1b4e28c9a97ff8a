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
        install,
        instruments,
        invitations_cli,
        manifest_cli,
        platforms,
        practices,
        schedules,
        signing_keys,
        survey,
        webhook_views,
    )

    db.init_app(app)
    crypto.init_app(app)
    errors.init_app(app)
    instruments.init_app(app)
    practices.init_app(app)
    schedules.init_app(app)
    invitations_cli.init_app(app)
    signing_keys.init_app(app)
    ehr_cli.init_app(app)
    webhook_views.init_app(app)
    survey.init_app(app)
    from plugin import i18n, optout_views

    i18n.init_app(app)
    optout_views.init_app(app)
    platforms.init_app(app)
    install.init_app(app)
    manifest_cli.init_app(app)
    from plugin import sessions_cli

    sessions_cli.init_app(app)

    @app.get("/healthz")
    def healthz():
        """Report liveness for load balancers."""
        return {"status": "ok"}

    return app
