"""The planning job: each recorded session is numbered for its client and the schedule decides.

The policy engine's own rules are tested as tables in tests/unit/test_policy.py; these tests
check that the job feeds it the right facts from the database and records what it decided.
"""

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import time_machine
from sqlalchemy import select

from plugin.core.models import Invitation, SessionEvent
from plugin.planning.optouts import opt_out
from plugin.planning.policy import send_time
from plugin.planning.schedules import current_policy, set_policy
from tests.support.data import SMS_CONSENT, session_ended
from tests.support.jobs import plan

NEW_YORK = ZoneInfo("America/New_York")
# Mondays 17:00-17:50 in New York, from the first week of March 2026.
FIRST_END = datetime(2026, 3, 2, 17, 50, tzinfo=NEW_YORK)


def session_at(ended: datetime, session_id: str, reference: str = "Patient/c1", **client) -> dict:
    """Return a session.ended payload for a session of `reference` that ended at `ended`."""
    payload = session_ended(session_id, reference=reference, **client)
    payload["data"]["started_at"] = (ended - timedelta(minutes=50)).isoformat()
    payload["data"]["ended_at"] = ended.isoformat()
    return payload


def arrive(app, webhooks, payload: dict, at: datetime) -> int:
    """Post a session's webhook at `at` and plan it then, as the worker's next tick would.

    Planning measures how late a session is against the clock: a session planned long after it
    ended is stale (tests/unit/test_policy.py), so each arrives when it would in real life.
    """
    with time_machine.travel(at, tick=False):
        assert webhooks.post(payload).status_code == 204
        return plan(app)


def weekly(app, webhooks, weeks, reference="Patient/c1", start=FIRST_END) -> None:
    """Receive and plan one session a week for the given week numbers (1-based), each on time."""
    for week in weeks:
        ended = start + timedelta(weeks=week - 1)
        payload = session_at(ended, f"{reference}-w{week}", reference)
        arrive(app, webhooks, payload, ended + timedelta(minutes=1))


def asked_weeks(db, reference="Patient/c1") -> list[int]:
    """Return the session numbers of the client's sessions that got an invitation."""
    return sorted(
        db.scalars(
            select(SessionEvent.session_number)
            .join(Invitation, Invitation.session_event_id == SessionEvent.id)
            .where(SessionEvent.patient_ref == reference)
        )
    )


def test_a_session_becomes_an_invitation_on_the_default_schedule(app, webhooks, practice, db):
    # With consent to texts on record, SMS stays in the default order (test_sms_consent.py).
    payload = session_at(
        FIRST_END,
        "s-1",
        email="sam@example.org",
        phone="+12025550143",
        sms_consent=SMS_CONSENT,
    )
    assert arrive(app, webhooks, payload, FIRST_END + timedelta(minutes=1)) == 1
    event = db.scalar(select(SessionEvent))
    invitation = db.scalar(select(Invitation))
    assert (event.status, event.reason, event.session_number) == ("planned", "first_sessions", 1)
    # The contact moved to the invitation: one sealed copy, not two.
    assert event.contact is None and invitation.contact is not None
    policy, _, version = current_policy(db, practice.id, None)
    assert (invitation.policy_id, invitation.policy_version) == (None, version) == (None, 0)
    assert invitation.due_at == send_time(policy, event.ended_at, "America/New_York")
    assert invitation.due_at == FIRST_END + timedelta(minutes=10)
    assert (invitation.status, invitation.channels, invitation.language) == (
        "pending",
        ["email", "sms"],
        "es",
    )
    assert invitation.patient_ref == "Patient/c1"
    assert invitation.phone_digest and "2025550143" not in invitation.phone_digest


def test_twenty_weekly_sessions_follow_the_early_alliance_pattern(app, webhooks, practice, db):
    weekly(app, webhooks, range(1, 21))
    assert asked_weeks(db) == [1, 2, 3, 4, 7, 10, 13, 16, 19]
    reasons = dict(db.execute(select(SessionEvent.session_number, SessionEvent.reason)).all())
    assert (reasons[4], reasons[5], reasons[7]) == ("first_sessions", "not_scheduled", "every_kth")


def test_a_replayed_or_late_session_does_not_shift_the_count(app, webhooks, practice, db):
    weekly(app, webhooks, [1, 2, 3])
    # Week 2 again under a new webhook id: the same session, so nothing new is counted.
    replay = session_at(FIRST_END + timedelta(weeks=1), "Patient/c1-w2")
    assert arrive(app, webhooks, replay, FIRST_END + timedelta(weeks=2, hours=1)) == 0
    weekly(app, webhooks, [4, 5])
    numbers = dict(db.execute(select(SessionEvent.session_id, SessionEvent.session_number)).all())
    assert numbers == {f"Patient/c1-w{n}": n for n in range(1, 6)}
    assert asked_weeks(db) == [1, 2, 3, 4]


def test_sessions_arriving_out_of_order_are_numbered_by_when_they_ended(
    app, webhooks, practice, db
):
    # Weeks 1 and 2 arrive late, with week 3, and are planned at once.
    arrived = FIRST_END + timedelta(weeks=2, minutes=1)
    for week in (3, 1, 2):
        ended = FIRST_END + timedelta(weeks=week - 1)
        arrive(app, webhooks, session_at(ended, f"Patient/c1-w{week}"), arrived)
    numbers = dict(db.execute(select(SessionEvent.session_id, SessionEvent.session_number)).all())
    assert numbers["Patient/c1-w1"] == 1
    assert numbers["Patient/c1-w2"] == 2
    # Numbered, though too late to ask about.
    reasons = dict(db.execute(select(SessionEvent.session_id, SessionEvent.reason)).all())
    assert (reasons["Patient/c1-w1"], reasons["Patient/c1-w2"]) == ("stale", "stale")


