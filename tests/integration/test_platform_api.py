"""PlatformClient against the real platform authorization server: bearer calls and token refresh."""

import time

import pytest
import requests
from sqlalchemy import select

from plugin.core.models import InstallEvent, Practice
from plugin.install.platform_api import (
    PlatformAuthError,
    PlatformClient,
    PlatformError,
    PlatformUnavailable,
)
from tests.support.install import begin
from tests.support.platform_server import zoom_settings
from tests.support.ports import free_port


@pytest.fixture
def config(config, zoom_platform):
    """Make Zoom installable against the test platform server."""
    return {**config, **zoom_settings(zoom_platform)}


@pytest.fixture
def practice(client, db, zoom_platform) -> Practice:
    """Install the platform's default account through the real consent flow."""
    client.get(begin(client))
    return db.scalar(select(Practice).where(Practice.platform == "zoom"))


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def platform_client(app, db, practice, http) -> PlatformClient:
    return PlatformClient(db, practice, config=app.config, vault=app.extensions["vault"], http=http)


def stored_token(app, db, practice) -> dict:
    db.refresh(practice)
    return app.extensions["vault"].open(practice.platform_token)


def set_expiry(app, db, practice, expires_at: float) -> None:
    vault = app.extensions["vault"]
    token = vault.open(practice.platform_token)
    practice.platform_token = vault.seal({**token, "expires_at": int(expires_at)})
    db.commit()


def test_get_json_sends_the_bearer_token_and_returns_the_object(app, db, practice, http):
    answer = platform_client(app, db, practice, http).get_json("/echo", {"page_size": "30"})

    assert answer == {"args": {"page_size": "30"}, "account_id": "zoom-acct-1"}


def test_a_token_expiring_within_a_minute_is_refreshed_first_and_stored_sealed(
    app, db, practice, http, zoom_platform
):
    before = stored_token(app, db, practice)
    set_expiry(app, db, practice, time.time() + 30)

    platform_client(app, db, practice, http).get_json("/echo")

    after = stored_token(app, db, practice)
    assert after["access_token"] != before["access_token"]
    # Rotating refresh tokens: the new one is kept, the old one no longer works.
    assert after["refresh_token"] != before["refresh_token"]
    assert after["expires_at"] > time.time() + 3000
    assert after["access_token"].encode() not in practice.platform_token
    assert len(zoom_platform.tokens) == 2
    assert zoom_platform.tokens[0].refresh_revoked


def test_a_token_with_time_left_is_used_as_it_is(app, db, practice, http, zoom_platform):
    before = stored_token(app, db, practice)

    platform_client(app, db, practice, http).get_json("/echo")

    assert stored_token(app, db, practice) == before
    assert len(zoom_platform.tokens) == 1


def test_a_401_refreshes_once_and_retries(app, db, practice, http, zoom_platform):
    zoom_platform.expire_access_tokens()

    answer = platform_client(app, db, practice, http).get_json("/echo")

    assert answer["account_id"] == "zoom-acct-1"
    assert len(zoom_platform.tokens) == 2
    assert stored_token(app, db, practice)["access_token"] == zoom_platform.tokens[1].access_token


def test_a_revoked_refresh_token_marks_the_installation_needs_reauth(
    app, db, practice, http, zoom_platform
):
    zoom_platform.revoke_refresh_tokens()
    zoom_platform.expire_access_tokens()
    client = platform_client(app, db, practice, http)

    with pytest.raises(PlatformAuthError) as raised:
        client.get_json("/echo")

    assert raised.value.retryable is False
    db.expire_all()
    assert db.get(Practice, practice.id).status == "needs_reauth"
    event = db.scalar(select(InstallEvent).where(InstallEvent.action == "needs_reauth"))
    assert event.practice_id == practice.id
    assert event.detail == {"reason": "invalid_grant"}
    # From then on the platform is not asked at all until the admin re-authorises.
    issued = len(zoom_platform.tokens)
    with pytest.raises(PlatformAuthError):
        platform_client(app, db, db.get(Practice, practice.id), http).get_json("/echo")
    assert len(zoom_platform.tokens) == issued


def test_a_worker_that_finds_the_token_already_refreshed_does_not_refresh_again(
    app, db, practice, http, zoom_platform
):
    set_expiry(app, db, practice, time.time() + 30)
    with app.extensions["db"].sessions() as other:
        stale = other.get(Practice, practice.id)
        other.expunge(stale)
        platform_client(app, db, practice, http).get_json("/echo")
        assert len(zoom_platform.tokens) == 2

        # The other worker still holds the old token; spending its rotated refresh token would
        # be refused and wrongly mark the practice needs_reauth.
        stale_session_practice = other.merge(stale, load=False)
        PlatformClient(
            other,
            stale_session_practice,
            config=app.config,
            vault=app.extensions["vault"],
            http=http,
        ).get_json("/echo")

    assert len(zoom_platform.tokens) == 2
    assert db.get(Practice, practice.id).status == "active"


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (500, PlatformUnavailable, True),
        (502, PlatformUnavailable, True),
        (503, PlatformUnavailable, True),
        (429, PlatformUnavailable, True),
        (404, PlatformError, False),
        (403, PlatformError, False),
        (400, PlatformError, False),
    ],
)
def test_platform_errors_say_whether_to_retry(app, db, practice, http, status, kind, retryable):
    with pytest.raises(kind) as raised:
        platform_client(app, db, practice, http).get_json(f"/status/{status}")

    assert raised.value.retryable is retryable
    assert raised.value.status == status
    assert raised.value.response.status_code == status


def test_an_unreachable_platform_is_retryable(app, db, practice, http):
    app.config["ZOOM_API_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v2"

    with pytest.raises(PlatformUnavailable) as raised:
        platform_client(app, db, practice, http).get_json("/echo")

    assert raised.value.retryable
    assert raised.value.status is None


def test_an_unreachable_token_endpoint_leaves_the_installation_active(app, db, practice, http):
    set_expiry(app, db, practice, time.time() - 10)
    app.config["ZOOM_TOKEN_URL"] = f"http://127.0.0.1:{free_port()}/token"

    with pytest.raises(PlatformUnavailable):
        platform_client(app, db, practice, http).get_json("/echo")

    db.expire_all()
    assert db.get(Practice, practice.id).status == "active"


def test_a_practice_added_by_hand_has_no_platform_token(app, db, http):
    from plugin.install.practices import add_practice

    manual = add_practice(
        db,
        account_id="manual",
        name="Hand Made",
        timezone="UTC",
        ehr_target="ndjson:var/ehr",
        root=app.instance_path,
    )
    manual.platform = "zoom"
    db.commit()

    with pytest.raises(PlatformAuthError):
        platform_client(app, db, manual, http).get_json("/echo")


def test_after_key_rotation_old_tokens_work_and_refreshed_ones_use_the_new_key(
    app, db, practice, http, secret_keys
):
    from cryptography.fernet import Fernet

    from plugin.core.crypto import Vault

    set_expiry(app, db, practice, time.time() + 30)
    new_key = Fernet.generate_key().decode()
    # What a restart with ALLIANCE_SECRET_KEYS="<new>,<old>" builds.
    app.extensions["vault"] = Vault(f"{new_key},{secret_keys}")

    platform_client(app, db, practice, http).get_json("/echo")

    db.refresh(practice)
    assert Vault(new_key).open(practice.platform_token)["access_token"]
    with pytest.raises(ValueError):
        Vault(secret_keys).open(practice.platform_token)
