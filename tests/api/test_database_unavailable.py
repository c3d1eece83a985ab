"""PostgreSQL goes away under a running server: calls fail closed with 503 `DATABASE_UNAVAILABLE` and
record nothing, `/readyz` says so, and once the database is back the same server serves again — no
restart — and a settle sent again is charged exactly once.

The server reaches PostgreSQL through a TCP relay the test owns; stopping the relay cuts every open
connection and refuses new ones, as a failed network or a stopped database server would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aibudget import DatabaseUnavailable
from aibudget.client import BudgetClient
from tests.api.conftest import Server
from tests.api.test_accounts import key
from tests.conftest import wait_until
from tests.databases import PostgresServer
from tests.factories import open_practice
from tests.relay import Relay, relayed_server

LETTER = {"operation": "letter", "model": "gpt-4o-mini", "estimate": {"input_tokens": 1000}}
HOLD_TTL_S = 3


def authorize(client: httpx.Client, request_id: str, **extra: str) -> httpx.Response:
    return client.post("/v1/authorizations", json={**LETTER, "request_id": request_id, **extra})


@pytest.fixture
def relayed(postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[Server, Relay]]:
    with relayed_server(postgres, tmp_path / "var", AIBUDGET_HOLD_TTL_SECONDS=str(HOLD_TTL_S)) as running:
        yield running


@pytest.fixture
def relayed_failing_open(postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[Server, Relay]]:
    with relayed_server(
        postgres, tmp_path / "var", AIBUDGET_HOLD_TTL_SECONDS=str(HOLD_TTL_S), AIBUDGET_FAIL_OPEN="true"
    ) as running:
        yield running


def test_calls_fail_closed_while_the_database_is_gone_and_resume_without_restart(
    relayed: tuple[Server, Relay],
) -> None:
    server, relay = relayed
    with server.budget() as books:
        open_practice(books, "p1", included_usd="5")
    service_key = key(server, "service")
    service = server.client(service_key)
    assert authorize(service, "before", practice_id="p1").status_code == 201

    relay.stop()
    down = authorize(service, "while-down", practice_id="p1")
    settle = {"request_id": "settled", "practice_id": "p1", "model": "gpt-4o-mini",
              "usage": {"input_tokens": 1000, "output_tokens": 100}}  # fmt: skip
    lost = service.post("/v1/usage", json=settle)
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    with BudgetClient(server.url, service_key) as sdk, pytest.raises(DatabaseUnavailable):
        sdk.authorize(request_id="sdk-while-down", practice_id="p1", operation="letter", model="gpt-4o-mini")

    assert down.status_code == 503, down.text
    assert down.headers["content-type"] == "application/problem+json"
    assert down.json()["error_code"] == "DATABASE_UNAVAILABLE"
    assert down.headers["Retry-After"] == "1"
    assert (lost.status_code, lost.json()["error_code"]) == (503, "DATABASE_UNAVAILABLE")
    assert ready.status_code == 503
    time.sleep(HOLD_TTL_S)  # the sweeper's passes meet the outage and the hold of "before" runs out

    relay.start()
    again = service.post("/v1/usage", json=settle)
    replayed = service.post("/v1/usage", json=settle)
    assert again.status_code == 201, again.text
    assert replayed.status_code == 200
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    with server.budget() as books:
        lines = books.usage_report("p1").rows
        assert [line.request_id for line in lines if line.status == "success"] == ["settled"]
        assert "while-down" not in {line.request_id for line in lines}
        assert books.verify() == []

    def released() -> bool:  # by the same sweeper, which outlived the outage
        with server.budget() as books:
            return books.snapshot("p1").held_micros == 0

    wait_until(released)
    assert "Traceback" not in server.logs()


def test_with_fail_open_a_known_caller_is_admitted_without_a_hold_and_it_is_recorded(
    relayed_failing_open: tuple[Server, Relay],
) -> None:
    server, relay = relayed_failing_open
    with server.budget() as books:
        open_practice(books, "p1", included_usd="5")
        books.bind_device("desk-1", practice_id="p1")
    practice_key, service_key, unused_key = (
        key(server, "practice", "p1"),
        key(server, "service"),
        key(server, "service"),
    )
    desktop, backend = server.client(practice_key), server.client(service_key)
    assert authorize(desktop, "before").status_code == 201
    assert authorize(backend, "b", practice_id="p1").status_code == 201

    relay.stop()
    admitted, replayed = authorize(desktop, "while-down"), authorize(desktop, "while-down")
    with BudgetClient(server.url, service_key) as sdk:
        by_sdk = sdk.authorize(
            request_id="sdk-while-down", practice_id="p1", operation="letter", model="gpt-4o-mini"
        )
    unknown_caller = authorize(server.client(unused_key), "stranger", practice_id="p1")
    device_only = authorize(server.client(service_key, **{"X-Device-Id": "desk-1"}), "by-device")
    settle = {
        "request_id": "while-down",
        "model": "gpt-4o-mini",
        "usage": {"input_tokens": 900, "output_tokens": 80},
    }
    settle_while_down = desktop.post("/v1/usage", json=settle)
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text

    assert admitted.status_code == 201, admitted.text
    body = admitted.json()
    assert (body["status"], body["held_usd"], body["budget"]) == ("admitted_without_hold", "0.000000", None)
    assert body["estimate_usd"] == "0.002608"  # 1000 in + the 4096-token default output cap of gpt-4o-mini
    assert (replayed.status_code, replayed.json()["authorization_id"]) == (200, body["authorization_id"])
    assert (by_sdk.status, by_sdk.budget, by_sdk.held_usd) == ("admitted_without_hold", None, 0)
    # fail-open admits callers it knows and practices it can name, and never records usage blind
    assert (unknown_caller.status_code, unknown_caller.json()["error_code"]) == (503, "DATABASE_UNAVAILABLE")
    assert (device_only.status_code, device_only.json()["error_code"]) == (503, "DATABASE_UNAVAILABLE")
    assert (settle_while_down.status_code, settle_while_down.json()["error_code"]) == (
        503,
        "DATABASE_UNAVAILABLE",
    )
    assert (
        'aibudget_authorizations_total{outcome="admitted_without_hold",reason="database_unavailable"} 2.0'
        in metrics
    )
    assert "fail-open: admitted request 'while-down' of practice 'p1'" in server.logs()

    relay.start()

    def recorded() -> bool:
        with server.budget() as books:
            return len(books.fail_open_admissions("p1")) == 2

    wait_until(recorded)
    with server.budget() as books:
        rows = {row.request_id: row for row in books.fail_open_admissions("p1")}
        assert rows["while-down"].admission_id == body["authorization_id"]
        assert rows["while-down"].estimate_micros == 2608
        assert rows["sdk-while-down"].admission_id == by_sdk.authorization_id
    charged = desktop.post("/v1/usage", json=settle)
    assert charged.status_code == 201, charged.text
    assert charged.json()["cost_usd"] == "0.000183"  # 900 x 0.15 + 80 x 0.60 per million tokens
    with server.budget() as books:
        assert books.verify() == []
    assert "Traceback" not in server.logs()
