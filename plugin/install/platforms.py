"""The platform table from manifest.json, each platform's settings, and the OAuth client registry.

manifest.json lives at the repository root, where an operator registering the app reads it,
and ships inside the package like config/ (plugin.core.config.packaged).
ALLIANCE_MANIFEST_PATH points at another one.
"""

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
from authlib.integrations.flask_client import OAuth
from flask import Flask, current_app

from plugin.core.config import packaged
from webhooks import ADAPTERS

SCHEMA = packaged("_config", "manifest.schema.json")
# The token exchange and every platform call give up after this; the admin can retry.
OAUTH_TIMEOUT = (5, 15)


class ManifestError(ValueError):
    """The manifest, or the deployment URL it is printed for, is not valid."""


def manifest_path() -> Path:
    """Return where manifest.json is read from."""
    return Path(os.environ.get("ALLIANCE_MANIFEST_PATH") or packaged("manifest.json"))


@functools.cache
def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError(
            f"{path} not found: set ALLIANCE_MANIFEST_PATH to the manifest"
        ) from exc


def load_manifest() -> dict:
    """Return the committed manifest (read once per process; callers must not change it)."""
    return _load(manifest_path())


def platform_table() -> dict:
    """Return the manifest's platform table: {"standard": {...}, "zoom": {...}}."""
    return load_manifest()["platforms"]


def validate_manifest(manifest: dict) -> None:
    """Raise ManifestError unless the manifest fits the schema and the webhook adapters."""
    schema = json.loads(SCHEMA.read_text("utf-8"))
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(manifest), key=lambda e: e.json_path
    )
    if errors:
        raise ManifestError("; ".join(f"{e.json_path}: {e.message}" for e in errors[:5]))
    table = manifest["platforms"]
    if set(table) != set(ADAPTERS):
        raise ManifestError(
            f"platforms {sorted(table)} must match the webhook adapters {sorted(ADAPTERS)}"
        )
    for name, entry in table.items():
        if urlsplit(entry["webhook"]["url"]).path != f"/webhooks/{name}":
            raise ManifestError(f"$.platforms.{name}.webhook.url must end in /webhooks/{name}")
        if urlsplit(entry["install_url"]).path != f"/install/{name}":
            raise ManifestError(f"$.platforms.{name}.install_url must end in /install/{name}")


def check_base_url(base_url: str | None) -> str:
    """Return an https origin like https://alliance.example.org, or raise ManifestError."""
    parts = urlsplit((base_url or "").strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ManifestError("the base URL must start with https:// and name a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ManifestError(
            "the base URL must be an origin only (https://host[:port]): no path, query or login"
        )
    try:
        parts.port  # noqa: B018  (raises ValueError for a malformed port)
    except ValueError as exc:
        raise ManifestError("the base URL has an invalid port") from exc
    return f"https://{parts.netloc}"


def render_manifest(base_url: str) -> dict:
    """Return the manifest for one deployment: every URL of ours absolute under base_url."""
    origin = check_base_url(base_url)
    manifest = json.loads(json.dumps(load_manifest()))
    manifest["base_url"] = origin
    manifest["urls"] = {key: origin + path for key, path in manifest["urls"].items()}
    for entry in manifest["platforms"].values():
        entry["install_url"] = origin + entry["install_url"]
        entry["webhook"]["url"] = origin + entry["webhook"]["url"]
    validate_manifest(manifest)
    return manifest


@dataclass(frozen=True)
class PlatformSettings:
    """One platform's OAuth and API settings: the manifest entry with config overrides applied."""

    name: str
    display_name: str
    client_id: str | None
    client_secret: str | None
    authorize_url: str | None
    token_url: str | None
    revoke_url: str | None
    api_base_url: str | None
    auth_method: str
    scope: str
    identity: dict

    @property
    def installable(self) -> bool:
        """Whether an admin can install it: credentials and every endpoint are configured."""
        return bool(self.client_id and self.authorize_url and self.token_url and self.api_base_url)


def settings_for(config, name: str) -> PlatformSettings | None:
    """Return the settings of platform `name`, or None when the manifest has no such platform."""
    entry = platform_table().get(name)
    if entry is None:
        return None
    oauth = entry["oauth"]
    prefix = name.upper()

    def setting(key: str, default: str | None) -> str | None:
        return config.get(f"{prefix}_{key}") or default

    return PlatformSettings(
        name=name,
        display_name=entry["display_name"],
        client_id=setting("CLIENT_ID", None),
        client_secret=setting("CLIENT_SECRET", None),
        authorize_url=setting("AUTHORIZE_URL", oauth["authorize_url"]),
        token_url=setting("TOKEN_URL", oauth["token_url"]),
        revoke_url=setting("REVOKE_URL", oauth["revoke_url"]),
        api_base_url=setting("API_BASE_URL", entry["api_base_url"]),
        auth_method=oauth["token_endpoint_auth_method"],
        scope=" ".join(s["scope"] for s in oauth["scopes"]),
        identity=entry["identity"],
    )


def oauth_client(name: str):
    """Return the current app's authlib client for an installable platform, or None."""
    return current_app.extensions["platform_oauth"].create_client(name)


def init_app(app: Flask) -> None:
    """Register one authlib OAuth client per installable platform."""
    # authlib's OAuth holds one app and caches the clients built from its config, so each app
    # gets its own registry rather than sharing a module-level one (tests build many apps).
    registry = OAuth(app)
    for name in platform_table():
        settings = settings_for(app.config, name)
        if not settings.installable:
            continue
        registry.register(
            name,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            authorize_url=settings.authorize_url,
            access_token_url=settings.token_url,
            api_base_url=settings.api_base_url,
            client_kwargs={
                "scope": settings.scope,
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": settings.auth_method,
                "default_timeout": OAUTH_TIMEOUT,
            },
        )
    app.extensions["platform_oauth"] = registry
