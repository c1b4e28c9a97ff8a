"""Sign an admin in to the console through the test platform's consent; build problems to retry."""

import re
from datetime import datetime, timedelta

import pytest
import requests
from sqlalchemy import select

from plugin.core.models import EhrWrite, Invitation, Practice, SessionEvent, WriteStatus
from tests.support.install import ACCOUNTS


def sign_in(client, platform_server, account: str = "riverside", install: bool = True):
    """Install (or sign in) as ACCOUNTS[account] and return the callback's response."""
    platform_server.account = ACCOUNTS[account]
    started = client.get("/install/zoom" if install else "/login/zoom")
    consent = requests.get(started.headers["Location"], allow_redirects=False, timeout=10)
    return client.get(consent.headers["Location"])


def csrf_token(client, path: str = "/console/") -> str:
    """Return the CSRF token a console page's forms carry."""
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def add_problems(db, practice, now: datetime) -> tuple[SessionEvent, Invitation, EhrWrite]:
    """Commit an unmatched Zoom session, a failed invitation and a dead EHR write; return them."""
    event = SessionEvent(
        practice_id=practice.id, platform="zoom", event_id="e-1", session_id="m-1",
        started_at=now - timedelta(hours=1), ended_at=now, status="unmatched",
        reason="no_patient", next_attempt_at=now, received_at=now,
    )  # fmt: skip
    failed_event = SessionEvent(
        practice_id=practice.id, platform="zoom", event_id="e-2", session_id="m-2",
        started_at=now - timedelta(hours=1), ended_at=now, status="planned",
        patient_ref="Patient/p1", next_attempt_at=now, received_at=now,
    )  # fmt: skip
    db.add_all([event, failed_event])
    db.flush()
    invitation = Invitation(
        practice_id=practice.id, session_event_id=failed_event.id, status="failed",
        questionnaire="q|1", patient_ref="Patient/p1", language="en", due_at=now,
        next_attempt_at=now, created_at=now, last_error="email: smtp 550",
    )  # fmt: skip
    answered_event = SessionEvent(
        practice_id=practice.id, platform="zoom", event_id="e-3", session_id="m-3",
        started_at=now - timedelta(hours=1), ended_at=now, status="planned",
        patient_ref="Patient/p2", next_attempt_at=now, received_at=now,
    )  # fmt: skip
    db.add_all([invitation, answered_event])
    db.flush()
    answered = Invitation(
        practice_id=practice.id, session_event_id=answered_event.id, status="answered",
        questionnaire="q|1", patient_ref="Patient/p2", language="en", due_at=now,
        next_attempt_at=now, created_at=now, answered_at=now,
    )  # fmt: skip
    db.add(answered)
    db.flush()
    write = EhrWrite(
        practice_id=practice.id, invitation_id=answered.id, status=WriteStatus.DEAD,
        next_attempt_at=now, created_at=now, last_error="FHIR server answered 422",
    )  # fmt: skip
    db.add(write)
    db.commit()
    return event, invitation, write


@pytest.fixture
def admin(client, db, zoom_platform):
    """Sign the Riverside owner in; return (client, their practice)."""
    sign_in(client, zoom_platform)
    return client, db.scalar(select(Practice).where(Practice.account_id == "zoom-acct-riverside"))
