"""Fuzzing the metadata scrubber (SPEC §7): any metadata is refused naming its field, or stored clean.

`scrub_metadata` gets arbitrary JSON (nested objects and arrays, floats, huge integers, control
characters, lone surrogates, long strings) and flat objects that hide credentials and personal data
— API keys, bearer and basic authorizations, JWTs, private keys, `password=…`, e-mail addresses,
phone numbers, AHV numbers, IBANs with a valid checksum — inside short values, between ordinary
words and punctuation, under harmless keys and under sensitive key names spelled every way
(`API-Key`, `apiKey`, `__api_key__`). The result is either an `InvalidInput` naming `meta` or
`meta.<key>` exactly as an independent reading of the rules expects, or a flat object within the
size limits in which no sensitive key keeps its value, no value still looks sensitive, no generated
secret survives, and which scrubs to itself.
"""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aibudget.errors import InvalidInput
from aibudget.ledger.metadata import (
    MAX_KEY_LENGTH,
    MAX_KEYS,
    MAX_VALUE_LENGTH,
    REDACTED,
    SENSITIVE_KEYS,
    looks_sensitive,
    normalize_key,
    scrub_metadata,
)

INT_RANGE = (-(2**63), 2**63 - 1)
ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
B64URL = ALNUM + "_-"

bounded = settings(max_examples=500, deadline=None)


def chars(alphabet: str, low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(alphabet), min_size=low, max_size=high)


def joined(*parts: st.SearchStrategy[str] | str) -> st.SearchStrategy[str]:
    return st.tuples(*(st.just(part) if isinstance(part, str) else part for part in parts)).map("".join)


# credentials, one strategy per form the module recognizes
api_keys = st.one_of(
    joined(st.sampled_from(["sk-", "sk-proj-", "sk-ant-api03-"]), chars(B64URL, 16, 60)),
    joined(st.sampled_from("srp"), "k_", st.sampled_from(["live", "test"]), "_", chars(ALNUM, 10, 40)),
    joined("gh", st.sampled_from("pousr"), "_", chars(ALNUM, 20, 40)),
    joined("github_pat_", chars(ALNUM + "_", 20, 60)),
    joined("xox", st.sampled_from("abposr"), "-", chars(ALNUM + "-", 10, 40)),
    joined(st.sampled_from(["AKIA", "ASIA"]), chars(UPPER_DIGITS, 16, 16)),
    joined("AIza", chars(B64URL, 35, 35)),
)
jwts = joined("eyJ", chars(B64URL, 1, 40), ".", chars(B64URL, 1, 60), ".", chars(B64URL, 0, 60))
bearers = joined(
    st.sampled_from(["Bearer", "bearer", "BEARER"]),
    st.sampled_from([" ", "  ", "\t"]),
    chars(B64URL + ".~+/", 8, 60),
)
basics = st.tuples(chars(ALNUM, 1, 12), chars(ALNUM + "!$%", 1, 16)).map(
    lambda pair: "Basic " + base64.b64encode(f"{pair[0]}:{pair[1]}".encode()).decode()
)
private_keys = joined("-----BEGIN ", st.sampled_from(["", "RSA ", "EC ", "OPENSSH "]), "PRIVATE KEY-----")
assignments = joined(
    st.sampled_from(
        ["password", "Password", "passwd", "pwd", "secret", "token", "api_key", "api-key", "APIKEY"]
    ),
    st.sampled_from(["=", ": ", ":", " = "]),
    chars(ALNUM + "!#$%&*", 1, 20),
)

# personal data
emails = joined(
    chars(ALNUM + "._%+-", 1, 20),
    "@",
    st.lists(chars(ALNUM + "-", 1, 12), min_size=2, max_size=3).map(".".join),
)


def digits(count: int) -> st.SearchStrategy[str]:
    return chars(string.digits, count, count)


phones = st.one_of(
    joined("+", st.sampled_from(["41", "49", "33", "39", "1", "423"]), st.sampled_from(["", " "]), digits(9)),
    joined("+41 ", digits(2), " ", digits(3), " ", digits(2), " ", digits(2)),
    joined("0", digits(2), st.sampled_from([" ", "-", "/"]), digits(3), " ", digits(2), " ", digits(2)),
    joined("(0", digits(2), ") ", digits(3), " ", digits(2), " ", digits(2)),
)
separators = st.sampled_from([".", " ", "-", ""])
ahv_numbers = joined("756", separators, digits(4), separators, digits(4), separators, digits(2))

