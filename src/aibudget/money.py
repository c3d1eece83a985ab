"""Money: integer micro-USD inside, `Decimal` at the edges, decimal strings in JSON. No I/O.

One micro-USD is 1e-6 USD. Amounts a person types (a plan's budget, a credit grant) must be exact to
the micro-USD and are refused otherwise; costs computed from prices are rounded *up* to the next
micro-USD, so a call that cost anything never costs 0. Floats are refused everywhere: `0.1 + 0.2` is
not a price.

`parse_usd` is the one place a typed amount is read — for the library, the HTTP API, the CLI, the
dashboard's forms and the settings — and the text it takes is stricter than `Decimal`'s: `1e3`,
`1_000`, `+5` or Arabic-Indic digits are numbers to Python, but no one types them meaning an amount
of money.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal

from aibudget.errors import InvalidInput

MICROS_PER_USD = 1_000_000
# Amounts people type are capped far above any real budget and far below what a 64-bit column holds
MAX_AMOUNT_USD = 1_000_000_000
_MICRO = Decimal("0.000001")
# An amount as text: ASCII digits, then optionally one "." with digits after it; a leading "-" is
# checked against `allow_negative` after the match. `[0-9]`, not `\d`, which takes any script's digits.
_TYPED_AMOUNT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_ASCII_WHITESPACE = " \t\n\r\f\v"  # what a form or a shell leaves around a value; no other space

USDInput = Decimal | str | int


class FloatNotAllowed(InvalidInput):
    """A float was passed where money is expected; floats cannot hold cents exactly."""


def _shown(value: object) -> str:
    """`value` as an error message shows it: its repr, cut to 40 characters (an int past Python's
    4,300-digit limit for text has none)."""
    try:
        text = repr(value)
    except ValueError:
        return "a number of more than 4,300 digits"
    return text if len(text) <= 40 else text[:37] + "..."


def _to_decimal(value: object, field: str, *, allow_negative: bool) -> Decimal:
    if isinstance(value, float):
        raise FloatNotAllowed(
            f"{field}: {_shown(value)} is a float; pass money as a decimal string or Decimal", field=field
        )
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int):
        raise InvalidInput(f"{field}: expected a decimal amount, got {type(value).__name__}", field=field)
    if isinstance(value, str):
        text = value.strip(_ASCII_WHITESPACE)
        if not _TYPED_AMOUNT.fullmatch(text):
            raise InvalidInput(
                f"{field}: {_shown(value)} is not an amount in USD like 25.00 "
                "(ASCII digits and at most one '.'; no exponent, separators or '+')",
                field=field,
            )
        if text.startswith("-") and not allow_negative:  # "-0" too: a sign where none may be
            raise InvalidInput(f"{field}: {_shown(value)} is negative", field=field)
        return Decimal(text)
    amount = Decimal(value)
    if not amount.is_finite():
        raise InvalidInput(f"{field}: {_shown(value)} is not a finite amount", field=field)
    return amount


def parse_usd(value: object, *, field: str, allow_negative: bool = False) -> int:
    """An exact USD amount (`"12.50"`, `Decimal("3")`, `20`) as micro-USD; refuses anything inexact.

    Text must be ASCII digits with at most one `.` that has digits on both sides (`"20"`, `"7.50"`,
    `"0.000001"`), with a leading `-` only when `allow_negative`; spaces, tabs and line breaks around
    it are ignored. Refused, with `InvalidInput` naming `field`: exponents (`"1e3"`), digit separators
    (`"1_000"`, `"1,000"`, `"1 000"`), a leading `+`, digits of other scripts (full-width,
    Arabic-Indic, …), non-ASCII spaces, and a bare `"."` at either end (`".5"`, `"5."`), which is
    more often a digit lost in typing than a way of writing 0.50 or 5. A `Decimal` or an `int` is
    taken as it is (any finite value, exponent form included); a float or a bool is refused.
    """
    amount = _to_decimal(value, field, allow_negative=allow_negative)
    if amount < 0 and not allow_negative:
        raise InvalidInput(f"{field}: {_shown(value)} is negative", field=field)
    if abs(amount) > MAX_AMOUNT_USD:
        raise InvalidInput(f"{field}: {_shown(value)} is more than {MAX_AMOUNT_USD:,} USD", field=field)
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise InvalidInput(f"{field}: {_shown(value)} has more than 6 decimal places", field=field)
    return int(micros)


def cost_to_micros(cost_usd: Decimal) -> int:
    """A computed cost in USD, rounded up to the next micro-USD."""
    if not cost_usd.is_finite() or cost_usd < 0:
        raise ValueError(f"cost must be finite and non-negative, got {cost_usd}")
    if cost_usd > MAX_AMOUNT_USD:
        raise InvalidInput(
            f"the usage would cost {cost_usd:.2f} USD: more than any single call can", field="usage"
        )
    return int((cost_usd * MICROS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def to_decimal(micros: int) -> Decimal:
    """Micro-USD as a `Decimal` with exactly six places: 2400 -> Decimal('0.002400')."""
    return (Decimal(micros) / MICROS_PER_USD).quantize(_MICRO)


def format_usd(micros: int) -> str:
    """Micro-USD as the JSON decimal string: 2400 -> "0.002400"."""
    return str(to_decimal(micros))
