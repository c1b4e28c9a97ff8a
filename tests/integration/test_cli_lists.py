"""List commands print a header row over tab-separated rows, or say plainly there is nothing."""

from datetime import UTC, datetime

import pytest

from plugin.core.models import EhrWrite
from tests.support.data import session_ended

LISTS = {
    "practice": (["practice", "list"], "no practices installed"),
    "sessions": (["sessions", "list"], "no sessions match"),
    "invitations": (["invitations", "list"], "no invitations match"),
    "ehr-writes": (["ehr-writes", "list"], "no EHR writes match"),
    "keys": (["keys", "list"], "no signing keys; make one with `alliance-check keys generate`"),
    "api-token": (["api-token", "list", "demo"], "no API tokens"),
    "overrides": (["schedule", "overrides", "demo"], "no overrides"),
    "history": (["schedule", "history", "demo"], "no versions stored"),
}

# What each header row starts with: the rows below it start with that thing.
FIRST_COLUMN = {
    "practice": "platform",
    "sessions": "id",
    "invitations": "id",
    "ehr-writes": "id",
    "keys": "kid",
    "api-token": "id",
    "overrides": "practitioner",
    "history": "version",
}


@pytest.fixture
def listed_things(app, db, runner, practice, webhooks, invitations):
    """Make one of everything a list command shows."""
    webhooks.post(session_ended("s-listed"))
    invitation, _ = invitations(practice)
    now = datetime.now(UTC)
    db.add(
        EhrWrite(
            practice_id=practice.id,
            invitation_id=invitation.id,
            next_attempt_at=now,
            created_at=now,
        )
    )
    db.commit()
    for args in (
        ["keys", "generate"],
        ["api-token", "create", "demo"],
        ["schedule", "set", "demo", "--practitioner", "Practitioner/7", "--set", "language=es"],
    ):
        assert runner.invoke(args=args).exit_code == 0


@pytest.mark.parametrize(
    "name", [n for n in LISTS if n not in ("api-token", "overrides", "history")]
)
def test_an_empty_list_says_so(runner, name):
    args, empty = LISTS[name]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(empty)


@pytest.mark.parametrize("name", ["api-token", "overrides", "history"])
def test_an_empty_list_of_a_practice_says_so(runner, practice, name):
    args, empty = LISTS[name]
    assert runner.invoke(args=args).output.startswith(empty)


@pytest.mark.parametrize("name", list(LISTS))
def test_a_list_has_a_header_as_wide_as_its_rows(runner, listed_things, name):
    args, _ = LISTS[name]
    if name == "history":
        args = [*args, "--practitioner", "Practitioner/7"]
    lines = runner.invoke(args=args).output.splitlines()
    header, rows = lines[0].split("\t"), [line.split("\t") for line in lines[1:]]
    assert rows, lines
    assert header[0] == FIRST_COLUMN[name]
    assert {len(row) for row in rows} == {len(header)}
