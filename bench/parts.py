"""Where one webhook's time goes: each step timed in-process, without HTTP or gunicorn."""

import cProfile
import io
import pstats
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from sqlalchemy.engine import make_url

from bench.app import BARE_PATH, INSERT_PATH, WEBHOOK_PATH, add_bare_routes
from bench.load import Delivery, signed_deliveries
from bench.server import Instance
from plugin import create_app
from plugin.core.crypto import vault
from plugin.core.db import database
from plugin.intake.events import Outcome, record_session_ended
from webhooks import standard

Timing = tuple[float, float]  # mean wall ms, mean CPU ms of this process


# Untimed calls first: each new engine compiles its statements and opens its connection.
WARMUP = 30


def _per_op(items: list, step: Callable[[object], object]) -> Timing:
    """Run step on the first WARMUP items, then return its mean wall and CPU ms on the rest."""
    for item in items[:WARMUP]:
        step(item)
    timed = items[WARMUP:]
    wall, cpu = time.perf_counter(), time.process_time()
    for item in timed:
        step(item)
    n = len(timed)
    return (time.perf_counter() - wall) / n * 1e3, (time.process_time() - cpu) / n * 1e3


def _raw_sqlite_commit(path: str, synchronous: str, n: int) -> Timing:
    """Mean ms of BEGIN IMMEDIATE + one tiny INSERT + COMMIT, WAL mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit (id INTEGER PRIMARY KEY, v TEXT)")

        def commit(i: int) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO bench_commit (v) VALUES (?)", (str(i),))
            conn.execute("COMMIT")

        return _per_op(list(range(WARMUP + n)), commit)
    finally:
        conn.close()


def _raw_postgres_commit(url: str, n: int) -> Timing:
    """Mean ms of one tiny INSERT committed on its own (WAL flush)."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit (id serial PRIMARY KEY, v text)")
        per_op = _per_op(
            list(range(WARMUP + n)),
            lambda i: conn.execute("INSERT INTO bench_commit (v) VALUES (%s)", (str(i),)),
        )
        conn.execute("DROP TABLE bench_commit")
        return per_op


def breakdown(instance: Instance, n: int = 300) -> list[tuple[str, Timing]]:
    """Time verify, parse, seal, insert+commit and whole requests: (step, (wall, CPU) ms)."""
    app = add_bare_routes(create_app(instance.config()))
    pool = signed_deliveries(instance.webhook_secret, 4 * (WARMUP + n), tag="parts")
    batches = [[pool.take() for _ in range(WARMUP + n)] for _ in range(4)]
    verifier = app.extensions["webhook_verifiers"][standard.PLATFORM]
    steps: list[tuple[str, Timing]] = []

    steps.append(("verify signature", _per_op(batches[0], lambda d: _verify(verifier, d))))
    events = [standard.parse(d.body, d.headers["webhook-id"]) for d in batches[0]]
    steps.append(("parse + JSON Schema", _per_op(batches[0], lambda d: _parse(d))))

    with app.app_context():
        sealer = vault()
        contact = {"email": events[0].client.email, "phone": events[0].client.phone}
        steps.append(("seal contact (Fernet)", _per_op(events, lambda _e: sealer.seal(contact))))
        sessions = database().sessions

        def store(event: standard.SessionEnded) -> None:
            with sessions() as session:
                outcome = record_session_ended(session, event, vault=sealer, now=datetime.now(UTC))
            if outcome is not Outcome.STORED:
                raise RuntimeError(f"expected a stored event, got {outcome}")

        steps.append(("record_session_ended (insert+commit)", _per_op(events, store)))

    url = instance.database_url
    if url.startswith("sqlite"):
        scratch = str(instance.path / "commit-probe.db")
        steps.append(("raw commit, WAL synchronous=FULL", _raw_sqlite_commit(scratch, "FULL", n)))
        steps.append(
            ("raw commit, WAL synchronous=NORMAL", _raw_sqlite_commit(scratch, "NORMAL", n))
        )
    else:
        steps.append(("raw commit, PostgreSQL autocommit", _raw_postgres_commit(url, n)))

    client = app.test_client()
    steps.append(("whole request, webhook (test client)", _per_op(batches[1], _poster(client))))
    steps.append(
        ("whole request, raw insert (test client)", _per_op(batches[2], _bare(client, INSERT_PATH)))
    )
    steps.append(("whole request, bare 204 (test client)", _per_op(batches[3], _bare(client))))
    app.extensions["db"].engine.dispose()
    return steps


def profile(instance: Instance, n: int = 300, top: int = 25) -> str:
    """Return cProfile's cumulative listing for n webhook requests through the test client."""
    app = create_app(instance.config())
    pool = signed_deliveries(instance.webhook_secret, n, tag="profile")
    deliveries = [pool.take() for _ in range(n)]
    post = _poster(app.test_client())
    post(deliveries[0])
    profiler = cProfile.Profile()
    profiler.enable()
    for delivery in deliveries[1:]:
        post(delivery)
    profiler.disable()
    app.extensions["db"].engine.dispose()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _verify(verifier: standard.StandardVerifier, delivery: Delivery) -> str:
    return verifier.verify(delivery.body, delivery.headers)


def _parse(delivery: Delivery) -> object:
    return standard.parse(delivery.body, delivery.headers["webhook-id"])


def _poster(client) -> Callable[[Delivery], None]:
    def post(delivery: Delivery) -> None:
        response = client.post(WEBHOOK_PATH, data=delivery.body, headers=delivery.headers)
        if response.status_code != 204:
            raise RuntimeError(f"webhook answered {response.status_code}")

    return post


def _bare(client, path: str = BARE_PATH) -> Callable[[Delivery], None]:
    def post(delivery: Delivery) -> None:
        response = client.post(path, data=delivery.body, headers=delivery.headers)
        if response.status_code != 204:
            raise RuntimeError(f"{path} answered {response.status_code}")

    return post
