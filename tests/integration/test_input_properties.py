"""Property tests through the app: signed webhooks and survey forms of any shape never get a 5xx.

A 5xx tells a platform to retry and a client that the page broke; for input that can never
be right the answer must be a 4xx (or, for a form, the page again with its errors).
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.backlog import FULL
from tests.support.data import load_json
from tests.support.payloads import JSON_VALUES, STANDARD_PATHS, ZOOM_PATHS, replace_somewhere
from tests.support.survey import csrf
from tests.support.zoom_api import ZOOM_SECRETS, ZoomWebhooks, zoom_payload


@pytest.fixture
def config(config):
    """Accept Zoom deliveries too."""
    return {**config, "ZOOM_WEBHOOK_SECRET": ZOOM_SECRETS["secret_token"]}


# Each example reuses the test's app and its rolled-back transaction; rows it adds are fine.
PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@PROPERTY
@given(
    sample=st.sampled_from(["webhooks/session_ended.json", "webhooks/app_uninstalled.json"]),
    path=st.sampled_from(STANDARD_PATHS),
    value=JSON_VALUES,
)
def test_signed_standard_webhooks_of_any_shape_never_get_a_5xx(
    webhooks, practice, sample, path, value
):
    response = webhooks.post(replace_somewhere(load_json(sample), path, value))
    assert response.status_code in (204, 400), response.get_data(as_text=True)


@PROPERTY
@given(
    sample=st.sampled_from(["meeting_ended.json", "app_deauthorized.json", "url_validation.json"]),
    path=st.sampled_from(ZOOM_PATHS),
    value=JSON_VALUES,
)
def test_signed_zoom_webhooks_of_any_shape_never_get_a_5xx(client, sample, path, value):
    response = ZoomWebhooks(client).post(replace_somewhere(zoom_payload(sample), path, value))
    assert response.status_code in (200, 204, 400), response.get_data(as_text=True)


# Form fields as a browser could send them: the questionnaire's own names and any others,
# with any text, NULs and characters outside the Basic Multilingual Plane included.
FORM = st.dictionaries(
    st.sampled_from(sorted(FULL)) | st.text(min_size=1, max_size=12),
    st.text(max_size=60) | st.sampled_from(sorted(set(FULL.values()))),
    max_size=len(FULL) + 2,
)


@pytest.fixture
def form_token(client, link) -> str:
    """Open the page once: its CSRF token stays valid for the session's later posts."""
    return csrf(client, link[0])


@PROPERTY
@given(form=FORM)
def test_survey_forms_of_any_shape_never_get_a_5xx(client, link, form_token, form):
    response = client.post(link[0], data={**form, "csrf_token": form_token})
    # 200 thanks, 422 the page again with errors, 409 once an earlier example answered it.
    assert response.status_code in (200, 409, 422), response.status_code
