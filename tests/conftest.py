"""Fixtures: a migrated database per backend, an app per test inside a rolled-back transaction."""

import json
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from plugin import create_app
from plugin.db import Base, make_engine, upgrade
from plugin.practices import add_practice
from tests.oauth_server import oauth_server  # noqa: F401  (fixture)
from webhooks.standard import sign

DATA = Path(__file__).parent / "data"
WEBHOOK_SECRETS = json.loads((DATA / "webhooks" / "secrets.json").read_text())

# The same suite runs on SQLite always, and on PostgreSQL too when CI names one.
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("ALLIANCE_TEST_DATABASE_URL") else [])


def load_json(relative: str) -> dict:
    """Read a JSON payload from tests/data."""
    return json.loads((DATA / relative).read_text())


def free_port() -> int:
    """Return a TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session", params=BACKENDS)
def engine(request, tmp_path_factory):
    """Yield an engine on a freshly migrated database of each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    else:
        url = os.environ["ALLIANCE_TEST_DATABASE_URL"]
    engine = make_engine(url)
    with engine.begin() as connection:
        # Start clean even if an earlier run was killed half-way.
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def secret_keys() -> str:
    """Return the Fernet keys the test apps encrypt with."""
    return Fernet.generate_key().decode()


@pytest.fixture
def config(engine, tmp_path, secret_keys) -> dict:
    """Return the test layer of settings."""
    return {
        "INSTANCE_PATH": str(tmp_path / "var"),
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "SECRET_KEY": "test-secret-key",
        "SECRET_KEYS": secret_keys,
        "STANDARD_WEBHOOK_SECRET": WEBHOOK_SECRETS["platform"],
        "PUBLIC_BASE_URL": "http://localhost",
        "SMTP_URL": "",
        "SCHEDULER_ENABLED": False,
    }


@pytest.fixture
def app(engine, config):
    """Yield an app whose every session runs inside one transaction rolled back at the end."""
    app = create_app(config)
    database = app.extensions["db"]
    database.engine.dispose()
    connection = engine.connect()
    outer = connection.begin()
    database.engine = engine
    database.sessions = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    yield app
    outer.rollback()
    connection.close()


@pytest.fixture
def client(app):
    """Return a test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """Return a CLI runner."""
    return app.test_cli_runner()


@pytest.fixture
def db(app):
    """Yield a session on the test transaction."""
    with app.extensions["db"].sessions() as session:
        yield session


@pytest.fixture
def practice(app, db):
    """Install the practice the sample payloads name (account "demo")."""
    return add_practice(
        db,
        account_id="demo",
        name="Riverside Therapy",
        timezone="America/New_York",
        ehr_target="ndjson:var/ehr",
        root=Path(app.instance_path).parent,
    )


def session_ended(session_id: str | None = None, account_id: str = "demo", **client) -> dict:
    """Return the sample session.ended payload, optionally for another session or account."""
    payload = load_json("webhooks/session_ended.json")
    payload["data"]["account_id"] = account_id
    payload["data"]["session_id"] = session_id or f"s-{uuid.uuid4().hex[:8]}"
    payload["data"]["client"].update(client)
    return payload


class Webhooks:
    """Sign and post webhook deliveries the way a platform does."""

    def __init__(self, client, secret: str = WEBHOOK_SECRETS["platform"]):
        self.client = client
        self.secret = secret

    def headers(self, body: bytes, msg_id: str | None = None, at: datetime | None = None) -> dict:
        """Return Standard Webhooks headers for body."""
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        return sign(self.secret, msg_id, at or datetime.now(UTC), body)

    def post(self, payload: dict | bytes, msg_id: str | None = None, **kwargs):
        """Sign and post a delivery; returns the response."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = kwargs.pop("headers", None) or self.headers(body, msg_id, kwargs.pop("at", None))
        return self.client.post(
            "/webhooks/standard",
            data=body,
            headers=headers,
            content_type="application/json",
            **kwargs,
        )


@pytest.fixture
def webhooks(client) -> Webhooks:
    """Return a signer that posts to the app like a platform."""
    return Webhooks(client)


@pytest.fixture
def later():
    """Return a function giving a moment `minutes` from now, for running jobs in the future."""
    return lambda minutes=0: datetime.now(UTC) + timedelta(minutes=minutes)


@pytest.fixture
def smtp():
    """Yield the recorder of a real SMTP server, with ALLIANCE_SMTP_URL-style URL attached."""
    from tests import smtp as smtp_server

    port = free_port()
    controller, recorder = smtp_server.start(port)
    recorder.url = f"smtp://127.0.0.1:{port}"
    yield recorder
    controller.stop()


@pytest.fixture
def mail_app(app, smtp):
    """Return the app configured to send through the real SMTP server."""
    app.config["SMTP_URL"] = smtp.url
    return app
