"""A property-based fuzz of the JSON API from its own OpenAPI document (schemathesis).

Every generated call carries a live token of one practice. Whatever the input, the API must
answer without a server error, with a status, content type, headers and body its document
describes.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from plugin.admin.api.openapi import document
from tests.support.api import token_for

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def bearer(db, practice) -> dict:
    """Return the Authorization header of a live token of the practice "demo"."""
    return {"Authorization": f"Bearer {token_for(db, practice, name='fuzz')}"}


# The document the app serves (test_api checks they are the same). Loaded at import, not
# through schemathesis.pytest.from_fixture, which needs a pytest Function's `_nodeid` that
# pytest 9.2 no longer has.
schema = schemathesis.openapi.from_dict(document())


@schema.parametrize()
# Bounded and repeatable: a fixed number of examples per call, derived from the test's name.
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    # One app and one rolled-back transaction serve all of a call's examples, on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_matches_the_document(case, app, bearer):
    case.call_and_validate(app=app, headers=bearer, checks=CHECKS)
