"""Reading never holds writers up: a questionnaire page being rendered lets a webhook commit.

On SQLite every writing transaction begins IMMEDIATE (plugin.core.db) and so takes the one
write lock; a page that only reads begins deferred and takes none. On PostgreSQL readers never
blocked writers; the test runs there too.
"""

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from plugin.core.db import ReadOnlyError
from plugin.core.models import Practice, SessionEvent
from plugin.install.practices import add_practice
from tests.support.data import session_ended
from tests.support.invitations import InvitationFactory
from tests.support.webhooks import Webhooks

# How long the page waits for the webhook before it gives up and renders anyway.
PATIENCE = 5


def test_a_webhook_commits_while_a_questionnaire_page_is_rendering(committed_app, monkeypatch):
    import plugin.survey.views as views

    app = committed_app
    with app.extensions["db"].sessions() as session:
        practice = add_practice(
            session,
            account_id="demo",
            name="Riverside Therapy",
            timezone="America/New_York",
            ehr_target="ndjson:var/ehr",
            root=Path(app.instance_path).parent,
        )
        session.commit()
        _, token = InvitationFactory(app, session)(practice)

    rendering, written = threading.Event(), threading.Event()
    render = views.page

    def slow_page(*args, **kwargs):
        # The page has read the invitation, its transaction still open, and renders slowly.
        rendering.set()
        written.wait(PATIENCE)
        return render(*args, **kwargs)

    monkeypatch.setattr(views, "page", slow_page)
    pages = []
    reader = threading.Thread(target=lambda: pages.append(app.test_client().get(f"/q/{token}")))
    reader.start()
    assert rendering.wait(PATIENCE)

    started = time.monotonic()
    response = Webhooks(app.test_client()).post(session_ended("s-during-render"))
    took = time.monotonic() - started
    written.set()
    reader.join()

    assert response.status_code == 204
    assert took < 1, f"the webhook waited {took:.1f}s for the page to finish"
    assert pages[0].status_code == 200
    with app.extensions["db"].sessions() as session:
        stored = select(SessionEvent).where(SessionEvent.session_id == "s-during-render")
        assert session.scalar(stored) is not None


def test_a_read_only_session_refuses_to_write(committed_app):
    with committed_app.extensions["db"].readonly() as session:
        session.add(
            Practice(account_id="x", name="x", timezone="UTC", ehr_target="", created_at=None)
        )
        with pytest.raises(ReadOnlyError):
            session.flush()
