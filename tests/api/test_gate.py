"""The gate over real HTTP (SPEC §4, §5 G6, §11): authorize, settle (`POST /v1/usage`) and void.

Every test opens its own practice (a 20 USD plan, a period around now) through the library on the
server's database, talks to the server with a service key unless it says otherwise, and checks the
books through `server.budget()`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from aibudget import Budget
from aibudget.views.texts import format_date, text
from tests.api.conftest import Server

PROBLEM_JSON = "application/problem+json"
USD_TEXT = re.compile(r"^\d+\.\d{6}$")
LETTER = {"operation": "letter", "model": "gpt-4o-mini",
          "estimate": {"input_tokens": 1200, "max_output_tokens": 800}}  # fmt: skip
USAGE = {"model": "gpt-4o-mini", "usage": {"input_tokens": 1180, "output_tokens": 640}}
CLIENT_VIEW = {"available_percent", "show_warning", "warning_level", "user_label", "period_end",
               "renewal_date", "renewal_date_display", "extra_credit_active"}  # fmt: skip
JSON = {"Content-Type": "application/json"}
ROUTES = ("/v1/authorizations", "/v1/usage", "/v1/authorizations/{request_id}/void")


@pytest.fixture
def books(server: Server) -> Iterator[Budget]:
    with server.budget() as budget:
        yield budget


def open_practice(budget: Budget, *, included_usd: str = "20", subscribed: bool = True) -> str:
    practice_id = f"gate-{uuid.uuid4().hex[:12]}"
    budget.put_practice(practice_id, name="Praxis Gate")
    if subscribed:
        budget.put_plan(f"plan-{practice_id}", included_usd=included_usd)
        now = int(time.time())
        budget.put_subscription(f"sub-{practice_id}", practice_id=practice_id, plan=f"plan-{practice_id}",
                                status="active", current_period_start=now - 86_400,
                                current_period_end=now + 29 * 86_400)  # fmt: skip
    return practice_id


@pytest.fixture
def practice(books: Budget) -> str:
    return open_practice(books)


@pytest.fixture
def service(server: Server, books: Budget) -> Iterator[httpx.Client]:
    with server.client(books.create_key(role="service")[1]) as client:
        yield client


def authorize(client: httpx.Client, practice: str | None, request_id: str, **changes: Any) -> httpx.Response:
    body = {**LETTER, "request_id": request_id, **changes}
    if practice is not None:
        body["practice_id"] = practice
    return client.post("/v1/authorizations", json=body)


def settle(client: httpx.Client, practice_id: str | None, request_id: str, **changes: Any) -> httpx.Response:
    body = {**USAGE, "request_id": request_id, **changes}
    if practice_id is not None:
        body["practice_id"] = practice_id
    return client.post("/v1/usage", json=body)


def void(client: httpx.Client, practice_id: str | None, request_id: str) -> httpx.Response:
    body = {"practice_id": practice_id} if practice_id is not None else None
    return client.post(f"/v1/authorizations/{request_id}/void", json=body)


def problem(response: httpx.Response, status: int, error_code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert (body["status"], body["error_code"]) == (status, error_code), body
    assert all(body[name] for name in ("type", "title", "detail")), body
    return body


def test_authorize_holds_the_estimate_and_answers_with_the_client_view(
    service: httpx.Client, practice: str, books: Budget
) -> None:
    response = authorize(service, practice, "auth-1")

    assert response.status_code == 201, response.text
    body = response.json()
    expected = books.price("gpt-4o-mini", input_tokens=1200, output_tokens=800).cost_usd
    assert body["authorization_id"].startswith("auth_")
    assert (body["request_id"], body["practice_id"], body["status"]) == ("auth-1", practice, "active")
    assert USD_TEXT.match(body["held_usd"])
    assert Decimal(body["held_usd"]) == expected
    assert body["estimate_usd"] == body["held_usd"]
    assert set(body["budget"]) >= CLIENT_VIEW
    assert (body["budget"]["available_percent"], body["budget"]["warning_level"]) == (99, "none")
    assert books.snapshot(practice).held_usd == expected


def test_settle_posts_the_real_cost_and_releases_the_hold(
    service: httpx.Client, practice: str, books: Budget
) -> None:
    authorize(service, practice, "settle-1")

    response = settle(service, practice, "settle-1")

    assert response.status_code == 201, response.text
    body = response.json()
    cost = books.price("gpt-4o-mini", input_tokens=1180, output_tokens=640).cost_usd
    assert USD_TEXT.match(body["cost_usd"])
    assert Decimal(body["cost_usd"]) == cost
    assert (body["overage_usd"], body["status"], body["practice_id"]) == ("0.000000", "success", practice)
    assert body["allocations"] == [{"pot": "included", "amount_usd": body["cost_usd"], "grant_id": None}]
    assert body["budget"]["available_percent"] == 99
    snapshot = books.snapshot(practice)
    assert (snapshot.used_usd, snapshot.held_usd) == (cost, Decimal(0))
    assert books.verify() == []


@pytest.mark.parametrize(
    ("send", "identity", "amount", "balance"),
    [(authorize, "authorization_id", "held_usd", "held_usd"), (settle, "event_id", "cost_usd", "used_usd")],
    ids=["authorize", "settle"],
)
def test_a_replay_returns_the_first_result_and_charges_once_even_when_concurrent(
    send: Any, identity: str, amount: str, balance: str, service: httpx.Client, practice: str, books: Budget
) -> None:
    """The settle has no authorization before it: recorded after the call, as SPEC §4 allows."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        burst = list(pool.map(lambda _: send(service, practice, "replay-1"), range(8)))
    later = send(service, practice, "replay-1")

    assert sorted(answer.status_code for answer in burst) == [200] * 7 + [201], [a.text for a in burst]
    assert later.status_code == 200
    assert {answer.json()[identity] for answer in [*burst, later]} == {later.json()[identity]}
    assert {answer.json()[amount] for answer in [*burst, later]} == {later.json()[amount]}
    assert getattr(books.snapshot(practice), balance) == Decimal(later.json()[amount]) > 0
    assert books.verify() == []


