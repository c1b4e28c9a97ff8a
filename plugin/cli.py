"""The `alliance-check` command: our app's commands plus serve, worker, dev-init and demo."""

import base64
import re
import secrets
import time
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import requests
from flask import current_app, json
from flask.cli import FlaskGroup, NoAppException
from sqlalchemy import select

from plugin import create_app
from plugin.core.config import INSTANCE_FILE, ConfigError, instance_path, packaged
from plugin.core.crypto import new_fernet_key
from plugin.core.db import database, upgrade
from plugin.core.models import Invitation, InvitationStatus, Practice, SessionEvent
from plugin.install.practices import add_practice
from plugin.planning.policy import Policy
from plugin.planning.schedules import default_questionnaire, set_policy
from webhooks.standard import sign

DEMO_ACCOUNT = "demo"
DEMO_SCHEDULE = packaged("_config", "schedules", "demo.toml")


# FlaskGroup always adds these; this command serves one app, in production as in development.
FLASK_OPTIONS = {"app", "env_file", "debug"}


def _app_for_commands():
    """Create the app for a command; a missing secret is a usage error, not a traceback."""
    try:
        return create_app()
    except ConfigError as exc:
        raise NoAppException(f"{exc}; `alliance-check dev-init` writes development ones") from exc


class AllianceGroup(FlaskGroup):
    """Flask's group for app-context commands, without Flask's own commands and options."""

    def __init__(self, **extra):
        # No `run` (a development server), `shell` or `routes`: `serve` is how this runs.
        super().__init__(
            add_default_commands=False,
            add_version_option=False,
            load_dotenv=False,
            set_debug_flag=False,
            **extra,
        )
        self.params = [param for param in self.params if param.name not in FLASK_OPTIONS]


@click.group(cls=AllianceGroup, create_app=_app_for_commands)
def main() -> None:
    """Alliance Check: alliance questionnaires after telehealth sessions, written to the EHR."""


@main.command("dev-init", with_appcontext=False)
def dev_init() -> None:
    """Prepare the embedded default: dev secrets, migrated SQLite, the demo practice."""
    instance = instance_path()
    instance.mkdir(parents=True, exist_ok=True)
    settings = instance / INSTANCE_FILE
    if not settings.exists():
        webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        settings.write_text(
            "# Development settings written by `make run`. Never use these in production.\n"
            f'SECRET_KEY = "{secrets.token_urlsafe(32)}"\n'
            f'SECRET_KEYS = "{new_fernet_key()}"\n'
            f'STANDARD_WEBHOOK_SECRET = "{webhook_secret}"\n'
        )
        settings.chmod(0o600)
    app = create_app()
    with app.app_context():
        upgrade(database().engine)
        with database().sessions() as session:
            if not session.scalar(
                select(Practice).where(
                    Practice.platform == "standard", Practice.account_id == DEMO_ACCOUNT
                )
            ):
                practice = add_practice(
                    session,
                    account_id=DEMO_ACCOUNT,
                    name="Demo Practice",
                    timezone="America/New_York",
                    ehr_target="ndjson:var/ehr",
                    root=instance.parent,
                )
                # Send at once, at any hour, so the walkthrough needs no waiting.
                demo = tomllib.loads(DEMO_SCHEDULE.read_text("utf-8"))
                demo["questionnaire"] = default_questionnaire()
                set_policy(session, practice.id, None, Policy.from_dict(demo), datetime.now(UTC))
                session.commit()
    click.echo(f"database:       {app.config['DATABASE_URL']}")
    click.echo(f"outbox:         {app.config['OUTBOX_DIR']}")
    click.echo(f"webhook secret: {app.config['STANDARD_WEBHOOK_SECRET']}  (development only)")


@main.command("serve", with_appcontext=False)
@click.option("--host", default="127.0.0.1", show_default=True)
def serve(host: str) -> None:
    """Serve with gunicorn in one process that also runs the jobs (the embedded default)."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            config = create_app().config
            self.cfg.set("bind", f"{host}:{config['PORT']}")
            # One process, so exactly one scheduler; threads serve concurrent requests. A
            # stalled body holds a thread for at most BODY_TIMEOUT_SECONDS
            # (plugin.core.slow_clients), and there are enough that a few such clients never
            # delay anyone else.
            self.cfg.set("workers", 1)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", config["SERVE_THREADS"])

        def load(self):
            from plugin.jobs import start_in_process

            app = create_app()
            start_in_process(app)
            return app

    Server().run()


@main.command("worker")
def worker() -> None:
    """Run the background jobs (planning, dispatch, reminders, EHR writes, expiry, retention)."""
    from plugin.jobs import run_worker

    run_worker(current_app._get_current_object())


def _find_link(outbox: Path, invitation_id: str, base_url: str) -> str | None:
    path = outbox / f"{invitation_id}.eml"
    if not path.exists():
        return None
    match = re.search(re.escape(base_url) + r"/q/[A-Za-z0-9_-]+", path.read_text())
    return match.group(0) if match else None


@main.command("demo")
@click.option("--timeout", default=30, show_default=True, help="Seconds to wait for the mail.")
def demo(timeout: int) -> None:
    """Send a signed session.ended for the demo practice to the running service; print the link."""
    config = current_app.config
    base_url = config["PUBLIC_BASE_URL"].rstrip("/")
    session_id = f"demo-{uuid.uuid4().hex[:12]}"
    ended = datetime.now(UTC).replace(microsecond=0)
    body = json.dumps(
        {
            "type": "session.ended",
            "timestamp": ended.isoformat().replace("+00:00", "Z"),
            "data": {
                "account_id": DEMO_ACCOUNT,
                "session_id": session_id,
                "started_at": (ended - timedelta(minutes=50)).isoformat().replace("+00:00", "Z"),
                "ended_at": ended.isoformat().replace("+00:00", "Z"),
                "practitioner": {"reference": "Practitioner/demo-therapist"},
                "client": {
                    # A new client each run: the same one twice would meet the schedule's gap.
                    "reference": f"Patient/{session_id}",
                    "email": "client@example.org",
                    "language": "en",
                    "timezone": "America/New_York",
                },
                "encounter": {"reference": f"Encounter/{session_id}"},
            },
        }
    ).encode()
    headers = sign(config["STANDARD_WEBHOOK_SECRET"], f"msg_{uuid.uuid4().hex}", ended, body)
    headers["content-type"] = "application/json"
    try:
        response = requests.post(
            f"{base_url}/webhooks/standard", data=body, headers=headers, timeout=10
        )
    except requests.ConnectionError as exc:
        raise click.ClickException(
            f"nothing answers at {base_url}; start it with `make run`"
        ) from exc
    if response.status_code >= 300:
        raise click.ClickException(f"webhook answered {response.status_code}: {response.text}")
    click.echo(f"session.ended for {session_id} accepted ({response.status_code})")

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database().sessions() as session:
            invitation = session.scalar(
                select(Invitation).join(SessionEvent).where(SessionEvent.session_id == session_id)
            )
        if invitation is not None and invitation.status == InvitationStatus.SENT:
            if config["SMTP_URL"]:
                click.echo("the invitation was sent by email; open it in the mailbox")
                return
            link = _find_link(Path(config["OUTBOX_DIR"]), invitation.id, base_url)
            if link:
                click.echo(f"questionnaire link: {link}")
                return
        if invitation is not None and invitation.status == InvitationStatus.FAILED:
            raise click.ClickException(f"delivery failed: {invitation.last_error}")
        time.sleep(0.5)
    raise click.ClickException("no invitation was sent in time; is the service running?")


if __name__ == "__main__":
    main()
