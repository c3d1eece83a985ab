"""`guard()`: the real `openai` package calling a fake OpenAI upstream in process, each call gated by
the library's `Budget` over a real database: held before, charged the catalog price of the reported
usage after; streams settled when exhausted or closed; errors voided; an empty budget refuses before
the provider is called."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from aibudget import Budget, BudgetExceeded, guard
from aibudget.ledger.reports import UsageLine
from tests.databases import PostgresServer
from tests.factories import open_practice
from tests.fake_openai import FakeOpenAI
from tests.relay import relayed_budget

START, END = 1793491200, 1796083200  # November 2026; the test clock is in it
MESSAGES = [{"role": "user", "content": "Bitte einen kurzen Brief an Frau Muster wegen des Termins."}]


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def provider(upstream: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{upstream.url}/v1", api_key=upstream.api_key, max_retries=0) as client:
        yield client


@pytest.fixture
def funded(budget: Budget) -> Budget:
    budget.put_practice("p1")
    budget.put_plan("basic", included_usd="20")
    budget.put_subscription("sub_1", practice_id="p1", plan="basic", status="active",
                            current_period_start=START, current_period_end=END)  # fmt: skip
    return budget


def events(budget: Budget) -> list[UsageLine]:
    return [row for row in budget.usage_report("p1").rows if isinstance(row, UsageLine)]


def test_a_guarded_call_is_charged_the_price_of_its_reported_usage(
    funded: Budget, provider: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    client = guard(provider, funded, practice_id="p1")
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, request_id="letter-1")
    reported = upstream.answers[-1].usage
    assert reported is not None

    [event] = events(funded)
    price = funded.price("gpt-4o-mini", input_tokens=reported["prompt_tokens"],
                         output_tokens=reported["completion_tokens"])  # fmt: skip
    assert (event.request_id, event.cost_micros, event.operation) == ("letter-1", price.cost_micros, "chat")
    assert funded.snapshot("p1").held_micros == 0
    assert client.models.list().data  # everything else is the client's own


def test_a_guarded_stream_settles_when_exhausted_and_hides_the_usage_it_asked_for(
    funded: Budget, provider: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    client = guard(provider, funded, practice_id="p1")
    with client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True) as stream:
        chunks = list(stream)
    assert all(chunk.choices for chunk in chunks)  # the injected usage chunk did not reach the caller
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    [event] = events(funded)
    assert event.output_tokens == len(upstream.words()[0])
    assert event.estimated is False
    assert funded.snapshot("p1").held_micros == 0


def test_a_stream_closed_early_is_charged_by_estimate(
    funded: Budget, provider: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.reply_words, upstream.chunk_delay = 100, 0.01
    client = guard(provider, funded, practice_id="p1")
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    for number, _chunk in enumerate(stream):
        if number == 4:
            break
    stream.close()
    [event] = events(funded)
    assert event.estimated is True
    assert 0 < event.output_tokens < 100
    assert funded.snapshot("p1").held_micros == 0


def test_a_failed_call_is_voided_and_recorded_as_an_error(
    funded: Budget, provider: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.fail_next(1, status=503)
    client = guard(provider, funded, practice_id="p1")
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="gpt-4o-mini", input="Ein Brief, bitte.", request_id="down")
    statuses = sorted(event.status for event in events(funded))
    assert statuses == ["error", "voided"]
    assert funded.snapshot("p1").held_micros == 0


def test_an_empty_budget_refuses_before_the_provider_is_called(
    budget: Budget, provider: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    budget.put_practice("p1")  # no subscription: nothing to spend
    client = guard(provider, budget, practice_id="p1")
    with pytest.raises(BudgetExceeded) as refused:
        client.embeddings.create(model="text-embedding-3-small", input="Befund")
    assert refused.value.payload["reason"] == "no_active_subscription"
    assert upstream.requests == []


def test_an_async_client_is_guarded_the_same(funded: Budget, upstream: FakeOpenAI) -> None:
    async def calls() -> None:
        async with openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key=upstream.api_key,
                                      max_retries=0) as provider:  # fmt: skip
            client = guard(provider, funded, practice_id="p1")
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, request_id="a-plain")
            stream = await client.responses.create(
                model="gpt-4o-mini", input="Ein Brief, bitte.", stream=True, request_id="a-stream"
            )
            async with stream:
                kinds = [event.type async for event in stream]
            assert kinds[-1] == "response.completed"

    asyncio.run(calls())
    reported = upstream.answers[0].usage
    assert reported is not None
    [plain] = [event for event in events(funded) if event.request_id == "a-plain"]
    price = funded.price("gpt-4o-mini", input_tokens=reported["prompt_tokens"],
                         output_tokens=reported["completion_tokens"])  # fmt: skip
    assert plain.cost_micros == price.cost_micros
    [streamed] = [event for event in events(funded) if event.request_id == "a-stream"]
    assert streamed.estimated is False
    assert streamed.output_tokens > 0
    assert funded.snapshot("p1").held_micros == 0


def test_an_answer_that_arrives_while_the_database_is_gone_is_returned_and_charged_later(
    postgres: PostgresServer, tmp_path: Path, provider: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    """The provider is paid once it answers: the caller gets the answer, the settle is kept until the
    database takes it (`Budget.settle_or_keep`) — not an error that would make the caller pay twice."""
    with relayed_budget(postgres, tmp_path / "var") as (budget, relay):
        open_practice(budget, "p1")
        client = guard(provider, budget, practice_id="p1")
        upstream.delay = 0.5
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(
                client.chat.completions.create, model="gpt-4o-mini", messages=MESSAGES, request_id="letter-1"
            )
            upstream.wait_for(lambda: len(upstream.requests) == 1)  # held; the provider is at work
            relay.stop()
            completion = answer.result(timeout=30)
        assert completion.choices[0].message.content
        relay.start()

        assert budget.post_kept_settles() == 1
        reported = upstream.answers[-1].usage
        assert reported is not None
        price = budget.price("gpt-4o-mini", input_tokens=reported["prompt_tokens"],
                             output_tokens=reported["completion_tokens"])  # fmt: skip
        [event] = events(budget)
        assert (event.request_id, event.cost_micros) == ("letter-1", price.cost_micros)
        assert budget.snapshot("p1").held_micros == 0
