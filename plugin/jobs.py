"""Run the background jobs on a tick: APScheduler only triggers them, the database decides."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from flask import Flask
from sqlalchemy.orm import sessionmaker

from plugin.core.crypto import Vault
from plugin.delivery.channels import channels_from_config
from plugin.delivery.dispatch import DispatchSettings, dispatch_due, expire_stale, remind_due
from plugin.delivery.retention import purge_finished
from plugin.ehr.drain import WriteSettings, write_due
from plugin.ehr.gateway import EhrClients
from plugin.ehr.keys import load_signer
from plugin.install.lifecycle import purge_uninstalled
from plugin.planning.ehr_consent import consent_reader_for
from plugin.planning.plan import PlanSettings, plan_due
from plugin.planning.resolution import resolver_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Context:
    """What every job step is handed: clients, settings and the tick's `now`."""

    config: dict
    sessions: sessionmaker
    vault: Vault
    http: requests.Session
    ehr: EhrClients
    now: datetime
    instruments: dict


def _plan(ctx: _Context) -> int:
    def resolvers(practice, session):
        return resolver_for(
            practice,
            session=session,
            config=ctx.config,
            vault=ctx.vault,
            http=ctx.http,
            ehr_clients=ctx.ehr,
        )

    def consents(practice):
        return consent_reader_for(practice, ctx.ehr, ctx.config["EHR_SMS_CONSENT_CODES"], ctx.now)

    return plan_due(
        ctx.sessions,
        ctx.vault,
        resolvers,
        PlanSettings.from_config(ctx.config),
        ctx.now,
        consents,
    )


def _dispatch(ctx: _Context) -> int:
    channels = channels_from_config(ctx.config)
    settings = DispatchSettings.from_config(ctx.config)
    return dispatch_due(ctx.sessions, channels, ctx.vault, settings, ctx.now)


def _remind(ctx: _Context) -> int:
    channels = channels_from_config(ctx.config)
    settings = DispatchSettings.from_config(ctx.config)
    return remind_due(ctx.sessions, channels, ctx.vault, settings, ctx.now)


def _write(ctx: _Context) -> int:
    settings = WriteSettings.from_config(ctx.config)
    return write_due(
        ctx.sessions, ctx.vault, ctx.ehr.writer_for, settings, ctx.now, ctx.instruments
    )


def _expire(ctx: _Context) -> int:
    return expire_stale(ctx.sessions, ctx.now)


def _uninstalled(ctx: _Context) -> int:
    return purge_uninstalled(ctx.sessions, ctx.now)


def _purge(ctx: _Context) -> int:
    return purge_finished(ctx.sessions, ctx.now, timedelta(days=ctx.config["RETENTION_DAYS"]))


# In this order: a session planned with no delay is sent in the same tick.
STEPS = {
    "plan": _plan,
    "dispatch": _dispatch,
    "remind": _remind,
    "ehr": _write,
    # After the EHR step, so an uninstalled practice's last answers go before it is purged.
    "uninstalled": _uninstalled,
    "expire": _expire,
    "purge": _purge,
}


def run_steps(
    app: Flask, names, now: datetime | None = None, *, isolate: bool = False
) -> dict[str, int]:
    """Run the named steps once, in order; return how many rows each moved.

    With `isolate`, a failing step is logged and the next one still runs, so an EHR outage
    never holds up invitations, nor a broken mail server the EHR writes.
    """
    now = now or datetime.now(UTC)
    sessions = app.extensions["db"].sessions
    vault = app.extensions["vault"]
    done = {}
    # Templates and translations render inside the jobs, so they need the app context.
    with app.app_context(), requests.Session() as http:
        ehr = EhrClients(
            # Relative ndjson targets live beside the instance folder, as `ndjson:var/ehr` reads.
            root=Path(app.instance_path).parent,
            tokens=app.extensions["smart_tokens"],
            signer=lambda: load_signer(sessions, vault),
            http=http,
        )
        ctx = _Context(app.config, sessions, vault, http, ehr, now, app.extensions["instruments"])
        for name in names:
            try:
                done[name] = STEPS[name](ctx)
            except Exception as exc:
                if not isolate:
                    raise
                # Retried by the next tick; the type is enough, the text may hold PHI.
                log.error("jobs.step_failed", extra={"step": name, "error": type(exc).__name__})
    return done


def tick(app: Flask, now: datetime | None = None) -> None:
    """Plan sessions, send and remind, write answers to EHRs, expire and purge, once."""
    run_steps(app, STEPS, now)


def tick_step(app: Flask, name: str, now: datetime | None = None) -> int:
    """Run one step of the tick once; return how many rows it moved."""
    return run_steps(app, [name], now)[name]


def _safe_tick(app: Flask) -> None:
    run_steps(app, STEPS, isolate=True)


def _schedule(scheduler: BaseScheduler, app: Flask) -> BaseScheduler:
    scheduler.add_job(
        _safe_tick,
        "interval",
        args=[app],
        id="tick",
        seconds=app.config["SCHEDULER_TICK_SECONDS"],
        # One tick at a time; ticks missed while busy or down collapse into one, and the
        # grace is wide enough that a slow tick never silently skips the next (see DESIGN.md).
        # Every job is safe to run late or twice: the rows, not the scheduler, say what is due.
        max_instances=1,
        coalesce=True,
        misfire_grace_time=app.config["SCHEDULER_MISFIRE_GRACE_SECONDS"],
        next_run_time=datetime.now(UTC),
    )
    return scheduler


def start_in_process(app: Flask) -> BackgroundScheduler:
    """Run the jobs in a background thread of this process (`serve`, the embedded default).

    create_app() never calls this, so gunicorn web processes never start a scheduler; only
    `alliance-check serve` (one process) and `alliance-check worker` run jobs.
    """
    scheduler = _schedule(BackgroundScheduler(timezone=UTC, daemon=True), app)
    scheduler.start()
    app.extensions["scheduler"] = scheduler
    return scheduler


def run_worker(app: Flask) -> None:
    """Run the jobs in the foreground until interrupted (the `worker` command)."""
    _schedule(BlockingScheduler(timezone=UTC), app).start()
