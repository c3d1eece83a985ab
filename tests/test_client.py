"""The typed HTTP client against a real server (SPEC §11): what it sends, what it returns, what it raises.

A module's server runs on each engine; every test opens its own practice (a 20 USD plan, a period
around now) through the admin API and checks amounts against the same database through the library.
Answers a real server never gives (a 500, a proxy's HTML page, a malformed body) come through
`httpx.MockTransport`, the client's transport seam.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import pytest

from aibudget import Budget
from aibudget.client import (
    AsyncBudgetClient,
    Authorization,
    BudgetClient,
    BudgetExceeded,
    ClientView,
    Unauthorized,
    UnexpectedResponse,
)
from aibudget.errors import (
    AibudgetError,
    Conflict,
    DeviceNotInPractice,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    PaymentProviderUnavailable,
    UnknownModel,
)
from tests.api.conftest import Server, free_port
from tests.api.test_accounts import key, now_period, practice

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def books(server: Server) -> Iterator[Budget]:
    with server.budget() as budget:
        yield budget


def open_practice(server: Server, *, included_usd: str = "20") -> str:
    practice_id = practice(server, name="Praxis Client", locale="en")
    start, end = now_period()
    with server.admin() as admin:
        plan = admin.put(f"/v1/plans/plan-{practice_id}", json={"included_usd": included_usd})
        subscription = admin.put(
            f"/v1/subscriptions/sub-{practice_id}",
            json={"practice_id": practice_id, "plan": f"plan-{practice_id}", "status": "active",
                  "current_period_start": start, "current_period_end": end},
        )  # fmt: skip
    assert (plan.status_code, subscription.status_code) == (200, 200), subscription.text
    return practice_id


def bind_device(server: Server, practice_id: str) -> str:
    device_id = f"device-{uuid.uuid4().hex}"
    with server.admin() as admin:
        bound = admin.post("/v1/devices", json={"device_id": device_id, "practice_id": practice_id})
    assert bound.status_code == 201, bound.text
    return device_id


def cost(books: Budget, **usage: int) -> Decimal:
    price: Decimal = books.price(MODEL, **usage).cost_usd
    return price


@pytest.fixture
def practice_id(server: Server) -> str:
    return open_practice(server)


@pytest.fixture
def service(server: Server) -> Iterator[BudgetClient]:
    with BudgetClient(server.url, key(server, "service")) as client:
        yield client


# the gate, end to end


def test_authorize_settle_and_budget_return_the_servers_exact_amounts(
    server: Server, books: Budget, practice_id: str, service: BudgetClient
) -> None:
    held, spent = (
        cost(books, input_tokens=1200, output_tokens=800),
        cost(books, input_tokens=1180, output_tokens=640),
    )

    with BudgetClient(server.url, key(server, "practice", practice_id)) as desktop:
        authorization = desktop.authorize(
            request_id="flow-1", operation="letter", model=MODEL, input_tokens=1200, max_output_tokens=800
        )
        while_held = service.operator_view(practice_id)
        event = desktop.settle(request_id="flow-1", model=MODEL, input_tokens=1180, output_tokens=640)
        view = desktop.budget()

    assert authorization.authorization_id.startswith("auth_")
    assert (authorization.request_id, authorization.practice_id) == ("flow-1", practice_id)
    assert (authorization.status, authorization.replayed) == ("active", False)
    assert authorization.held_usd == authorization.estimate_usd == held
    assert isinstance(authorization.held_usd, Decimal)
    assert authorization.expires_at > datetime.now(UTC)
    assert isinstance(authorization.budget, ClientView)
    assert authorization.budget.available_percent == 99
    assert while_held.held_usd == held
    assert (event.request_id, event.status, event.model, event.replayed) == (
        "flow-1",
        "success",
        MODEL,
        False,
    )
    assert event.cost_usd == spent
    assert event.overage_usd == Decimal(0)
    assert [(part.pot, part.amount_usd) for part in event.allocations] == [("included", spent)]
    assert view == books.snapshot(practice_id).client_view(locale="en")
    after = service.operator_view(practice_id)
    assert (after.included_usd, after.used_usd, after.held_usd) == (Decimal(20), spent, Decimal(0))
    assert after.available_usd == Decimal(20) - spent == books.snapshot(practice_id).available_usd
    assert (after.practice_id, after.plan, after.policy) == (
        practice_id,
        f"plan-{practice_id}",
        "allow_last_call",
    )
    assert books.verify() == []


def test_a_retried_authorize_or_settle_is_flagged_replayed_and_charged_once(
    books: Budget, practice_id: str, service: BudgetClient
) -> None:
    authorize = partial(service.authorize, request_id="retry-1", operation="letter", model=MODEL)
    settle = partial(service.settle, request_id="retry-1", model=MODEL, output_tokens=300)
    first, again = authorize(practice_id=practice_id), authorize(practice_id=practice_id)
    settled, resettled = settle(practice_id=practice_id), settle(practice_id=practice_id)

    assert (first.replayed, again.replayed) == (False, True)
    assert again.authorization_id == first.authorization_id
    assert (settled.replayed, resettled.replayed) == (False, True)
    assert resettled.event_id == settled.event_id
    assert service.operator_view(practice_id).used_usd == settled.cost_usd == cost(books, output_tokens=300)


def test_void_releases_the_hold_of_a_request_id_with_url_characters(
    practice_id: str, service: BudgetClient
) -> None:
    request_id = "void/a?b#c%2F"  # `/`, `?`, `#` and `%` are allowed in request ids
    authorization = service.authorize(
        request_id=request_id, operation="chat", model=MODEL, practice_id=practice_id, input_tokens=100
    )

    voided = service.void(request_id=request_id, practice_id=practice_id)

    assert isinstance(voided, Authorization)
    assert (voided.authorization_id, voided.request_id) == (authorization.authorization_id, request_id)
    assert voided.status == "voided"
    assert service.void(request_id=request_id, practice_id=practice_id).status == "voided"
    assert service.operator_view(practice_id).held_usd == Decimal(0)


# errors


def test_an_exhausted_practice_raises_budget_exceeded_with_reason_and_message(
    server: Server, service: BudgetClient
) -> None:
    practice_id = open_practice(server, included_usd="0.001")
    service.settle(request_id="big", model=MODEL, practice_id=practice_id, input_tokens=100_000)

    with pytest.raises(BudgetExceeded) as refused:
        service.authorize(request_id="refused-1", operation="letter", model=MODEL, practice_id=practice_id)

    assert refused.value.reason == "included_exhausted_no_credit"
    assert refused.value.http_status == 402
    payload = refused.value.payload
    assert (payload["error_code"], payload["request_id"], payload["available_percent"]) == (
        "AI_BUDGET_EXCEEDED", "refused-1", 0,
    )  # fmt: skip
    assert isinstance(payload["message_user"], str)
    assert payload["message_user"].strip()
    assert str(refused.value) == payload["message_user"]


def test_the_same_request_id_with_another_body_raises_idempotency_conflict(
    practice_id: str, service: BudgetClient
) -> None:
    authorize = partial(service.authorize, request_id="conflict-1", operation="letter", model=MODEL)
    authorize(practice_id=practice_id, input_tokens=100)

    with pytest.raises(IdempotencyConflict) as conflict:
        authorize(practice_id=practice_id, input_tokens=101)

    assert (conflict.value.code, conflict.value.http_status) == ("IDEMPOTENCY_CONFLICT", 409)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"input_tokens": -1}, "estimate.input_tokens"), ({"operation": "no spaces"}, "operation")],
)
def test_invalid_input_raises_invalid_input_naming_the_field(
    practice_id: str, service: BudgetClient, change: dict[str, object], field: str
) -> None:
    call: dict[str, object] = {"request_id": "bad-1", "operation": "letter", "model": MODEL} | change

    with pytest.raises(InvalidInput) as invalid:
        service.authorize(practice_id=practice_id, **call)  # type: ignore[arg-type]

    assert (invalid.value.field, invalid.value.http_status) == (field, 422)


def test_voiding_an_unknown_request_raises_not_found(practice_id: str, service: BudgetClient) -> None:
    with pytest.raises(NotFound):
        service.void(request_id="never-authorized", practice_id=practice_id)


def test_a_practice_key_raises_forbidden_for_another_practice_and_the_operator_view(server: Server) -> None:
    mine, theirs = open_practice(server), open_practice(server)

    with BudgetClient(server.url, key(server, "practice", mine)) as client:
        with pytest.raises(Forbidden) as other:
            client.authorize(request_id="other-1", operation="chat", model=MODEL, practice_id=theirs)
        with pytest.raises(Forbidden) as operator:
            client.operator_view(mine)

    assert (other.value.http_status, other.value.field) == (403, "practice_id")
    assert operator.value.http_status == 403


def test_a_wrong_key_raises_unauthorized(server: Server) -> None:
    with (
        BudgetClient(server.url, "aib_0000000000000000_" + "x" * 40) as client,
        pytest.raises(Unauthorized) as denied,
    ):
        client.budget()

    assert (denied.value.code, denied.value.http_status) == ("UNAUTHORIZED", 401)


# devices


def test_the_device_header_routes_to_the_devices_practice(
    server: Server, books: Budget, practice_id: str
) -> None:
    other = open_practice(server)
    device_id = bind_device(server, practice_id)

    with BudgetClient(server.url, key(server, "service"), device_id=device_id) as device:
        authorization = device.authorize(
            request_id="device-1", operation="transcribe", model=MODEL, input_tokens=10
        )
        view = device.budget(locale="fr-CH")
        with pytest.raises(DeviceNotInPractice) as mismatch:
            device.authorize(request_id="device-2", operation="chat", model=MODEL, practice_id=other)

    assert authorization.practice_id == practice_id
    assert books.snapshot(practice_id).held_usd == authorization.held_usd > 0
    assert books.snapshot(other).held_usd == 0
    assert view == books.snapshot(practice_id).client_view(locale="fr-CH")
    assert (mismatch.value.code, mismatch.value.http_status) == ("DEVICE_PRACTICE_MISMATCH", 403)


# asyncio


def test_the_async_client_runs_the_same_flow(server: Server, books: Budget, practice_id: str) -> None:
    async def flow() -> None:
        async with (
            AsyncBudgetClient(server.url, key(server, "practice", practice_id)) as desktop,
            AsyncBudgetClient(server.url, key(server, "service")) as backend,
        ):
            authorize = partial(desktop.authorize, request_id="async-1", operation="letter", model=MODEL)
            first = await authorize(input_tokens=1200, max_output_tokens=800)
            again = await authorize(input_tokens=1200, max_output_tokens=800)
            assert (first.replayed, again.replayed) == (False, True)
            assert first.held_usd == cost(books, input_tokens=1200, output_tokens=800)
            event = await desktop.settle(
                request_id="async-1", model=MODEL, input_tokens=1180, output_tokens=640
            )
            assert event.cost_usd == cost(books, input_tokens=1180, output_tokens=640)
            await desktop.authorize(request_id="async-2", operation="chat", model=MODEL, input_tokens=50)
            assert (await desktop.void(request_id="async-2")).status == "voided"
            assert await desktop.budget() == books.snapshot(practice_id).client_view()
            operator = await backend.operator_view(practice_id)
            assert (operator.used_usd, operator.held_usd) == (event.cost_usd, Decimal(0))
            with pytest.raises(Forbidden):
                await desktop.operator_view(practice_id)

    asyncio.run(flow())


def test_the_async_client_raises_budget_exceeded(server: Server) -> None:
    practice_id = practice(server)  # no subscription: nothing is available

    async def refused() -> BudgetExceeded:
        async with AsyncBudgetClient(server.url, key(server, "practice", practice_id)) as desktop:
            with pytest.raises(BudgetExceeded) as refusal:
                await desktop.authorize(request_id="no-sub", operation="chat", model=MODEL)
            return refusal.value

    assert asyncio.run(refused()).reason == "no_active_subscription"


# what goes on the wire, and answers a real server never gives


def recording(answer: httpx.Response, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    return httpx.MockTransport(handle)


def test_requests_carry_the_key_the_device_and_exact_amounts() -> None:
    seen: list[httpx.Request] = []
    answer = httpx.Response(500, json={"detail": "boom", "error_code": "INTERNAL"})
    client = BudgetClient(
        "http://budget.test/base", "k-1", device_id="dev-1", transport=recording(answer, seen)
    )

    with client, pytest.raises(UnexpectedResponse):
        client.settle(
            request_id="r-1", model=MODEL, audio_seconds=Decimal("12.345"), meta={"price": Decimal("0.1")}
        )

    [request] = seen  # a 500 is not sent again: the same request would meet the same fault
    assert (request.method, str(request.url)) == ("POST", "http://budget.test/base/v1/usage")
    assert (request.headers["authorization"], request.headers["x-device-id"]) == ("Bearer k-1", "dev-1")
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert (body["usage"]["audio_seconds"], body["meta"], body["status"]) == (
        "12.345",
        {"price": "0.1"},
        "success",
    )
    assert "practice_id" not in body


def test_a_float_duration_is_refused_before_anything_is_sent() -> None:
    seen: list[httpx.Request] = []
    client = BudgetClient("http://budget.test", "k", transport=recording(httpx.Response(201), seen))
    with client, pytest.raises(InvalidInput) as refused:
        client.authorize(request_id="r", operation="chat", model=MODEL, audio_seconds=1.5)  # type: ignore[arg-type]

    assert (refused.value.field, seen) == ("estimate.audio_seconds", [])


@pytest.mark.parametrize(
    ("status", "answer", "says"),
    [
        (
            500,
            {"json": {"detail": "retry is safe", "error_code": "INTERNAL"}},
            "HTTP 500 INTERNAL: retry is safe",
        ),
        (502, {"text": "<html>Bad gateway</html>"}, "Bad gateway"),
        (201, {"json": {"authorization_id": "auth_1"}}, "malformed body: expires_at"),
        (200, {"text": "ok"}, "JSON"),
    ],
)
def test_an_answer_that_is_neither_a_result_nor_a_known_error_raises_unexpected_response(
    status: int, answer: dict[str, Any], says: str
) -> None:
    def transport() -> httpx.MockTransport:
        return httpx.MockTransport(lambda _request: httpx.Response(status, **answer))

    async def authorize() -> None:
        async with AsyncBudgetClient("http://budget.test", "k", transport=transport(), backoff=0) as client:
            await client.authorize(request_id="r", operation="chat", model=MODEL)

    client = BudgetClient("http://budget.test", "k", transport=transport(), backoff=0)  # a 502: 4 tries
    with client, pytest.raises(UnexpectedResponse) as sync_error:
        client.authorize(request_id="r", operation="chat", model=MODEL)
    with pytest.raises(UnexpectedResponse) as async_error:
        asyncio.run(authorize())

    for error in (sync_error.value, async_error.value):
        assert (error.status, error.http_status) == (status, 502)
        assert says in error.detail


@pytest.mark.parametrize(
    ("status", "problem", "error", "field"),
    [
        (404, {"detail": "Not Found"}, NotFound, None),  # no error_code: a framework's or a proxy's 404
        (413, {"error_code": "BODY_TOO_LARGE", "detail": "larger than 64 KiB"}, InvalidInput, None),
        (409, {"error_code": "CONFLICT", "detail": "bound to another practice"}, Conflict, None),
        (422, {"error_code": "UNKNOWN_MODEL", "detail": "no price", "field": "model"}, UnknownModel, "model"),
        (
            503,
            {"error_code": "PAYMENT_PROVIDER_UNAVAILABLE", "detail": "down"},
            PaymentProviderUnavailable,
            None,
        ),
    ],
)
def test_a_problem_raises_the_library_error_of_its_code_else_of_its_status(
    status: int, problem: dict[str, Any], error: type[AibudgetError], field: str | None
) -> None:
    answer = httpx.Response(status, json=problem, headers={"Content-Type": "application/problem+json"})
    client = BudgetClient("http://budget.test", "k", transport=recording(answer, []), backoff=0)

    with client, pytest.raises(AibudgetError) as raised:
        client.void(request_id="r")

    assert type(raised.value) is error
    assert (raised.value.http_status, raised.value.field, raised.value.detail) == (
        status,
        field,
        problem["detail"],
    )


def test_a_server_that_is_not_there_raises_the_transport_error() -> None:
    with (
        BudgetClient(f"http://127.0.0.1:{free_port()}", "k", timeout=2, retries=1, backoff=0) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.budget()
