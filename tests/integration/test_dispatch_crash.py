"""A worker killed mid-dispatch: at most one extra message, with the same link, soon.

The send happens outside any transaction (plugin.core.queue), so a crash between the
channel's hand-off and the commit that records it cannot be made atomic. What it may cost is
bounded: one repeat of that message, carrying the link the first one did, and a wait of at
most the lease for it and for the rest of its claimed batch.
"""

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from plugin.core.models import Invitation
from plugin.core.queue import LEASE
from plugin.delivery.dispatch import DispatchSettings, dispatch_due

LINK = re.compile(r"/q/([A-Za-z0-9_-]+)$")


class Crash(BaseException):
    """The process dies: nothing after the hand-off runs, not even an `except Exception`."""


class RecordingChannel:
    """Hand messages to nobody but a list; die right after the hand-off numbered `crash_at`."""

    name = "email"
    transport = "test"

    def __init__(self, crash_at: int | None = None):
        self.sent: list[tuple[str, str]] = []
        self.crash_at = crash_at

    def send(self, outgoing) -> None:
        """Record the message as delivered, then maybe crash before dispatch can record it."""
        self.sent.append((outgoing.key, outgoing.link))
        if len(self.sent) == self.crash_at:
            raise Crash


def _dispatch(app, channel, now) -> int:
    settings = DispatchSettings.from_config(app.config)
    with app.app_context():
        return dispatch_due(
            app.extensions["db"].sessions,
            {"email": channel},
            app.extensions["vault"],
            settings,
            now,
        )


def test_a_crash_between_send_and_commit_costs_one_repeat_with_the_same_link(
    app, client, practice, invitations, db
):
    now = datetime.now(UTC)
    ids = [invitations(practice, status="pending", now=now)[0].id for _ in range(10)]
    channel = RecordingChannel(crash_at=2)

    with pytest.raises(Crash):
        _dispatch(app, channel, now)
    crashed, crashed_link = channel.sent[1]
    # While the lease holds, the claimed rows are left alone: no second worker sends them.
    assert _dispatch(app, channel, now + LEASE / 2) == 0
    # A client who clicks the link that left just before the crash is told to come back
    # (the same link will work), not that it is wrong.
    waiting = client.get(f"/q/{LINK.search(crashed_link).group(1)}")
    assert waiting.status_code == 503
    assert waiting.headers["Retry-After"] == str(int(LEASE.total_seconds()))
    assert b"try again in a few minutes" in waiting.data
    assert b"not valid" not in waiting.data
    assert _dispatch(app, channel, now + LEASE + timedelta(seconds=1)) == 9

    by_invitation: dict[str, list[str]] = {}
    for key, link in channel.sent:
        by_invitation.setdefault(key, []).append(link)
    assert sorted(by_invitation) == sorted(ids)
    assert {key: len(links) for key, links in by_invitation.items() if len(links) > 1} == {
        crashed: 2
    }
    first, again = by_invitation[crashed]
    assert first == again
    token = LINK.search(first).group(1)
    assert client.get(f"/q/{token}").status_code == 200
    db.expire_all()
    statuses = db.scalars(select(Invitation.status).where(Invitation.id.in_(ids))).all()
    assert set(statuses) == {"sent"}
    # And the lease is short: after a crash nothing waits more than 2 minutes.
    assert timedelta(minutes=2) >= LEASE


def test_a_slow_batch_renews_its_lease_so_no_other_worker_takes_its_rows(
    app, practice, invitations, monkeypatch
):
    import plugin.core.queue as queue

    now = datetime.now(UTC)
    for _ in range(3):
        invitations(practice, status="pending", now=now)
    other = RecordingChannel()

    class SlowChannel(RecordingChannel):
        def send(self, outgoing) -> None:
            super().send(outgoing)
            # Each send takes most of a lease; meanwhile another worker looks for due rows
            # at the moment the slow one has reached.
            elapsed["seconds"] += LEASE.total_seconds() * 0.75
            assert _dispatch(app, other, now + timedelta(seconds=elapsed["seconds"] + 1)) == 0

    elapsed = {"seconds": 0.0}
    started = time.monotonic()
    monkeypatch.setattr(queue, "monotonic", lambda: started + elapsed["seconds"], raising=False)
    slow = SlowChannel()
    assert _dispatch(app, slow, now) == 3
    assert len(slow.sent) == 3 and other.sent == []
