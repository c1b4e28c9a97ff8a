"""A generated month of one Zoom practice's sessions, seeded, to measure how clients are found.

Each session is a scenario: whether the EHR's schedule has its Appointment (sometimes with the
meeting's join URL), whether the meeting took registrations, and who joined: the client with
their own email, a guest with none, a phone-only join, or the client on a spouse's account.
Some are double bookings, and some have no trace anywhere. run_month files them in the test
FHIR server and the Zoom stand-in, posts each meeting.ended, plans them with the real worker
and counts what each method matched.
"""

import json
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from plugin.core.models import SessionEvent
from plugin.jobs import tick
from tests.support.schedule import appointment, patient, practitioner
from tests.support.zoom_api import ZoomWebhooks, new_uuid, zoom_payload

HOSTS = [("host-a", "avery@riverside.example"), ("host-b", "blake@riverside.example")]
JOINS = ("own_email", "guest", "phone_only", "spouse_account")
METHODS = ("appointment", "registrant", "email", "admin")


@dataclass(frozen=True)
class Scenario:
    """One generated session."""

    index: int
    host: int
    start: datetime
    # "appointment" | "double" | "registrant_only" | "email_only" | "no_trace"
    kind: str
    join: str
    join_url: bool = False
    settled: bool = False


def generate(seed: int, count: int, month: datetime = datetime(2026, 3, 2, tzinfo=UTC)):
    """Return count scenarios spread over four weeks of working hours, deterministically."""
    rng = random.Random(seed)
    kinds = ["appointment"] * 70 + ["double"] * 6 + ["registrant_only"] * 10
    kinds += ["email_only"] * 9 + ["no_trace"] * 5
    weights = {"own_email": 55, "guest": 15, "phone_only": 15, "spouse_account": 15}
    scenarios = []
    for index in range(count):
        # Each session its own hour slot per host, so only double bookings overlap.
        slot = index // len(HOSTS)
        day, hour = divmod(slot, 9)
        start = month + timedelta(days=day, hours=9 + hour)
        kind = rng.choice(kinds)
        join = rng.choices(JOINS, [weights[j] for j in JOINS])[0]
        if kind in ("registrant_only", "no_trace"):
            join = rng.choice(("guest", "phone_only"))
        if kind == "email_only":
            join = "own_email"
        scenarios.append(
            Scenario(
                index=index,
                host=index % len(HOSTS),
                start=start + timedelta(minutes=rng.randint(-4, 6)),
                kind=kind,
                join=join,
                join_url=rng.random() < 0.15,
                settled=rng.random() < 0.5,
            )
        )
    return scenarios


def run_month(app, client, db, zoom_api, desk, token: str, scenarios) -> Counter:
    """File, post and plan every scenario; return the count per match method or reason."""
    hosts = [desk.post(practitioner(email)) for _, email in HOSTS]
    hooks = ZoomWebhooks(client)
    outcomes: Counter = Counter()
    for s in scenarios:
        meeting_id = str(80000000000 + s.index)
        email = f"client{s.index}@example.org"
        pid = desk.post(patient(email, family=f"C{s.index}"))
        end = s.start + timedelta(minutes=50)
        host_id, host_email = HOSTS[s.host]
        if s.kind in ("appointment", "double"):
            desk.post(
                appointment(
                    hosts[s.host], [pid], s.start, end,
                    meeting_id=meeting_id if s.join_url or s.settled else None,
                    join_url=s.join_url,
                )
            )  # fmt: skip
        if s.kind == "double":
            other = desk.post(patient(f"other{s.index}@example.org"))
            desk.post(appointment(hosts[s.host], [other], s.start, end))
        participants = [
            {"id": host_id, "user_email": host_email, "status": "in_meeting", "internal_user": True}
        ]
        guest = {"id": "", "user_email": "", "status": "in_meeting", "internal_user": False}
        if s.join == "own_email":
            participants.append({**guest, "user_email": email})
        elif s.join == "spouse_account":
            participants.append({**guest, "user_email": f"spouse{s.index}@example.net"})
        else:
            participants.append(guest)
        registrants = None
        if s.kind == "registrant_only":
            registrants = [{"id": f"r{s.index}", "email": email, "status": "approved"}]
        uuid = new_uuid()
        zoom_api.add_meeting(
            token, uuid, participants, meeting_id=int(meeting_id), host_id=host_id,
            host_email=host_email, registrants=registrants,
            start_time=_z(s.start), end_time=_z(end),
        )  # fmt: skip
        payload = zoom_payload("meeting_ended.json", uuid=uuid)
        payload["payload"]["object"].update(
            id=meeting_id, host_id=host_id, start_time=_z(s.start), end_time=_z(end)
        )
        response = hooks.post(json.dumps(payload).encode())
        assert response.status_code == 204, response.get_data(as_text=True)
    for _ in range(len(scenarios) // 10 + 5):
        tick(app, datetime.now(UTC) + timedelta(minutes=1))
        if not db.scalar(select(SessionEvent.id).where(SessionEvent.status == "pending")):
            break
    db.expire_all()
    for event in db.scalars(select(SessionEvent)):
        outcomes[event.match_method or f"unmatched:{event.reason}"] += 1
    return outcomes


def email_only_count(scenarios) -> int:
    """How many the attendee-email look-up alone (the previous resolver) would have matched."""
    return sum(1 for s in scenarios if s.join == "own_email")


def table(outcomes: Counter, scenarios) -> str:
    """Return the per-method table in Markdown."""
    total = sum(outcomes.values())
    rows = ["| method | sessions | share |", "|---|---:|---:|"]
    for method in METHODS:
        rows.append(f"| {method} | {outcomes[method]} | {outcomes[method] / total:.1%} |")
    unmatched = sum(n for key, n in outcomes.items() if key.startswith("unmatched"))
    rows.append(f"| **unmatched** | {unmatched} | {unmatched / total:.1%} |")
    for key in sorted(k for k in outcomes if k.startswith("unmatched")):
        rows.append(f"| &nbsp;&nbsp;{key.split(':', 1)[1]} | {outcomes[key]} | "
                    f"{outcomes[key] / total:.1%} |")  # fmt: skip
    before = email_only_count(scenarios)
    rows.append(f"| *email only, as before* | {before} | {before / total:.1%} |")
    return "\n".join(rows)


def _z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
