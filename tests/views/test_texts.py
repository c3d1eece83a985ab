"""Customer texts come from one gettext catalog per language; percentages and dates are localized."""

from __future__ import annotations

from datetime import date

import pytest

from aibudget.views import texts
from aibudget.views.texts import LANGUAGES, catalog, format_date, format_percent, placeholders, text


def all_msgids() -> set[str]:
    return {
        message.id
        for language in LANGUAGES
        for message in catalog(language)
        if message.id and isinstance(message.id, str)  # no plural messages yet
    }


def test_there_are_four_catalogs_english_included() -> None:
    assert LANGUAGES == ("de", "fr", "it", "en")
    assert all(len(catalog(language)) > 0 for language in LANGUAGES)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_catalog_has_a_proper_header(language: str) -> None:
    parsed = catalog(language)
    assert str(parsed.locale) == language
    assert parsed.charset.lower() == "utf-8"
    assert parsed.plural_forms.startswith("nplurals=2;")
    assert not parsed.fuzzy


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_msgid_is_translated_in_every_catalog(language: str) -> None:
    for msgid in sorted(all_msgids()):
        message = catalog(language).get(msgid)
        assert message is not None, f"{msgid!r} missing in {language}"
        assert isinstance(message.string, str)
        assert message.string.strip(), f"{msgid!r} empty in {language}"
        assert not message.fuzzy, f"{msgid!r} fuzzy in {language}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_keep_the_placeholders_of_the_english_text(language: str) -> None:
    for msgid in sorted(all_msgids()):
        english = texts.template(msgid, "en")
        assert placeholders(english) == placeholders(msgid), msgid
        assert placeholders(texts.template(msgid, language)) == placeholders(english), (language, msgid)


def test_catalogs_are_read_once_per_language() -> None:
    assert catalog("de") is catalog("de")


def test_text_fills_placeholders() -> None:
    assert (
        text("AI allowance: {percent} available", "de-CH", percent="80 %") == "KI-Kontingent: 80 % verfügbar"
    )


@pytest.mark.parametrize("locale", ["ja-JP", "xx-YY", "not a locale", "", "de_CH"])
def test_other_languages_and_malformed_locales_fall_back_to_english(locale: str) -> None:
    assert text("AI allowance used up", locale) == "AI allowance used up"


@pytest.mark.parametrize("locale", ["de-CH", "de", "de-AT", "fr-CH", "it-CH", "en-GB"])
def test_regional_locales_use_their_language(locale: str) -> None:
    assert texts.language_of(locale) == locale[:2]


@pytest.mark.parametrize("locale", ["de-CH", "fr-CH", "it-CH", "en", "ja-JP"])
def test_a_missing_msgid_is_an_error_not_a_fallback(locale: str) -> None:
    with pytest.raises(KeyError, match="no such message"):
        text("no such message", locale)


def test_an_unknown_language_has_no_catalog() -> None:
    with pytest.raises(ValueError, match="not one of"):
        catalog("es")


@pytest.mark.parametrize(
    ("locale", "shown"),
    [
        ("de-CH", "80 %"),
        ("de", "80 %"),
        ("fr-CH", "80 %"),
        ("it-CH", "80 %"),
        ("en", "80%"),
        ("en-GB", "80%"),
    ],
)
def test_percent_has_a_plain_space_except_in_english(locale: str, shown: str) -> None:
    assert format_percent(80, locale) == shown


@pytest.mark.parametrize(("value", "shown"), [(0, "0 %"), (1, "1 %"), (100, "100 %")])
def test_percent_bounds(value: int, shown: str) -> None:
    assert format_percent(value, "de-CH") == shown


@pytest.mark.parametrize("value", [0.8, True, "80"])
def test_percent_refuses_anything_but_a_whole_number(value: object) -> None:
    with pytest.raises(TypeError):
        format_percent(value, "de-CH")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("locale", "shown"),
    [
        ("de-CH", "31.12.2026"),
        ("fr-CH", "31 déc. 2026"),
        ("it-CH", "31 dic 2026"),
        ("en", "Dec 31, 2026"),
        ("en-GB", "31 Dec 2026"),
        ("ja-JP", "Dec 31, 2026"),
    ],
)
def test_dates_use_the_medium_format_of_the_locale(locale: str, shown: str) -> None:
    assert format_date(date(2026, 12, 31), locale) == shown
