"""Install a practice through the test platform's consent, as an admin's browser would."""

import requests

from tests.support.data import load_json

ACCOUNTS = load_json("install/accounts.json")


def begin(client, platform: str = "zoom") -> str:
    """Start an install and follow the platform's consent; return the callback URL it gives."""
    started = client.get(f"/install/{platform}")
    assert started.status_code == 302
    consent = requests.get(started.headers["Location"], allow_redirects=False, timeout=10)
    assert consent.status_code == 302
    return consent.headers["Location"]
