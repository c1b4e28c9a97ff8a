"""The install flow through the real redirects: our app <-> a real authlib authorization server."""

from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select

from plugin import create_app
from plugin.core.crypto import Vault
from plugin.core.models import InstallEvent, Practice
from tests.support.install import ACCOUNTS, begin
from tests.support.platform_server import zoom_settings


@pytest.fixture
def config(config, zoom_platform):
    """Make Zoom installable against the test platform server."""
    return {**config, **zoom_settings(zoom_platform)}


def practices(db) -> list[Practice]:
    db.expire_all()
    return db.scalars(select(Practice)).all()


def test_install_redirects_to_the_platform_with_state_and_pkce_s256(client, zoom_platform):
    response = client.get("/install/zoom")

    assert response.status_code == 302
    url = urlsplit(response.headers["Location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{zoom_platform.url}/authorize"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == "alliance-check-zoom"
    assert query["redirect_uri"] == "http://localhost/oauth/callback"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 20
    assert query["scope"] == (
        "user:read:user meeting:read:list_past_participants meeting:read:past_meeting "
        "meeting:read:list_registrants"
    )


def test_install_creates_the_practice_with_a_sealed_token_and_opens_setup(
    client, db, zoom_platform, secret_keys
):
    zoom_platform.account = ACCOUNTS["riverside"]
    response = client.get(begin(client))

    assert response.status_code == 302
    assert response.headers["Location"] == "/console/"
    [practice] = practices(db)
    assert (practice.platform, practice.account_id) == ("zoom", "zoom-acct-riverside")
    assert practice.name == "Riverside Therapy"
    assert practice.timezone == "America/New_York"
    assert practice.status == "active"
    [issued] = zoom_platform.tokens
    assert issued.access_token.encode() not in practice.platform_token
    assert issued.refresh_token.encode() not in practice.platform_token
    token = Vault(secret_keys).open(practice.platform_token)
    assert token["access_token"] == issued.access_token
    assert token["refresh_token"] == issued.refresh_token
    assert token["expires_at"] > 0
    [event] = db.scalars(select(InstallEvent)).all()
    assert (event.action, event.practice_id) == ("installed", practice.id)

    assert client.get("/setup").headers["Location"] == "/console/"
    setup = client.get("/console/")
    assert setup.status_code == 200
    page = setup.get_data(as_text=True)
    assert "Riverside Therapy" in page
    assert "Zoom" in page
    # The admin does it all in the console: no operator commands are handed out any more.
    assert "alliance-check" not in page
    # The admin's own identity is not the practice's business to display.
    assert "robin.admin@riverside.example" not in page
    assert setup.headers["Cache-Control"] == "no-store"
    assert setup.headers["Referrer-Policy"] == "no-referrer"


def test_replaying_the_callback_is_refused_and_changes_nothing(client, db, zoom_platform):
    callback = begin(client)
    assert client.get(callback).status_code == 302
    [before] = practices(db)
    sealed = before.platform_token

    again = client.get(callback)

    assert again.status_code == 400
    assert "start the installation again" in again.get_data(as_text=True)
    [after] = practices(db)
    assert (after.id, after.platform_token) == (before.id, sealed)
    assert db.scalar(select(func.count()).select_from(InstallEvent)) == 1
    assert len(zoom_platform.tokens) == 1


def test_a_replayed_code_fails_cleanly_even_with_a_fresh_state(app, db, zoom_platform):
    first, second = app.test_client(), app.test_client()
    callback = begin(first)
    assert first.get(callback).status_code == 302
    code = parse_qs(urlsplit(callback).query)["code"][0]

    # Someone with their own fresh state pastes the code that was already exchanged.
    fresh_state = parse_qs(urlsplit(begin(second)).query)["state"][0]
    replay = second.get(f"/oauth/callback?code={code}&state={fresh_state}")

    assert replay.status_code == 400
    assert "Nothing was installed" in replay.get_data(as_text=True)
    assert len(practices(db)) == 1
    assert second.get("/setup").status_code == 401
    # The server treats a replayed code as theft and revokes what the code gave.
    assert zoom_platform.live_tokens() == []


@pytest.mark.parametrize(
    "query",
    [
        "code=abc&state=forged-state-value",
        "code=abc",
        "state=",
        "",
    ],
    ids=["forged state", "missing state", "empty state", "nothing"],
)
def test_bad_state_is_a_friendly_400_and_stores_nothing(client, db, zoom_platform, query):
    begin(client)

    response = client.get(f"/oauth/callback?{query}")

    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "Nothing was installed" in response.get_data(as_text=True)
    assert practices(db) == []
    assert zoom_platform.tokens == []


def test_callback_without_an_install_started_in_this_browser_is_refused(client, db, zoom_platform):
    callback = begin(client)

    response = client.application.test_client().get(callback)

    assert response.status_code == 400
    assert practices(db) == []


def test_denied_consent_is_a_friendly_400_and_stores_nothing(client, db, zoom_platform):
    zoom_platform.deny_next()
    callback = begin(client)
    assert parse_qs(urlsplit(callback).query)["error"] == ["access_denied"]

    response = client.get(callback)

    assert response.status_code == 400
    assert "Installation cancelled" in response.get_data(as_text=True)
    assert practices(db) == []
    assert db.scalar(select(func.count()).select_from(InstallEvent)) == 0


def test_reauthorising_keeps_the_practice_and_makes_it_active(client, db, zoom_platform):
    client.get(begin(client))
    [practice] = practices(db)
    practice.status = "needs_reauth"
    practice.ehr_target = "ndjson:var/ehr"
    db.commit()

    client.get(begin(client))

    [again] = practices(db)
    assert again.id == practice.id
    assert again.status == "active"
    assert again.ehr_target == "ndjson:var/ehr"
    actions = db.scalars(select(InstallEvent.action).order_by(InstallEvent.created_at)).all()
    assert actions == ["installed", "reinstalled"]


def test_a_second_account_gets_its_own_practice(app, db, zoom_platform):
    for key in ("riverside", "harbour"):
        zoom_platform.account = ACCOUNTS[key]
        browser = app.test_client()
        browser.get(begin(browser))

    names = sorted((p.account_id, p.name, p.timezone) for p in practices(db))
    assert names == [
        ("zoom-acct-harbour", "Harbour Counselling", "Europe/London"),
        ("zoom-acct-riverside", "Riverside Therapy", "America/New_York"),
    ]


def test_identity_without_a_name_or_zone_gets_safe_defaults(client, db, zoom_platform):
    zoom_platform.account = ACCOUNTS["no_company"]
    client.get(begin(client))

    [practice] = practices(db)
    assert practice.name == "Zoom account zoom-acct-solo"
    assert practice.timezone == "UTC"


def test_setup_needs_the_admin_session(client, app, db, zoom_platform):
    assert client.get("/setup").status_code == 401
    client.get(begin(client))
    assert client.get("/setup").status_code == 302
    assert client.get("/console/").status_code == 200

    stranger = app.test_client()
    assert stranger.get("/setup").status_code == 401


def test_setup_session_expires(client, app, db, zoom_platform):
    client.get(begin(client))
    app.config["ADMIN_SESSION_HOURS"] = 0

    assert client.get("/setup").status_code == 401


@pytest.mark.parametrize("platform", ["standard", "teams", "zoom%00"])
def test_a_platform_that_is_not_configured_is_a_friendly_404(client, platform):
    response = client.get(f"/install/{platform}")

    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "cannot be installed" in response.get_data(as_text=True)


def test_zoom_without_a_client_id_is_not_installable(engine, config):
    app = create_app({**config, "ZOOM_CLIENT_ID": ""})

    assert app.test_client().get("/install/zoom").status_code == 404


def test_token_is_sealed_with_the_first_key_and_opens_after_rotation(client, db, secret_keys):
    client.get(begin(client))
    [practice] = practices(db)

    rotated = Vault(f"{Fernet.generate_key().decode()},{secret_keys}")

    assert rotated.open(practice.platform_token)["access_token"]
