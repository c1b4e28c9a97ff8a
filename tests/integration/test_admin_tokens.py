"""The console's API tokens page: make (shown once), list, revoke; isolation; audit; CSRF."""

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from plugin.admin.api.tokens import PREFIX, TOKEN_LENGTH, hash_token
from plugin.core.models import ApiToken, AuditEvent
from tests.support.api import token_for
from tests.support.console import csrf_token, sign_in
from tests.support.platform_server import zoom_settings

PAGE = "/console/tokens"
TOKEN_RE = re.compile(re.escape(PREFIX) + r"[A-Za-z0-9_-]{43}")


@pytest.fixture
def config(config, zoom_platform):
    """Make Zoom installable against the test platform server."""
    return {**config, **zoom_settings(zoom_platform)}


def make(client, name: str = "reporting script", expires_days: str = "", **extra):
    """Post the page's form to make a token; return the answer."""
    form = {"csrf_token": csrf_token(client, PAGE), "name": name, "expires_days": expires_days}
    return client.post(PAGE, data={**form, **extra})


def shown_tokens(html: str) -> list[str]:
    """Return every token-shaped string in a page."""
    return TOKEN_RE.findall(html)


def api_status(app, plaintext: str):
    """Call the API with a token from a fresh client (no console cookie); return the answer."""
    return app.test_client().get(
        "/api/v1/practice", headers={"Authorization": f"Bearer {plaintext}"}
    )


def test_the_page_is_in_the_menu_and_lists_nothing_yet(admin):
    client, _ = admin
    overview = client.get("/console/").get_data(as_text=True)
    assert f'href="{PAGE}">API tokens</a>' in overview
    response = client.get(PAGE)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "No tokens yet." in response.get_data(as_text=True)


def test_a_new_token_is_shown_once_and_works_against_the_api(app, admin, db, caplog):
    client, practice = admin
    caplog.set_level(logging.DEBUG)

    made = make(client, "  reporting script  ", "30")

    assert made.status_code == 201
    assert "Location" not in made.headers
    assert made.headers["Cache-Control"] == "no-store"
    html = made.get_data(as_text=True)
    [plaintext] = set(shown_tokens(html))
    assert len(plaintext) == TOKEN_LENGTH
    assert "It will not be shown again" in html
    # Not in a cookie (the session holds no flash), nor in any log line.
    with client.session_transaction() as session:
        assert "_flashes" not in session and plaintext not in repr(dict(session))
    assert all(plaintext not in c for c in made.headers.getlist("Set-Cookie"))
    assert plaintext not in caplog.text

    [row] = db.scalars(select(ApiToken).where(ApiToken.practice_id == practice.id))
    assert row.name == "reporting script"
    assert row.token_hash == hash_token(plaintext)
    assert row.created_by.startswith("admin:")
    assert row.expires_at - row.created_at == timedelta(days=30)

    answer = api_status(app, plaintext)
    assert answer.status_code == 200 and answer.json["name"] == "Riverside Therapy"

    # Listed from now on (name, state, who), but never the token nor its hash.
    listed = client.get(PAGE).get_data(as_text=True)
    assert shown_tokens(listed) == [] and row.token_hash not in listed
    assert "reporting script" in listed and "active" in listed
    assert row.created_by in listed and "It will not be shown again" not in listed


def test_a_token_without_an_expiry_never_expires(admin, db):
    client, practice = admin
    assert make(client, "nightly export").status_code == 201
    row = db.scalar(select(ApiToken).where(ApiToken.practice_id == practice.id))
    assert row.expires_at is None
    assert "never" in client.get(PAGE).get_data(as_text=True)


def test_revoking_makes_the_api_refuse_the_token_and_both_are_audited(app, admin, db):
    client, practice = admin
    plaintext = shown_tokens(make(client).get_data(as_text=True))[0]
    row = db.scalar(select(ApiToken).where(ApiToken.practice_id == practice.id))
    assert f'action="/console/tokens/{row.id}/revoke"' in client.get(PAGE).get_data(as_text=True)

    revoked = client.post(f"{PAGE}/{row.id}/revoke", data={"csrf_token": csrf_token(client, PAGE)})

    assert revoked.status_code == 302
    assert revoked.headers["Location"].endswith(f"{PAGE}?revoked=1")
    page = client.get(revoked.headers["Location"]).get_data(as_text=True)
    assert "Token revoked." in page and "revoked</span>" in page
    assert f"/console/tokens/{row.id}/revoke" not in page  # no button for a revoked token
    refused = api_status(app, plaintext)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]

    events = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.practice_id == practice.id, AuditEvent.action.like("api_token.%"))
        .order_by(AuditEvent.created_at)
    ).all()
    assert [(e.action, e.detail) for e in events] == [
        ("api_token.created", {"token_id": row.id}),
        ("api_token.revoked", {"token_id": row.id}),
    ]
    assert {e.actor for e in events} == {row.created_by}
    assert row.created_by.startswith("admin:")
    audit_page = client.get("/console/audit").get_data(as_text=True)
    assert "api_token.created" in audit_page and "api_token.revoked" in audit_page


