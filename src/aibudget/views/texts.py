"""Localized customer texts: the gettext catalogs in `locales/`; percentages, dates, money in de, fr, it, en.

Every sentence a practice's staff reads (the desktop label, the `message_user` of a 402, the `title`
and `message_user` of every notification) is a message of the `aibudget` domain in
`locales/<language>/LC_MESSAGES/aibudget.po`, English included, so every language is a catalog and no
wording lives in Python code. The msgid is a stable English key; placeholders are `str.format` fields
(`{percent}`, `{renewal_date}`, `{amount}`) that every translation keeps, filled with values already
formatted for the locale by the `format_*` functions here (money from integers, never a float). The
catalogs are read with Babel's `read_po` at first use and cached per language: there is no build
step, hence no compiled `.mo` files.

Code names a msgid as a string literal in the call `texts.text("…", locale)`, or, where the msgid is
chosen before the call (a table of reasons), marks the literal with `N_("…")`. Babel's extractor finds
both, and a test holds the code's msgids and the four catalogs to the same set.

Locales are BCP 47 tags with `-` (`de-CH`, `fr-CH`, `en-GB`). Anything that is not one of the four
languages — unknown, malformed, or simply another language, as an `Accept-Language` header may be —
falls back to English. A msgid missing from one of the four catalogs is a bug and raises `KeyError`
rather than quietly showing another language.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from functools import cache
from importlib.resources import files
from string import Formatter

from babel import Locale, UnknownLocaleError
from babel.dates import format_date as babel_format_date
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from babel.numbers import format_currency, get_currency_precision
from babel.numbers import format_percent as babel_format_percent

from aibudget.money import to_decimal

LANGUAGES = ("de", "fr", "it", "en")
FALLBACK_LANGUAGE = "en"
DOMAIN = "aibudget"

# The desktop shows "80 %" with a plain ASCII space in de, fr and it, "80%" in en. CLDR's own
# patterns differ by region (de-CH has no space, fr a narrow no-break space), so the pattern is fixed
# per language and only the digits and symbols come from the locale.
_PERCENT_PATTERNS = {"de": "#,##0 %", "fr": "#,##0 %", "it": "#,##0 %", "en": "#,##0%"}


def negotiate(accept_language: str | None, default: str) -> str:
    """The best tag of `Accept-Language` in one of the four languages, by weight; else `default`.

    A tag Babel does not know (`fr-XY`) counts as its bare language (`fr`), never as English.
    """
    choices: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        language = tag.strip().split("-")[0].lower()
        if language in LANGUAGES and weight > 0:
            choices.append((-weight, position, tag.strip()))
    if not choices:
        return default
    tag = min(choices)[2]
    language = tag.split("-")[0].lower()
    return tag if language_of(tag) == language else language


def N_(msgid: str) -> str:
    """Mark a msgid chosen before `text` is called, so extraction finds it; returns it unchanged."""
    return msgid


def resolve_locale(locale: str) -> Locale:
    """The Babel locale for a `-` separated tag, or English when it is not one of `LANGUAGES`."""
    try:
        parsed = Locale.parse(locale, sep="-")
    except (UnknownLocaleError, ValueError, TypeError):
        parsed = None
    if parsed is None or parsed.language not in LANGUAGES:
        return Locale.parse(FALLBACK_LANGUAGE)
    return parsed


def language_of(locale: str) -> str:
    """Which of `LANGUAGES` texts for `locale` are written in."""
    return resolve_locale(locale).language


@cache
def catalog(language: str) -> Catalog:
    """The parsed catalog of one of `LANGUAGES`, read once per process."""
    if language not in LANGUAGES:
        raise ValueError(f"language: {language!r} is not one of {', '.join(LANGUAGES)}")
    path = files("aibudget.views") / "locales" / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as po:
        return read_po(po, locale=language, domain=DOMAIN, abort_invalid=True)


def template(msgid: str, language: str) -> str:
    """The untranslated-placeholder text of `msgid` in `language`; `KeyError` if it is not usable.

    Empty and fuzzy entries count as missing, as they do for gettext.
    """
    message = catalog(language).get(msgid) if msgid else None
    if message is None or message.fuzzy or not isinstance(message.string, str) or not message.string:
        raise KeyError(f"msgid {msgid!r} has no translation in the {language} catalog")
    return message.string


def placeholders(text_template: str) -> frozenset[str]:
    """The `{name}` fields of a template: `"Renews on {renewal_date}"` -> {"renewal_date"}."""
    return frozenset(field for _, field, _, _ in Formatter().parse(text_template) if field)


def text(msgid: str, locale: str, **params: object) -> str:
    """The text of `msgid` in the language of `locale`, its `{name}` fields filled from `params`."""
    return template(msgid, language_of(locale)).format(**params)


def _whole(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")


def format_percent(value: int, locale: str) -> str:
    """A whole percentage as the desktop shows it: 80 -> "80 %" (de, fr, it) or "80%" (en)."""
    _whole(value, "value")
    babel_locale = resolve_locale(locale)
    pattern = _PERCENT_PATTERNS[babel_locale.language]
    # Babel multiplies by 100; scaleb keeps the value an exact Decimal (80 -> 0.80).
    return babel_format_percent(Decimal(value).scaleb(-2), pattern, locale=babel_locale)


def format_date(d: date, locale: str) -> str:
    """A date in the locale's medium format: de-CH "31.12.2026", fr-CH "31 déc. 2026", en "Dec 31, 2026"."""
    return babel_format_date(d, "medium", locale=resolve_locale(locale))


def format_usd_amount(micros: int, locale: str) -> str:
    """Micro-USD as money to the cent: 25_000_000 -> de-CH "$ 25.00", fr-CH "25,00 $US", en "$25.00"."""
    _whole(micros, "micros")
    return format_currency(to_decimal(micros), "USD", locale=resolve_locale(locale))


def format_money(amount: int, currency: str, locale: str) -> str:
    """An amount in the smallest unit of `currency`, as Stripe counts it: 2450 "chf" -> de-CH "CHF 24.50"."""
    _whole(amount, "amount")
    code = currency.upper()
    major = Decimal(amount).scaleb(-get_currency_precision(code))
    return format_currency(major, code, locale=resolve_locale(locale))
