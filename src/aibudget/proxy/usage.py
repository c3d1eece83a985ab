"""What an OpenAI-style request may cost and what its response says it used: pure functions of JSON.

Before the call, the estimate: the prompt's size in characters (every text the request carries —
message contents, `input`, `instructions`) and its output cap (`max_completion_tokens`,
`max_tokens` or `max_output_tokens`). After it, the usage in OpenAI's conventions, which are the
catalog's (`pricing.catalog.Usage`): input tokens count all input, cached and audio tokens included.

A stream cut off before its usage arrived is charged by an estimate, flagged as such: the input from
the request's size and the output from the text streamed so far (`streamed_output_tokens`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from aibudget.errors import InvalidInput
from aibudget.ledger.estimate import CHARS_PER_TOKEN_BOUND

SettleUsage = dict[str, Any]  # keyword arguments of `Budget.settle`: input_tokens, output_tokens, …
# keys whose values are not prompt text: markers (`role`, `type`), or media priced otherwise
_NOT_PROMPT = frozenset({"role", "type", "image_url", "file_data", "input_audio"})


def _texts(value: object) -> Iterable[str]:
    """Every string inside a JSON value (message contents, content parts, tool arguments)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _NOT_PROMPT:
                yield from _texts(item)


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of text the request sends the model."""
    parts = (body.get(key) for key in ("messages", "input", "instructions", "prompt", "tools"))
    return sum(len(text) for part in parts if part is not None for text in _texts(part))


def output_cap(body: dict[str, Any]) -> int | None:
    """The request's cap on output tokens, if it sets one."""
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"{key} must be a whole number", field=key)
            return value
    return None


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 200:
        raise InvalidInput("model is required: the model to call", field="model")
    return model


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _details(usage: dict[str, Any], key: str) -> dict[str, Any]:
    """A breakdown inside `usage`; empty when the upstream sent none or something else."""
    details = usage.get(key)
    return details if isinstance(details, dict) else {}


def chat_usage(usage: dict[str, Any]) -> SettleUsage:
    """`usage` of a chat completion (or of its last stream chunk)."""
    details = _details(usage, "prompt_tokens_details")
    return {
        "input_tokens": _count(usage.get("prompt_tokens")),
        "cached_input_tokens": _count(details.get("cached_tokens")),
        "input_audio_tokens": _count(details.get("audio_tokens")),
        "output_tokens": _count(usage.get("completion_tokens")),
    }


def responses_usage(usage: dict[str, Any]) -> SettleUsage:
    """`usage` of a Responses API response."""
    details = _details(usage, "input_tokens_details")
    return {
        "input_tokens": _count(usage.get("input_tokens")),
        "cached_input_tokens": _count(details.get("cached_tokens")),
        "output_tokens": _count(usage.get("output_tokens")),
    }


def embeddings_usage(usage: dict[str, Any]) -> SettleUsage:
    return {"input_tokens": _count(usage.get("prompt_tokens"))}


def transcription_usage(usage: dict[str, Any] | None, audio_seconds: Decimal) -> SettleUsage:
    """A transcription's usage: token-priced models report tokens (audio among the input); the
    others report nothing and are charged by the upload's duration."""
    if not usage or usage.get("type") == "duration":
        return {"audio_seconds": audio_seconds}
    details = _details(usage, "input_token_details")
    return {
        "input_tokens": _count(usage.get("input_tokens")),
        "input_audio_tokens": _count(details.get("audio_tokens")),
        "output_tokens": _count(usage.get("output_tokens")),
    }


def streamed_output_tokens(streamed_chars: int) -> int:
    """A bound on the output tokens of `streamed_chars` characters of streamed text."""
    return math.ceil(streamed_chars / CHARS_PER_TOKEN_BOUND)


def estimated_usage(body: dict[str, Any], streamed_chars: int) -> SettleUsage:
    """What a stream cut off before its usage arrived is charged: bounds from both sides' text."""
    return {
        "input_tokens": math.ceil(prompt_chars(body) / CHARS_PER_TOKEN_BOUND),
        "output_tokens": streamed_output_tokens(streamed_chars),
    }


class StreamTally:
    """Follows a stream's events (chat chunks or Responses events, as JSON objects): keeps the usage
    when it comes and counts the streamed text, for an estimate if the stream is cut off first."""

    def __init__(self, kind: str, *, hide_usage_chunk: bool = False) -> None:
        self.kind = kind  # chat | responses
        self.hide_usage_chunk = hide_usage_chunk  # a chat usage chunk the caller did not ask for
        self.usage: dict[str, Any] | None = None
        self.chars = 0

    def take(self, event: dict[str, Any]) -> bool:
        """Note one event; whether to pass it on to the caller."""
        if self.kind == "chat":
            for choice in event.get("choices") or []:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                content = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(content, str):
                    self.chars += len(content)
            if isinstance(event.get("usage"), dict):
                self.usage = event["usage"]
                return not (self.hide_usage_chunk and not event.get("choices"))
            return True
        kind = event.get("type")
        if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            self.chars += len(event["delta"])
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = event.get("response")
            reported = response.get("usage") if isinstance(response, dict) else None
            if isinstance(reported, dict):
                self.usage = reported
        return True

    def settle_usage(self, body: dict[str, Any]) -> tuple[SettleUsage, bool]:
        """What to settle the stream with, and whether that is an estimate."""
        if self.usage is None:
            return estimated_usage(body, self.chars), True
        read = chat_usage if self.kind == "chat" else responses_usage
        return read(self.usage), False
