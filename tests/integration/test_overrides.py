"""Practitioner overrides: only the settings they change, inherited from the practice's policy."""

from datetime import UTC, datetime, timedelta

import pytest

from fhir_mappings.instrument import load_bundled
from plugin.core.audit import recent
from plugin.planning.policy import Policy, PolicyError
from plugin.planning.schedules import (
    NoOverrideError,
    change_practice_policy,
    current_policy,
    history,
    list_overrides,
    remove_override,
    set_override,
    set_policy,
)
from tests.support.data import load_json

OVERRIDES = load_json("schedules/overrides.json")
BUNDLED = load_bundled().canonical
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
DR = "Practitioner/7"


def _policy(**settings) -> Policy:
    return Policy(questionnaire=BUNDLED, **settings)


def _practice_set(db, practice, **settings):
    return change_practice_policy(
        db, practice.id, _policy(**settings).to_dict(), actor="cli", now=NOW
    )


def test_an_override_stores_only_what_it_changes_and_inherits_the_rest(app, db, practice):
    _practice_set(db, practice, first_sessions=6, min_gap_days=5)
    with app.app_context():
        row = set_override(db, practice.id, DR, OVERRIDES["spanish"], actor="cli", now=NOW)
    assert row.settings == {"language": "es"}
    assert current_policy(db, practice.id, DR) == (
        _policy(first_sessions=6, min_gap_days=5, language="es"),
        row.id,
        1,
    )
    # A later change to the practice reaches the practitioner's clients, except what they chose.
    _practice_set(db, practice, first_sessions=2, language="en")
    assert current_policy(db, practice.id, DR)[0] == _policy(first_sessions=2, language="es")
    assert current_policy(db, practice.id, "Practitioner/8")[0] == _policy(first_sessions=2)


def test_an_override_is_stored_the_way_the_policy_writes_it(app, db, practice):
    with app.app_context():
        row = set_override(db, practice.id, DR, OVERRIDES["quiet_evenings"], actor="cli", now=NOW)
        assert row.settings == {"quiet_start": "20:00", "channels": ["sms"]}
        again = {"quiet_start": "20:00", "channels": ["sms"]}
        assert set_override(db, practice.id, DR, again, actor="cli", now=NOW) is None


def test_a_full_override_stored_before_inheritance_still_means_exactly_itself(db, practice):
    set_policy(db, practice.id, DR, _policy(language="es"), NOW)
    _practice_set(db, practice, first_sessions=9)
    # Every setting is named, so nothing is inherited: the behaviour it had when stored.
    assert current_policy(db, practice.id, DR)[0] == _policy(language="es")


def test_removing_an_override_keeps_its_history_and_the_practice_policy_applies(app, db, practice):
    _practice_set(db, practice, first_sessions=6)
    with app.app_context():
        set_override(db, practice.id, DR, OVERRIDES["early_only"], actor="admin:u1", now=NOW)
    removed = remove_override(db, practice.id, DR, actor="admin:u1", now=NOW)
    assert removed.version == 2
    policy, _, version = current_policy(db, practice.id, DR)
    assert (policy, version) == (_policy(first_sessions=6), 1)
    assert list_overrides(db, practice.id) == []
    assert [r.settings for r in history(db, practice.id, DR)] == [{}, OVERRIDES["early_only"]]
    with pytest.raises(NoOverrideError):
        remove_override(db, practice.id, DR, actor="cli", now=NOW)
    # Set again after removal: the next version, nothing reused.
    with app.app_context():
        assert (
            set_override(db, practice.id, DR, {"language": "es"}, actor="cli", now=NOW).version == 3
        )


def test_overrides_are_listed_per_practitioner_and_per_practice(app, db, practice, other_practice):
    with app.app_context():
        set_override(db, practice.id, DR, OVERRIDES["spanish"], actor="cli", now=NOW)
        set_override(db, practice.id, DR, OVERRIDES["early_only"], actor="cli", now=NOW)
        set_override(db, practice.id, "Practitioner/8", OVERRIDES["spanish"], actor="cli", now=NOW)
        set_override(
            db, other_practice.id, "Practitioner/9", {"language": "es"}, actor="cli", now=NOW
        )
    listed = list_overrides(db, practice.id)
    assert [(o.practitioner_ref, o.version, o.settings) for o in listed] == [
        (DR, 2, OVERRIDES["early_only"]),
        ("Practitioner/8", 1, OVERRIDES["spanish"]),
    ]
    assert [o.practitioner_ref for o in list_overrides(db, other_practice.id)] == ["Practitioner/9"]
    with pytest.raises(NoOverrideError):
        remove_override(db, other_practice.id, DR, actor="cli", now=NOW)


