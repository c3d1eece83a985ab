"""The HTTP client sends a call again when the way to the server fails, never when the server decided.

Real failures only: a gateway in front of a real server (`tests/gateway.py`) resets connections,
cuts answers after the server took the request, answers 502/503/504 as a load balancer does, or
closes its port while the server "restarts"; and a real server whose database is away answers 503.
The books are read through the library: however many tries a settle took, it is charged once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from aibudget import Budget
from aibudget.client import AsyncBudgetClient, BudgetClient, BudgetExceeded, UnexpectedResponse
from aibudget.errors import IdempotencyConflict, InvalidInput, NotFound
from aibudget.ledger.reports import UsageLine
from tests.api.conftest import Server
from tests.api.test_accounts import key
from tests.databases import PostgresServer
from tests.factories import open_practice as open_library_practice
from tests.gateway import Gateway
from tests.relay import relayed_server
from tests.test_client import MODEL, cost, open_practice

QUICK = {"retries": 3, "backoff": 0.01, "max_backoff": 0.05}
PATIENT = {"retries": 40, "backoff": 0.05, "max_backoff": 0.1}  # tries for about 2 s or more


@pytest.fixture(scope="module")
def books(server: Server) -> Iterator[Budget]:
    with server.budget() as budget:
        yield budget


@pytest.fixture
def practice_id(server: Server) -> str:
    return open_practice(server)


@pytest.fixture
def gateway(server: Server) -> Iterator[Gateway]:
    with Gateway(server.url) as opened:
        yield opened


def charges(books: Budget, practice_id: str) -> list[tuple[str, Decimal]]:
    """(request id, cost) of each charged call of the practice, in the ledger's order."""
    lines = [line for line in books.usage_report(practice_id).rows if isinstance(line, UsageLine)]
    return [
        (line.request_id, Decimal(line.cost_micros) / 10**6) for line in lines if line.status == "success"
    ]


def test_a_settle_whose_connection_is_reset_is_sent_again_and_charged_once(
    server: Server, books: Budget, practice_id: str, gateway: Gateway
) -> None:
    gateway.fail("POST /v1/usage", "reset", "reset")
    with BudgetClient(gateway.url, key(server, "practice", practice_id), **QUICK) as desktop:
        desktop.authorize(request_id="reset-1", operation="letter", model=MODEL, input_tokens=500)
        event = desktop.settle(request_id="reset-1", model=MODEL, input_tokens=480, output_tokens=200)

    assert gateway.seen["POST /v1/usage"] == 3
    assert (event.replayed, event.cost_usd) == (False, cost(books, input_tokens=480, output_tokens=200))
    assert charges(books, practice_id) == [("reset-1", event.cost_usd)]
    assert books.snapshot(practice_id).held_micros == 0


def test_a_write_whose_answer_was_lost_returns_its_own_first_result_not_a_replay(
    server: Server, books: Budget, practice_id: str, gateway: Gateway
) -> None:
    """The server took the first try; the next is answered with its result (200). That is this call's
    own result: not `replayed`, which says the request id was used by an earlier call."""
    gateway.fail("POST /v1/authorizations", "lost")
    gateway.fail("POST /v1/usage", "lost", "lost")
    practice_key = key(server, "practice", practice_id)
    with BudgetClient(gateway.url, practice_key, **QUICK) as desktop:
        held = desktop.authorize(request_id="lost-1", operation="letter", model=MODEL, input_tokens=500)
        event = desktop.settle(request_id="lost-1", model=MODEL, output_tokens=200)
    with BudgetClient(server.url, practice_key) as direct:
        again = direct.settle(request_id="lost-1", model=MODEL, output_tokens=200)

    assert (gateway.seen["POST /v1/authorizations"], gateway.seen["POST /v1/usage"]) == (2, 3)
    assert (held.status, held.replayed) == ("active", False)
    assert (event.replayed, again.replayed, again.event_id) == (False, True, event.event_id)
    assert charges(books, practice_id) == [("lost-1", cost(books, output_tokens=200))]


def test_a_settle_whose_every_answer_is_lost_raises_and_is_charged_once_all_the_same(
    server: Server, books: Budget, practice_id: str, gateway: Gateway
) -> None:
    gateway.fail("POST /v1/usage", *["lost"] * 4)
    with (
        BudgetClient(gateway.url, key(server, "practice", practice_id), **QUICK) as desktop,
        pytest.raises(httpx.TransportError),
    ):
        desktop.settle(request_id="lost-2", model=MODEL, output_tokens=100)

    assert gateway.seen["POST /v1/usage"] == 4
    assert charges(books, practice_id) == [("lost-2", cost(books, output_tokens=100))]


def test_a_settle_sent_while_the_server_restarts_is_charged_once_it_is_back(
    server: Server, books: Budget, practice_id: str, gateway: Gateway
) -> None:
    practice_key = key(server, "practice", practice_id)
    with BudgetClient(server.url, practice_key) as direct:
        direct.authorize(request_id="restart-1", operation="letter", model=MODEL, input_tokens=500)
    gateway.stop()  # connections refused until it is back
    back = threading.Timer(0.5, gateway.start)
    back.start()
    with BudgetClient(gateway.url, practice_key, **PATIENT) as desktop:
        event = desktop.settle(request_id="restart-1", model=MODEL, output_tokens=200)
    back.join()

    assert gateway.seen["POST /v1/usage"] == 1  # the tries before met a closed port
    assert event.replayed is False
    assert charges(books, practice_id) == [("restart-1", event.cost_usd)]
    assert books.snapshot(practice_id).held_micros == 0


