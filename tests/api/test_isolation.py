"""G7 over real HTTP (SPEC §2 Device, §5 G7, §7): a practice's key or device reads and spends only
that practice.

Every test opens two practices, A (the caller's) and B (the victim), each with a 20 USD plan, a
bound device and an authorization of its own still holding money, then attacks B from A's side and
checks that B's books did not move: the same snapshot before and after, B's request ids still unused,
and `verify()` empty.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from aibudget import Budget
from tests.api.conftest import Server

LETTER = {"operation": "letter", "model": "gpt-4o-mini", "estimate": {"input_tokens": 500}}
USAGE = {"model": "gpt-4o-mini", "usage": {"input_tokens": 1180, "output_tokens": 640}}
GATE = ("authorize", "settle", "void")
TARGET = {"authorize": "authorize-b", "settle": "held", "void": "held"}  # request ids the attacks aim at


@dataclass
class Pair:
    """Practices A and B, their devices, A's practice key and a service key, on one server."""

    server: Server
    books: Budget
    a: str
    b: str
    a_key: str
    service_key: str

    def device(self, practice_id: str) -> str:
        return f"desk-{practice_id}"

    def client(self, key: str, device: str | None = None) -> httpx.Client:
        return self.server.client(key, **({"X-Device-Id": device} if device else {}))

    def gate(self, key: str, action: str, request_id: str, *, practice_id: str | None = None,
             device: str | None = None) -> httpx.Response:  # fmt: skip
        named = {} if practice_id is None else {"practice_id": practice_id}
        with self.client(key, device) as client:
            if action == "authorize":
                return client.post("/v1/authorizations", json={**LETTER, "request_id": request_id, **named})
            if action == "settle":
                return client.post("/v1/usage", json={**USAGE, "request_id": request_id, **named})
            return client.post(f"/v1/authorizations/{request_id}/void", json=named or None)


def open_practice(budget: Budget, name: str) -> str:
    practice_id = f"iso-{name}-{uuid.uuid4().hex[:10]}"
    now = int(time.time())
    budget.put_practice(practice_id, name=f"Praxis {name}")
    budget.put_plan(f"plan-{practice_id}", included_usd="20")
    budget.put_subscription(f"sub-{practice_id}", practice_id=practice_id, plan=f"plan-{practice_id}",
                            status="active", current_period_start=now - 86_400,
                            current_period_end=now + 29 * 86_400)  # fmt: skip
    budget.bind_device(f"desk-{practice_id}", practice_id=practice_id)
    return practice_id


@pytest.fixture
def pair(server: Server) -> Iterator[Pair]:
    with server.budget() as books:
        a, b = open_practice(books, "a"), open_practice(books, "b")
        made = Pair(server, books, a, b, books.create_key(role="practice", practice_id=a)[1],
                    books.create_key(role="service")[1])  # fmt: skip
        for practice_id in (a, b):  # each holds money under request id "held", settled nowhere
            assert (
                made.gate(made.service_key, "authorize", "held", practice_id=practice_id).status_code == 201
            )
        yield made


@pytest.fixture
def untouched_b(pair: Pair) -> Iterator[None]:
    """After the test: B's balances as before, its request ids unused, the books balanced."""
    before = pair.books.snapshot(pair.b)
    yield
    assert pair.books.snapshot(pair.b) == before
    assert pair.books.verify() == []
    for action in ("authorize", "settle"):  # 201, not a 200 replay: nothing was written under them
        answer = pair.gate(pair.service_key, action, TARGET[action], practice_id=pair.b)
        assert answer.status_code == 201, answer.text


def refused(response: httpx.Response, *error_codes: str) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["error_code"] in (error_codes or ("FORBIDDEN",)), body
    assert "used_usd" not in body
    return body


@pytest.mark.usefixtures("untouched_b")
@pytest.mark.parametrize("action", GATE)
def test_a_practice_key_naming_another_practice_is_403(pair: Pair, action: str) -> None:
    body = refused(pair.gate(pair.a_key, action, TARGET[action], practice_id=pair.b))

    assert body["field"] == "practice_id"


@pytest.mark.usefixtures("untouched_b")
def test_a_practice_key_without_naming_a_practice_acts_on_its_own(pair: Pair) -> None:
    a_before = pair.books.snapshot(pair.a)

    held = pair.gate(pair.a_key, "authorize", "authorize-b")
    voided = pair.gate(pair.a_key, "void", "held")  # A's "held", never B's
    settled = pair.gate(pair.a_key, "settle", "held")  # recorded after the void: the call happened
    with pair.client(pair.a_key) as desktop:
        view = desktop.get("/v1/budget")

    assert [answer.status_code for answer in (held, voided, settled, view)] == [201, 200, 201, 200]
    assert {answer.json()["practice_id"] for answer in (held, voided, settled)} == {pair.a}
    a_after = pair.books.snapshot(pair.a)
    assert a_after.used_usd == a_before.used_usd + Decimal(settled.json()["cost_usd"])
    assert a_after.held_usd == a_before.held_usd - Decimal(voided.json()["held_usd"]) + Decimal(
        held.json()["held_usd"]
    )
    assert view.json()["available_percent"] == a_after.client_view().available_percent


