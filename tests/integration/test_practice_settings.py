"""A practice's settings: checked all at once when set, audited, and `practice set|remove`."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from plugin.core.audit import recent
from plugin.core.models import InstallEvent, Practice, SchedulePolicy
from plugin.install.practices import PracticeInputError, remove_practice
from plugin.planning.practice_settings import practice_language, update_practice
from tests.support.data import load_json

BAD = load_json("practices/bad_settings.json")
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def blocked(app):
    """Make ndjson:blocked/ehr unwritable: `blocked` is a file, not a folder."""
    (Path(app.instance_path).parent / "blocked").write_text("not a folder")


def test_update_changes_each_setting_and_audits_it(app, db, practice):
    with app.app_context():
        changed = update_practice(
            db,
            practice,
            name="  Riverside Therapy Group ",
            timezone="America/Chicago",
            language="es",
            ehr_target="ndjson:var/ehr-new",
            actor="admin:u1",
            now=NOW,
        )
    db.commit()
    assert changed == ["name", "timezone", "ehr_target", "language"]
    assert (practice.name, practice.timezone, practice.ehr_target) == (
        "Riverside Therapy Group",
        "America/Chicago",
        "ndjson:var/ehr-new",
    )
    assert practice_language(db, practice) == "es"
    assert (Path(app.instance_path).parent / "var" / "ehr-new").is_dir()
    actions = [(e.actor, e.action, e.detail.get("fields")) for e in recent(db, practice.id)]
    assert ("admin:u1", "practice.updated", ["name", "timezone", "ehr_target"]) in actions
    assert ("admin:u1", "schedule.set", ["language"]) in actions


def test_update_with_what_is_already_there_changes_nothing(app, db, practice):
    with app.app_context():
        assert update_practice(db, practice, name=practice.name, language="en", actor="cli") == []
    assert recent(db, practice.id) == []
    assert db.scalars(select(SchedulePolicy)).all() == []


@pytest.mark.parametrize("case", BAD, ids=lambda c: f"{c['field']}={c['value'][:20]!r}")
def test_update_refuses_a_bad_setting_naming_it(app, db, practice, blocked, case):
    with app.app_context(), pytest.raises(PracticeInputError) as refused:
        update_practice(db, practice, actor="cli", **{case["field"]: case["value"]})
    assert list(refused.value.errors) == [case["field"]]
    assert case["error"] in refused.value.errors[case["field"]]
    db.rollback()
    assert db.get(Practice, practice.id).name == "Riverside Therapy"


def test_update_names_every_bad_setting_at_once_and_changes_none(app, db, practice, blocked):
    with app.app_context(), pytest.raises(PracticeInputError) as refused:
        update_practice(
            db,
            practice,
            name="",
            timezone="Mars/Olympus",
            language="fr",
            ehr_target="ndjson:blocked/ehr",
            actor="cli",
        )
    assert list(refused.value.errors) == ["name", "timezone", "ehr_target", "language"]
    assert practice.name == "Riverside Therapy"


def test_remove_purges_like_an_uninstall_and_keeps_who_did_it(app, db, practice, other_practice):
    with app.app_context():
        remove_practice(db, practice, actor="cli", now=NOW)
    assert db.get(Practice, practice.id) is None
    assert db.get(Practice, other_practice.id) is not None
    event = db.scalar(select(InstallEvent).where(InstallEvent.practice_id == practice.id))
    assert (event.action, event.detail["actor"]) == ("removed", "cli")


def _practice(runner, *args, **kwargs):
    return runner.invoke(args=["practice", *args], **kwargs)


def test_practice_set_through_the_cli(runner, practice):
    result = _practice(runner, "set", "demo", "--name", "Riverside", "--language", "es")
    assert result.exit_code == 0, result.output
    assert result.output == "changed name, language of practice demo\n"
    assert "unchanged" in _practice(runner, "set", "demo", "--name", "Riverside").output
    assert 'language = "es"' in runner.invoke(args=["schedule", "show", "demo"]).output


def test_practice_set_reports_every_bad_option(runner, practice, blocked):
    result = _practice(
        runner, "set", "demo", "--name", " ", "--timezone", "Nowhere", "--ehr", "ndjson:blocked/x"
    )
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith(("Error", "--"))]
    assert [line.removeprefix("Error: ").split(":")[0] for line in lines] == [
        "--name",
        "--timezone",
        "--ehr",
    ]


def test_practice_add_reports_every_bad_option_at_once(runner, blocked):
    result = _practice(
        runner,
        "add",
        "acme",
        "--name",
        "",
        "--timezone",
        "Mars/Olympus",
        "--ehr",
        "ndjson:blocked/x",
    )
    assert result.exit_code != 0
    for error in ("must not be empty", "unknown time zone", "cannot write to"):
        assert error in result.output
    assert "no practices installed" in _practice(runner, "list").output


def test_practice_remove_asks_first_unless_yes(runner, practice):
    declined = _practice(runner, "remove", "demo", input="n\n")
    assert declined.exit_code != 0
    assert "Aborted" in declined.output
    assert "demo" in _practice(runner, "list").output
    removed = _practice(runner, "remove", "demo", "--yes")
    assert removed.exit_code == 0, removed.output
    assert "no practices installed" in _practice(runner, "list").output
    unknown = _practice(runner, "remove", "demo", "--yes")
    assert "no practice with account 'demo'" in unknown.output
