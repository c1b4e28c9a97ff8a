"""Two workers draining one queue at once never send the same message or write twice."""

import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy import insert, select

from plugin.core.models import (
    EhrWrite,
    Invitation,
    Practice,
    SessionEvent,
    new_id,
)
from plugin.delivery.channels import channels_from_config
from plugin.delivery.dispatch import DispatchSettings, dispatch_due
from plugin.ehr.drain import WriteSettings, write_due
from plugin.ehr.gateway import EhrClients
from plugin.ehr.keys import generate, load_signer
from plugin.install.practices import add_practice
from tests.support import fhir_server
from tests.support.backlog import INSTRUMENT, queue_writes

BACKLOG = 1000


class CountingChannel:
    """The real outbox channel, counting each hand-off so a double send cannot hide.

    The outbox overwrites <invitation>.eml on a resend, so the files alone would not show one.
    """

    def __init__(self, inner):
        self.inner, self.name, self.transport = inner, inner.name, inner.transport
        self.sent: list[str] = []
        self.lock = threading.Lock()

    def send(self, outgoing) -> None:
        """Record the hand-off, then really write it."""
        with self.lock:
            self.sent.append(outgoing.key)
        self.inner.send(outgoing)


def due_invitations(app, count: int, now: datetime) -> None:
    """Store `count` planned sessions with a due invitation each, in one transaction."""
    vault = app.extensions["vault"]
    with app.extensions["db"].sessions() as session:
        practice = add_practice(
            session,
            account_id="demo",
            name="Demo",
            timezone="UTC",
            ehr_target="ndjson:var/ehr",
            root=app.instance_path,
        )
        events, invitations = [], []
        for n in range(count):
            event_id = new_id()
            common = {"practice_id": practice.id, "patient_ref": f"Patient/{n}"}
            events.append(
                common
                | {
                    "id": event_id,
                    "platform": "standard",
                    "event_id": f"e-{n}",
                    "session_id": f"s-{n}",
                    "started_at": now,
                    "ended_at": now,
                    "status": "planned",
                    "next_attempt_at": now,
                    "attempts": 0,
                    "received_at": now,
                }
            )
            invitations.append(
                common
                | {
                    "id": new_id(),
                    "session_event_id": event_id,
                    "status": "pending",
                    "questionnaire": INSTRUMENT.canonical,
                    "contact": vault.seal({"email": f"client{n}@example.org", "phone": None}),
                    "language": "en",
                    "channels": ["email"],
                    "channel_index": 0,
                    "due_at": now,
                    "next_attempt_at": now,
                    "attempts": 0,
                    "created_at": now,
                }
            )
        session.execute(insert(SessionEvent), events)
        session.execute(insert(Invitation), invitations)
        session.commit()


def test_two_workers_send_each_of_a_backlog_exactly_once(committed_app):
    app = committed_app
    sessions = app.extensions["db"].sessions
    now = datetime.now(UTC)
    due_invitations(app, BACKLOG, now)
    with app.app_context():
        channel = CountingChannel(channels_from_config(app.config)["email"])
    settings = replace(DispatchSettings.from_config(app.config), batch=BACKLOG)

    def worker():
        with app.app_context():
            dispatch_due(sessions, {"email": channel}, app.extensions["vault"], settings, now)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert len(channel.sent) == BACKLOG
    assert len(set(channel.sent)) == BACKLOG
    assert len(list(Path(app.config["OUTBOX_DIR"]).glob("*.eml"))) == BACKLOG
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
