"""Fixtures: a migrated database per backend, an app per test inside a rolled-back transaction."""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text
from sqlalchemy.orm import sessionmaker

from plugin import create_app
from plugin.core.crypto import new_token
from plugin.core.db import Base, make_engine, upgrade
from plugin.core.models import Invitation, InvitationStatus
from plugin.install.practices import add_practice
from tests.support.browser import browser  # noqa: F401  (fixture)
from tests.support.console import admin  # noqa: F401  (fixture)
from tests.support.data import WEBHOOK_SECRETS, session_ended
from tests.support.fhir_server import ehr  # noqa: F401  (fixture)
from tests.support.invitations import InvitationFactory
from tests.support.jobs import plan
from tests.support.oauth_server import oauth_server  # noqa: F401  (fixture)
from tests.support.platform_server import register_zoom_app, start_platform_server
from tests.support.ports import free_port
from tests.support.webhooks import Webhooks

# The same suite runs on SQLite always, and on PostgreSQL too when CI names one.
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("ALLIANCE_TEST_DATABASE_URL") else [])


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
def committed_app(engine, config):
    """Yield an app whose writes really commit, for tests of concurrent transactions.

    Every table is emptied afterwards, children first.
    """
    app = create_app(config)
    app.extensions["db"].engine = engine
    app.extensions["db"].sessions = sessionmaker(engine, expire_on_commit=False)
    yield app
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


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


@pytest.fixture
def other_practice(app, db):
    """Install a second practice (account "other"), which the first must never touch."""
    return add_practice(
        db,
        account_id="other",
        name="Hillside Counselling",
        timezone="Europe/London",
        ehr_target="ndjson:var/ehr-b",
        root=Path(app.instance_path).parent,
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
    from tests.support import smtp as smtp_server

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


# --- Marketplace install: the platform's real OAuth server (tests/platform_server.py) ---


@pytest.fixture(scope="session")
def platform_server():
    """A running authorization server playing the platform, shared by the session."""

    server = start_platform_server()
    yield server
    server.stop()


@pytest.fixture
def zoom_platform(platform_server):
    """Return the platform server, reset, with our Zoom app registered for http://localhost."""
    return register_zoom_app(platform_server)


# --- Delivery and opt-out: invitations built straight in the database ---


@pytest.fixture
def invitations(app, db) -> InvitationFactory:
    """Return a builder of invitations in the test database."""
    return InvitationFactory(app, db)


@pytest.fixture
def twilio(httpserver, app):
    """Return the stand-in for Twilio's Messages API, with the app configured to send to it."""
    from tests.support.twilio_api import TwilioApi

    api = TwilioApi(httpserver)
    app.config.update(api.settings())
    return api


@pytest.fixture
def zoom_api(httpserver):
    """Return the stand-in for Zoom's REST API (tests/zoom_api.py) on pytest-httpserver."""
    from tests.support.zoom_api import serve

    return serve(httpserver)


@pytest.fixture
def link(app, webhooks, practice, db):
    """Return (path, invitation) for an invitation that was sent a minute ago."""
    webhooks.post(session_ended("s-1", email="sam.rivera@example.org", language="en"))
    plan(app)
    invitation = db.scalar(select(Invitation))
    token, token_hash = new_token()
    now = datetime.now(UTC)
    invitation.token_hash, invitation.status = token_hash, InvitationStatus.SENT
    invitation.sent_at, invitation.expires_at = now, now + timedelta(hours=72)
    db.commit()
    return f"/q/{token}", invitation