# IBAN lengths by country (ISO 13616), the BBAN all digits or, for some, with letters
IBAN_LENGTHS = {"CH": 21, "LI": 21, "DE": 22, "AT": 20, "FR": 27, "IT": 27, "BE": 16, "NL": 18, "GB": 22}


@st.composite
def ibans(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(sorted(IBAN_LENGTHS)))
    bban = draw(chars(UPPER_DIGITS if country in {"NL", "GB", "IT"} else string.digits, 1, 1))
    bban += draw(digits(IBAN_LENGTHS[country] - 5))
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    compact = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    if draw(st.booleans()):
        return compact
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


SECRET_KINDS: dict[str, st.SearchStrategy[str]] = {
    "api key": api_keys,
    "jwt": jwts,
    "bearer": bearers,
    "basic": basics,
    "private key": private_keys,
    "assignment": assignments,
    "email": emails,
    "phone": phones,
    "ahv": ahv_numbers,
    "iban": ibans(),
}
tagged_secrets = st.sampled_from(sorted(SECRET_KINDS)).flatmap(
    lambda kind: st.tuples(st.just(kind), SECRET_KINDS[kind])
)
secrets = tagged_secrets.map(lambda tagged: tagged[1])

# What a secret may be written between: a few ordinary words and the punctuation of a sentence.
words = chars(string.ascii_letters, 1, 10)
before = st.lists(words, max_size=2).map(lambda found: " ".join(found) + " " if found else "")
after = st.lists(words, max_size=2).map(lambda found: " " + " ".join(found) if found else "")
opening = st.sampled_from(["", "(", "'", '"', "ref=", "id: ", "<", "[", "\n", "*"])
closing = st.sampled_from(["", ")", "'", '"', ",", ";", ".", "!", "?", ">", "]", " .", ":", "\n"])

harmless_keys = st.sampled_from(["feature", "ref", "source", "k", "keyboard", "token_count", "app_version"])


@bounded
@given(key=harmless_keys, head=before, left=opening, tagged=tagged_secrets, right=closing, tail=after)
def test_an_embedded_secret_never_survives(
    key: str, head: str, left: str, tagged: tuple[str, str], right: str, tail: str
) -> None:
    kind, secret = tagged
    value = f"{head}{left}{secret}{right}{tail}"
    assert len(value) <= MAX_VALUE_LENGTH
    scrubbed = scrub_metadata({"feature": "letter", key: value})
    assert scrubbed == {"feature": "letter", key: REDACTED}, f"{kind} survived in {value!r}"


@pytest.mark.parametrize("value", ["AT611904300234573201 Euro", "IBAN BE68539007547034 bitte"])
def test_a_compact_iban_followed_by_a_word_is_redacted(value: str) -> None:
    assert scrub_metadata({"ref": value}) == {"ref": REDACTED}


@pytest.mark.parametrize("value", ["Rückruf 079 123 45 67: dringend", "Tel. (044) 123 45 67: Praxis"])
def test_a_phone_number_followed_by_a_colon_is_redacted(value: str) -> None:
    assert scrub_metadata({"ref": value}) == {"ref": REDACTED}


def spellings(name: str) -> st.SearchStrategy[str]:
    """`api_key` as callers write it: `api_key`, `API-Key`, `apiKey`, `ApiKey`, `api key`, `__api_key__`…"""
    parts = name.split("_")
    camel = parts[0] + "".join(part.capitalize() for part in parts[1:])
    joiner = st.sampled_from(["_", "-", " ", ".", "__", "--", "-_"])
    spelled = st.tuples(joiner, st.sampled_from([str.lower, str.upper, str.capitalize])).map(
        lambda choice: choice[0].join(choice[1](part) for part in parts)
    )
    wrapped = st.tuples(st.sampled_from(["", "_", "__", "-", "."]), st.sampled_from(["", "_", "__", "."]))
    return st.tuples(wrapped, st.sampled_from([camel, camel[0].upper() + camel[1:]]) | spelled).map(
        lambda found: f"{found[0][0]}{found[1]}{found[0][1]}"
    )


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(*INT_RANGE),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=MAX_VALUE_LENGTH),
)


