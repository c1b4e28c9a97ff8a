"""Hypothesis strategies for hostile webhook payloads: any JSON value at any field of a sample."""

import json

from hypothesis import strategies as st

# Strings a hostile sender would try: lone surrogates (hypothesis leaves them out of text()
# unless asked), instants at the edges of what datetime and UTC can hold, absurd zone names.
HOSTILE_TEXT = st.text(st.characters(categories=["Cs", "L", "N"]), max_size=10) | st.sampled_from(
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "9999-06-01T10:00:00Z",
        "1970-01-01T00:00:00Z",
        "A" * 300,
        "../../etc/passwd",
    ]
)
# Anything JSON can carry, the hostile strings above included and drawn often.
JSON_VALUES = HOSTILE_TEXT | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40) | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


def replace_somewhere(document: dict, path: list[str], value: object) -> bytes:
    """Return the document as JSON with the field at path (existing or new) set to value."""
    node = document
    for key in path[:-1]:
        child = node.get(key) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            break
        node = child
    node[path[-1]] = value
    return json.dumps(document).encode()


STANDARD_PATHS = [
    ["type"],
    ["data"],
    ["data", "account_id"],
    ["data", "session_id"],
    ["data", "started_at"],
    ["data", "ended_at"],
    ["data", "practitioner"],
    ["data", "client"],
    ["data", "client", "email"],
    ["data", "client", "phone"],
    ["data", "client", "timezone"],
    ["data", "client", "language"],
    ["data", "encounter"],
    ["data", "extra"],
]
ZOOM_PATHS = [
    ["event"],
    ["payload"],
    ["payload", "account_id"],
    ["payload", "plainToken"],
    ["payload", "object"],
    ["payload", "object", "uuid"],
    ["payload", "object", "start_time"],
    ["payload", "object", "end_time"],
]
