"""Two workers draining one queue at once never send the same message or write twice."""

import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from plugin import create_app
from plugin.dispatch import DispatchSettings, dispatch_due
from plugin.ehr_clients import EhrClients
from plugin.ehr_queue import WriteSettings, write_due
from plugin.models import (
    EhrConnection,
    EhrWrite,
    Invitation,
    Practice,
    SessionEvent,
    SigningKey,
)
from plugin.practices import add_practice
from plugin.signing_keys import generate, load_signer
from tests import fhir_server
from tests.backlog import queue_writes
from tests.conftest import Webhooks, session_ended

BACKLOG = 200


class RecordingMailer:
    """Count hand-offs per invitation; stands in for SMTP so only the claim logic is tested."""

    channel = "file"

    def __init__(self):
        self.sent: list[str] = []
        self.lock = threading.Lock()

    def send(self, message, key: str) -> None:
        """Record the hand-off."""
        with self.lock:
            self.sent.append(key)


@pytest.fixture
def committed_app(engine, config):
    """Yield an app whose writes really commit, and wipe its rows afterwards."""
    app = create_app(config)
    app.extensions["db"].engine = engine
    app.extensions["db"].sessions = sessionmaker(engine, expire_on_commit=False)
    yield app
    with engine.begin() as connection:
        for model in (EhrWrite, Invitation, SessionEvent, EhrConnection, SigningKey, Practice):
            connection.execute(delete(model))


def test_two_workers_send_each_of_a_backlog_exactly_once(committed_app):
    sessions = committed_app.extensions["db"].sessions
    with sessions() as session:
        add_practice(
            session,
            account_id="demo",
            name="Demo",
            timezone="UTC",
            ehr_target="ndjson:var/ehr",
            root=committed_app.instance_path,
        )
    webhooks = Webhooks(committed_app.test_client())
    for n in range(BACKLOG):
        assert webhooks.post(session_ended(f"s-{n}")).status_code == 204

    mailer = RecordingMailer()
    settings = replace(DispatchSettings.from_config(committed_app.config), batch=BACKLOG)
    now = datetime.now(UTC)

    def worker():
        with committed_app.app_context():
            dispatch_due(sessions, mailer, committed_app.extensions["vault"], settings, now)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(mailer.sent) == BACKLOG
    assert len(set(mailer.sent)) == BACKLOG
    with sessions() as session:
        statuses = set(session.scalars(select(Invitation.status)))
    assert statuses == {"sent"}


WRITES = 40


def test_two_workers_write_a_backlog_to_the_ehr_with_no_duplicates(committed_app, oauth_server):
    """Against the real FHIR and OAuth servers; the server counts every POST it receives."""
    app = committed_app
    sessions, vault = app.extensions["db"].sessions, app.extensions["vault"]
    oauth_server.reset()
    flags = fhir_server.trusting(oauth_server)
    runner = app.test_cli_runner()
    with fhir_server.running(*flags) as ehr, sessions() as session:
        key = generate(session, vault, "ES384")
        oauth_server.register_client("alliance", jwks={"keys": [key.public_jwk]})
        for command in (
            ["practice", "add", "demo", "--name", "Demo"],
            ["ehr", "connect", "demo", ehr.base_url, "--client-id", "alliance"],
        ):
            assert runner.invoke(args=command).exit_code == 0
        practice = session.scalar(select(Practice))
        queue_writes(session, practice, vault, WRITES)
        ehr.reset()

        settings = replace(WriteSettings.from_config(app.config), batch=WRITES)

        def worker():
            with requests.Session() as http:
                clients = EhrClients(
                    Path(app.instance_path),
                    app.extensions["smart_tokens"],
                    lambda: load_signer(sessions, vault),
                    http,
                )
                write_due(sessions, vault, clients.writer_for, settings, datetime.now(UTC))

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        stats = ehr.stats()
        assert stats["responses"]["POST / 200"] == WRITES
        assert stats["resources"] == {"QuestionnaireResponse": WRITES, "Observation": 4 * WRITES}
        assert set(session.scalars(select(EhrWrite.status))) == {"done"}
