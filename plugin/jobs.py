"""Run the background jobs on a tick: APScheduler only triggers them, the database decides."""

import logging
from datetime import UTC, datetime
from pathlib import Path

import requests
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from flask import Flask

from plugin.dispatch import DispatchSettings, dispatch_due, expire_stale
from plugin.ehr_clients import EhrClients
from plugin.ehr_queue import WriteSettings, write_due
from plugin.mailer import mailer_from_config
from plugin.signing_keys import load_signer

log = logging.getLogger(__name__)


def tick(app: Flask, now: datetime | None = None) -> None:
    """Send due invitations, write due responses and expire stale links, once."""
    now = now or datetime.now(UTC)
    config = app.config
    sessions = app.extensions["db"].sessions
    vault = app.extensions["vault"]
    # Templates render inside the jobs, so they need the app context.
    with app.app_context(), requests.Session() as http:
        dispatch_due(
            sessions, mailer_from_config(config), vault, DispatchSettings.from_config(config), now
        )
        clients = EhrClients(
            # Relative ndjson targets live beside the instance folder, as `ndjson:var/ehr` reads.
            root=Path(app.instance_path).parent,
            tokens=app.extensions["smart_tokens"],
            signer=lambda: load_signer(sessions, vault),
            http=http,
        )
        write_due(sessions, vault, clients.writer_for, WriteSettings.from_config(config), now)
        expire_stale(sessions, now)


def _safe_tick(app: Flask) -> None:
    try:
        tick(app)
    except Exception as exc:
        # A failed tick is retried by the next one; the type is enough, the text may hold PHI.
        log.error("jobs.tick_failed", extra={"error": type(exc).__name__})


def _schedule(scheduler: BaseScheduler, app: Flask) -> BaseScheduler:
    scheduler.add_job(
        _safe_tick,
        "interval",
        args=[app],
        id="tick",
        seconds=app.config["SCHEDULER_TICK_SECONDS"],
        # One tick at a time; ticks missed while busy or down collapse into one, and the
        # grace is wide enough that a slow tick never silently skips the next (see DESIGN.md).
        max_instances=1,
        coalesce=True,
        misfire_grace_time=app.config["SCHEDULER_MISFIRE_GRACE_SECONDS"],
        next_run_time=datetime.now(UTC),
    )
    return scheduler


def init_app(app: Flask) -> None:
    """Start the in-process scheduler when this process is the one that should run jobs."""
    if app.config["SCHEDULER_ENABLED"]:
        scheduler = _schedule(BackgroundScheduler(timezone=UTC, daemon=True), app)
        scheduler.start()
        app.extensions["scheduler"] = scheduler


def run_worker(app: Flask) -> None:
    """Run the jobs in the foreground until interrupted (the `worker` command)."""
    _schedule(BlockingScheduler(timezone=UTC), app).start()
