"""Payments fixtures: a local fake of Stripe's API (real HTTP); a `Budget` whose `stripe` client points
at it, over a fresh database of the engine under test, with one practice ready to spend; a server per
module started with Stripe settings pointing at a fake of its own; signed webhook delivery."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from aibudget import Budget, Settings
from tests.api.conftest import Server, start_server, stop_server
from tests.conftest import FakeClock
from tests.fake_stripe import FakeStripe, sign

WEBHOOK_SECRET = "whsec_" + "t" * 32
PACKAGES = [
    {"package_id": "credit-25", "credit_usd": "25", "prices": {"chf": "24.50", "usd": "25"}},
    {"package_id": "credit-10", "credit_usd": "10", "prices": {"usd": "10"}},
]
PERIOD_START, PERIOD_END = 1793491200, 1796083200  # November 2026, UTC
PRACTICE, CUSTOMER = "praxis-muster", "cus_muster"


def stripe_settings(fake: FakeStripe, data_dir: Path, **overrides: Any) -> Settings:
    return Settings.load(
        data_dir=data_dir,
        stripe_api_key=fake.api_key,
        stripe_api_base=fake.url,
        stripe_webhook_secret=WEBHOOK_SECRET,
        credit_packages=PACKAGES,
        **overrides,
    )


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        fake.add_customer(CUSTOMER, payment_method="pm_card_visa")
        yield fake


@pytest.fixture
def paying(database_url: str, tmp_path: Path, clock: FakeClock, fake_stripe: FakeStripe) -> Iterator[Budget]:
    """A budget with Stripe on, and practice `praxis-muster`: 1 USD included, subscribed as customer
    `cus_muster` (whose saved card works), automatic top-up of 25 USD under 0.50 USD, at most two a
    month."""
    with open_paying(database_url, tmp_path, clock, fake_stripe) as budget:
        yield budget


@contextmanager
def open_paying(
    database_url: str, tmp_path: Path, clock: FakeClock, fake: FakeStripe, **overrides: Any
) -> Iterator[Budget]:
    """The `paying` budget, with settings `overrides`."""
    settings = stripe_settings(fake, tmp_path / "var", **overrides)
    with Budget.open(database_url, settings=settings, clock=clock) as budget:
        budget.put_practice(PRACTICE, name="Praxis Muster", locale="de-CH")
        budget.put_plan("basic", included_usd="1")
        budget.put_subscription(
            "sub_muster", practice_id=PRACTICE, plan="basic", status="active", customer_id=CUSTOMER,
            current_period_start=PERIOD_START, current_period_end=PERIOD_END,
        )  # fmt: skip
        budget.put_auto_topup(
            PRACTICE, enabled=True, threshold_usd="0.50", package_usd="25",
            monthly_max_count=2, monthly_max_usd="50",
        )  # fmt: skip
        yield budget


def spend(budget: Budget, request_id: str, usd_cents: int) -> None:
    """Settle a call costing exactly `usd_cents` (gpt-4o input: 2.50 USD per million tokens)."""
    budget.settle(request_id=request_id, practice_id=PRACTICE, model="gpt-4o", input_tokens=usd_cents * 4_000)


def signed(
    payload: dict[str, Any], *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> tuple[bytes, str]:
    body = json.dumps(payload).encode()
    return body, sign(body, secret, timestamp)


# a server per module, with Stripe on


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as started:
        yield started


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, server_database: str | None, fake: FakeStripe
) -> Iterator[Server]:
    started = start_server(
        tmp_path_factory.mktemp("payments") / "var", server_database,
        AIBUDGET_STRIPE_API_KEY=fake.api_key, AIBUDGET_STRIPE_API_BASE=fake.url,
        AIBUDGET_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET, AIBUDGET_CREDIT_PACKAGES=json.dumps(PACKAGES),
    )  # fmt: skip
    try:
        yield started
    finally:
        stop_server(started)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def post_webhook(server: Server, body: bytes, signature: str | None) -> httpx.Response:
    """POST `body` with `signature` (sent as UTF-8, so a test can send what no ASCII header holds)."""
    headers: dict[str, str | bytes] = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature.encode()
    return httpx.post(f"{server.url}/v1/webhooks/stripe", content=body, headers=headers, timeout=10)


def deliver(server: Server, payload: dict[str, Any], **signing: Any) -> httpx.Response:
    """POST `payload` signed now with the server's secret (or as `signing` says: `secret`, `timestamp`,
    `extra_secrets`)."""
    body = json.dumps(payload).encode()
    secret = signing.pop("secret", WEBHOOK_SECRET)
    return post_webhook(server, body, sign(body, secret, **signing))


def assert_received(response: httpx.Response, outcome: str) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "outcome": outcome}
