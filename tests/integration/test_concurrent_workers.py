"""Two workers draining one queue at once never send the same invitation twice."""

import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from plugin import create_app
from plugin.dispatch import DispatchSettings, dispatch_due
from plugin.models import EhrWrite, Invitation, Practice, SessionEvent
from plugin.practices import add_practice
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
        for model in (EhrWrite, Invitation, SessionEvent, Practice):
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
