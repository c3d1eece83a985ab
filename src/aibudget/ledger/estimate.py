"""What an authorization holds: an estimate of a call's usage, before the call is made."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aibudget.errors import InvalidInput
from aibudget.pricing.catalog import MAX_TOKENS, Usage, audio_seconds

# Tokenizers of OpenAI's models average about 4 characters a token on European text; 2 is a bound
# that short words, numbers and punctuation stay under, so a prompt's size never under-holds.
CHARS_PER_TOKEN_BOUND = 2


def canonical(number: Decimal) -> str:
    """One spelling per value (90, 90.0 and 9E+1 are all "90"), so equal requests hash equal."""
    return format(number.normalize(), "f")


@dataclass(frozen=True, slots=True)
class Estimate:
    """Given input tokens, or a bound from the prompt's size; output capped by `max_output_tokens`.

    The bound is `prompt_chars / CHARS_PER_TOKEN_BOUND` tokens, rounded up. A prompt given (partly)
    as token ids is sized at `CHARS_PER_TOKEN_BOUND` characters an id (`proxy.usage.prompt_chars`),
    so each id is held as exactly one token, on top of the bound of the text beside it."""

    input_tokens: int | None = None
    prompt_chars: int | None = None
    max_output_tokens: int | None = None
    audio_seconds: Decimal | int | None = None  # stored as Decimal

    def __post_init__(self) -> None:
        for name in ("input_tokens", "prompt_chars", "max_output_tokens"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS
            ):
                raise InvalidInput(
                    f"estimate.{name} must be a whole number 0-{MAX_TOKENS}", field=f"estimate.{name}"
                )
        if self.audio_seconds is not None:
            seconds = audio_seconds(self.audio_seconds, "estimate.audio_seconds")
            object.__setattr__(self, "audio_seconds", seconds)

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
            "audio_seconds": None if self.audio_seconds is None else canonical(Decimal(self.audio_seconds)),
        }
