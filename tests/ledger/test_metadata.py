"""Usage-event metadata: a flat object of scalars, scrubbed of secrets and patient data (SPEC §7).

A value becomes "[redacted]" when its key's name is exactly a sensitive one (after folding case,
camelCase and separators), or when the value itself looks like a credential, personal data or free
text. Anything that is not a flat object of short scalars is refused whole, naming the field.
"""

from __future__ import annotations

import contextlib
import enum
import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aibudget.errors import InvalidInput
from aibudget.ledger.metadata import MAX_VALUE_LENGTH, REDACTED, SENSITIVE_KEYS, scrub_metadata

DICTATION = {"feature": "letter", "app_version": "4.2.1", "keyboard": "de-CH", "template_id": 17}

SECRET_VALUES = {
    "openai key": "sk-abcdefghijklmnopqrstuvwxyz012345",
    "openai project key": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t",
    "stripe secret key": "sk_live_51HxYzAbCdEfGhIjKl",
    "stripe restricted key": "rk_live_51HxYzAbCdEfGhIjKl",
    "stripe publishable key": "pk_live_51HxYzAbCdEfGhIjKl",
    "github token": "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "slack bot token": "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
    "slack user token": "xoxp-123456789012-abcdefABCDEF",
    "aws access key id": "AKIAIOSFODNN7EXAMPLE",
    "key inside a value": "key=sk-abcdefghijklmnopqrstuvwxyz",
    "bearer authorization": "Bearer 9f86d081884c7d659a2feaa0c55ad015",
    "basic authorization": "Basic dXNlcjpodW50ZXIy",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "password assignment": "password=hunter2",
    "private key": "-----BEGIN RSA PRIVATE KEY-----",
    "e-mail address": "hans.muster@example.ch",
    "e-mail address in a sentence": "reply to anna+praxis@hin.ch",
    "swiss mobile number": "+41 79 123 45 67",
    "swiss number without country code": "079 123 45 67",
    "number in international format": "+41791234567",
    "number with area code in parentheses": "(044) 123 45 67",
    "ahv number": "756.1234.5678.97",
    "ahv number without dots": "7561234567897",
    "swiss iban": "CH93 0076 2011 6238 5295 7",
    "german iban, compact": "DE89370400440532013000",
    "nine words": "Patientin klagt seit drei Tagen über starke Kopfschmerzen links",
    "long text with whitespace": "Befund:" + " unauffällig," * 10,
}

SHORT_IDENTIFIERS = [
    *("letter", "4.2.1", "de-CH", "sk-SK", "whisper-1", "tpl_123", "gpt-4o-mini-2024-07-18"),
    *("550e8400-e29b-41d4-a716-446655440000", "00000000-0000-0000-0000-000000000000"),
    *("2024-05-01T12:30:00Z", "2024-05-01 12:30:00", "1715000000", "192.168.100.200"),
    *("Basic", "Basic plan", "cus_NffrFeUfNV2Hib", "8001 Zürich", "one two three four five six seven eight"),
    "x" * MAX_VALUE_LENGTH,  # long, but one word: an identifier, not text
]


def test_a_dictation_event_keeps_its_metadata_unchanged() -> None:
    assert scrub_metadata(DICTATION) == DICTATION


def test_none_is_empty_metadata() -> None:
    assert scrub_metadata(None) == {}
    assert scrub_metadata({}) == {}


def test_harmless_keys_that_contain_secret_words_are_kept() -> None:
    meta = {
        **{"keyboard": "de-CH", "token_count": 512, "monkey": "banana", "tokenizer": "o200k_base"},
        **{"author_role": "assistant", "session_count": 3, "keyboardLayout": "qwertz", "passwords_set": 2},
    }
    assert scrub_metadata(meta) == meta