def test_a_gateways_502_503_and_504_are_sent_again(
    server: Server, practice_id: str, gateway: Gateway
) -> None:
    gateway.fail("POST /v1/authorizations", 502, 503, 504)
    with BudgetClient(gateway.url, key(server, "practice", practice_id), **QUICK) as desktop:
        held = desktop.authorize(request_id="lb-1", operation="chat", model=MODEL, input_tokens=100)

    assert gateway.seen["POST /v1/authorizations"] == 4
    assert (held.status, held.replayed) == ("active", False)


def test_a_short_retry_after_is_waited_and_a_long_one_ends_the_tries(
    server: Server, practice_id: str, gateway: Gateway
) -> None:
    with BudgetClient(gateway.url, key(server, "practice", practice_id), retries=3, backoff=0.01,
                      max_backoff=2) as desktop:  # fmt: skip
        gateway.fail("GET /v1/budget", 503, retry_after="1")
        started = time.monotonic()
        desktop.budget()
        waited = time.monotonic() - started
        gateway.fail("GET /v1/budget", 503, retry_after="Wed, 21 Oct 2099 07:28:00 GMT")  # an HTTP date
        with pytest.raises(UnexpectedResponse) as away:
            desktop.budget()

    assert waited >= 1
    assert away.value.status == 503
    assert gateway.seen["GET /v1/budget"] == 3  # 503, 200; then 503 and no more


def test_an_answer_the_server_decided_is_never_sent_again(server: Server, gateway: Gateway) -> None:
    """402, 409, 422, 404: the same request would be decided the same."""
    practice_id = open_practice(server, included_usd="0.001")
    with BudgetClient(gateway.url, key(server, "service"), **QUICK) as backend:
        backend.settle(request_id="big", model=MODEL, practice_id=practice_id, input_tokens=100_000)
        with pytest.raises(BudgetExceeded):
            backend.authorize(request_id="refused", operation="chat", model=MODEL, practice_id=practice_id)
        with pytest.raises(IdempotencyConflict):
            backend.settle(request_id="big", model=MODEL, practice_id=practice_id, input_tokens=99_999)
        with pytest.raises(InvalidInput):
            backend.authorize(request_id="bad", operation="chat", model=MODEL, practice_id=practice_id,
                              input_tokens=-1)  # fmt: skip
        with pytest.raises(NotFound):
            backend.void(request_id="never", practice_id=practice_id)

    assert gateway.seen == {"POST /v1/usage": 2, "POST /v1/authorizations": 2,
                            "POST /v1/authorizations/never/void": 1}  # fmt: skip


def test_a_settle_answered_503_while_the_database_is_away_is_charged_once_it_is_back(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """The server's own 503 (`DATABASE_UNAVAILABLE`, `Retry-After: 1`): nothing was recorded; the
    tries wait at least the second it asks, and the one after the database is back is charged."""
    with relayed_server(postgres, tmp_path / "var") as (server, relay):
        with server.budget() as books:
            open_library_practice(books, "p1")
        with BudgetClient(server.url, key(server, "service"), retries=10, backoff=0.05) as backend:
            relay.stop()
            started = time.monotonic()
            back = threading.Timer(1.5, relay.start)
            back.start()
            event = backend.settle(request_id="db-1", practice_id="p1", model=MODEL, output_tokens=300)
            back.join()

        assert time.monotonic() - started >= 1.5
        assert event.replayed is False
        with server.budget() as books:
            assert charges(books, "p1") == [("db-1", cost(books, output_tokens=300))]
            assert books.verify() == []


def test_the_async_client_sends_again_the_same_way(
    server: Server, books: Budget, practice_id: str, gateway: Gateway
) -> None:
    gateway.fail("POST /v1/authorizations", "lost", 502)
    gateway.fail("POST /v1/usage", "reset")

    practice_key = key(server, "practice", practice_id)
    gateway.stop()  # connections refused until it is back

    async def flow() -> tuple[bool, bool]:
        asyncio.get_running_loop().call_later(0.5, gateway.start)
        async with AsyncBudgetClient(gateway.url, practice_key, **PATIENT) as desktop:
            held = await desktop.authorize(request_id="async-1", operation="chat", model=MODEL)
            event = await desktop.settle(request_id="async-1", model=MODEL, output_tokens=200)
            return held.replayed, event.replayed

    assert asyncio.run(flow()) == (False, False)
    assert (gateway.seen["POST /v1/authorizations"], gateway.seen["POST /v1/usage"]) == (3, 2)
    assert charges(books, practice_id) == [("async-1", cost(books, output_tokens=200))]
    assert books.snapshot(practice_id).held_micros == 0


@pytest.mark.parametrize(
    ("option", "value"), [("retries", -1), ("backoff", float("nan")), ("max_backoff", float("inf"))]
)
def test_retry_options_must_be_finite_and_not_negative(option: str, value: float) -> None:
    with pytest.raises(InvalidInput) as refused:
        BudgetClient("http://budget.test", "k", **{option: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        AsyncBudgetClient("http://budget.test", "k", **{option: value})  # type: ignore[arg-type]

    assert refused.value.field == option
