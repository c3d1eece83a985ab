"""Field types shared by the API's request and response models: ids, counts, durations, USD."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, WithJsonSchema

from aibudget.errors import InvalidInput
from aibudget.money import MICROS_PER_USD, format_usd, parse_usd
from aibudget.store.sql import LATEST_UNIX_SECONDS

MAX_USD = 1_000_000  # any single amount; keeps every sum far inside 64-bit micro-USD

Count = Annotated[StrictInt, Field(ge=0, le=10**12)]
Seconds = Annotated[Decimal, Field(ge=0, le=10**7, allow_inf_nan=False, max_digits=16, decimal_places=3)]
PracticeId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
Operation = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._:-]+$")]
Model = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(min_length=1, max_length=200)]
UnixSeconds = Annotated[StrictInt, Field(ge=0, le=LATEST_UNIX_SECONDS)]


def _usd(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError('must be a decimal string such as "20.00" or an integer; floats are refused')
    try:
        micros = parse_usd(value, field="amount")
    except InvalidInput as exc:
        raise ValueError(exc.detail.removeprefix("amount: ")) from None
    if micros > MAX_USD * MICROS_PER_USD:
        raise ValueError(f"must be at most {MAX_USD} USD")
    return format_usd(micros)


Usd = Annotated[
    str,
    BeforeValidator(_usd),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "examples": ["20.00"]}, {"type": "integer"}],
         "description": "USD as a decimal string (at most 6 decimals) or an integer, never a float"}
    ),
]  # fmt: skip


class Strict(BaseModel):
    """A request body: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")
