"""Shared foundations: config, database, models, crypto, logs, errors, the table-as-queue, i18n."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Bind the database, the vault, the error pages and the translations; storage first."""
    from plugin.core import crypto, db, errors, i18n

    for part in (
        db,
        crypto,
        errors,
        i18n,
    ):
        part.init_app(app)
