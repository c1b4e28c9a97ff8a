"""Shared foundations: config, database, models, crypto, logs, errors, the table-as-queue, i18n."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Bind the database, the vault, the error pages, the translations and HTTPS headers."""
    from plugin.core import crypto, db, errors, https, i18n

    for part in (
        db,
        crypto,
        errors,
        i18n,
        https,
    ):
        part.init_app(app)
