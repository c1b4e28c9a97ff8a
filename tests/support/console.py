"""Sign an admin in to the console through the test platform's consent, as a browser would."""

import re

import requests

from tests.support.install import ACCOUNTS


def sign_in(client, platform_server, account: str = "riverside", install: bool = True):
    """Install (or sign in) as ACCOUNTS[account] and return the callback's response."""
    platform_server.account = ACCOUNTS[account]
    started = client.get("/install/zoom" if install else "/login/zoom")
    consent = requests.get(started.headers["Location"], allow_redirects=False, timeout=10)
    return client.get(consent.headers["Location"])


def csrf_token(client, path: str = "/console/") -> str:
    """Return the CSRF token a console page's forms carry."""
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