@pytest.mark.parametrize(
    ("send", "other"),
    [
        (authorize, {"estimate": {"input_tokens": 1200, "max_output_tokens": 801}}),
        (authorize, {"model": "gpt-4o"}),
        (settle, {"usage": {"input_tokens": 1180, "output_tokens": 641}}),
        (settle, {"status": "error", "error_code": "upstream_timeout"}),
    ],
    ids=["authorize-estimate", "authorize-model", "settle-usage", "settle-status"],
)
def test_same_request_id_with_another_body_is_409(
    send: Any, other: dict[str, Any], service: httpx.Client, practice: str, books: Budget
) -> None:
    assert send(service, practice, "conflict-1").status_code == 201
    before = books.snapshot(practice)

    body = problem(send(service, practice, "conflict-1", **other), 409, "IDEMPOTENCY_CONFLICT")

    assert body["field"] == "request_id"
    assert books.snapshot(practice) == before


def test_authorizing_a_request_already_settled_is_409(
    service: httpx.Client, practice: str, books: Budget
) -> None:
    assert settle(service, practice, "settled-first").status_code == 201
    before = books.snapshot(practice)

    body = problem(authorize(service, practice, "settled-first"), 409, "CONFLICT")

    assert body["field"] == "request_id"
    assert books.snapshot(practice) == before


def test_exhausted_practice_is_refused_with_402_and_the_refusal_payload(
    service: httpx.Client, books: Budget
) -> None:
    practice = open_practice(books, included_usd="0.001")
    assert settle(service, practice, "big-call", usage={"input_tokens": 100_000}).status_code == 201
    snapshot = books.snapshot(practice)

    body = problem(authorize(service, practice, "refused-1"), 402, "AI_BUDGET_EXCEEDED")

    assert body["reason"] == "included_exhausted_no_credit"
    assert isinstance(body["message_user"], str)
    assert body["message_user"].strip()
    assert body["available_percent"] == 0
    assert body["period_end"] == snapshot.period_end
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", body["renewal_date"])
    assert body["request_id"] == "refused-1"
    assert problem(authorize(service, practice, "refused-1"), 402, "AI_BUDGET_EXCEEDED") == body
    assert books.snapshot(practice) == snapshot


def test_the_402_speaks_the_language_the_request_asks_for(service: httpx.Client, books: Budget) -> None:
    practice = open_practice(books, included_usd="0.001")  # a de-CH practice
    assert settle(service, practice, "big-call", usage={"input_tokens": 100_000}).status_code == 201
    german = problem(authorize(service, practice, "refused-de"), 402, "AI_BUDGET_EXCEEDED")
    renews = date.fromisoformat(german["renewal_date"])

    def refused_in(request_id: str, accept_language: str) -> dict[str, Any]:
        body = {**LETTER, "request_id": request_id, "practice_id": practice}
        answer = service.post("/v1/authorizations", json=body, headers={"Accept-Language": accept_language})
        return problem(answer, 402, "AI_BUDGET_EXCEEDED")

    french, klingon = refused_in("refused-fr", "fr-CH, de;q=0.5"), refused_in("refused-tlh", "tlh")

    msgid = "Refusal: allowance used up, renews on {renewal_date}"
    assert german["message_user"] == text(msgid, "de-CH", renewal_date=format_date(renews, "de-CH"))
    assert french["message_user"] == text(msgid, "fr-CH", renewal_date=format_date(renews, "fr-CH"))
    assert klingon["message_user"] == text(msgid, "de-CH", renewal_date=format_date(renews, "de-CH"))
    assert french["reason"] == german["reason"] == "included_exhausted_no_credit"