@pytest.mark.usefixtures("untouched_b")
@pytest.mark.parametrize("action", GATE)
@pytest.mark.parametrize("caller", ["service", "practice-a"])
def test_a_device_of_a_named_with_practice_b_is_403(pair: Pair, action: str, caller: str) -> None:
    """Refused, never re-routed to A either: A's books do not move."""
    a_before = pair.books.snapshot(pair.a)
    key = pair.service_key if caller == "service" else pair.a_key
    # with A's own key the request is refused for naming B before the device is looked at: FORBIDDEN
    codes = (
        ("DEVICE_PRACTICE_MISMATCH",) if caller == "service" else ("DEVICE_PRACTICE_MISMATCH", "FORBIDDEN")
    )

    body = refused(
        pair.gate(key, action, TARGET[action], practice_id=pair.b, device=pair.device(pair.a)), *codes
    )

    assert body["field"] in ("device_id", "practice_id")
    assert pair.books.snapshot(pair.a) == a_before


@pytest.mark.usefixtures("untouched_b")
@pytest.mark.parametrize("action", GATE)
def test_a_practice_key_with_a_device_of_b_is_403(pair: Pair, action: str) -> None:
    a_before = pair.books.snapshot(pair.a)
    response = pair.gate(pair.a_key, action, TARGET[action], device=pair.device(pair.b))

    body = refused(response, "DEVICE_PRACTICE_MISMATCH")

    assert body["field"] == "device_id"
    assert pair.books.snapshot(pair.a) == a_before


@pytest.mark.usefixtures("untouched_b")
@pytest.mark.parametrize("action", GATE)
def test_a_service_key_with_a_device_of_b_naming_a_is_403(pair: Pair, action: str) -> None:
    a_before = pair.books.snapshot(pair.a)

    response = pair.gate(
        pair.service_key, action, TARGET[action], practice_id=pair.a, device=pair.device(pair.b)
    )

    refused(response, "DEVICE_PRACTICE_MISMATCH")
    assert pair.books.snapshot(pair.a) == a_before


@pytest.mark.usefixtures("untouched_b")
@pytest.mark.parametrize(
    "path", ["/v1/practices/{b}/budget", "/v1/practices/{b}/usage", "/v1/practices/{b}/credits",
             "/v1/practices/{b}/auto-topup", "/v1/practices/{a}/budget", "/v1/practices/{a}/usage"],
)  # fmt: skip
def test_a_practice_key_cannot_read_the_operator_views(pair: Pair, path: str) -> None:
    with pair.client(pair.a_key) as desktop:
        response = desktop.get(path.format(a=pair.a, b=pair.b))

    refused(response)


@pytest.mark.usefixtures("untouched_b")
def test_a_practice_key_cannot_read_b_through_b_s_device(pair: Pair) -> None:
    with pair.client(pair.a_key, pair.device(pair.b)) as desktop:
        response = desktop.get("/v1/budget")

    refused(response, "DEVICE_PRACTICE_MISMATCH")


@pytest.mark.usefixtures("untouched_b")
def test_a_practice_key_cannot_change_b_s_automatic_top_up(pair: Pair) -> None:
    settings = {"enabled": True, "threshold_usd": "5", "package_usd": "50", "monthly_max_count": 3,
                "monthly_max_usd": "150"}  # fmt: skip
    with pair.server.admin() as admin:
        before = admin.get(f"/v1/practices/{pair.b}/auto-topup").json()
    with pair.client(pair.a_key) as desktop:
        response = desktop.put(f"/v1/practices/{pair.b}/auto-topup", json=settings)

    refused(response)
    with pair.server.admin() as admin:
        assert admin.get(f"/v1/practices/{pair.b}/auto-topup").json() == before


@pytest.mark.usefixtures("untouched_b")
@pytest.mark.parametrize("caller", ["service", "practice-a"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/practices/{b}", {"policy": "strict"}),
        (
            "POST",
            "/v1/practices/{b}/credits",
            {"amount_usd": "100", "source": "manual", "reference": "theft"},
        ),
        ("POST", "/v1/devices", {"device_id": "stolen", "practice_id": "{b}"}),
        ("POST", "/v1/keys", {"role": "practice", "practice_id": "{b}"}),
        ("POST", "/v1/keys", {"role": "admin"}),
        ("PUT", "/v1/subscriptions/sub-{b}", {"practice_id": "{b}", "status": "canceled"}),
    ],
    ids=["practice", "credit", "device", "practice-key", "admin-key", "subscription"],
)
def test_admin_routes_refuse_other_roles(
    pair: Pair, caller: str, method: str, path: str, body: dict[str, Any]
) -> None:
    key = pair.service_key if caller == "service" else pair.a_key
    filled = {name: value.format(b=pair.b) for name, value in body.items()}

    with pair.client(key) as client:
        response = client.request(method, path.format(b=pair.b), json=filled)

    assert "key" not in refused(response)  # no key was made, none is shown