@bounded
@given(key=st.sampled_from(sorted(SENSITIVE_KEYS)).flatmap(spellings), value=scalars)
def test_a_sensitive_key_never_keeps_its_value_however_it_is_spelled(key: str, value: object) -> None:
    assert normalize_key(key) in SENSITIVE_KEYS, key
    assert scrub_metadata({"feature": "letter", key: value}) == {"feature": "letter", key: REDACTED}


def expected_error(meta: object) -> str | None:
    """The field an `InvalidInput` must name, read from SPEC §7 and the module's docstring alone."""
    if meta is None:
        return None
    if not isinstance(meta, Mapping) or len(meta) > MAX_KEYS:
        return "meta"
    for key, value in meta.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            return "meta"
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int) and INT_RANGE[0] <= value <= INT_RANGE[1]:
            continue
        if isinstance(value, str) and len(value) <= MAX_VALUE_LENGTH and "\x00" not in value:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"meta.{key}"
            continue
        return f"meta.{key}"
    return None


def assert_clean(meta: Mapping[str, Any], scrubbed: dict[str, Any]) -> None:
    assert list(scrubbed) == list(meta), "keys and their order are kept"
    assert len(scrubbed) <= MAX_KEYS
    for key, value in scrubbed.items():
        assert type(key) is str
        assert 1 <= len(key) <= MAX_KEY_LENGTH
        assert key.isprintable()
        assert value is None or type(value) in (bool, int, str)
        if type(value) is int:
            assert INT_RANGE[0] <= value <= INT_RANGE[1]
        if normalize_key(key) in SENSITIVE_KEYS:
            assert value == REDACTED, key
        if isinstance(value, str):
            assert len(value) <= MAX_VALUE_LENGTH
            assert value == REDACTED or not looks_sensitive(value), value
            assert value in (REDACTED, meta[key]), "a value is kept whole or redacted whole"
    assert scrub_metadata(scrubbed) == scrubbed, "scrubbing is idempotent"
    assert json.loads(json.dumps(scrubbed)) == scrubbed


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(*INT_RANGE),
    st.floats(),
    st.text(max_size=300),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=MAX_VALUE_LENGTH),
    secrets,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
valid_keys = st.one_of(
    harmless_keys,
    st.sampled_from(sorted(SENSITIVE_KEYS)).flatmap(spellings),
    st.text(st.characters(codec="utf-8", exclude_categories=["C", "Z"]), min_size=1, max_size=MAX_KEY_LENGTH),
)
any_keys = valid_keys | st.text(max_size=MAX_KEY_LENGTH + 8)
metadata = st.one_of(
    st.dictionaries(any_keys, scalars | secrets, max_size=MAX_KEYS + 2),
    st.dictionaries(any_keys, json_values, max_size=8),
    json_values,
)


@bounded
@given(meta=metadata)
def test_any_metadata_is_refused_naming_its_field_or_stored_clean(meta: Any) -> None:
    expected = expected_error(meta)
    if expected is not None:
        with pytest.raises(InvalidInput) as refused:
            scrub_metadata(meta)
        assert refused.value.field == expected, refused.value.detail
        assert refused.value.detail.startswith(f"{expected}: ")
        return
    scrubbed = scrub_metadata(meta)
    assert_clean(meta or {}, scrubbed)


@bounded
@given(
    meta=st.dictionaries(valid_keys, scalars | secrets, max_size=MAX_KEYS).filter(
        lambda m: not expected_error(m)
    )
)
def test_valid_metadata_is_stored_clean(meta: dict[str, Any]) -> None:
    assert_clean(meta, scrub_metadata(meta))


@bounded
@given(key=harmless_keys, secret=secrets, padding=st.integers(0, MAX_VALUE_LENGTH + 50))
def test_a_refused_value_is_never_echoed(key: str, secret: str, padding: int) -> None:
    value = secret + "x" * (MAX_VALUE_LENGTH + 1 - len(secret) + padding)
    with pytest.raises(InvalidInput) as refused:
        scrub_metadata({key: value, "nested": {"secret": secret}})
    assert secret not in refused.value.detail
    assert refused.value.field == f"meta.{key}"
