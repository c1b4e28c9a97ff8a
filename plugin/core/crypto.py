"""Encrypt data at rest and mint link tokens of which only a hash is kept."""

import hashlib
import json
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app

# 32 bytes = 256 bits from the OS CSPRNG; the brief asks for at least 128.
TOKEN_BYTES = 32


class Vault:
    """Encrypt and decrypt JSON with MultiFernet: the first key encrypts, all keys decrypt."""

    def __init__(self, keys: str):
        try:
            self._fernet = MultiFernet([Fernet(k.strip()) for k in keys.split(",") if k.strip()])
        except (ValueError, TypeError) as exc:
            # Say which setting is wrong, never echo key material.
            raise ValueError("ALLIANCE_SECRET_KEYS must be comma-separated Fernet keys") from exc

    def seal(self, value: object) -> bytes:
        """Encrypt a JSON-serialisable value."""
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode())

    def open(self, ciphertext: bytes) -> object:
        """Decrypt a value sealed with any of the configured keys."""
        try:
            return json.loads(self._fernet.decrypt(ciphertext))
        except InvalidToken as exc:
            raise ValueError("ciphertext does not match any configured key") from exc


def init_app(app: Flask) -> None:
    """Build the app's Vault from ALLIANCE_SECRET_KEYS."""
    app.extensions["vault"] = Vault(app.config["SECRET_KEYS"])


def vault() -> Vault:
    """Return the current app's Vault."""
    return current_app.extensions["vault"]


def new_token() -> tuple[str, str]:
    """Return a fresh URL-safe link token and the hash to store for it."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    """Hash a link token; a plain SHA-256 suffices because the token is 256 random bits."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_fernet_key() -> str:
    """Return a new Fernet key for ALLIANCE_SECRET_KEYS."""
    return Fernet.generate_key().decode()
