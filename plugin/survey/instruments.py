"""The questionnaires this deployment can send, keyed by their canonical url|version."""

from flask import Flask, current_app

from fhir_mappings.instrument import load_bundled
from fhir_mappings.model import Instrument


def init_app(app: Flask) -> None:
    """Load the bundled instrument once at start-up."""
    bundled = load_bundled()
    app.extensions["instruments"] = {bundled.canonical: bundled}
    app.extensions["default_instrument"] = bundled.canonical


def default_instrument() -> Instrument:
    """Return the instrument new invitations use."""
    instruments = current_app.extensions["instruments"]
    return instruments[current_app.extensions["default_instrument"]]


def instrument_for(canonical: str) -> Instrument:
    """Return the instrument an invitation was created with."""
    return current_app.extensions["instruments"][canonical]
