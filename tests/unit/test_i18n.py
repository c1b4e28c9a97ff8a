"""The Spanish catalogue is complete and compiled, and languages are chosen sensibly."""

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from flask_babel import force_locale, gettext

from fhir_mappings import scoring
from fhir_mappings.instrument import load_bundled
from plugin.core.i18n import choose_language
from plugin.delivery.messages import is_gsm7, to_gsm7
from plugin.survey.views import VALIDATION_MESSAGES

ROOT = Path(__file__).parents[2]
TRANSLATIONS = ROOT / "plugin" / "translations"


def read_catalogue(path: Path):
    """Read a committed .po or .pot file."""
    with path.open("rb") as handle:
        return read_po(handle)


def spanish():
    """Read the committed Spanish .po file."""
    return read_catalogue(TRANSLATIONS / "es" / "LC_MESSAGES" / "messages.po")


def finished(catalogue, message) -> bool:
    """Say whether the catalogue holds a non-fuzzy, non-empty translation of message."""
    found = catalogue.get(message.id, message.context)
    if found is None or found.fuzzy:
        return False
    strings = found.string if isinstance(found.string, tuple) else (found.string,)
    return all(strings)


def test_every_message_in_the_template_has_a_spanish_translation():
    template, catalogue = read_catalogue(TRANSLATIONS / "messages.pot"), spanish()
    assert len(template) > 0
    assert [m.id for m in template if m.id and not finished(catalogue, m)] == []


def test_the_compiled_catalogue_answers_in_spanish(app):
    # The .mo is build output (setup.py compiles it); this reads it the way the app does.
    with app.test_request_context(), force_locale("es"):
        subject = gettext("%(practice)s: how did your session feel?", practice="Clínica Añil")
    assert subject == "Clínica Añil: ¿cómo se sintió en su sesión?", (
        "no compiled Spanish catalogue: run `make test`, or `pip install -e .`"
    )


def test_every_message_in_the_code_has_a_spanish_translation():
    with (ROOT / "babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    in_code = {
        message[2] if isinstance(message[2], str) else message[2][0]
        for message in extract_from_dir(ROOT, method_map, options_map)
    }
    catalogue = spanish()
    translated = {
        m.id if isinstance(m.id, str) else m.id[0] for m in catalogue if m.id and m.string
    }
    assert in_code, "babel.cfg extracts nothing"
    assert in_code <= translated, "run the pybabel extract/update steps in docs/delivery.md"
    assert not [m.id for m in catalogue if m.fuzzy and m.id]


def test_spanish_placeholders_match_the_english_ones():
    catalogue = spanish()
    problems = [(m.id, errors) for m, errors in catalogue.check()]
    assert problems == []


def test_the_survey_translates_exactly_scorings_messages():
    assert set(VALIDATION_MESSAGES) == {
        scoring.CHOOSE,
        scoring.NOT_LISTED,
        scoring.WRITE,
        scoring.UNUSUAL,
    }


@pytest.mark.parametrize(
    ("requested", "fallback", "chosen"),
    [
        ("es", "en", "es"),
        ("es-MX", "en", "es"),
        ("es_419", "en", "es"),
        ("ES", "en", "es"),
        (" en-GB ", "es", "en"),
        ("fr", "es", "es"),
        ("fr-CA", "de", "en"),
        (None, "es", "es"),
        ("", "", "en"),
        ("not a tag", "en", "en"),
        ("x" * 500, "es", "es"),
    ],
)
def test_choose_language_picks_the_best_offered(requested, fallback, chosen):
    assert choose_language(requested, fallback) == chosen


def test_bundled_instrument_is_fully_translated_and_scores_the_same():
    english, spanish_form = load_bundled(), load_bundled(language="es")
    assert spanish_form.language == "es"
    assert spanish_form.items[0].text == "Hoy dedicamos el tiempo a lo que más me importa."
    for en_item, es_item in zip(english.items, spanish_form.items, strict=True):
        assert es_item.text != en_item.text
        assert es_item.link_id == en_item.link_id and es_item.subscale == en_item.subscale
        for en_option, es_option in zip(en_item.options, es_item.options, strict=True):
            assert es_option.display != en_option.display
            assert (es_option.code, es_option.ordinal) == (en_option.code, en_option.ordinal)
    # The canonical instrument is what gets scored and written: translation is display only.
    assert spanish_form.canonical == english.canonical


@pytest.mark.parametrize("language", [None, "en", "fr"])
def test_untranslated_languages_keep_the_original(language):
    assert load_bundled(language=language).items == load_bundled().items


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Clínica Añil", "Clinica Añil"),
        ("Café Ünd Øl", "Café Ünd Øl"),
        ("Zo\u00eb\u2019s \u201cCentre\u201d \u2013 Mind", 'Zoe\'s "Centre" - Mind'),
        ("心理", "??"),
    ],
)
def test_names_are_folded_into_gsm7(text, folded):
    assert to_gsm7(text) == folded
    assert is_gsm7(folded)