def test_a_second_session_within_the_minimum_gap_is_skipped(app, webhooks, practice, db):
    arrive(app, webhooks, session_at(FIRST_END, "s-1"), FIRST_END + timedelta(minutes=1))
    next_day = FIRST_END + timedelta(days=1)
    arrive(app, webhooks, session_at(next_day, "s-2"), next_day + timedelta(minutes=1))
    event = db.scalar(select(SessionEvent).where(SessionEvent.session_id == "s-2"))
    assert (event.status, event.reason, event.contact) == ("skipped", "min_gap", None)
    assert len(db.scalars(select(Invitation)).all()) == 1


def test_each_client_has_a_count_of_their_own(app, webhooks, practice, db):
    weekly(app, webhooks, range(1, 6), reference="Patient/a")
    weekly(app, webhooks, [1], reference="Patient/b")
    assert asked_weeks(db, "Patient/a") == [1, 2, 3, 4]
    assert asked_weeks(db, "Patient/b") == [1]


def test_another_practices_sessions_never_count(app, webhooks, practice, other_practice, db):
    for week in range(1, 6):
        ended = FIRST_END + timedelta(weeks=week - 1)
        payload = session_at(ended, f"other-{week}")
        payload["data"]["account_id"] = "other"
        webhooks.post(payload)
    webhooks.post(session_at(FIRST_END + timedelta(weeks=10), "demo-late"))
    plan(app)
    # The same client reference at another practice is another person's history.
    late = db.scalar(select(SessionEvent).where(SessionEvent.session_id == "demo-late"))
    assert late.session_number == 1
    other_numbers = db.scalars(
        select(SessionEvent.session_number).where(SessionEvent.practice_id == other_practice.id)
    ).all()
    assert sorted(other_numbers) == [1, 2, 3, 4, 5]


def test_an_opted_out_client_is_not_asked_again(app, webhooks, practice, db):
    with app.app_context():
        opt_out(db, practice_id=practice.id, patient_ref="Patient/c1", channel="web", now=FIRST_END)
        db.commit()
    arrive(app, webhooks, session_at(FIRST_END, "s-1"), FIRST_END + timedelta(minutes=1))
    event = db.scalar(select(SessionEvent))
    assert (event.status, event.reason, event.contact) == ("skipped", "opted_out", None)
    assert db.scalar(select(Invitation)) is None


def test_a_practitioners_own_schedule_wins_over_the_practices(app, webhooks, practice, db):
    policy, _, _ = current_policy(db, practice.id, None)
    set_policy(db, practice.id, "Practitioner/p1", replace(policy, first_sessions=1), FIRST_END)
    weekly(app, webhooks, [1, 2])
    assert asked_weeks(db) == [1]
    invitation = db.scalar(select(Invitation))
    assert (invitation.policy_version, invitation.policy_id is not None) == (1, True)


def test_a_session_ending_late_in_the_evening_is_sent_the_next_morning(app, webhooks, practice, db):
    late = datetime(2026, 3, 2, 20, 55, tzinfo=NEW_YORK)
    arrive(app, webhooks, session_at(late, "s-1"), late + timedelta(minutes=1))
    invitation = db.scalar(select(Invitation))
    assert invitation.due_at == datetime(2026, 3, 3, 8, 0, tzinfo=NEW_YORK)


def test_a_language_we_do_not_offer_falls_back_to_the_schedules(app, webhooks, practice, db):
    payload = session_at(FIRST_END, "s-1", language="fr")
    arrive(app, webhooks, payload, FIRST_END + timedelta(minutes=1))
    assert db.scalar(select(Invitation)).language == "en"


def test_planning_twice_plans_nothing_twice(app, webhooks, practice, db):
    soon = FIRST_END + timedelta(minutes=1)
    assert arrive(app, webhooks, session_at(FIRST_END, "s-1"), soon) == 1
    assert plan(app, soon) == 0
    assert plan(app, soon + timedelta(days=1)) == 0
    assert len(db.scalars(select(Invitation)).all()) == 1


def test_a_session_planned_more_than_a_day_after_it_ended_is_skipped_as_stale(
    app, webhooks, practice, db
):
    # The worker was down for a day: the session is not asked about days late.
    arrive(app, webhooks, session_at(FIRST_END, "s-1"), FIRST_END + timedelta(hours=25))
    event = db.scalar(select(SessionEvent))
    assert (event.status, event.reason, event.contact) == ("skipped", "stale", None)
    assert event.session_number == 1
    assert db.scalar(select(Invitation)) is None


def test_a_schedule_may_allow_a_longer_delay(app, webhooks, practice, db):
    policy, _, _ = current_policy(db, practice.id, None)
    set_policy(db, practice.id, None, replace(policy, max_send_delay_hours=48), FIRST_END)
    arrive(app, webhooks, session_at(FIRST_END, "s-1"), FIRST_END + timedelta(hours=25))
    assert db.scalar(select(SessionEvent)).reason == "first_sessions"
    assert db.scalar(select(Invitation)) is not None
