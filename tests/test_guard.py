"""`guard()`: the real `openai` package calling a fake OpenAI upstream in process, each call gated by
the library's `Budget` over a real database (or a real server through `AsyncBudgetClient`): held
before, charged the catalog price of the reported usage after; streams settled when exhausted or
closed; errors voided; an empty budget, a request id used before, or a way past the gate refuses
before the provider is called."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from aibudget import Budget, BudgetExceeded, guard
from aibudget.client import AsyncBudgetClient
from aibudget.errors import Conflict
from aibudget.ledger.reports import UsageLine
from tests.api.conftest import Server
from tests.api.test_accounts import key
from tests.databases import PostgresServer
from tests.factories import open_practice
from tests.fake_openai import FakeOpenAI
from tests.relay import relayed_budget
from tests.test_client import open_practice as open_served_practice

START, END = 1793491200, 1796083200  # November 2026; the test clock is in it
MESSAGES = [{"role": "user", "content": "Bitte einen kurzen Brief an Frau Muster wegen des Termins."}]


@pytest.fixture
def funded(budget: Budget) -> Budget:
    budget.put_practice("p1")
    budget.put_plan("basic", included_usd="20")
    budget.put_subscription("sub_1", practice_id="p1", plan="basic", status="active",
                            current_period_start=START, current_period_end=END)  # fmt: skip
    return budget


def events(budget: Budget, practice_id: str = "p1") -> list[UsageLine]:
    return [row for row in budget.usage_report(practice_id).rows if isinstance(row, UsageLine)]


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


def test_a_request_id_used_before_is_refused_before_the_provider_is_called(
    funded: Budget, provider: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    """Calling the provider again would pay for an answer the ledger cannot charge: the first call's
    settle stands (answered) or conflicts (failed, then retried), as the proxy's 409 says."""
    client = guard(provider, funded, practice_id="p1")
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, request_id="letter-1")
    with pytest.raises(Conflict, match="its own request_id"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, request_id="letter-1")
    upstream.fail_next(1, status=503)
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="gpt-4o-mini", input="Ein Brief, bitte.", request_id="letter-2")
    with pytest.raises(Conflict):
        client.responses.create(model="gpt-4o-mini", input="Ein Brief, bitte.", request_id="letter-2")

    async def retried() -> None:
        async with openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key=upstream.api_key,
                                      max_retries=0) as async_provider:  # fmt: skip
            async_client = guard(async_provider, funded, practice_id="p1")
            with pytest.raises(Conflict):
                await async_client.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, request_id="letter-1"
                )

    asyncio.run(retried())
    assert len(upstream.requests) == 2  # the first call of each id only
    assert sorted((event.request_id, event.status) for event in events(funded)) == [
        ("letter-1", "success"), ("letter-2", "error"), ("letter-2", "voided"),
    ]  # fmt: skip
    assert funded.snapshot("p1").held_micros == 0


def test_the_ways_past_the_gate_are_refused_and_a_client_with_options_stays_guarded(
    budget: Budget, provider: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    budget.put_practice("p1")  # no subscription: every guarded call is refused
    client = guard(provider, budget, practice_id="p1")
    guarded: dict[str, Callable[[], object]] = {
        "with_options": lambda: client.with_options(timeout=30).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        ),
        "copy": lambda: client.copy(max_retries=1).embeddings.create(
            model="text-embedding-3-small", input="Befund"
        ),
        "beta": lambda: client.beta.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),
    }
    for name, call in guarded.items():
        with pytest.raises(BudgetExceeded):
            call()
        assert upstream.requests == [], name
    refused: list[Callable[[], object]] = [
        lambda: client.with_raw_response, lambda: client.with_streaming_response,
        lambda: client.chat.with_raw_response, lambda: client.beta.with_streaming_response,
        lambda: client.chat.completions.with_raw_response,
        lambda: client.chat.completions.with_streaming_response,
        lambda: client.responses.with_raw_response, lambda: client.embeddings.with_streaming_response,
        lambda: client.chat.completions.parse, lambda: client.chat.completions.stream,
        lambda: client.responses.parse, lambda: client.responses.stream,
        lambda: client.responses.compact, lambda: client.beta.chat.completions.parse,
        lambda: client.with_options(timeout=30).responses.stream,
    ]  # fmt: skip
    for way in refused:
        with pytest.raises(TypeError, match=r"not guarded by aibudget.*use .*create"):
            way()
    assert upstream.requests == []
    assert client.with_options(timeout=30).models.list().data  # what costs nothing is the client's own


def test_a_synchronous_client_refuses_an_async_gate(server: Server, provider: openai.OpenAI) -> None:
    """Nothing would await its authorize: every call would pass unchecked."""
    gate = AsyncBudgetClient(server.url, key(server, "practice", open_served_practice(server)))
    with pytest.raises(TypeError, match="async gate"):
        guard(provider, gate)


class SlowSettles(httpx.AsyncBaseTransport):
    """The network to the budget server, where a settle (`POST /v1/usage`) takes a while: `settling` is
    set as it leaves."""

    def __init__(self) -> None:
        self.network = httpx.AsyncHTTPTransport()
        self.settling = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/usage":
            self.settling.set()
            await asyncio.sleep(0.3)
        return await self.network.handle_async_request(request)


def test_an_async_call_cancelled_while_it_settles_is_charged_all_the_same(
    server: Server, upstream: FakeOpenAI
) -> None:
    """The provider is paid once it answered: a caller's timeout (`asyncio.wait_for`, a task group)
    that falls on the settle — of a plain answer, or of a stream left early — cancels the caller, not
    the charge."""
    practice_id = open_served_practice(server)

    async def cancelled_while_settling(call: Callable[[Any], Any]) -> None:
        network = SlowSettles()
        address, gate_key = f"{upstream.url}/v1", key(server, "practice", practice_id)
        async with (
            openai.AsyncOpenAI(base_url=address, api_key=upstream.api_key, max_retries=0) as provider,
            AsyncBudgetClient(server.url, gate_key, transport=network) as gate,
        ):
            task = asyncio.create_task(call(guard(provider, gate)))
            await network.settling.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    async def plain(client: Any) -> None:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, request_id="plain")

    async def left_early(client: Any) -> None:
        stream = await client.responses.create(
            model="gpt-4o-mini", input="Ein Brief, bitte.", stream=True, request_id="stream"
        )
        async with stream:
            async for _event in stream:
                break

    asyncio.run(cancelled_while_settling(plain))
    asyncio.run(cancelled_while_settling(left_early))
    with server.budget() as books:
        charged = {event.request_id: (event.status, event.estimated) for event in events(books, practice_id)}
        assert charged == {"plain": ("success", False), "stream": ("success", True)}
        assert books.snapshot(practice_id).held_micros == 0
