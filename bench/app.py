"""The WSGI app gunicorn serves during a benchmark: the real service plus two bare routes.

gunicorn loads it as `bench.app:create_bench_app()`. Settings come the usual way: the
instance folder named by ALLIANCE_INSTANCE_PATH holds alliance.toml (written by
bench.server.prepare_instance) with the secrets and the DATABASE_URL. create_app() sends the
JSON logs to stderr, which the bench points at a file, so each stored webhook pays for its
log line as it would in production.

The baseline a webhook is measured against is `POST /bench/insert`: the same Flask and
gunicorn, then one durable insert with the raw driver (sqlite3 or psycopg), committed before
the 204, as the webhook's own row is. `POST /bench/bare` (read the body, 204) stays as a
reference line: what Flask and the WSGI server cost with no durable work at all.
"""

import sqlite3
import threading
import uuid
from datetime import UTC, datetime

import psycopg
from flask import Flask, Response, request
from sqlalchemy.engine import make_url

from plugin import create_app

BARE_PATH = "/bench/bare"
INSERT_PATH = "/bench/insert"
WEBHOOK_PATH = "/webhooks/standard"

# A row like a SessionEvent's: a uuid key, the delivery id under a unique index (the dedupe
# key), a timestamp under a second index (the due index), and about as many bytes of payload
# (the raw body, ~560 B, against the event's columns and sealed contact, ~600 B).
_SCHEMA = (
    "CREATE TABLE bench_bare_events (id VARCHAR(36) PRIMARY KEY, event_id VARCHAR(256) NOT NULL "
    "UNIQUE, received_at VARCHAR(32) NOT NULL, body {blob} NOT NULL)",
    "CREATE INDEX ix_bench_bare_events_received ON bench_bare_events (received_at)",
)
_INSERT = (
    "INSERT INTO bench_bare_events (id, event_id, received_at, body) VALUES ({0}, {0}, {0}, {0})"
)


def _sqlite_path(url: str) -> str | None:
    """Return the file of a SQLite URL, or None for any other database."""
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None


def _postgres_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def connect_raw(url: str):
    """Open a raw driver connection set up as the product's engine sets up its own."""
    path = _sqlite_path(url)
    if path is None:
        return psycopg.connect(_postgres_dsn(url))
    # The pragmas of plugin.core.db.make_engine; synchronous stays SQLite's default (FULL in
    # WAL mode), which the product does not change either: a commit is an fsync.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def create_insert_table(url: str) -> None:
    """Create the baseline's table (before gunicorn starts: its workers only insert)."""
    conn = connect_raw(url)
    try:
        blob = "BLOB" if _sqlite_path(url) else "BYTEA"
        for statement in _SCHEMA:
            conn.execute(statement.format(blob=blob))
        conn.commit()
    finally:
        conn.close()


def count_inserted(url: str) -> int:
    """Return how many rows the baseline stored."""
    conn = connect_raw(url)
    try:
        return conn.execute("SELECT count(*) FROM bench_bare_events").fetchone()[0]
    finally:
        conn.close()


def add_bare_routes(app: Flask) -> Flask:
    """Add the baselines: `POST /bench/insert` (one raw durable insert) and `/bench/bare`."""
    url = app.config["DATABASE_URL"]
    sqlite = _sqlite_path(url) is not None
    insert = _INSERT.format("?" if sqlite else "%s")
    # One connection per server thread, opened on its first request, as a pool would keep it.
    local = threading.local()

    @app.post(BARE_PATH)
    def bare() -> Response:
        """Read the body (as the webhook must) and answer 204."""
        request.get_data(cache=False)
        return Response(status=204)

    @app.post(INSERT_PATH)
    def bare_insert() -> Response:
        """Read the body, insert it as one row and commit, then answer 204."""
        body = request.get_data(cache=False)
        row = (
            str(uuid.uuid4()),
            request.headers["webhook-id"],
            datetime.now(UTC).isoformat(),
            body,
        )
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect_raw(url)
        if sqlite:
            # The product's engine begins every writing transaction this way.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(insert, row)
            conn.execute("COMMIT")
        else:
            conn.execute(insert, row)
            conn.commit()
        return Response(status=204)

    return app


def create_bench_app(config: dict | None = None) -> Flask:
    """Return the service app plus the bare routes."""
    return add_bare_routes(create_app(config))
