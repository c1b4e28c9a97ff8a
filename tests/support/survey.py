"""Answer the questionnaire page as a browser would: read its CSRF token, post the form."""

import re


def csrf(client, path) -> str:
    """Open the page like a browser and return its CSRF token."""
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def submit(client, path, answers) -> object:
    """Post answers with a valid CSRF token."""
    return client.post(path, data={"csrf_token": csrf(client, path), **answers})
