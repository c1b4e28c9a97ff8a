"""Load settings in layers: defaults, instance file, environment, then the caller's mapping."""

import os
import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from flask import Flask

INSTANCE_FILE = "alliance.toml"

# Without these the service cannot keep its promises (signed links, encrypted contacts,
# verified webhooks), so it refuses to start rather than fall back to a guessable default.
REQUIRED_SECRETS = ("SECRET_KEY", "SECRET_KEYS", "STANDARD_WEBHOOK_SECRET")


def packaged(*parts: str) -> Traversable:
    """Return a data file that ships inside the plugin package, checkout and wheel alike.

    The top-level config/ and manifest.json are plugin/_config and plugin/manifest.json there:
    symlinks in a checkout, copies in a wheel (docs/architecture.md, "The build").
    """
    return resources.files("plugin").joinpath(*parts)


def instance_path(overrides: dict | None = None) -> Path:
    """Return the instance folder: INSTANCE_PATH, else ALLIANCE_INSTANCE_PATH, else ./var."""
    chosen = (overrides or {}).get("INSTANCE_PATH") or os.environ.get("ALLIANCE_INSTANCE_PATH")
    # The working directory, not the code's: an installed package must not write into
    # site-packages.
    return Path(chosen or Path.cwd() / "var").resolve()


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the setting, never its value."""


def load_config(app: Flask, overrides: dict | None = None) -> None:
    """Fill app.config from every layer and derive the paths that default to the instance."""
    app.config.from_mapping(tomllib.loads(packaged("_config", "default.toml").read_text("utf-8")))
    app.config.from_file(
        str(Path(app.instance_path) / INSTANCE_FILE), load=tomllib.load, text=False, silent=True
    )
    app.config.from_prefixed_env("ALLIANCE")
    if overrides:
        app.config.from_mapping(overrides)

    instance = Path(app.instance_path)
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = f"sqlite:///{instance / 'alliance.db'}"
    if not app.config["PUBLIC_BASE_URL"]:
        app.config["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{app.config['PORT']}"
    if not app.config["OUTBOX_DIR"]:
        app.config["OUTBOX_DIR"] = str(instance / "outbox")
    _check_secrets(app)


def _check_secrets(app: Flask) -> None:
    """Raise ConfigError naming every required secret that is missing."""
    missing = [name for name in REQUIRED_SECRETS if not app.config.get(name)]
    if missing:
        names = ", ".join(f"ALLIANCE_{name}" for name in missing)
        raise ConfigError(f"missing required secret(s): {names} (see README, Configuration)")
