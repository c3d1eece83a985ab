"""Buying credit and steering automatic top-up over real HTTP (SPEC §6, G5, G7): a server whose
`stripe` client talks to a local fake of Stripe. A Checkout session is priced in the practice's
currency; the credit arrives with the signed `checkout.session.completed`, once per payment; a
purchase or an explicit resume lifts a pause left by a declined top-up."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.api.conftest import Server, start_server, stop_server
from tests.api.test_accounts import assert_problem, key
from tests.databases import server_databases
from tests.fake_stripe import (
    DECLINED,
    FakeStripe,
    checkout_session_completed_object,
    event,
    payment_intent_object,
)
from tests.payments.conftest import assert_received, deliver, new_id

DAY = 86_400
URLS = {"success_url": "https://vendor.example/ok", "cancel_url": "https://vendor.example/cancel"}
TOPUP = {"enabled": True, "threshold_usd": "0", "package_usd": "25", "monthly_max_count": 2,
         "monthly_max_usd": "50"}  # fmt: skip
PRACTICE_KEY, CREDIT_KEY, PACKAGE_KEY = (
    "aibudget_practice_id",
    "aibudget_credit_micros",
    "aibudget_package_id",
)


@pytest.fixture(scope="module")
def plain_server(
    tmp_path_factory: pytest.TempPathFactory, backend: str, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """A server started without any Stripe setting: payments are off."""
    for database in server_databases(backend, request):
        started = start_server(tmp_path_factory.mktemp("no-stripe") / "var", database)
        try:
            yield started
        finally:
            stop_server(started)


# helpers


def customer_practice(
    server: Server, fake: FakeStripe, *, locale: str = "de-CH", card: str | None = "pm_card_visa"
) -> tuple[str, str]:
    """A practice (1 USD included) subscribed as a customer registered in the fake with `card`."""
    practice_id, customer_id, plan = new_id("p"), new_id("cus"), new_id("plan")
    fake.add_customer(customer_id, payment_method=card)
    now = int(time.time())
    with server.budget() as budget:
        budget.put_practice(practice_id, name="Praxis Muster", locale=locale)
        budget.put_plan(plan, included_usd="1")
        budget.put_subscription(
            new_id("sub"), practice_id=practice_id, plan=plan, status="active", customer_id=customer_id,
            current_period_start=now - DAY, current_period_end=now + 29 * DAY,
        )  # fmt: skip
    return practice_id, customer_id


def checkout(server: Server, practice_id: str, package_id: str = "credit-25", **body: Any) -> httpx.Response:
    with server.admin() as client:
        return client.post(
            f"/v1/practices/{practice_id}/credits/checkout", json={"package_id": package_id, **URLS} | body
        )


def completed(fake: FakeStripe, session_id: str, payment: str, **fields: Any) -> dict[str, Any]:
    """`checkout.session.completed` for a session the server created in the fake, paid by `payment`."""
    obj = fake.complete_checkout_session(session_id, payment_intent=payment) | fields
    return event("checkout.session.completed", obj)


def grants(server: Server, practice_id: str) -> list[dict[str, Any]]:
    with server.admin() as admin:
        listed = admin.get(f"/v1/practices/{practice_id}/credits")
    assert listed.status_code == 200, listed.text
    found: list[dict[str, Any]] = listed.json()["grants"]
    return found


def paused_practice(server: Server, fake: FakeStripe) -> tuple[str, str]:
    """A practice whose automatic top-up paused on a declined card: its budget is used up, a call is
    authorized over HTTP, the server charges the card off-session and Stripe (the fake) declines."""
    practice_id, customer_id = customer_practice(server, fake, card=DECLINED)
    with server.admin() as admin:
        assert admin.put(f"/v1/practices/{practice_id}/auto-topup", json=TOPUP).status_code == 200
    with server.budget() as budget:  # no Stripe here: this settle never tops up
        budget.settle(request_id="use-it-up", practice_id=practice_id, model="gpt-4o", input_tokens=400_000)
    charges_before = len(fake.payment_intents)
    with server.client(key(server, "service")) as backend:
        refused = backend.post("/v1/authorizations", json={
            "practice_id": practice_id, "request_id": new_id("call"), "operation": "letter",
            "model": "gpt-4o", "estimate": {"input_tokens": 1000},
        })  # fmt: skip
    assert refused.status_code == 402, refused.text
    assert refused.json()["reason"] == "auto_topup_paused"
    assert len(fake.payment_intents) == charges_before + 1
    return practice_id, customer_id


def auto_topup(server: Server, practice_id: str) -> dict[str, Any]:
    with server.admin() as admin:
        read = admin.get(f"/v1/practices/{practice_id}/auto-topup")
    assert read.status_code == 200, read.text
    body: dict[str, Any] = read.json()
    return body


# packages and Checkout


def test_the_packages_on_sale_are_priced_in_the_practices_currency(server: Server, fake: FakeStripe) -> None:
    swiss, _ = customer_practice(server, fake)
    american, _ = customer_practice(server, fake, locale="en-US")
    with server.client(key(server, "practice", swiss)) as desktop:
        in_chf = desktop.get(f"/v1/practices/{swiss}/credits/packages")
    with server.admin() as admin:
        in_usd = admin.get(f"/v1/practices/{american}/credits/packages")

    assert in_chf.status_code == 200
    [offer] = in_chf.json()
    assert (offer["package_id"], offer["credit_usd"], offer["currency"]) == ("credit-25", "25.000000", "chf")
    assert Decimal(offer["price"]) == Decimal("24.50")
    assert [(offer["package_id"], Decimal(offer["price"]), offer["currency"]) for offer in in_usd.json()] == [
        ("credit-25", 25, "usd"), ("credit-10", 10, "usd"),
    ]  # fmt: skip


def test_checkout_creates_a_session_in_chf_for_a_swiss_practice(server: Server, fake: FakeStripe) -> None:
    practice_id, customer_id = customer_practice(server, fake)

    started = checkout(server, practice_id)

    assert started.status_code == 201, started.text
    assert started.json().keys() == {"checkout_url", "session_id"}
    session = fake.checkout_sessions[started.json()["session_id"]]
    assert started.json()["checkout_url"] == session["url"]
    assert (session["amount_total"], session["currency"], session["mode"]) == (2450, "chf", "payment")
    assert session["metadata"] == {
        PRACTICE_KEY: practice_id,
        CREDIT_KEY: "25000000",
        PACKAGE_KEY: "credit-25",
    }
    assert (session["customer"], session["client_reference_id"]) == (customer_id, practice_id)
    assert (session["success_url"], session["cancel_url"]) == (URLS["success_url"], URLS["cancel_url"])
    [sent] = [r.params for r in fake.requests if r.path == "/v1/checkout/sessions" and r.params["metadata"]
              [PRACTICE_KEY] == practice_id]  # fmt: skip
    assert sent["payment_intent_data"] == {
        "metadata": session["metadata"],
        "setup_future_usage": "off_session",
    }
    assert sent["line_items"][0]["price_data"]["product_data"]["name"] == "AI credit 25 USD"
    assert grants(server, practice_id) == []  # nothing is credited before Stripe confirms the payment


def test_a_practice_in_usd_buys_the_package_sold_in_usd_only(server: Server, fake: FakeStripe) -> None:
    practice_id, _ = customer_practice(server, fake, locale="en-US")

    started = checkout(server, practice_id, "credit-10")

    assert started.status_code == 201, started.text
    session = fake.checkout_sessions[started.json()["session_id"]]
    assert (session["amount_total"], session["currency"]) == (1000, "usd")
    assert session["metadata"][CREDIT_KEY] == "10000000"


def test_a_paid_checkout_grants_the_credit_once_per_payment(server: Server, fake: FakeStripe) -> None:
    practice_id, _ = customer_practice(server, fake)
    session_id = checkout(server, practice_id).json()["session_id"]
    payment = f"pi_{uuid.uuid4().hex}"

    assert_received(deliver(server, completed(fake, session_id, payment)), "applied")
    # Stripe again, as a new event for the same payment, and the delayed-payment event
    assert_received(deliver(server, completed(fake, session_id, payment)), "applied")
    async_paid = event("checkout.session.async_payment_succeeded", fake.complete_checkout_session(
        session_id, payment_intent=payment))  # fmt: skip
    assert_received(deliver(server, async_paid), "applied")

    [grant] = grants(server, practice_id)
    assert (grant["source"], grant["reference"], grant["amount_usd"]) == ("purchase", payment, "25.000000")
    with server.budget() as budget:
        assert [(g.source, g.reference) for g in budget.grants(practice_id)] == [("purchase", payment)]
    with server.admin() as admin:
        view = admin.get(f"/v1/practices/{practice_id}/budget").json()
    assert (view["extra_credit_remaining_usd"], view["available_usd"]) == ("25.000000", "26.000000")


def test_concurrent_events_for_one_payment_grant_once(server: Server, fake: FakeStripe) -> None:
    practice_id, _ = customer_practice(server, fake)
    session_id = checkout(server, practice_id).json()["session_id"]
    payment = f"pi_{uuid.uuid4().hex}"
    events = [completed(fake, session_id, payment) for _ in range(6)]

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda payload: deliver(server, payload), events))

    assert [answer.status_code for answer in answers] == [200] * 6, [answer.text for answer in answers]
    assert [grant["reference"] for grant in grants(server, practice_id)] == [payment]


def test_an_unpaid_completion_grants_nothing_until_the_payment_succeeds(
    server: Server, fake: FakeStripe
) -> None:
    practice_id, _ = customer_practice(server, fake)
    session_id = checkout(server, practice_id).json()["session_id"]
    payment = f"pi_{uuid.uuid4().hex}"

    assert_received(deliver(server, completed(fake, session_id, payment, payment_status="unpaid")), "applied")
    assert grants(server, practice_id) == []

    paid = fake.complete_checkout_session(session_id, payment_intent=payment)
    assert_received(deliver(server, event("checkout.session.async_payment_succeeded", paid)), "applied")
    assert [grant["reference"] for grant in grants(server, practice_id)] == [payment]


def test_the_purchases_payment_intent_events_credit_nothing_more(server: Server, fake: FakeStripe) -> None:
    practice_id, customer_id = customer_practice(server, fake)
    session_id = checkout(server, practice_id).json()["session_id"]
    session, payment = fake.checkout_sessions[session_id], f"pi_{uuid.uuid4().hex}"
    intent = payment_intent_object(
        id=payment, amount=2450, currency="chf", customer=customer_id, metadata=session["metadata"]
    )

    # the purchase's own payment events are not top-ups: the Checkout completion is what credits
    assert_received(deliver(server, event("payment_intent.succeeded", intent)), "ignored")
    assert grants(server, practice_id) == []
    assert_received(deliver(server, completed(fake, session_id, payment)), "applied")
    assert_received(deliver(server, event("payment_intent.succeeded", intent)), "ignored")
    assert [(grant["source"], grant["reference"]) for grant in grants(server, practice_id)] == [
        ("purchase", payment)
    ]


def test_a_purchase_for_an_unknown_practice_is_refused_and_retried_later(server: Server) -> None:
    practice_id, payment = new_id("p"), f"pi_{uuid.uuid4().hex}"
    obj = checkout_session_completed_object(
        payment_intent=payment, metadata={PRACTICE_KEY: practice_id, CREDIT_KEY: "25000000"}
    )
    payload = event("checkout.session.completed", obj)

    refused = deliver(server, payload)
    assert 400 <= refused.status_code < 500, refused.text

    with server.budget() as budget:
        budget.put_practice(practice_id, name="Praxis Spät")
    assert_received(deliver(server, payload), "applied")
    assert [grant["reference"] for grant in grants(server, practice_id)] == [payment]


def test_a_checkout_aibudget_did_not_create_is_acknowledged_and_grants_nothing(server: Server) -> None:
    practice_id = new_id("p")
    with server.budget() as budget:
        budget.put_practice(practice_id, name="Praxis Muster")
    signup = checkout_session_completed_object(mode="subscription", metadata={"practice_id": practice_id})

    answer = deliver(server, event("checkout.session.completed", signup))

    assert answer.status_code == 200, answer.text
    assert grants(server, practice_id) == []


@pytest.mark.parametrize(
    ("package_id", "locale", "status", "error_code"),
    [
        ("credit-1000", "de-CH", 404, "NOT_FOUND"),
        ("credit-10", "de-CH", 409, "CONFLICT"),  # sold in USD only
        ("credit-25", "fr-FR", 409, "CONFLICT"),  # no price in EUR
    ],
)
def test_a_package_not_for_sale_to_the_practice_is_refused_before_stripe_is_asked(
    server: Server, fake: FakeStripe, package_id: str, locale: str, status: int, error_code: str
) -> None:
    practice_id, _ = customer_practice(server, fake, locale=locale)
    sessions_before = len(fake.checkout_sessions)

    refused = checkout(server, practice_id, package_id)

    assert assert_problem(refused, status, "package_id")["error_code"] == error_code
    assert len(fake.checkout_sessions) == sessions_before


def test_checkout_without_return_addresses_is_422(server: Server, fake: FakeStripe) -> None:
    practice_id, _ = customer_practice(server, fake)
    sessions_before = len(fake.checkout_sessions)
    with server.admin() as admin:
        refused = admin.post(
            f"/v1/practices/{practice_id}/credits/checkout", json={"package_id": "credit-25"}
        )
        not_http = checkout(server, practice_id, success_url="ftp://vendor.example/ok")

    assert_problem(refused, 422, "success_url")
    assert_problem(not_http, 422, "success_url")
    assert len(fake.checkout_sessions) == sessions_before


def test_checkout_when_stripe_does_not_answer_is_503(server: Server, fake: FakeStripe) -> None:
    practice_id, _ = customer_practice(server, fake)
    fake.fail_next(10, status=500)
    try:
        refused = checkout(server, practice_id)
    finally:
        fake.fail_next(0)

    assert assert_problem(refused, 503)["error_code"] == "PAYMENT_PROVIDER_UNAVAILABLE"
    assert checkout(server, practice_id).status_code == 201  # Stripe is back


def test_without_stripe_settings_checkout_and_the_webhook_are_404_payments_off(plain_server: Server) -> None:
    practice_id = new_id("p")
    with plain_server.budget() as budget:
        budget.put_practice(practice_id, name="Praxis Muster")
    payload = event("checkout.session.completed", checkout_session_completed_object(
        metadata={PRACTICE_KEY: practice_id, CREDIT_KEY: "25000000"}))  # fmt: skip

    refused = checkout(plain_server, practice_id)
    webhook = deliver(plain_server, payload)

    assert assert_problem(refused, 404)["error_code"] == "PAYMENTS_OFF"
    assert assert_problem(webhook, 404)["error_code"] == "PAYMENTS_OFF"
    with plain_server.budget() as budget:
        assert budget.grants(practice_id) == []


# roles (G7)


def test_a_practice_key_acts_for_its_own_practice_only(server: Server, fake: FakeStripe) -> None:
    mine, _ = customer_practice(server, fake)
    theirs, _ = paused_practice(server, fake)
    sessions_before = len(fake.checkout_sessions)
    with server.client(key(server, "practice", mine)) as desktop:
        refusals = [
            desktop.post(
                f"/v1/practices/{theirs}/credits/checkout", json={"package_id": "credit-25", **URLS}
            ),
            desktop.post(f"/v1/practices/{theirs}/auto-topup/resume"),
            desktop.get(f"/v1/practices/{theirs}/auto-topup/attempts"),
            desktop.get(f"/v1/practices/{theirs}/credits/packages"),
        ]
        own = [
            desktop.post(f"/v1/practices/{mine}/credits/checkout", json={"package_id": "credit-25", **URLS}),
            desktop.post(f"/v1/practices/{mine}/auto-topup/resume"),
            desktop.get(f"/v1/practices/{mine}/auto-topup/attempts"),
        ]

    for refused in refusals:
        assert_problem(refused, 403, "practice_id")
    assert [answer.status_code for answer in own] == [201, 200, 200]
    assert len(fake.checkout_sessions) == sessions_before + 1  # the practice's own purchase only
    assert auto_topup(server, theirs)["paused_reason"] == "card_declined"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "credits/checkout"),
        ("GET", "credits/packages"),
        ("POST", "auto-topup/resume"),
        ("GET", "auto-topup/attempts"),
    ],
)
def test_no_key_or_a_wrong_key_is_401(server: Server, fake: FakeStripe, method: str, path: str) -> None:
    practice_id, _ = customer_practice(server, fake)
    body = {"package_id": "credit-25", **URLS} if method == "POST" else None
    for credentials in (None, "not-a-key"):
        with server.client(credentials) as client:
            assert_problem(client.request(method, f"/v1/practices/{practice_id}/{path}", json=body), 401)


def test_a_service_key_cannot_resume_auto_topup(server: Server, fake: FakeStripe) -> None:
    practice_id, _ = paused_practice(server, fake)
    with server.client(key(server, "service")) as backend:
        assert_problem(backend.post(f"/v1/practices/{practice_id}/auto-topup/resume"), 403)
    assert auto_topup(server, practice_id)["paused_reason"] == "card_declined"


# pauses: resume and purchase


def test_the_attempts_show_the_declined_charge_and_a_resume_lifts_the_pause(
    server: Server, fake: FakeStripe
) -> None:
    practice_id, customer_id = paused_practice(server, fake)
    paused = auto_topup(server, practice_id)
    with server.client(key(server, "practice", practice_id)) as desktop:
        attempts = desktop.get(f"/v1/practices/{practice_id}/auto-topup/attempts")
        resumed = desktop.post(f"/v1/practices/{practice_id}/auto-topup/resume")

    assert (paused["paused_reason"], paused["paused_at"] is not None) == ("card_declined", True)
    assert attempts.status_code == 200
    [attempt] = attempts.json()
    assert (attempt["status"], attempt["failure_code"], attempt["trigger"]) == (
        "failed",
        "card_declined",
        "authorize",
    )
    assert (attempt["charge_amount"], attempt["currency"], attempt["credit_usd"]) == (
        2450,
        "chf",
        "25.000000",
    )
    assert attempt["payment_intent_id"] in fake.payment_intents
    assert fake.payment_intents[attempt["payment_intent_id"]]["customer"] == customer_id
    assert attempt["grant_id"] is None
    assert attempt["closed_at"] is not None
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["paused_reason"], resumed.json()["paused_at"]) == (None, None)
    assert auto_topup(server, practice_id) == resumed.json()

    fake.add_customer(customer_id, payment_method="pm_card_visa")  # the card was fixed
    with server.client(key(server, "practice", practice_id)) as desktop:
        allowed = desktop.post("/v1/authorizations", json={
            "request_id": new_id("call"), "operation": "letter", "model": "gpt-4o",
            "estimate": {"input_tokens": 1000},
        })  # fmt: skip
        after = desktop.get(f"/v1/practices/{practice_id}/auto-topup/attempts").json()
    assert allowed.status_code == 201, allowed.text
    assert [(a["status"], a["failure_code"]) for a in after] == [
        ("succeeded", None),
        ("failed", "card_declined"),
    ]


def test_a_purchase_lifts_a_pause(server: Server, fake: FakeStripe) -> None:
    practice_id, _ = paused_practice(server, fake)
    session_id = checkout(server, practice_id).json()["session_id"]
    unpaid = completed(fake, session_id, f"pi_{uuid.uuid4().hex}", payment_status="unpaid")
    assert_received(deliver(server, unpaid), "applied")
    assert auto_topup(server, practice_id)["paused_reason"] == "card_declined"  # not paid: still paused

    assert_received(deliver(server, completed(fake, session_id, f"pi_{uuid.uuid4().hex}")), "applied")

    settings = auto_topup(server, practice_id)
    assert (settings["paused_reason"], settings["paused_at"]) == (None, None)
    assert [grant["source"] for grant in grants(server, practice_id)] == ["purchase"]
    with server.admin() as admin:
        assert admin.get(f"/v1/practices/{practice_id}/budget").json()["auto_topup"] == {
            "enabled": True, "paused_reason": None,
        }  # fmt: skip


def test_a_redelivered_purchase_does_not_lift_a_later_pause(server: Server, fake: FakeStripe) -> None:
    """Event dedupe, seen where nothing else would hide it: replaying a purchase would lift the pause."""
    practice_id, _ = customer_practice(server, fake)
    session_id = checkout(server, practice_id).json()["session_id"]
    purchase = completed(fake, session_id, f"pi_{uuid.uuid4().hex}")
    assert_received(deliver(server, purchase), "applied")
    # the card then fails an automatic top-up: paused
    fake.add_customer(fake.checkout_sessions[session_id]["customer"], payment_method=DECLINED)
    with server.admin() as admin:
        assert admin.put(f"/v1/practices/{practice_id}/auto-topup", json=TOPUP).status_code == 200
    with server.budget() as budget:
        budget.settle(
            request_id="use-it-all", practice_id=practice_id, model="gpt-4o", input_tokens=10_400_000
        )
    with server.client(key(server, "practice", practice_id)) as desktop:
        refused = desktop.post("/v1/authorizations", json={
            "request_id": new_id("call"), "operation": "letter", "model": "gpt-4o",
            "estimate": {"input_tokens": 1000},
        })  # fmt: skip
    assert refused.status_code == 402, refused.text
    assert auto_topup(server, practice_id)["paused_reason"] == "card_declined"

    assert_received(deliver(server, purchase), "duplicate")

    assert auto_topup(server, practice_id)["paused_reason"] == "card_declined"
    assert len(grants(server, practice_id)) == 1


def test_a_purchase_does_not_lift_an_operators_pause(server: Server, fake: FakeStripe) -> None:
    """The operator paused top-up on purpose: a customer's purchase adds credit but only an explicit
    resume charges the card automatically again."""
    practice_id, _ = customer_practice(server, fake)
    with server.admin() as admin:
        assert admin.put(f"/v1/practices/{practice_id}/auto-topup", json=TOPUP).status_code == 200
    with server.budget() as budget:
        budget.pause_auto_topup(practice_id)
    session_id = checkout(server, practice_id).json()["session_id"]

    assert_received(deliver(server, completed(fake, session_id, f"pi_{uuid.uuid4().hex}")), "applied")

    assert [grant["source"] for grant in grants(server, practice_id)] == ["purchase"]
    assert auto_topup(server, practice_id)["paused_reason"] == "paused_by_operator"
    with server.admin() as admin:
        resumed = admin.post(f"/v1/practices/{practice_id}/auto-topup/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused_reason"] is None