@pytest.mark.parametrize(
    "key",
    [
        *("password", "api_key", "API-Key", "api key", "apiKey", "APIKey", "X-API-Key", "apikey"),
        *("Authorization", "Cookie", "session", "client_secret", "refresh_token", "IDToken"),
        *("email", "E-Mail", "eMail", "phone", "name", "firstName", "last_name", "date_of_birth"),
        *("patient", "Patient-ID", "AHV-Number", "ahv", "insurance_number", "address", "dob"),
        *("prompt", "transcript", "text", "content", "messages", "diagnosis", "notes", "Passwort"),
    ],
)
def test_sensitive_key_names_are_redacted_exactly(key: str) -> None:
    assert scrub_metadata({key: "letter"}) == {key: REDACTED}


def test_a_sensitive_key_is_redacted_whatever_its_value() -> None:
    meta = {"patient_id": 4711, "token": None, "session": True, "note": ""}
    assert scrub_metadata(meta) == dict.fromkeys(meta, REDACTED)


def test_the_required_sensitive_names_are_all_listed() -> None:
    required = """password passwd secret client_secret token access_token refresh_token id_token api_key
        apikey authorization auth cookie session private_key email e_mail phone patient patient_name
        patient_id name first_name last_name birthdate date_of_birth dob address ssn ahv ahv_number
        insurance_number prompt transcript text content message messages diagnosis note notes"""
    assert set(required.split()) <= SENSITIVE_KEYS
    harmless = {"keyboard", "token_count", "monkey", "tokenizer", "author_role", "session_count"}
    assert not harmless & SENSITIVE_KEYS


@pytest.mark.parametrize("value", SECRET_VALUES.values(), ids=SECRET_VALUES.keys())
def test_secret_values_are_redacted_under_any_key(value: str) -> None:
    assert scrub_metadata({"feature": "letter", "ref": value}) == {"feature": "letter", "ref": REDACTED}


@pytest.mark.parametrize("value", SHORT_IDENTIFIERS)
def test_short_identifiers_pass_unchanged(value: str) -> None:
    assert scrub_metadata({"ref": value}) == {"ref": value}


def test_random_uuids_pass_unchanged() -> None:
    ids = {f"id{n}": str(uuid.uuid4()) for n in range(32)}
    for _ in range(50):
        assert scrub_metadata(ids) == ids


def test_integers_and_booleans_are_kept_as_they_are() -> None:
    meta = {"template_id": 17, "retries": 0, "biggest": 2**63 - 1, "smallest": -(2**63), "offline": False}
    assert scrub_metadata(meta) == meta


def test_the_limits_themselves_are_accepted() -> None:
    meta = {f"k{n}": n for n in range(31)} | {"k" * 64: "v" * MAX_VALUE_LENGTH}
    assert scrub_metadata(meta) == meta


