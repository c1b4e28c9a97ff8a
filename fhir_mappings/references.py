"""Point a Bundle's urn:uuid references at the ids a server (or sink) gave each resource."""

import json
from typing import Any


def rewrite(resource: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """Return a copy of resource with every reference in `ids` (fullUrl -> Type/id) replaced."""
    text = json.dumps(resource)
    for full_url, reference in ids.items():
        # Quoted on both sides, so only whole reference values are replaced.
        text = text.replace(json.dumps(full_url), json.dumps(reference))
    return json.loads(text)