def test_expired_and_cli_tokens_are_listed_with_their_state(admin, db):
    client, practice = admin
    token_for(db, practice, name="old export", expires_days=1)
    token_for(db, practice, name="from the shell")
    old = db.scalar(select(ApiToken).where(ApiToken.name == "old export"))
    old.expires_at = datetime.now(UTC) - timedelta(minutes=1)
    db.commit()

    page = client.get(PAGE).get_data(as_text=True)

    assert "expired</span>" in page and "active</span>" in page
    assert "<code>cli</code>" in page
    assert f"/console/tokens/{old.id}/revoke" not in page


@pytest.mark.parametrize(
    ("name", "expires_days", "fields"),
    [
        ("", "", {"name"}),
        ("   ", "", {"name"}),
        ("x" * 101, "", {"name"}),
        ("tab\there", "", {"name"}),
        ("ok", "0", {"expires_days"}),
        ("ok", "3651", {"expires_days"}),
        ("ok", "1.5", {"expires_days"}),
        ("ok", "-3", {"expires_days"}),
        ("ok", "a week", {"expires_days"}),
        ("ok", "1_000", {"expires_days"}),
        ("ok", "٣", {"expires_days"}),
        ("ok", "9" * 5000, {"expires_days"}),
        ("", "0", {"name", "expires_days"}),
    ],
    ids=lambda v: repr(v)[:12] if isinstance(v, str) else None,
)
def test_a_bad_name_or_expiry_is_refused_inline_naming_the_field(
    admin, db, name, expires_days, fields
):
    client, _ = admin

    response = make(client, name, expires_days)

    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert {f for f in ("name", "expires_days") if f'id="{f}-error"' in page} == fields
    assert "No token was made" in page and 'aria-invalid="true"' in page
    labels = {"name": "Name: ", "expires_days": "Expires after: "}
    assert all(labels[f] in page for f in fields)
    assert shown_tokens(page) == []
    assert db.scalars(select(ApiToken)).all() == []
    assert db.scalar(select(AuditEvent).where(AuditEvent.action == "api_token.created")) is None


def test_a_name_sent_back_keeps_what_was_typed(admin):
    client, _ = admin
    page = make(client, "reporting <script>", "abc").get_data(as_text=True)
    assert 'value="reporting &lt;script&gt;"' in page and 'value="abc"' in page


def test_forms_without_the_csrf_token_are_refused(admin, db):
    client, practice = admin
    token_for(db, practice)
    row = db.scalar(select(ApiToken))

    made = client.post(PAGE, data={"name": "sneaky"})
    revoked = client.post(f"{PAGE}/{row.id}/revoke", data={})
    forged = client.post(f"{PAGE}/{row.id}/revoke", data={"csrf_token": "forged"})

    assert (made.status_code, revoked.status_code, forged.status_code) == (400, 400, 400)
    assert shown_tokens(made.get_data(as_text=True)) == []
    db.expire_all()
    assert [t.name for t in db.scalars(select(ApiToken))] == ["tests"]
    assert db.get(ApiToken, row.id).revoked_at is None


def test_one_practice_neither_sees_nor_revokes_anothers_tokens(app, admin, db, zoom_platform):
    client, riverside = admin
    harbour_browser = app.test_client()
    sign_in(harbour_browser, zoom_platform, "harbour")
    plaintext = shown_tokens(make(client, "riverside reports").get_data(as_text=True))[0]
    row = db.scalar(select(ApiToken).where(ApiToken.practice_id == riverside.id))
    audit_before = db.scalars(select(AuditEvent.id)).all()

    harbour_page = harbour_browser.get(PAGE).get_data(as_text=True)
    assert "riverside reports" not in harbour_page and row.id not in harbour_page
    assert "No tokens yet." in harbour_page
    for token_id in (row.id, "no-such-token"):
        response = harbour_browser.post(
            f"{PAGE}/{token_id}/revoke",
            data={"csrf_token": csrf_token(harbour_browser, PAGE)},
        )
        assert response.status_code == 404

    db.expire_all()
    assert db.get(ApiToken, row.id).revoked_at is None
    assert db.scalars(select(AuditEvent.id)).all() == audit_before
    assert api_status(app, plaintext).status_code == 200


def test_the_page_needs_a_signed_in_admin(app, admin, db):
    _, practice = admin
    token_for(db, practice)
    row = db.scalar(select(ApiToken))
    stranger = app.test_client()
    assert stranger.get(PAGE).status_code == 401
    assert stranger.post(f"{PAGE}/{row.id}/revoke").status_code in (400, 401)
    db.expire_all()
    assert db.get(ApiToken, row.id).revoked_at is None
