"""Languages: Flask-Babel catalogues, and which language each page and message is in."""

from babel import Locale, UnknownLocaleError
from flask import Flask, g, has_request_context, request
from flask_babel import Babel, get_locale, refresh

# The languages every message, page and the bundled questionnaire are translated into.
LANGUAGES = ("en", "es")
DEFAULT_LANGUAGE = "en"

babel = Babel()


def choose_language(requested: str | None, fallback: str) -> str:
    """Return the offered language that best fits a BCP 47 tag ("es-MX" -> "es")."""
    for candidate in (requested, fallback):
        if not candidate:
            continue
        try:
            language = Locale.parse(candidate.strip(), sep="-" if "-" in candidate else "_")
        except (ValueError, TypeError, UnknownLocaleError):
            continue
        if language.language in LANGUAGES:
            return language.language
    return DEFAULT_LANGUAGE


def N_(message: str) -> str:
    """Mark a message for the catalogue without translating it here (Babel's N_ keyword)."""
    return message


def use_language(language: str) -> None:
    """Show the rest of this request in `language` (an invitation's, say), not the browser's."""
    g.language = choose_language(language, DEFAULT_LANGUAGE)
    # Flask-Babel caches the locale per request once anything was translated.
    refresh()


def current_language() -> str:
    """Return the language this request or job is rendering in."""
    locale = get_locale()
    return locale.language if locale else DEFAULT_LANGUAGE


def _select_locale() -> str:
    if not has_request_context():
        # Jobs choose with flask_babel.force_locale; anything else gets the default.
        return DEFAULT_LANGUAGE
    if "language" in g:
        return g.language
    return request.accept_languages.best_match(LANGUAGES, default=DEFAULT_LANGUAGE)


def init_app(app: Flask) -> None:
    """Bind Flask-Babel (catalogues in plugin/translations) and its Jinja helpers."""
    babel.init_app(app, locale_selector=_select_locale)
    app.context_processor(lambda: {"html_lang": current_language()})