@pytest.mark.parametrize(
    ("meta", "field", "says"),
    [
        pytest.param([("feature", "letter")], "meta", "JSON object", id="not an object"),
        pytest.param({f"k{n}": n for n in range(33)}, "meta", "at most 32 keys", id="33 keys"),
        pytest.param({1: "letter"}, "meta", "keys must be strings", id="integer key"),
        pytest.param({"": "letter"}, "meta", "1 to 64 characters", id="empty key"),
        pytest.param({"k" * 65: "letter"}, "meta", "1 to 64 characters", id="65-character key"),
        pytest.param({"fea\nture": "letter"}, "meta", "printable", id="control character in key"),
        pytest.param({"ratio": 0.5}, "meta.ratio", "integers or strings", id="float"),
        pytest.param({"password": 1.5}, "meta.password", "integers or strings", id="float, secret key"),
        pytest.param({"device": {"os": "ios"}}, "meta.device", "nested objects", id="nested object"),
        pytest.param({"tags": ["a", "b"]}, "meta.tags", "list", id="array"),
        pytest.param({"comment": "x" * 257}, "meta.comment", "at most 256", id="257-character value"),
        pytest.param({"big": 2**63}, "meta.big", "64-bit", id="integer too large"),
        pytest.param({"small": -(2**63) - 1}, "meta.small", "64-bit", id="integer too small"),
        pytest.param({"raw": b"letter"}, "meta.raw", "bytes", id="bytes"),
        pytest.param({"nul": "let\x00ter"}, "meta.nul", "NUL", id="NUL character"),
        pytest.param({"half": "\ud800"}, "meta.half", "valid Unicode", id="lone surrogate"),
    ],
)
def test_shape_errors_name_the_field(meta: object, field: str, says: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        scrub_metadata(meta)  # type: ignore[arg-type]
    assert raised.value.field == field
    assert says in raised.value.detail


def test_errors_never_repeat_the_value() -> None:
    secret = "sk-abcdefghijklmnopqrstuvwxyz" + "x" * 300
    with pytest.raises(InvalidInput) as raised:
        scrub_metadata({"ref": secret})
    assert "sk-" not in raised.value.detail


def test_the_result_is_plain_json() -> None:
    class Plan(enum.StrEnum):
        PRO = "pro"

    class Tier(enum.IntEnum):
        TWO = 2

    scrubbed = scrub_metadata({"plan": Plan.PRO, "tier": Tier.TWO, "ok": True, "none": None, "pwd": "x"})
    assert scrubbed == {"plan": "pro", "tier": 2, "ok": True, "none": None, "pwd": REDACTED}
    assert json.loads(json.dumps(scrubbed)) == scrubbed
    assert type(scrubbed["plan"]) is str
    assert type(scrubbed["tier"]) is int


_keys = st.text(st.characters(codec="utf-8", exclude_categories=["C"]), min_size=1, max_size=64)
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=MAX_VALUE_LENGTH)
_samples = st.sampled_from([*SECRET_VALUES.values(), *SHORT_IDENTIFIERS, *sorted(SENSITIVE_KEYS)])
_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), _text, _samples)
_metadata = st.dictionaries(
    _keys.filter(str.isprintable) | st.sampled_from(sorted(SENSITIVE_KEYS)), _values, max_size=32
)


@given(_metadata)
def test_scrubbing_is_idempotent_and_never_lengthens_a_value(meta: dict[str, object]) -> None:
    once = scrub_metadata(meta)
    assert scrub_metadata(once) == once
    assert list(once) == list(meta)
    assert all(len(value) <= MAX_VALUE_LENGTH for value in once.values() if isinstance(value, str))
    assert json.loads(json.dumps(once)) == once


_anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=80) | st.integers(), _anything, max_size=40) | _anything)
def test_any_input_either_scrubs_or_raises_invalid_input(meta: object) -> None:
    with contextlib.suppress(InvalidInput):
        scrub_metadata(meta)  # type: ignore[arg-type]


# The pytest-timeout limits catch catastrophic backtracking (which on 256 characters would run for
# years), without timing a test: these values scrub in well under a millisecond each. No spaces in
# the alphabet, or most long values would stop at the free-text rule before any pattern runs.
_TRICKY = "aA07.-_@+/:=()eyJskBasicBearer"


@pytest.mark.timeout(30)
@settings(max_examples=300)
@given(st.text(max_size=MAX_VALUE_LENGTH) | st.text(st.sampled_from(_TRICKY), max_size=MAX_VALUE_LENGTH))
def test_adversarial_strings_scrub_without_backtracking(value: str) -> None:
    with contextlib.suppress(InvalidInput):  # NUL characters are refused
        scrub_metadata({"ref": value})


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "value",
    [
        *("a" * 256, "0" * 256, "a@" * 128, "x@" + "a." * 126 + "!", "@" + "a-" * 127, "-" * 256),
        *("1 1" * 4 + "1(" * 128, "+1" + "-1" * 126 + "x", "1-" * 128, "(" * 128 + "1" * 128),
        *("eyJ" + "a." * 126, "756." * 64, "CH" + "1" * 254),
        *("sk-" * 85, "Basic " + "A" * 250, "Bearer " + "a" * 249, "CH12" + " 1234" * 50),
    ],
    ids=lambda value: f"{value[:12]}…",
)
def test_classic_redos_shapes_scrub_quickly(value: str) -> None:
    assert scrub_metadata({"ref": value[:MAX_VALUE_LENGTH]})["ref"] in {value[:MAX_VALUE_LENGTH], REDACTED}
