"""Mapping a video host's email to their EHR Practitioner: `practice map-host` and the console.

The mapping is staff data kept with care (a keyed digest to look up, the email sealed), is
audited without the email, and belongs to one practice only.
"""

import pytest
from sqlalchemy import select

from plugin.core.models import AuditEvent, HostPractitioner, Practice
from plugin.planning.host_map import practitioner_for, set_mapping
from tests.support.console import csrf_token
from tests.support.platform_server import zoom_settings
from tests.support.zoom_api import add_zoom_practice

EMAIL = "Avery.Quinn@Riverside.example"
EHR_PAGE = "/console/ehr"


@pytest.fixture
def config(config, zoom_platform):
    """Make Zoom installable against the test platform server."""
    return {**config, **zoom_settings(zoom_platform)}


@pytest.fixture
def zoom_practice(app, db) -> Practice:
    return add_zoom_practice(db, app.extensions["vault"], "zoom-A", "token-A")


def cli(runner, *args: str):
    return runner.invoke(args=["practice", *args])


# --- the CLI -----------------------------------------------------------------------------


def test_map_list_and_unmap_a_host(runner, db, app, zoom_practice):
    result = cli(runner, "map-host", "zoom-A", EMAIL, "Practitioner/p-7", "--platform", "zoom")
    assert (result.exit_code, result.output) == (0, "mapped the host\n")
    listed = cli(runner, "hosts", "zoom-A", "--platform", "zoom")
    assert f"{EMAIL}\tPractitioner/p-7" in listed.output
    with app.test_request_context():
        # Looked up as the platform spells the address, whatever its case or spaces.
        assert practitioner_for(db, zoom_practice.id, " avery.quinn@riverside.EXAMPLE") == (
            "Practitioner/p-7"
        )
    # The address is not stored in the clear.
    row = db.scalar(select(HostPractitioner))
    assert EMAIL.encode() not in row.host_email and EMAIL.casefold() not in row.host_digest

    again = cli(runner, "map-host", "zoom-A", EMAIL, "Practitioner/p-8", "--platform", "zoom")
    assert again.exit_code == 0
    assert "Practitioner/p-8" in cli(runner, "hosts", "zoom-A", "--platform", "zoom").output
    assert len(db.scalars(select(HostPractitioner)).all()) == 1

    removed = cli(runner, "unmap-host", "zoom-A", EMAIL.lower(), "--platform", "zoom")
    assert (removed.exit_code, removed.output) == (0, "removed the mapping\n")
    assert "no hosts mapped" in cli(runner, "hosts", "zoom-A", "--platform", "zoom").output
    actions = [e.action for e in db.scalars(select(AuditEvent).order_by(AuditEvent.created_at))]
    assert actions == ["host_mapping.set", "host_mapping.set", "host_mapping.removed"]
    for event in db.scalars(select(AuditEvent)):
        assert EMAIL.casefold() not in str(event.detail).casefold()


@pytest.mark.parametrize(
    ("email", "practitioner", "says"),
    [
        ("not-an-email", "Practitioner/p-7", ["EMAIL: Enter the host's email"]),
        (EMAIL, "Patient/p-7", ["PRACTITIONER: Enter the Practitioner as Practitioner/ID"]),
        (EMAIL, "Practitioner/a b", ["PRACTITIONER:"]),
        (EMAIL, "Practitioner/" + "x" * 65, ["PRACTITIONER:"]),
        ("x" * 250 + "@ex.org", "Practitioner/p", ["EMAIL:"]),
        ("", "", ["EMAIL:", "PRACTITIONER:"]),
    ],
)
def test_bad_input_is_refused_naming_each_field_and_changes_nothing(
    runner, db, zoom_practice, email, practitioner, says
):
    result = cli(runner, "map-host", "zoom-A", email, practitioner, "--platform", "zoom")
    assert result.exit_code != 0
    for words in says:
        assert words in result.output
    assert db.scalar(select(HostPractitioner)) is None


def test_unknown_practices_and_mappings_are_clear_errors(runner, zoom_practice):
    unknown = cli(runner, "map-host", "nobody", EMAIL, "Practitioner/p-7", "--platform", "zoom")
    assert unknown.exit_code != 0 and "no practice with account 'nobody'" in unknown.output
    missing = cli(runner, "unmap-host", "zoom-A", EMAIL, "--platform", "zoom")
    assert missing.exit_code != 0 and "no mapping for that email" in missing.output


# --- the console ---------------------------------------------------------------------------


def post_mapping(client, **form):
    return client.post(
        "/console/ehr/hosts", data={"csrf_token": csrf_token(client, EHR_PAGE), **form}
    )


def test_the_console_maps_lists_and_removes_a_host_audited(admin, db):
    client, practice = admin
    assert "Video hosts in your EHR" in client.get(EHR_PAGE).get_data(as_text=True)

    response = post_mapping(client, host_email=EMAIL, practitioner_ref="Practitioner/p-7")

    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Saved: sessions this host runs" in page
    assert EMAIL in page and "Practitioner/p-7" in page
    event = db.scalar(select(AuditEvent).where(AuditEvent.action == "host_mapping.set"))
    assert event.actor.startswith("admin:") and event.practice_id == practice.id
    [mapping] = db.scalars(select(HostPractitioner)).all()

    removed = client.post(
        f"/console/ehr/hosts/{mapping.id}/remove", data={"csrf_token": csrf_token(client, EHR_PAGE)}
    )

    assert removed.status_code == 302
    assert db.scalar(select(HostPractitioner)) is None
    assert db.scalar(select(AuditEvent).where(AuditEvent.action == "host_mapping.removed"))


def test_bad_input_in_the_console_is_shown_inline_and_kept(admin, db):
    client, _ = admin
    response = post_mapping(client, host_email="avery at riverside", practitioner_ref="p-7")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="host_email-error"' in page and 'id="host_practitioner-error"' in page
    assert 'aria-invalid="true"' in page and 'value="avery at riverside"' in page
    assert db.scalar(select(HostPractitioner)) is None


def test_a_form_without_its_csrf_token_changes_nothing(admin, db):
    client, _ = admin
    response = client.post(
        "/console/ehr/hosts", data={"host_email": EMAIL, "practitioner_ref": "Practitioner/p-7"}
    )
    assert response.status_code == 400
    assert db.scalar(select(HostPractitioner)) is None


def test_an_admin_can_neither_see_nor_remove_another_practices_mapping(admin, app, db):
    client, _ = admin
    other = add_zoom_practice(db, app.extensions["vault"], "zoom-B", "token-B")
    with app.test_request_context():
        set_mapping(db, other.id, "host@hillside.example", "Practitioner/b-1",
                    actor="cli", sealer=app.extensions["vault"])  # fmt: skip
    db.commit()
    theirs = db.scalar(select(HostPractitioner))

    assert "host@hillside.example" not in client.get(EHR_PAGE).get_data(as_text=True)
    response = client.post(
        f"/console/ehr/hosts/{theirs.id}/remove", data={"csrf_token": csrf_token(client, EHR_PAGE)}
    )

    assert response.status_code == 404
    db.expire_all()
    assert db.get(HostPractitioner, theirs.id) is not None
