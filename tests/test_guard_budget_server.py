"""`guard()` with the budget server as its gate (`BudgetClient`, `AsyncBudgetClient`), when the way to
it fails: the real `openai` package, a fake OpenAI upstream, a real aibudget server behind a gateway
the test owns (`tests/gateway.py`).

A failure the client's tries ride out costs nothing: the call is answered and charged once. A
server that stays away after the provider answered raises `UnsettledAnswer`, which carries the
answer (the provider is paid: the caller keeps what it paid for), names the request id, and holds
the settle to post once the server is back — charged once then, never silently lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from aibudget import UnsettledAnswer, guard
from aibudget.client import AsyncBudgetClient, BudgetClient
from aibudget.ledger.reports import UsageLine
from tests.api.conftest import Server
from tests.api.test_accounts import key
from tests.fake_openai import FakeOpenAI
from tests.gateway import Gateway
from tests.test_client import open_practice

MESSAGES = [{"role": "user", "content": "Bitte einen kurzen Brief an Frau Muster wegen des Termins."}]
QUICK = {"retries": 3, "backoff": 0.01, "max_backoff": 0.05}


@pytest.fixture
def gateway(server: Server) -> Iterator[Gateway]:
    with Gateway(server.url) as opened:
        yield opened


@dataclass(frozen=True)
class Practice:
    practice_id: str
    key: str


@pytest.fixture
def practice(server: Server) -> Practice:
    practice_id = open_practice(server)
    return Practice(practice_id, key(server, "practice", practice_id))


def calls(server: Server, practice: Practice) -> tuple[dict[str, tuple[str, int]], int]:
    """The practice's events by request id — (status, cost in micro-USD) — and what it holds."""
    with server.budget() as books:
        lines = [
            line for line in books.usage_report(practice.practice_id).rows if isinstance(line, UsageLine)
        ]
        events = {line.request_id: (line.status, line.cost_micros) for line in lines}
        return events, books.snapshot(practice.practice_id).held_micros


def price(server: Server, reported: dict[str, Any]) -> int:
    with server.budget() as books:
        cost: int = books.price("gpt-4o-mini", input_tokens=reported["prompt_tokens"],
                                output_tokens=reported["completion_tokens"]).cost_micros  # fmt: skip
        return cost


def read_while_the_server_goes(stream: Any, gateway: Gateway, texts: list[str]) -> None:
    """Read a chat stream to its end, the budget server going away after the first event."""
    with stream:
        for chunk in stream:
            gateway.stop()
            texts.append(chunk.choices[0].delta.content or "")


async def read_async_while_the_server_goes(stream: Any, gateway: Gateway, kinds: list[str]) -> None:
    """Read a Responses stream to its end, the budget server going away after the first event."""
    async with stream:
        async for event in stream:
            gateway.stop()
            kinds.append(event.type)


def test_a_call_rides_out_a_lost_authorize_answer_and_failed_settles_and_is_charged_once(
    server: Server, practice: Practice, provider: openai.OpenAI, upstream: FakeOpenAI, gateway: Gateway
) -> None:
    """The authorize's first try was taken and its answer lost: the next try's replay is this call's
    own hold, not a request id used before — the provider is called, once."""
    gateway.fail("POST /v1/authorizations", "lost")
    gateway.fail("POST /v1/usage", "reset", 503)
    with BudgetClient(gateway.url, practice.key, **QUICK) as gate:
        completion = guard(provider, gate).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, request_id="letter-1"
        )

    assert completion.choices[0].message.content
    assert len(upstream.requests) == 1
    assert (gateway.seen["POST /v1/authorizations"], gateway.seen["POST /v1/usage"]) == (2, 3)
    reported = upstream.answers[-1].usage
    assert reported is not None
    assert calls(server, practice) == ({"letter-1": ("success", price(server, reported))}, 0)


def test_an_answer_whose_settle_cannot_reach_the_server_is_raised_with_it_and_settled_later(
    server: Server, practice: Practice, provider: openai.OpenAI, upstream: FakeOpenAI, gateway: Gateway
) -> None:
    with BudgetClient(gateway.url, practice.key, **QUICK) as gate:
        client = guard(provider, gate)
        upstream.delay = 0.5
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(
                client.chat.completions.create, model="gpt-4o-mini", messages=MESSAGES, request_id="letter-2"
            )
            upstream.wait_for(lambda: len(upstream.requests) == 1)  # held; the provider is at work
            gateway.stop()  # and the budget server stays away
            with pytest.raises(UnsettledAnswer) as unsettled:
                answer.result(timeout=30)

        error = unsettled.value
        assert error.answer.choices[0].message.content == upstream.answers[-1].text
        assert (error.request_id, error.code) == ("letter-2", "ANSWER_NOT_SETTLED")
        assert "letter-2" in str(error)
        assert isinstance(error.__cause__, httpx.ConnectError)
        events, held = calls(server, practice)
        assert (events, held > 0) == ({}, True)  # not charged (yet); the hold would expire

        gateway.start()
        event = gate.settle(**error.settlement)

    reported = upstream.answers[-1].usage
    assert reported is not None
    assert event.cost_usd * 10**6 == price(server, reported)
    assert calls(server, practice) == ({"letter-2": ("success", price(server, reported))}, 0)


