"""What the proxy holds and charges when it cannot read the cost off the upstream's `usage` (SPEC §4,
§9): the bounds it takes from the text on both sides, `CHARS_PER_TOKEN_BOUND` characters a token.

An answer that reports no usage is charged by the text the model generated in it — message text,
refusals, tool calls' names and arguments, reasoning summaries — not by nothing. A stream cut off
before its usage is charged by all the generated text it streamed, not only `delta.content`. A
prompt given as token ids is held at one token an id, so `strict` refuses what it cannot fund.

The official `openai` package is the app, the proxy a server the test starts, a fake OpenAI the
upstream; answers and streams the fake does not make are scripted with its `fail_next`."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import openai
import pytest

from aibudget.ledger.estimate import CHARS_PER_TOKEN_BOUND
from aibudget.proxy import usage
from aibudget.proxy.usage import prompt_chars
from tests.api.conftest import Server
from tests.fake_openai import FakeOpenAI, reply_text
from tests.proxy.test_proxy import MESSAGES, client, event_of, funded_practice, held_usd, letter

LETTER = reply_text(300)  # about 2,000 characters of a German letter
ARGUMENTS = json.dumps({"recipient": "Frau Muster", "letter": LETTER})
TOOLS = [{"type": "function", "function": {"name": "write_letter", "parameters": {"type": "object"}}}]
REFUSAL = "Ich kann Ihnen dabei leider nicht helfen. " * 30


def tokens(chars: int) -> int:
    """The bound on the tokens of `chars` characters of text."""
    return math.ceil(chars / CHARS_PER_TOKEN_BOUND)


def request_id() -> str:
    return f"est-{uuid.uuid4().hex[:10]}"


# -- an answer without usage ------------------------------------------------------------------


def chat_answer_without_usage() -> dict[str, Any]:
    message = {
        "role": "assistant", "content": LETTER, "refusal": None, "annotations": [],
        "tool_calls": [{"id": "call_fake1", "type": "function",
                        "function": {"name": "write_letter", "arguments": ARGUMENTS}}],
    }  # fmt: skip
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
    return {"id": "chatcmpl-nousage", "object": "chat.completion", "created": 1_700_000_000,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_fake", "choices": [choice]}  # fmt: skip


def responses_answer_without_usage() -> dict[str, Any]:
    output = [
        {"id": "rs_fake1", "type": "reasoning", "encrypted_content": "gAAAA" * 400,
         "summary": [{"type": "summary_text", "text": "Der Brief soll den Termin bestätigen."}]},
        {"id": "msg_fake1", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": LETTER, "annotations": [], "logprobs": []}]},
        {"id": "fc_fake1", "type": "function_call", "call_id": "call_fake1", "status": "completed",
         "name": "write_letter", "arguments": ARGUMENTS},
    ]  # fmt: skip
    return {"id": "resp_nousage", "object": "response", "created_at": 1_700_000_000, "status": "completed",
            "model": "gpt-4o-mini", "output": output, "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": TOOLS, "instructions": "Schreibe höflich.", "usage": None}  # fmt: skip


def test_a_chat_answer_without_usage_is_charged_by_the_text_and_tool_calls_it_generated(
    server: Server, upstream: FakeOpenAI
) -> None:
    """The answer's content and its tool call (name, arguments) are what the model generated; the
    ids and markers around them are not."""
    practice_id, api_key = funded_practice(server)
    upstream.fail_next(1, status=200, body=chat_answer_without_usage(), path="/v1/chat/completions")
    called = request_id()
    with client(server, api_key) as app:
        completion = letter(app, called, tools=TOOLS)
    assert completion.usage is None
    event = event_of(server, practice_id, called)
    assert event.estimated is True
    assert event.output_tokens == tokens(len(LETTER) + len("write_letter") + len(ARGUMENTS))
    assert event.input_tokens == tokens(prompt_chars({"messages": MESSAGES, "tools": TOOLS}))
    assert held_usd(server, practice_id) == 0


def test_a_responses_answer_without_usage_is_charged_by_its_output_text_reasoning_and_calls(
    server: Server, upstream: FakeOpenAI
) -> None:
    """The reasoning summary, the message and the function call are output; the encrypted reasoning
    and the request's echoed instructions and tools are not."""
    practice_id, api_key = funded_practice(server)
    upstream.fail_next(1, status=200, body=responses_answer_without_usage(), path="/v1/responses")
    called = request_id()
    with client(server, api_key) as app:
        answer = app.responses.create(model="gpt-4o-mini", input="Ein Brief, bitte.",
                                      extra_headers={"Idempotency-Key": called})  # fmt: skip
    assert answer.output_text == LETTER
    summary = "Der Brief soll den Termin bestätigen."
    event = event_of(server, practice_id, called)
    assert event.estimated is True
    assert event.output_tokens == tokens(len(summary) + len(LETTER) + len("write_letter") + len(ARGUMENTS))
    assert held_usd(server, practice_id) == 0


