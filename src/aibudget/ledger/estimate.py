"""What an authorization holds: an estimate of a call's usage, before the call is made."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aibudget.errors import InvalidInput
from aibudget.pricing.catalog import Usage

# Tokenizers of OpenAI's models average about 4 characters a token on European text; 2 is a bound
# that short words, numbers and punctuation stay under, so a prompt's size never under-holds.
CHARS_PER_TOKEN_BOUND = 2


@dataclass(frozen=True, slots=True)
class Estimate:
    """Given input tokens, or a bound from the prompt's size; output capped by `max_output_tokens`."""

    input_tokens: int | None = None
    prompt_chars: int | None = None
    max_output_tokens: int | None = None
    audio_seconds: Decimal | int | None = None  # stored as Decimal

    def __post_init__(self) -> None:
        for name in ("input_tokens", "prompt_chars", "max_output_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidInput(f"estimate.{name} must be a whole number >= 0", field=f"estimate.{name}")
        seconds = self.audio_seconds
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, Decimal | int)
            or not Decimal(seconds).is_finite()
            or seconds < 0
        ):
            raise InvalidInput(
                "estimate.audio_seconds must be a finite number >= 0", field="estimate.audio_seconds"
            )

    def usage(self, *, default_max_output_tokens: int) -> Usage:
        if self.input_tokens is not None:
            input_tokens = self.input_tokens
        else:
            input_tokens = math.ceil((self.prompt_chars or 0) / CHARS_PER_TOKEN_BOUND)
        output = default_max_output_tokens if self.max_output_tokens is None else self.max_output_tokens
        return Usage(
            input_tokens=input_tokens,
            output_tokens=output,
            audio_seconds=self.audio_seconds or 0,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "prompt_chars": self.prompt_chars,
            "max_output_tokens": self.max_output_tokens,
            "audio_seconds": None if self.audio_seconds is None else str(self.audio_seconds),
        }
