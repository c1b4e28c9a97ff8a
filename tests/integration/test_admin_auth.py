"""Console sign-in through the platform: admins only, short sessions, CSRF on every form."""

import time

import pytest
from sqlalchemy import select

from plugin.core.models import AuditEvent, Practice
from tests.support.console import csrf_token, sign_in
from tests.support.platform_server import zoom_settings


@pytest.fixture
def config(config, zoom_platform):
    """Make Zoom installable and sign-in-able against the test platform server."""
    return {**config, **zoom_settings(zoom_platform)}


def test_an_owner_installs_and_lands_in_the_console(client, db, zoom_platform):
    response = sign_in(client, zoom_platform)

    assert response.headers["Location"] == "/console/"
    page = client.get("/console/")
    assert page.status_code == 200
    assert "Riverside Therapy" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    [signed] = db.scalars(select(AuditEvent).where(AuditEvent.action == "admin.signed_in"))
    assert signed.actor == "admin:KdYKjnimT4KPd8FFgQt9FQ"


def test_an_admin_signs_in_later_through_login(app, db, zoom_platform):
    sign_in(app.test_client(), zoom_platform)
    browser = app.test_client()
    assert browser.get("/console/").status_code == 401

    response = sign_in(browser, zoom_platform, "riverside_admin", install=False)

    assert response.status_code == 302
    assert browser.get("/console/").status_code == 200


def test_a_member_is_refused_with_a_friendly_403(app, db, zoom_platform):
    sign_in(app.test_client(), zoom_platform)
    browser = app.test_client()

    response = sign_in(browser, zoom_platform, "riverside_member", install=False)

    assert response.status_code == 403
    assert "admins" in response.get_data(as_text=True)
    assert browser.get("/console/").status_code == 401


def test_a_member_cannot_install_for_the_account(client, db, zoom_platform):
    response = sign_in(client, zoom_platform, "riverside_member")

    assert response.status_code == 403
    assert db.scalars(select(Practice)).all() == []


def test_an_account_that_is_not_installed_is_offered_the_install(client, db, zoom_platform):
    response = sign_in(client, zoom_platform, "harbour", install=False)

    assert response.status_code == 404
    assert "/install/zoom" in response.get_data(as_text=True)
    assert client.get("/console/").status_code == 401


@pytest.mark.parametrize("query", ["code=abc&state=forged", "code=abc", ""])
def test_a_forged_or_missing_state_signs_nobody_in(app, client, zoom_platform, query):
    sign_in(app.test_client(), zoom_platform)
    client.get("/login/zoom")

    response = client.get(f"/oauth/callback?{query}")

    assert response.status_code == 400
    assert client.get("/console/").status_code == 401


def test_sign_in_uses_pkce_and_state(client, zoom_platform):
    location = client.get("/login/zoom").headers["Location"]
    assert "code_challenge_method=S256" in location
    assert "state=" in location


@pytest.mark.parametrize("setting", ["ADMIN_SESSION_HOURS", "ADMIN_IDLE_MINUTES"])
def test_the_session_expires(app, client, zoom_platform, setting):
    sign_in(client, zoom_platform)
    assert client.get("/console/").status_code == 200

    app.config[setting] = 0

    response = client.get("/console/")
    assert response.status_code == 401
    assert "session has ended" in response.get_data(as_text=True)


def test_idle_clock_is_refreshed_by_use(app, client, zoom_platform, monkeypatch):
    sign_in(client, zoom_platform)
    start = time.time()
    monkeypatch.setattr("plugin.admin.auth._clock", lambda: start + 25 * 60)
    assert client.get("/console/").status_code == 200
    monkeypatch.setattr("plugin.admin.auth._clock", lambda: start + 50 * 60)
    assert client.get("/console/").status_code == 200
    monkeypatch.setattr("plugin.admin.auth._clock", lambda: start + 90 * 60)
    assert client.get("/console/").status_code == 401


def test_the_cookie_holds_no_platform_token_and_is_httponly_lax(client, zoom_platform):
    sign_in(client, zoom_platform)
    cookie = client.get_cookie("session")
    [token] = zoom_platform.tokens
    assert token.access_token not in cookie.value
    assert cookie.http_only
    assert cookie.same_site == "Lax"


def test_a_form_without_csrf_is_refused(client, db, zoom_platform):
    sign_in(client, zoom_platform)

    response = client.post("/console/practice", data={"name": "Changed", "timezone": "UTC"})

    assert response.status_code == 400
    assert db.scalar(select(Practice.name)) == "Riverside Therapy"


def test_sign_out_ends_the_session(client, zoom_platform):
    sign_in(client, zoom_platform)
    token = csrf_token(client)

    assert client.post("/console/sign-out", data={"csrf_token": token}).status_code == 302
    assert client.get("/console/").status_code == 401


def test_setup_without_a_session_offers_sign_in(client, zoom_platform):
    response = client.get("/setup")
    assert response.status_code == 401
    assert "/login/zoom" in response.get_data(as_text=True)
