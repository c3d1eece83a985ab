"""Usage-event metadata: the shape aibudget accepts, and the scrubbing that keeps secrets out.

Callers attach a small flat object to every recorded AI call (`{"feature": "letter", "app_version":
"4.2.1", "keyboard": "de-CH", "template_id": 17}`) so the operator can tell calls apart. aibudget never
stores prompts, transcripts, patient text or secrets (SPEC §7). `scrub_metadata` first checks the
shape — a flat JSON object of at most 32 keys, 1 to 64 printable characters each, whose values are
strings of at most 256 characters, 64-bit integers, booleans or null; never floats, never nested —
and refuses anything else whole with `InvalidInput`. Then two rules replace a *value* by
`"[redacted]"`, keeping the key so the operator sees what was sent:

1. **By exact key name.** The key, normalized (case folded, camelCase split, every run of `-`, ` `,
   `.`, `_` and other punctuation made one `_`), is one of `SENSITIVE_KEYS`: `API-Key`, `api key`,
   `apiKey` and `api_key` are all `api_key`.
2. **By value, under any key.** A string that looks like a credential (`sk-…` and other API keys,
   `Bearer …`/`Basic …` authorizations, JWTs, private keys, `password=…`), like personal data (an
   e-mail address, a phone number, a Swiss AHV number, an IBAN with a valid checksum), or like free
   text — more than 8 words, or more than 120 characters with whitespace: free text is where patient
   data hides.

Why exact names and not substrings: substring matching fails both ways. It drops harmless keys
(`keyboard` contains `key`, `token_count` contains `token`, `author_role` contains `auth`) and so
teaches callers to rename keys, while it never looks at what was actually sent: `{"k": "sk-…"}`
passes any name rule. The name rule is therefore exact and small, and the value rule is the net.

Pure functions, no I/O. Every pattern is compiled once at import and is linear or at worst quadratic
in the value's length (no nested ambiguous repetition), so an adversarial 256-character value scrubs
in microseconds.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Final

from aibudget.errors import InvalidInput

MetaValue = str | int | bool | None

MAX_KEYS: Final = 32
MAX_KEY_LENGTH: Final = 64
MAX_VALUE_LENGTH: Final = 256
REDACTED: Final = "[redacted]"
_INT_MIN: Final = -(2**63)  # the range of a BIGINT column and of a JSON number every client reads
_INT_MAX: Final = 2**63 - 1
_MAX_WORDS: Final = 8
_MAX_SPACED_LENGTH: Final = 120

# Key names (after `normalize_key`) whose value is always redacted. Matched exactly, never as
# substrings, so `keyboard`, `token_count`, `tokenizer`, `monkey`, `author_role` and `session_count`
# stay readable. Add a name only when the whole name means "this is secret or personal".
SENSITIVE_KEYS: Final = frozenset(
    {
        # credentials
        *("password", "passwd", "pwd", "passphrase", "secret", "client_secret", "api_secret"),
        *("token", "access_token", "refresh_token", "id_token", "auth_token", "bearer", "credentials"),
        *("api_key", "apikey", "x_api_key", "access_key", "secret_key", "private_key"),
        *("authorization", "auth", "cookie", "set_cookie", "session"),
        # who a patient is and how to reach them
        *("email", "e_mail", "email_address", "phone", "phone_number", "mobile", "telephone"),
        *("name", "first_name", "last_name", "full_name", "surname", "given_name", "family_name"),
        *("birthdate", "birth_date", "date_of_birth", "dob", "address", "iban"),
        *("ssn", "ahv", "ahv_number", "insurance_number", "patient", "patient_name", "patient_id"),
        # the clinical or conversational text itself
        *("prompt", "system_prompt", "transcript", "text", "content", "message", "messages"),
        *("diagnosis", "note", "notes"),
        # German and French spellings a Swiss app may send
        *("passwort", "kennwort", "mot_de_passe", "vorname", "nachname", "geburtsdatum", "telefon"),
        *("adresse", "diagnose"),
    }
)

_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")  # apiKey -> api_Key
_CAMEL_ACRONYM = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")  # IDToken -> ID_Token
_PUNCTUATION_RUN = re.compile(r"[\W_]+")

# Credentials recognizable by their own form. Each prefix must start a word (`desk-…` is no key) and
# be followed by enough key characters that locales such as `sk-SK` pass.
_CREDENTIAL = re.compile(
    r"""
    (?<![A-Za-z0-9])(?:
        sk-[A-Za-z0-9_-]{16,}                          # OpenAI, Anthropic: sk-…, sk-proj-…, sk-ant-…
      | [srp]k_(?:live|test)_[A-Za-z0-9]{10,}          # Stripe secret, restricted, publishable keys
      | gh[pousr]_[A-Za-z0-9]{20,} | github_pat_\w{20,}  # GitHub tokens
      | xox[abposr]-[A-Za-z0-9-]{10,}                  # Slack tokens
      | (?:AKIA|ASIA)[A-Z0-9]{16}                      # AWS access key ids
      | AIza[A-Za-z0-9_-]{35}                          # Google API keys
      | eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*  # JWT: base64url JSON header, payload, signature
    )
    | (?i:\bbearer\s+[A-Za-z0-9._~+/-]{8,})            # an Authorization header's bearer token
    | -----BEGIN\ [A-Z ]*PRIVATE\ KEY-----
    | (?i:\b(?:password|passwd|pwd|secret|token|api[_-]?key)\s*[:=]\s*\S)  # password=…, token: …
    """,
    re.VERBOSE,
)
# `Basic` is also a plan name, so the token must decode to `user:password` to count.
_BASIC_AUTH = re.compile(r"(?i)\bbasic\s+([A-Za-z0-9+/]{4,}={0,2})(?![\w+/=])")
# Starts only where a run of address characters starts, which keeps the search linear.
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)+")
# 9+ digits separated by spaces, dashes, slashes or parentheses: +41 79 123 45 67, (044) 123 45 67.
# Not dots, so versions and IP addresses pass; not inside a word, next to a dash or before a colon
# and a digit, so UUIDs and times (`2024-05-01 12:30`) pass; `079 123 45 67: dringend` does not.
_PHONE = re.compile(r"(?<![\w+/-])(?:\+|\(\+?)?\d(?:[ ()/-]{0,3}\d){8,}(?![\w/-]|:\d)")
_UUID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}", re.IGNORECASE)
_AHV = re.compile(r"(?<!\d)756[.\s-]?\d{4}[.\s-]?\d{4}[.\s-]?\d{2}(?!\d)")
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])", re.I
)


def normalize_key(key: str) -> str:
    """The form a key is compared in: `API-Key`, `api key`, `apiKey`, `__api_key__` -> `api_key`."""
    split = _CAMEL_ACRONYM.sub("_", _CAMEL_HUMP.sub("_", key))
    return _PUNCTUATION_RUN.sub("_", split.casefold()).strip("_")


def looks_sensitive(value: str) -> bool:
    """Whether a metadata string looks like a credential, personal data or free text (rule 2)."""
    return (
        len(value.split()) > _MAX_WORDS
        or (len(value) > _MAX_SPACED_LENGTH and any(char.isspace() for char in value))
        or _CREDENTIAL.search(value) is not None
        or ("@" in value and _EMAIL.search(value) is not None)
        or _AHV.search(value) is not None
        or any(_is_phone_number(match.group()) for match in _PHONE.finditer(value))
        or any(_holds_iban(match.group()) for match in _IBAN.finditer(value))
        or any(_is_basic_credential(match.group(1)) for match in _BASIC_AUTH.finditer(value))
    )


def scrub_metadata(meta: Mapping[str, object] | None) -> dict[str, MetaValue]:
    """Check the shape of a usage event's metadata and redact what must not be stored.

    `None` is `{}`. A shape error raises `InvalidInput` with `field="meta"` (not an object, too many
    keys, a bad key) or `field="meta.<key>"` (a bad value); nothing partial is returned. Keys and
    their order are kept; a value that is sensitive by key name or by content becomes `REDACTED`.
    """
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InvalidInput(f"meta: expected a JSON object, got {type(meta).__name__}", field="meta")
    if len(meta) > MAX_KEYS:
        raise InvalidInput(f"meta: at most {MAX_KEYS} keys are accepted, got {len(meta)}", field="meta")
    scrubbed: dict[str, MetaValue] = {}
    for raw_key, raw_value in meta.items():
        key = _checked_key(raw_key)
        value = _checked_value(key, raw_value)
        if normalize_key(key) in SENSITIVE_KEYS or (isinstance(value, str) and looks_sensitive(value)):
            value = REDACTED
        scrubbed[key] = value
    return scrubbed


def _checked_key(key: object) -> str:
    # The key is not echoed: an invalid one may be long or hold control characters.
    if not isinstance(key, str):
        raise InvalidInput(f"meta: keys must be strings, got {type(key).__name__}", field="meta")
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidInput(
            f"meta: keys must be 1 to {MAX_KEY_LENGTH} characters, got one of {len(key)}", field="meta"
        )
    if not key.isprintable():
        raise InvalidInput("meta: keys must be printable text, without control characters", field="meta")
    return str.__str__(key)  # a plain str, even from a str subclass


def _checked_value(key: str, value: object) -> MetaValue:
    # Messages never echo the value: it may be exactly what must not be stored or logged.
    field = f"meta.{key}"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidInput(f"{field}: integer outside the 64-bit range; send it as a string", field=field)
        return int(value)
    if isinstance(value, float):
        raise InvalidInput(
            f"{field}: floats are not stored; send numbers as integers or strings", field=field
        )
    if isinstance(value, str):
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidInput(
                f"{field}: at most {MAX_VALUE_LENGTH} characters, got {len(value)}", field=field
            )
        if "\x00" in value or not _is_encodable(value):
            raise InvalidInput(f"{field}: text must be valid Unicode without NUL characters", field=field)
        return str.__str__(value)
    kind = "nested objects" if isinstance(value, Mapping) else f"values of type {type(value).__name__}"
    raise InvalidInput(
        f"{field}: {kind} are not accepted; use a string, integer, boolean or null", field=field
    )


def _is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")  # lone surrogates cannot be stored as UTF-8 text
    except UnicodeEncodeError:
        return False
    return True


def _is_phone_number(digits: str) -> bool:
    # A bare digit run is a counter or a timestamp unless it is written like a number to dial; an
    # all-digit UUID (the nil UUID) is an id.
    if _UUID.fullmatch(digits):
        return False
    return digits.startswith(("+", "(", "0")) or any(separator in digits for separator in " ()/-")


def _holds_iban(candidate: str) -> bool:
    # The pattern's optional trailing groups can swallow the next word (`AT61…3201 Euro`), so every
    # shorter candidate ending at a space is tried too.
    groups = candidate.split(" ")
    return any(_is_iban(" ".join(groups[:end])) for end in range(len(groups), 0, -1))


def _is_iban(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _is_basic_credential(token: str) -> bool:
    try:
        decoded = base64.b64decode(token, validate=True)
    except ValueError:  # binascii.Error: not base64, or bad padding
        return False
    return b":" in decoded