@pytest.mark.parametrize("case", OVERRIDES["bad"], ids=lambda c: c["field"])
def test_a_bad_override_names_its_field_and_stores_nothing(app, db, practice, case):
    with app.app_context(), pytest.raises(PolicyError, match=case["error"]) as refused:
        set_override(db, practice.id, DR, case["settings"], actor="cli", now=NOW)
    assert refused.value.field == case["field"]
    assert history(db, practice.id, DR) == []


@pytest.mark.parametrize("ref", OVERRIDES["bad_practitioners"])
def test_a_bad_practitioner_reference_is_refused(app, db, practice, ref):
    with pytest.raises(PolicyError, match="Practitioner/123") as refused:
        set_override(db, practice.id, ref, {"language": "es"}, actor="cli", now=NOW)
    assert refused.value.field == "practitioner"


def test_a_practice_change_that_would_break_an_override_is_refused(app, db, practice):
    with app.app_context():
        set_override(db, practice.id, DR, {"reminder_after_hours": 40}, actor="cli", now=NOW)
        with pytest.raises(PolicyError, match=f"the override for {DR}") as refused:
            _practice_set(db, practice, expires_after_hours=24, reminder_after_hours=12)
    assert refused.value.field == "reminder_after_hours"
    assert history(db, practice.id) == []


def test_every_change_leaves_an_audit_line_with_its_actor(app, db, practice):
    with app.app_context():
        # A minute apart, so the trail's newest-first order is the order they happened in.
        _practice_set(db, practice, first_sessions=6)
        minute = timedelta(minutes=1)
        set_override(
            db, practice.id, DR, {"language": "es"}, actor="api-token:t1", now=NOW + minute
        )
        remove_override(db, practice.id, DR, actor="admin:u1", now=NOW + 2 * minute)
    db.commit()
    lines = [(e.actor, e.action, e.detail) for e in reversed(recent(db, practice.id))]
    assert lines == [
        ("cli", "schedule.set", {"version": 1, "fields": ["first_sessions"]}),
        (
            "api-token:t1",
            "override.set",
            {"practitioner": DR, "version": 1, "fields": ["language"]},
        ),
        ("admin:u1", "override.removed", {"practitioner": DR, "version": 2}),
    ]


def _schedule(runner, *args):
    return runner.invoke(args=["schedule", *args])


def test_the_cli_edits_lists_traces_and_removes_an_override(runner, practice):
    set_ = _schedule(runner, "set", "demo", "--practitioner", DR, "--set", "language=es")
    assert "stored the override for Practitioner/7 of demo as version 1" in set_.output
    _schedule(runner, "set", "demo", "--practitioner", DR, "--set", "first_sessions=6")
    listed = _schedule(runner, "overrides", "demo").output.splitlines()
    assert listed == ["practitioner\tversion\tchanges", f'{DR}\t2\tfirst_sessions=6, language="es"']
    shown = _schedule(runner, "show", "demo", "--practitioner", DR).output
    assert "version 2, which changes first_sessions, language; the rest is the built-in" in shown
    unset = _schedule(runner, "set", "demo", "--practitioner", DR, "--unset", "first_sessions")
    assert "version 3" in unset.output
    removed = _schedule(runner, "remove-override", "demo", "--practitioner", DR)
    assert "removed the override for Practitioner/7 (version 4)" in removed.output
    traced = _schedule(runner, "history", "demo", "--practitioner", DR).output.splitlines()
    assert traced[0] == "version\tstored\tsettings"
    assert [line.split("\t")[0] for line in traced[1:]] == ["4", "3", "2", "1"]
    assert traced[1].endswith("(removed)")
    assert "no overrides" in _schedule(runner, "overrides", "demo").output
    again = _schedule(runner, "remove-override", "demo", "--practitioner", DR)
    assert again.exit_code != 0
    assert "Practitioner/7 has no override" in again.output


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--practitioner", "Patient/1", "--set", "language=es"], "Practitioner/123"),
        (["--unset", "language"], "--unset applies to a practitioner"),
        (["--practitioner", DR, "--unset", "language"], "changes at least one setting"),
    ],
)
def test_the_cli_refuses_bad_override_input(runner, practice, args, error):
    result = _schedule(runner, "set", "demo", *args)
    assert result.exit_code != 0
    assert error in result.output
