"""What an OpenAI-style request may cost and what its response says it used: pure functions of JSON.

Before the call, the estimate: the prompt's size in characters (every text the request carries —
message contents, `input`, `instructions` — with a token given as a number, as in a token-array
`input`, counted as `CHARS_PER_TOKEN_BOUND` characters) and its output cap
(`max_completion_tokens`, `max_tokens` or `max_output_tokens`). After it, the usage in OpenAI's
conventions, which are the catalog's (`pricing.catalog.Usage`): input tokens count all input, cached
and audio tokens included.

A call whose usage never came — a stream cut off before it, an answer without it — is charged by an
estimate, flagged as such: the input from the request's size, the output from the text the model
generated as far as it came (`generated_chars`: message text, refusals, tool call arguments,
reasoning summaries, … — not ids, markers, tool results or base64 media).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from aibudget.errors import InvalidInput
from aibudget.ledger.estimate import CHARS_PER_TOKEN_BOUND

SettleUsage = dict[str, Any]  # keyword arguments of `Budget.settle`: input_tokens, output_tokens, …
_PROMPT = ("messages", "input", "instructions", "prompt", "tools")  # the keys of a body the model reads
# keys whose values are not prompt text: markers (`role`, `type`), or media priced otherwise
_NOT_PROMPT = frozenset({"role", "type", "image_url", "file_data", "input_audio"})


def prompt_chars(body: dict[str, Any]) -> int:
    """The size of what the request sends the model, in characters: the length of every text, and
    `CHARS_PER_TOKEN_BOUND` for every number. `Estimate`'s bound thus holds exactly one token for each
    id of a token-array `input` or `prompt` (`[1, 2, 3]`, `[[1, 2], [3]]`), on top of its bound for any
    text beside them; another number the model reads (in a tool's schema, say) is a token at least."""
    size = 0
    pending: list[object] = [body.get(key) for key in _PROMPT]
    while pending:  # without recursion: a body may nest up to `routes.MAX_NESTING` deep
        value = pending.pop()
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            size += CHARS_PER_TOKEN_BOUND
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(item for key, item in value.items() if key not in _NOT_PROMPT)
    return size


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


# Keys whose strings the model generated, wherever they sit in an answer's `choices` or `output`
# (or a stream's deltas): message text and its parts, refusals, reasoning (a chat upstream's
# `reasoning_content`, Responses' summaries and reasoning text), a tool call's name and arguments
# (`function`, `custom`, MCP, code interpreter `code`, shell `command`s, `apply_patch` `diff`, web
# search `query`), an audio answer's `transcript`. Strings under any other key are not counted: ids,
# markers (`type`, `role`, `status`, `finish_reason`), base64 media (`data`, `result`).
_GENERATED = frozenset({
    "content", "text", "refusal", "reasoning", "reasoning_content", "name", "arguments", "input",
    "code", "command", "commands", "diff", "query", "queries", "transcript", "revised_prompt",
})  # fmt: skip
# containers whose text the model did not generate: tool results, tool lists, token statistics
_NOT_GENERATED = frozenset({"output", "outputs", "results", "tools", "logprobs", "annotations"})


def generated_chars(value: object) -> int:
    """Characters of text the model generated in part of an answer: a chat answer's `choices` (or
    a chunk's), a Responses `output` or one of its items."""
    chars = 0
    pending: list[tuple[str | None, object]] = [(None, value)]
    while pending:  # without recursion: the upstream's answer may nest deeply
        key, item = pending.pop()
        if isinstance(item, str):
            chars += len(item) if key in _GENERATED else 0
        elif isinstance(item, list):
            pending.extend((key, inner) for inner in item)
        elif isinstance(item, dict):
            pending.extend((name, inner) for name, inner in item.items() if name not in _NOT_GENERATED)
    return chars


def answer_chars(answer: object) -> int:
    """Characters of text the model generated in a plain answer: a chat (or legacy completions)
    answer's `choices`, a Responses answer's `output`; all of a plain-text answer."""
    if isinstance(answer, str):
        return len(answer)
    if not isinstance(answer, dict):
        return 0
    return generated_chars(answer.get("choices")) + generated_chars(answer.get("output"))


def streamed_output_tokens(output_chars: int) -> int:
    """A bound on the output tokens of `output_chars` characters of generated text."""
    return math.ceil(output_chars / CHARS_PER_TOKEN_BOUND)


def estimated_usage(body: dict[str, Any], output_chars: int) -> SettleUsage:
    """What a call whose usage never came is charged: bounds from the request's size and from the
    `output_chars` characters the model generated (as far as they came)."""
    return {
        "input_tokens": math.ceil(prompt_chars(body) / CHARS_PER_TOKEN_BOUND),
        "output_tokens": streamed_output_tokens(output_chars),
    }


def estimated_answer_usage(body: dict[str, Any], answer: object) -> SettleUsage:
    """What a successful plain answer that reported no `usage` is charged: bounds from the request's
    size and from the answer's own generated text (`answer_chars`). `answer` is the answer's JSON
    (a chat completion or Responses response as a dict), or its text if it was not JSON."""
    return estimated_usage(body, answer_chars(answer))


class StreamTally:
    """Follows a stream's events (chat chunks or Responses events, as JSON objects): keeps the usage
    when it comes and counts the generated text streamed, for an estimate if the stream is cut off
    first.

    Chat: everything generated in a chunk's choices (`delta.content`, `delta.refusal`,
    `delta.tool_calls[].function.arguments`, …). Responses: every text `….delta` event (output
    text, refusal, function call arguments, reasoning and its summary, …; not `response.audio.delta`,
    which is base64 audio), counted per output item with what the item started with
    (`response.output_item.added`: a function call's name); an item's `response.output_item.done`,
    or a final response that came without usage, counts for what the deltas did not show (text that
    came whole rather than in deltas)."""

    def __init__(self, kind: str, *, hide_usage_chunk: bool = False) -> None:
        self.kind = kind  # chat | responses
        self.hide_usage_chunk = hide_usage_chunk  # a chat usage chunk the caller did not ask for
        self.usage: dict[str, Any] | None = None
        self._item_chars: dict[object, int] = {}  # generated characters by output item (chat: one)
        self._final_chars = 0  # a Responses stream's final response, if it came without usage

    @property
    def chars(self) -> int:
        """Characters of generated text streamed so far."""
        return max(sum(self._item_chars.values()), self._final_chars)

    def _add(self, item: object, chars: int) -> None:
        self._item_chars[item] = self._item_chars.get(item, 0) + chars

    def take(self, event: dict[str, Any]) -> bool:
        """Note one event; whether to pass it on to the caller."""
        if self.kind == "chat":
            self._add(None, generated_chars(event.get("choices")))
            if isinstance(event.get("usage"), dict):
                self.usage = event["usage"]
                return not (self.hide_usage_chunk and not event.get("choices"))
            return True
        kind, index = event.get("type"), event.get("output_index")
        item = index if isinstance(index, int) else None
        if not isinstance(kind, str):
            return True
        if kind.endswith(".delta") and kind != "response.audio.delta" and isinstance(event.get("delta"), str):
            self._add(item, len(event["delta"]))
        elif kind == "response.output_item.added":  # what the item starts with (a call's name)
            self._add(item, generated_chars(event.get("item")))
        elif kind == "response.output_item.done":
            done = generated_chars(event.get("item"))
            self._item_chars[item] = max(self._item_chars.get(item, 0), done)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = event.get("response")
            reported = response.get("usage") if isinstance(response, dict) else None
            if isinstance(reported, dict):
                self.usage = reported
            else:
                self._final_chars = answer_chars(response)
        return True

    def settle_usage(self, body: dict[str, Any]) -> tuple[SettleUsage, bool]:
        """What to settle the stream with, and whether that is an estimate."""
        if self.usage is None:
            return estimated_usage(body, self.chars), True
        read = chat_usage if self.kind == "chat" else responses_usage
        return read(self.usage), False
