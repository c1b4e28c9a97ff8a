"""Shared foundations: config, database, models, crypto, logs, errors, the table-as-queue, i18n."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Bind the database, the vault, errors, translations, HTTPS headers, /metrics, body limits."""
    from plugin.core import body_limit, crypto, db, errors, https, i18n, metrics, slow_clients

    for part in (
        db,
        crypto,
        errors,
        i18n,
        https,
        metrics,
        # Innermost first: the stall timeout must wrap the body before the limit reads it.
        body_limit,
        slow_clients,
    ):
        part.init_app(app)