def test_what_an_answer_carries_besides_generated_text_is_not_output() -> None:
    """Tool results, base64 media and audio, ids and the encrypted reasoning are no output tokens."""
    image = {"id": "ig_1", "type": "image_generation_call", "status": "completed", "result": "iVBOR" * 10_000}
    shell = {"id": "sh_1", "type": "local_shell_call_output", "output": "total 0\n" * 100}
    spoken = {"id": "audio_1", "data": "UklGR" * 10_000, "transcript": "Guten Tag", "expires_at": 1}
    audio = {"role": "assistant", "content": None, "audio": spoken}
    assert usage.estimated_answer_usage({}, {"output": [image, shell]})["output_tokens"] == 0
    chat = {"choices": [{"index": 0, "message": audio, "finish_reason": "stop"}]}
    assert usage.estimated_answer_usage({}, chat)["output_tokens"] == tokens(len("Guten Tag"))


# -- a stream cut off before its usage --------------------------------------------------------


def chat_stream(*deltas: dict[str, Any]) -> bytes:
    """A chat stream of `deltas` that ends before its usage chunk and `[DONE]`."""
    chunks = (
        {"id": "chatcmpl-cut", "object": "chat.completion.chunk", "created": 1_700_000_000,
         "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        for delta in deltas
    )  # fmt: skip
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks)


def responses_stream(*events: dict[str, Any]) -> bytes:
    """A Responses stream of `events` that ends before `response.completed`."""
    return b"".join(
        f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': number})}\n\n".encode()
        for number, event in enumerate(events)
    )


def pieces(text: str, size: int = 40) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)]


