"""The questionnaire page follows the invitation's language; other pages the browser's."""

import re

import pytest

from fhir_mappings.instrument import load_bundled

SPANISH = load_bundled(language="es")
ENGLISH = load_bundled()


def test_spanish_invitation_gets_a_spanish_page(client, practice, invitations):
    _, token = invitations(practice, language="es")
    # The invitation's language wins over the browser's.
    response = client.get(f"/q/{token}", headers={"Accept-Language": "en-US,en;q=0.9"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<html lang="es">' in html
    assert "Unas preguntas rápidas sobre su última sesión con Riverside Therapy" in html
    assert "Enviar mis respuestas" in html and "(opcional)" in html
    for item in SPANISH.items:
        assert item.text in html
    for option in SPANISH.items[0].options:
        assert f"<span>{option.display}</span>" in html
    assert ENGLISH.items[0].text not in html and "Send my answers" not in html


@pytest.mark.parametrize("language", ["en", "fr"])
def test_other_invitations_get_an_english_page(client, practice, invitations, language):
    _, token = invitations(practice, language=language)
    html = client.get(f"/q/{token}", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert '<html lang="en">' in html
    for item in ENGLISH.items:
        assert item.text in html
    assert "Send my answers" in html


def test_spanish_errors_and_thanks(client, practice, invitations):
    _, token = invitations(practice, language="es")
    page = client.get(f"/q/{token}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    answers = {item.link_id: "2" for item in ENGLISH.choice_items}
    missing = {k: v for k, v in answers.items() if k != "goal-1"}
    html = client.post(f"/q/{token}", data={"csrf_token": csrf, **missing}).get_data(as_text=True)
    assert "Revise 1 respuesta" in html and "Elija una respuesta." in html
    long = {**answers, "differently": "x" * 1001}
    html = client.post(f"/q/{token}", data={"csrf_token": csrf, **long}).get_data(as_text=True)
    assert "Escriba menos de 1000 caracteres." in html
    done = client.post(f"/q/{token}", data={"csrf_token": csrf, **answers})
    assert done.status_code == 200
    assert "Sus respuestas se han enviado a su terapeuta" in done.get_data(as_text=True)


def test_answers_on_the_spanish_page_reach_the_ehr_in_the_original_wording(
    client, practice, invitations, app, db
):
    from sqlalchemy import select

    from plugin.core.models import EhrWrite

    invitation, token = invitations(practice, language="es")
    page = client.get(f"/q/{token}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    answers = {item.link_id: "3" for item in ENGLISH.choice_items}
    client.post(f"/q/{token}", data={"csrf_token": csrf, **answers})
    write = db.scalar(select(EhrWrite).where(EhrWrite.invitation_id == invitation.id))
    bundle = str(app.extensions["vault"].open(write.bundle))
    assert ENGLISH.items[0].text in bundle and "Mostly" in bundle
    assert SPANISH.items[0].text not in bundle


@pytest.mark.parametrize(
    ("accept", "title"), [("es-ES,es;q=0.9", "Enlace no encontrado"), ("de", "Link not found")]
)
def test_pages_without_an_invitation_follow_the_browser(client, accept, title):
    response = client.get("/q/not-a-token", headers={"Accept-Language": accept})
    assert response.status_code == 404
    assert title in response.get_data(as_text=True)
