"""Customer texts come from one gettext catalog per language, holding exactly the msgids the code
uses; percentages, dates and money are localized."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import IO, Any

import pytest
from babel.messages.extract import extract_from_dir, extract_python

import aibudget
from aibudget.views import texts
from aibudget.views.texts import (
    LANGUAGES,
    N_,
    catalog,
    format_date,
    format_money,
    format_percent,
    format_usd_amount,
    placeholders,
    text,
)

SOURCE = Path(aibudget.__file__).parent  # src/aibudget
KEYWORDS = {"text": None, "N_": None}  # texts.text("…", locale, …) and N_("…"), msgid first


def extract_customer_texts(
    fileobj: IO[bytes], keywords: Mapping[str, Any], comment_tags: Collection[str], options: Any
) -> Iterator[Any]:
    """Babel's python extractor, without SQLAlchemy's `text(sql)`: it has one argument, while
    `texts.text` always has the locale too (the extractor sees only the last name of `texts.text`)."""
    for lineno, funcname, messages, comments in extract_python(fileobj, keywords, comment_tags, options):
        if funcname == "text" and not isinstance(messages, tuple):
            continue
        yield lineno, funcname, messages, comments


@pytest.fixture(scope="module")
def used() -> dict[str, list[str]]:
    """Every msgid the code names, and where: `{msgid: ["views/client.py:91", …]}`."""
    found: dict[str, list[str]] = {}
    method = f"{__name__}:{extract_customer_texts.__name__}"
    for filename, lineno, msgid, _, _ in extract_from_dir(SOURCE, [("**.py", method)], keywords=KEYWORDS):
        assert isinstance(msgid, str), msgid  # one msgid per call: no plural or context forms
        found.setdefault(msgid, []).append(f"{filename}:{lineno}")
    return found


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


@pytest.mark.parametrize(
    ("msgid", "named_in"),
    [
        ("AI allowance: {percent} available", "views/client.py"),  # texts.text("…", locale, percent=…)
        ("Refusal: allowance used up", "views/refusal.py"),  # N_("…") in a table of reasons
        ("Notification title: {percent} of the allowance used", "ledger/alerts.py"),
        ("Notification: top-up of {amount} for {charge} declined, paused", "credit/autotopup.py"),
    ],
)
def test_extraction_finds_the_texts_named_in_the_code(
    used: dict[str, list[str]], msgid: str, named_in: str
) -> None:
    assert any(where.startswith(f"{named_in}:") for where in used[msgid])


def test_extraction_ignores_sql_text_clauses(used: dict[str, list[str]]) -> None:
    assert "SELECT 1" not in used  # sqlalchemy.text("SELECT 1") in api/health.py


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_text_the_code_uses_is_translated_with_the_same_placeholders(
    used: dict[str, list[str]], language: str
) -> None:
    for msgid, where in sorted(used.items()):
        message = catalog(language).get(msgid)
        assert message is not None, f"{msgid!r} ({', '.join(where)}) is missing in {language}"
        assert isinstance(message.string, str)
        assert message.string.strip(), f"{msgid!r} is empty in {language}"
        assert not message.fuzzy, f"{msgid!r} is fuzzy in {language}"
        assert placeholders(message.string) == placeholders(msgid), (language, msgid)


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_catalog_keeps_a_text_the_code_no_longer_uses(used: dict[str, list[str]], language: str) -> None:
    in_catalog = {message.id for message in catalog(language) if message.id}
    assert in_catalog - used.keys() == set()


def test_n_marks_a_msgid_without_changing_it() -> None:
    assert N_("Refusal: allowance used up") == "Refusal: allowance used up"


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


@pytest.mark.parametrize(
    ("locale", "shown"),
    [
        ("de-CH", "$\xa01'234.50"),
        ("fr-CH", "1'234,50\xa0$US"),
        ("it-CH", "USD\xa01'234.50"),
        ("en", "$1,234.50"),
        ("ja-JP", "$1,234.50"),
    ],
)
def test_usd_amounts_are_money_of_the_locale(locale: str, shown: str) -> None:
    assert format_usd_amount(1_234_500_000, locale) == shown


def test_usd_amounts_are_shown_to_the_cent() -> None:
    assert format_usd_amount(25_000_000, "en") == "$25.00"
    assert format_usd_amount(1, "en") == "$0.00"


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "shown"),
    [
        (2450, "chf", "de-CH", "CHF\xa024.50"),
        (2450, "eur", "fr-CH", "24,50\xa0€"),
        (2500, "usd", "en", "$25.00"),
        (1000, "jpy", "en", "¥1,000"),  # a currency without minor units
    ],
)
def test_charges_are_read_in_the_smallest_unit_of_their_currency(
    amount: int, currency: str, locale: str, shown: str
) -> None:
    assert format_money(amount, currency, locale) == shown


@pytest.mark.parametrize("micros", [25.0, True, "25000000"])
def test_money_refuses_anything_but_an_integer(micros: object) -> None:
    with pytest.raises(TypeError):
        format_usd_amount(micros, "de-CH")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_money(micros, "chf", "de-CH")  # type: ignore[arg-type]