TOOL_CALL_STREAM = chat_stream(
    {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_fake1", "type": "function",
         "function": {"name": "write_letter", "arguments": ""}}]},
    *({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]} for piece in pieces(ARGUMENTS)),
)  # fmt: skip
REFUSAL_STREAM = chat_stream(
    {"role": "assistant", "content": None, "refusal": ""}, *({"refusal": piece} for piece in pieces(REFUSAL))
)
SUMMARY = "Ich schreibe den Brief an Frau Muster."
FUNCTION_CALL_STREAM = responses_stream(
    {"type": "response.created", "response": {
        "id": "resp_cut", "object": "response", "created_at": 1_700_000_000, "status": "in_progress",
        "model": "gpt-4o-mini", "output": [], "instructions": "Schreibe höflich.",
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": TOOLS}},
    {"type": "response.output_item.added", "output_index": 0,
     "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
    *({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0,
       "summary_index": 0, "delta": piece} for piece in pieces(SUMMARY, 8)),
    {"type": "response.output_item.done", "output_index": 0,
     "item": {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": SUMMARY}]}},
    {"type": "response.output_item.added", "output_index": 1,
     "item": {"id": "fc_1", "type": "function_call", "call_id": "call_1", "status": "in_progress",
              "name": "write_letter", "arguments": ""}},
    *({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1,
       "delta": piece} for piece in pieces(ARGUMENTS)),
)  # fmt: skip


@pytest.mark.parametrize(
    ("path", "stream", "generated"),
    [
        ("/v1/chat/completions", TOOL_CALL_STREAM, len("write_letter") + len(ARGUMENTS)),
        ("/v1/chat/completions", REFUSAL_STREAM, len(REFUSAL)),
        ("/v1/responses", FUNCTION_CALL_STREAM, len(SUMMARY) + len("write_letter") + len(ARGUMENTS)),
    ],
    ids=["chat tool call arguments", "chat refusal", "responses reasoning summary and function call"],
)
def test_a_stream_cut_off_before_its_usage_is_charged_by_all_the_text_it_generated(
    server: Server, upstream: FakeOpenAI, path: str, stream: bytes, generated: int
) -> None:
    """Tool call arguments, a refusal, a reasoning summary stream as other deltas than
    `delta.content` / `response.output_text.delta`; they are output all the same."""
    practice_id, api_key = funded_practice(server)
    upstream.fail_next(1, status=200, body=stream, path=path, content_type="text/event-stream")
    called = request_id()
    with client(server, api_key) as app:
        if path == "/v1/responses":
            with app.responses.create(model="gpt-4o-mini", input="Ein Brief, bitte.", stream=True,
                                      extra_headers={"Idempotency-Key": called}) as events:  # fmt: skip
                assert list(events)
        else:
            with letter(app, called, stream=True) as chunks:
                assert list(chunks)
    event = event_of(server, practice_id, called)
    assert event.estimated is True
    assert event.output_tokens == tokens(generated)
    assert held_usd(server, practice_id) == 0


# -- a prompt given as token ids --------------------------------------------------------------


def strict_practice(server: Server, included_usd: str) -> tuple[str, str]:
    practice_id, api_key = funded_practice(server, included_usd)
    with server.budget() as budget:
        budget.put_practice(practice_id, policy="strict")
    return practice_id, api_key


def test_strict_refuses_embeddings_of_more_token_ids_than_the_budget_funds(
    server: Server, upstream: FakeOpenAI
) -> None:
    """text-embedding-3-small costs 0.02 USD a million tokens: 100 micro-USD fund 5,000 tokens. Token
    arrays of 10,000 ids are refused before they are sent; 1,000 ids and a text go through, and what
    they cost stays within the funding."""
    practice_id, api_key = strict_practice(server, included_usd="0.0001")
    calls_before = len(upstream.requests)
    with client(server, api_key) as app:
        with pytest.raises(openai.APIStatusError) as refused:
            app.embeddings.create(model="text-embedding-3-small", input=[[1000] * 5000, [1001] * 5000])
        assert (refused.value.status_code, refused.value.code) == (402, "AI_BUDGET_EXCEEDED")
        with pytest.raises(openai.APIStatusError):
            app.embeddings.create(model="text-embedding-3-small", input=[1000] * 6000)
        assert len(upstream.requests) == calls_before  # never forwarded

        called = request_id()
        app.embeddings.create(model="text-embedding-3-small", input=[[1000] * 600, [1001] * 400],
                              extra_headers={"Idempotency-Key": called})  # fmt: skip
    assert event_of(server, practice_id, called).input_tokens == 1000
    with server.budget() as budget:
        assert budget.snapshot(practice_id).overage_usd == 0


def test_token_ids_are_held_as_one_token_each_beside_the_bound_of_the_text() -> None:
    text = "Überweisung an die Kardiologie"
    held = tokens(prompt_chars({"input": [text, [1, 2, 3], [4]]}))
    assert held == tokens(len(text)) + 4
    assert tokens(prompt_chars({"prompt": [7] * 10})) == 10