def test_practice_without_subscription_is_refused_with_its_reason(
    service: httpx.Client, books: Budget
) -> None:
    practice = open_practice(books, subscribed=False)

    body = problem(authorize(service, practice, "no-sub"), 402, "AI_BUDGET_EXCEEDED")

    assert body["reason"] == "no_active_subscription"
    assert (body["available_percent"], body["request_id"], body["renewal_date"]) == (0, "no-sub", None)


def test_void_releases_the_hold_and_a_replay_returns_the_same(
    service: httpx.Client, practice: str, books: Budget
) -> None:
    authorization = authorize(service, practice, "void-1").json()

    first, again = void(service, practice, "void-1"), void(service, practice, "void-1")

    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json()["authorization_id"] == authorization["authorization_id"]
    assert first.json()["status"] == again.json()["status"] == "voided"
    assert books.snapshot(practice).held_usd == 0
    assert books.verify() == []


def test_void_of_an_unknown_request_is_404_after_settle_409_of_a_bad_id_422(
    service: httpx.Client, practice: str, books: Budget
) -> None:
    authorize(service, practice, "void-2")
    settle(service, practice, "void-2")
    used = books.snapshot(practice).used_usd

    assert problem(void(service, practice, "never-authorized"), 404, "NOT_FOUND")["field"] == "request_id"
    assert problem(void(service, practice, "void-2"), 409, "CONFLICT")["field"] == "request_id"
    assert problem(void(service, practice, "has%20space"), 422, "INVALID_INPUT")["field"] == "request_id"
    assert books.snapshot(practice).used_usd == used > 0  # the settled cost stands


def test_void_reaches_a_request_id_with_a_slash(service: httpx.Client, practice: str, books: Budget) -> None:
    """`request_id` allows any printable ASCII, so `visit/42` authorizes — and must be voidable too."""
    assert authorize(service, practice, "visit/42").status_code == 201

    response = service.post("/v1/authorizations/visit%2F42/void", json={"practice_id": practice})

    assert response.status_code == 200, response.text
    assert books.snapshot(practice).held_usd == 0


def call(client: httpx.Client, route: str, practice_id: str, request_id: str) -> httpx.Response:
    if route == "/v1/authorizations":
        return authorize(client, practice_id, request_id)
    if route == "/v1/usage":
        return settle(client, practice_id, request_id)
    return void(client, practice_id, request_id)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("key", ["none", "malformed", "unknown", "revoked", "not-bearer"])
def test_without_a_valid_key_each_route_is_401(
    route: str, key: str, server: Server, practice: str, books: Budget, service: httpx.Client
) -> None:
    authorize(service, practice, "auth-fail")  # something to void
    before = books.snapshot(practice)
    headers = {
        "none": {},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "unknown": {"Authorization": f"Bearer aib_{'0' * 16}_{'x' * 43}"},
        "revoked": {"Authorization": f"Bearer {revoked_key(books, practice)}"},
        "not-bearer": {"Authorization": f"Basic {server.admin_key}"},
    }[key]

    with server.client(**headers) as client:
        response = call(client, route, practice, "auth-fail")

    problem(response, 401, "UNAUTHORIZED")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert books.snapshot(practice) == before


def revoked_key(budget: Budget, practice_id: str) -> str:
    api_key, text = budget.create_key(role="practice", practice_id=practice_id)
    budget.revoke_key(api_key.key_id)
    return text


