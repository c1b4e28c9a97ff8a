"""GET/POST /q/<token>: the client's page, its errors, and the single-use gate."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from plugin.core.models import EhrWrite
from tests.support.backlog import FULL, INSTRUMENT
from tests.support.survey import csrf, submit


def test_page_renders_every_question_accessibly(client, link):
    path, _ = link
    response = client.get(path)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.count("<fieldset") == len(INSTRUMENT.choice_items)
    assert html.count("<legend>") == len(INSTRUMENT.choice_items)
    for item in INSTRUMENT.choice_items:
        assert item.text in html
        # Every radio sits inside its own <label>.
        assert len(re.findall(rf'<label><input type="radio" name="{item.link_id}"', html)) == len(
            item.options
        )
    assert '<textarea id="t-differently"' in html and 'for="t-differently"' in html


def test_page_is_small_private_and_self_contained(client, link):
    path, _ = link
    response = client.get(path)
    html = response.get_data(as_text=True)
    with client.get("/static/survey.css") as static:
        css = static.get_data()
    assert len(response.get_data()) + len(css) < 30 * 1024
    # No third-party requests: every src/href is local.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html
    for phi in ("sam.rivera", "2025550143", "Dr. Avery Quinn", "Patient/c1"):
        assert phi not in html
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_complete_answers_thank_the_client_and_queue_one_ehr_write(client, link, db):
    path, invitation = link
    response = submit(client, path, {**FULL, "differently": "More homework please"})
    assert response.status_code == 200
    assert "Thank you" in response.get_data(as_text=True)
    db.refresh(invitation)
    assert invitation.status == "answered"
    assert invitation.contact is None
    write = db.scalar(select(EhrWrite))
    assert write.invitation_id == invitation.id and write.status == "pending"
    assert b"More homework" not in write.bundle  # the queued bundle is encrypted


def test_second_submission_is_409(client, link, db):
    path, _ = link
    token = csrf(client, path)
    assert client.post(path, data={"csrf_token": token, **FULL}).status_code == 200
    again = client.post(path, data={"csrf_token": token, **FULL})
    assert again.status_code == 409
    assert "already submitted" in again.get_data(as_text=True).lower()
    assert len(db.scalars(select(EhrWrite)).all()) == 1


def test_expired_link_is_410(client, link, db):
    path, invitation = link
    token = csrf(client, path)
    invitation.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db.commit()
    assert client.get(path).status_code == 410
    assert client.post(path, data={"csrf_token": token, **FULL}).status_code == 410
    assert db.scalar(select(EhrWrite)) is None


@pytest.mark.parametrize("path", ["/q/not-a-token", "/q/" + "A" * 43, "/q/" + "x" * 5000])
def test_unknown_token_is_404_page(client, link, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "text/html"


def test_submission_without_csrf_token_is_refused(client, link, db):
    path, _ = link
    response = client.post(path, data=FULL)
    assert response.status_code == 400
    assert db.scalar(select(EhrWrite)) is None


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"goal-1": None}, "goal-1", "Please choose an answer."),
        ({"bond-2": "7"}, "bond-2", "Please choose one of the listed answers."),
        ({"differently": "x" * 1001}, "differently", "Please keep this under 1000 characters."),
    ],
)
def test_bad_answers_rerender_with_message_and_keep_what_was_given(
    client, link, db, change, field, message
):
    path, _ = link
    answers = {**FULL, "differently": "kept text"}
    answers.update(change)
    answers = {k: v for k, v in answers.items() if v is not None}
    response = submit(client, path, answers)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert f'<p class="error" id="e-{field}">{message}</p>' in html
    assert f'aria-describedby="e-{field}"' in html
    # What the client gave is still selected, apart from the field in error.
    kept = [k for k in FULL if k != field]
    for link_id in kept:
        assert re.search(rf'name="{link_id}" value="{FULL[link_id]}" required checked', html)
    if field != "differently":
        assert "kept text</textarea>" in html
    assert db.scalar(select(EhrWrite)) is None


def test_oversized_submission_is_413_page_and_changes_nothing(client, link, db):
    path, invitation = link
    response = client.post(
        path, data={"csrf_token": csrf(client, path), **FULL, "differently": "x" * 70_000}
    )
    assert response.status_code == 413
    assert response.mimetype == "text/html"
    db.refresh(invitation)
    assert invitation.status == "sent"