def test_a_stream_whose_settle_cannot_reach_the_server_delivers_its_events_then_raises(
    server: Server, practice: Practice, provider: openai.OpenAI, upstream: FakeOpenAI, gateway: Gateway
) -> None:
    upstream.reply_words = 12
    texts: list[str] = []
    with BudgetClient(gateway.url, practice.key, **QUICK) as gate:
        client = guard(provider, gate)
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, request_id="stream-1"
        )
        with pytest.raises(UnsettledAnswer) as unsettled:
            read_while_the_server_goes(stream, gateway, texts)

        error = unsettled.value
        assert (error.answer, error.request_id) == (None, "stream-1")
        assert "".join(texts).split() == upstream.words(12)[0]  # every event reached the caller
        assert error.settlement["estimated"] is False  # the usage chunk came
        gateway.start()
        gate.settle(**error.settlement)
        gate.settle(**error.settlement)  # a replay: charged once

    events, held = calls(server, practice)
    assert (events["stream-1"][0], held) == ("success", 0)


def test_the_async_guard_raises_the_answer_it_could_not_settle(
    server: Server, practice: Practice, upstream: FakeOpenAI, gateway: Gateway
) -> None:
    async def served() -> tuple[UnsettledAnswer, UnsettledAnswer]:
        async with (
            openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key=upstream.api_key,
                               max_retries=0) as provider,
            AsyncBudgetClient(gateway.url, practice.key, **QUICK) as gate,
        ):  # fmt: skip
            client = guard(provider, gate)
            upstream.delay = 0.5
            plain = asyncio.create_task(client.responses.create(
                model="gpt-4o-mini", input="Ein Brief, bitte.", request_id="a-plain"
            ))  # fmt: skip
            while not upstream.requests:
                await asyncio.sleep(0.01)
            gateway.stop()
            with pytest.raises(UnsettledAnswer) as plain_unsettled:
                await plain

            gateway.start()
            upstream.delay = 0
            stream = await client.responses.create(
                model="gpt-4o-mini", input="Ein Brief, bitte.", stream=True, request_id="a-stream"
            )
            kinds: list[str] = []
            with pytest.raises(UnsettledAnswer) as stream_unsettled:
                await read_async_while_the_server_goes(stream, gateway, kinds)
            assert kinds[-1] == "response.completed"

            gateway.start()
            for error in (plain_unsettled.value, stream_unsettled.value):
                await gate.settle(**error.settlement)
            return plain_unsettled.value, stream_unsettled.value

    plain, streamed = asyncio.run(served())
    assert plain.answer.output_text
    assert (plain.request_id, streamed.request_id, streamed.answer) == ("a-plain", "a-stream", None)
    events, held = calls(server, practice)
    assert {request_id: status for request_id, (status, _cost) in events.items()} == {
        "a-plain": "success", "a-stream": "success",
    }  # fmt: skip
    assert held == 0


def test_a_provider_error_reaches_the_caller_even_when_the_hold_cannot_be_released(
    server: Server, practice: Practice, upstream: FakeOpenAI, gateway: Gateway
) -> None:
    """The provider fails while the budget server is away: the caller gets the provider's error, not
    the gate's, with a note that the hold expires by itself; nothing is charged."""
    sent_once = ("reset",) * (QUICK["retries"] + 1)
    upstream.fail_next(2, 500)
    gateway.fail("POST /v1/authorizations/sync-1/void", *sent_once)
    gateway.fail("POST /v1/authorizations/async-1/void", *sent_once)

    with (
        openai.OpenAI(base_url=f"{upstream.url}/v1", api_key=upstream.api_key, max_retries=0) as provider,
        BudgetClient(gateway.url, practice.key, **QUICK) as gate,
        pytest.raises(openai.InternalServerError) as failed,
    ):
        guard(provider, gate).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                      request_id="sync-1")  # fmt: skip

    async def failing() -> None:
        async with (
            openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key=upstream.api_key,
                               max_retries=0) as provider,
            AsyncBudgetClient(gateway.url, practice.key, **QUICK) as gate,
        ):  # fmt: skip
            await guard(provider, gate).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                                request_id="async-1")  # fmt: skip

    with pytest.raises(openai.InternalServerError) as failed_async:
        asyncio.run(failing())
    for error, request_id in ((failed.value, "sync-1"), (failed_async.value, "async-1")):
        [note] = error.__notes__
        assert f"hold of call {request_id!r} could not be released" in note
        assert "nothing was charged" in note
    events, held = calls(server, practice)
    assert events == {}  # neither voided nor recorded: the holds expire by themselves
    assert held > 0
