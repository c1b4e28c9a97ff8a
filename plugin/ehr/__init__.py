"""EHR: SMART tokens and keys, the EHR gateway (write and search), the write drain."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Publish the JWKS and add the `keys`, `ehr` and `ehr-writes` commands."""
    from plugin.ehr import cli, keys

    for part in (
        keys,
        cli,
    ):
        part.init_app(app)