@pytest.mark.parametrize(
    ("route", "changes", "field"),
    [
        ("/v1/authorizations", {"estimate": {"input_tokens": -1}}, "estimate.input_tokens"),
        ("/v1/authorizations", {"estimate": {"max_output_tokens": 800.0}}, "estimate.max_output_tokens"),
        ("/v1/authorizations", {"estimate": {"audio_seconds": "NaN"}}, "estimate.audio_seconds"),
        ("/v1/authorizations", {"colour": "blue"}, "colour"),
        ("/v1/authorizations", {"request_id": "has space"}, "request_id"),
        ("/v1/authorizations", {"request_id": "ümlaut"}, "request_id"),
        ("/v1/authorizations", {"operation": "letter drafting"}, "operation"),
        ("/v1/authorizations", {"model": None}, "model"),
        ("/v1/authorizations", {"practice_id": "bad/practice"}, "practice_id"),
        ("/v1/usage", {"usage": {"output_tokens": -5}}, "usage.output_tokens"),
        ("/v1/usage", {"usage": {"input_tokens": 1180.5}}, "usage.input_tokens"),
        ("/v1/usage", {"usage": {"input_tokens": 1180, "reasoning_tokens": 3}}, "usage.reasoning_tokens"),
        ("/v1/usage", {"usage": {"audio_seconds": "1.0005"}}, "usage.audio_seconds"),
        ("/v1/usage", {"model": None}, "model"),
        ("/v1/usage", {"meta": {"feature": "x" * 257}}, "meta.feature"),
        ("/v1/usage", {"meta": {f"k{index}": index for index in range(33)}}, "meta"),
        ("/v1/usage", {"meta": {"nested": {"a": 1}}}, "meta.nested"),
        ("/v1/usage", {"meta": {"ratio": 0.5}}, "meta.ratio"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_writes_nothing(
    route: str, changes: dict[str, Any], field: str, service: httpx.Client, practice: str, books: Budget
) -> None:
    before = books.snapshot(practice)
    base = LETTER if route == "/v1/authorizations" else USAGE
    body = {**base, "practice_id": practice, "request_id": "bad-1", **changes}
    body = {name: value for name, value in body.items() if value is not None}

    answer = problem(service.post(route, json=body), 422, "INVALID_INPUT")

    assert answer["field"] == field
    assert field.split(".")[-1] in answer["detail"]
    assert books.snapshot(practice) == before
    assert call(service, route, practice, "bad-1").status_code == 201  # the request id is still unused


def test_malformed_json_is_422_naming_the_body(service: httpx.Client, practice: str, books: Budget) -> None:
    before = books.snapshot(practice)

    response = service.post("/v1/usage", content=b'{"request_id": "x", ', headers=JSON)

    assert problem(response, 422, "INVALID_INPUT")["field"] == "body"
    assert books.snapshot(practice) == before


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_100_kb_body_is_413(
    route: str, declared: bool, service: httpx.Client, practice: str, books: Budget
) -> None:
    before = books.snapshot(practice)
    payload = b'{"practice_id": "%s", "request_id": "big", "pad": "%s"}' % (practice.encode(), b"x" * 100_000)
    content: Any = payload if declared else iter([payload[:50_000], payload[50_000:]])

    response = service.post(route.format(request_id="big"), content=content, headers=JSON)

    problem(response, 413, "BODY_TOO_LARGE")
    assert books.snapshot(practice) == before


def test_a_device_spends_from_its_practice(server: Server, books: Budget, service: httpx.Client) -> None:
    practice, elsewhere = open_practice(books), open_practice(books)
    books.bind_device(f"desk-{practice}", practice_id=practice)
    other = books.snapshot(elsewhere)
    device = {"X-Device-Id": f"desk-{practice}"}

    held = service.post("/v1/authorizations", json={**LETTER, "request_id": "dev-1"}, headers=device)
    settled = service.post("/v1/usage", json={**USAGE, "request_id": "dev-1"}, headers=device)
    service.post("/v1/authorizations", json={**LETTER, "request_id": "dev-2"}, headers=device)
    voided = service.post("/v1/authorizations/dev-2/void", headers=device)

    assert (held.status_code, settled.status_code, voided.status_code) == (201, 201, 200), voided.text
    assert {answer.json()["practice_id"] for answer in (held, settled, voided)} == {practice}
    snapshot = books.snapshot(practice)
    assert (snapshot.used_usd, snapshot.held_usd) == (Decimal(settled.json()["cost_usd"]), Decimal(0))
    assert books.snapshot(elsewhere) == other
    assert books.verify() == []


def test_a_practice_key_with_its_own_device_spends_from_its_practice(
    server: Server, practice: str, books: Budget
) -> None:
    books.bind_device(f"desk-{practice}", practice_id=practice)
    key = books.create_key(role="practice", practice_id=practice)[1]

    with server.client(key, **{"X-Device-Id": f"desk-{practice}"}) as desktop:
        response = settle(desktop, None, "desk-1")

    assert response.status_code == 201, response.text
    assert books.snapshot(practice).used_usd == Decimal(response.json()["cost_usd"])


@pytest.mark.parametrize(
    ("route", "device"),
    [("/v1/authorizations", "unknown"), ("/v1/authorizations", "deactivated"), ("/v1/usage", "unknown")],
)
def test_an_unknown_device_or_a_deactivated_one_authorizing_is_403(
    route: str, device: str, service: httpx.Client, practice: str, books: Budget
) -> None:
    """(A deactivated device may still settle: a call it already made is recorded, SPEC §5 G1.)"""
    device = f"{device}-{practice}"
    if device.startswith("deactivated"):
        books.bind_device(device, practice_id=practice)
        books.deactivate_device(device)
    before = books.snapshot(practice)
    body = {**(LETTER if route == "/v1/authorizations" else USAGE), "request_id": "dev-x"}

    response = service.post(route, json=body, headers={"X-Device-Id": device})

    assert problem(response, 403, "FORBIDDEN")["field"] == "device_id"
    assert books.snapshot(practice) == before
