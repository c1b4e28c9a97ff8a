"""Shared foundations: config, database, models, crypto, logs, errors, the table-as-queue, i18n."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Bind the database, the vault, the error pages, translations, HTTPS headers, body timeout."""
    from plugin.core import crypto, db, errors, https, i18n, slow_clients

    for part in (
        db,
        crypto,
        errors,
        i18n,
        https,
        slow_clients,
    ):
        part.init_app(app)
