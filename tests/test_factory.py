"""create_app: layered settings and a refusal to start without secrets."""

import threading

import pytest
from cryptography.fernet import Fernet

from plugin import create_app
from plugin.core.config import ConfigError


def test_app_without_secrets_refuses_to_start_and_names_them(tmp_path, monkeypatch):
    for name in ("SECRET_KEY", "SECRET_KEYS", "STANDARD_WEBHOOK_SECRET"):
        monkeypatch.delenv(f"ALLIANCE_{name}", raising=False)
    with pytest.raises(ConfigError) as raised:
        create_app({"INSTANCE_PATH": str(tmp_path)})
    message = str(raised.value)
    for name in ("ALLIANCE_SECRET_KEY", "ALLIANCE_SECRET_KEYS", "ALLIANCE_STANDARD_WEBHOOK_SECRET"):
        assert name in message


def test_layers_apply_in_order_instance_file_then_environment_then_mapping(
    tmp_path, monkeypatch, config
):
    (tmp_path / "alliance.toml").write_text(
        'MAIL_FROM = "from-instance@example.org"\nBATCH_SIZE = 7\nSMTP_TIMEOUT_SECONDS = 24\n'
    )
    monkeypatch.setenv("ALLIANCE_BATCH_SIZE", "9")
    monkeypatch.setenv("ALLIANCE_SMTP_TIMEOUT_SECONDS", "48")
    app = create_app({**config, "INSTANCE_PATH": str(tmp_path), "SMTP_TIMEOUT_SECONDS": 12})
    assert app.config["MAIL_FROM"] == "from-instance@example.org"  # instance over defaults
    assert app.config["BATCH_SIZE"] == 9  # environment over instance, parsed as a number
    assert app.config["SMTP_TIMEOUT_SECONDS"] == 12  # the caller's mapping over everything
    assert app.config["DELIVERY_MAX_ATTEMPTS"] == 6  # untouched default from config/default.toml


def test_embedded_defaults_live_under_the_instance_folder(tmp_path, config):
    app = create_app(
        {
            **config,
            "INSTANCE_PATH": str(tmp_path),
            "DATABASE_URL": "",
            "OUTBOX_DIR": "",
            "PUBLIC_BASE_URL": "",
            "PORT": 5077,
        }
    )
    assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'alliance.db'}"
    assert app.config["OUTBOX_DIR"] == str(tmp_path / "outbox")
    assert app.config["PUBLIC_BASE_URL"] == "http://127.0.0.1:5077"


@pytest.mark.parametrize(
    ("key", "value"),
    [("SECRET_KEYS", "not-a-fernet-key"), ("STANDARD_WEBHOOK_SECRET", "whsec_dG9vc2hvcnQ=")],
)
def test_malformed_secret_fails_at_start_without_echoing_it(config, key, value):
    with pytest.raises(ValueError) as raised:
        create_app({**config, key: value})
    assert value not in str(raised.value)


def test_old_fernet_keys_still_decrypt_after_rotation(config):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = create_app({**config, "SECRET_KEYS": old}).extensions["vault"].seal({"email": "a@b"})
    rotated_app = create_app({**config, "SECRET_KEYS": f"{new},{old}"})
    vault = rotated_app.extensions["vault"]
    assert vault.open(sealed) == {"email": "a@b"}
    # New data is sealed with the first key: readable without the old one.
    resealed = vault.seal({"email": "c@d"})
    assert create_app({**config, "SECRET_KEYS": new}).extensions["vault"].open(resealed) == {
        "email": "c@d"
    }


def test_healthz(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_the_web_app_never_starts_a_scheduler(config, monkeypatch):
    # gunicorn imports plugin:create_app() once per web process: jobs must not run there,
    # whatever the environment says, or N processes would each run every job.
    monkeypatch.setenv("ALLIANCE_SCHEDULER_ENABLED", "true")
    app = create_app(config)
    assert "scheduler" not in app.extensions
    assert not [t for t in threading.enumerate() if "APScheduler" in t.name]


@pytest.mark.parametrize(
    "base_url, expected",
    [("https://alliance.example", "max-age=31536000"), ("http://localhost", None)],
)
def test_hsts_is_sent_only_when_served_over_https(config, base_url, expected):
    app = create_app({**config, "PUBLIC_BASE_URL": base_url})
    response = app.test_client().get("/healthz")
    assert response.headers.get("Strict-Transport-Security") == expected


@pytest.mark.parametrize("codes", ['["sms"]', '["http://hl7.org/fhir/contact-point-system|"]'])
def test_sms_consent_codes_that_are_not_system_bar_code_refuse_to_start(config, monkeypatch, codes):
    monkeypatch.setenv("ALLIANCE_EHR_SMS_CONSENT_CODES", codes)
    layers = {k: v for k, v in config.items() if k != "EHR_SMS_CONSENT_CODES"}
    with pytest.raises(ConfigError, match="ALLIANCE_EHR_SMS_CONSENT_CODES"):
        create_app(layers)
