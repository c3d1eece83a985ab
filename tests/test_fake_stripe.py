"""The fake Stripe server, driven by the real `stripe` package over HTTP (see `tests/fake_stripe.py`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.fake_stripe import (
    AUTHENTICATION_REQUIRED,
    DECLINED,
    FakeStripe,
    checkout_session_completed_object,
    decode_form,
    event,
    payment_intent_object,
    sign,
    subscription,
)

SECRET = "whsec_test_current"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        server.add_customer("cus_1", email="praxis@example.com")
        yield server


def make_client(fake: FakeStripe, api_key: str = FakeStripe.api_key) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": fake.url},
        http_client=stripe.HTTPXClient(timeout=5, allow_sync_methods=True),
        max_network_retries=0,
    )


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    return make_client(fake)


def charge_params(payment_method: str = "pm_card_visa", **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "amount": 950,
        "currency": "chf",
        "customer": "cus_1",
        "payment_method": payment_method,
        "off_session": True,
        "confirm": True,
        "description": "AI credit 10 USD (automatic top-up)",
        "metadata": {"aibudget_practice_id": "p1", "aibudget_attempt_id": "a1"},
    }
    params.update(overrides)
    return params


def charge(client: stripe.StripeClient, key: str, **params: Any) -> stripe.PaymentIntent:
    return client.v1.payment_intents.create(params=charge_params(**params), options={"idempotency_key": key})  # type: ignore[arg-type]


# -- payment intents -------------------------------------------------------------------------


def test_a_charge_succeeds_and_is_recorded_as_sent(fake: FakeStripe, client: stripe.StripeClient) -> None:
    intent = charge(client, "aibudget-topup-a1")

    assert isinstance(intent, stripe.PaymentIntent)
    assert intent.id.startswith("pi_fake_")
    assert intent.status == "succeeded"
    assert (intent.amount, intent.amount_received, intent.currency) == (950, 950, "chf")
    assert intent.customer == "cus_1"
    assert intent.metadata is not None
    assert intent.metadata["aibudget_practice_id"] == "p1"
    assert isinstance(intent.latest_charge, str)
    assert intent.latest_charge.startswith("ch_fake_")
    assert abs(intent.created - time.time()) < 60
    assert list(fake.payment_intents) == [intent.id]

    (request,) = fake.requests
    assert (request.method, request.path, request.status) == ("POST", "/v1/payment_intents", 200)
    assert request.idempotency_key == "aibudget-topup-a1"
    assert request.headers["authorization"] == "Bearer sk_test_fake"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    # what the package puts on the wire: strings, booleans as "true", nested keys decoded
    assert request.params == {
        "amount": "950",
        "currency": "chf",
        "customer": "cus_1",
        "payment_method": "pm_card_visa",
        "off_session": "true",
        "confirm": "true",
        "description": "AI credit 10 USD (automatic top-up)",
        "metadata": {"aibudget_practice_id": "p1", "aibudget_attempt_id": "a1"},
    }
    assert "metadata[aibudget_practice_id]=p1" in request.body


def test_a_declined_card_raises_card_error_with_the_failed_intent(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    with pytest.raises(stripe.CardError) as raised:
        charge(client, "k-declined", payment_method=DECLINED)

    exc = raised.value
    assert exc.http_status == 402
    assert exc.code == "card_declined"
    assert exc.error is not None
    assert exc.error.decline_code == "generic_decline"
    assert exc.request_id is not None
    assert exc.request_id.startswith("req_fake_")
    intent = exc.error.payment_intent
    assert isinstance(intent, stripe.PaymentIntent)
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error is not None
    assert intent.last_payment_error.code == "card_declined"
    # the failed PaymentIntent exists, with the request's metadata
    assert fake.payment_intents[intent.id]["status"] == "requires_payment_method"
    assert fake.payment_intents[intent.id]["metadata"]["aibudget_attempt_id"] == "a1"
    # StripeObject is no dict in stripe 16: attribute or item access, no `.get`
    assert intent["id"] == intent.id
    assert not isinstance(intent, dict)
    with pytest.raises(AttributeError):
        intent.get("id")  # type: ignore[attr-defined]


def test_a_card_needing_authentication_raises_card_error(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    with pytest.raises(stripe.CardError) as raised:
        charge(client, "k-3ds", payment_method=AUTHENTICATION_REQUIRED)

    assert raised.value.code == "authentication_required"
    assert raised.value.error is not None
    intent = raised.value.error.payment_intent
    assert intent is not None
    assert intent.status == "requires_action"
    assert fake.payment_intents[intent.id]["status"] == "requires_action"


def test_without_confirm_nothing_is_charged(client: stripe.StripeClient) -> None:
    intent = charge(client, "k-unconfirmed", confirm=False)

    assert intent.status == "requires_confirmation"
    assert intent.amount_received == 0


@pytest.mark.parametrize(
    ("params", "param"),
    [({"amount": None}, "amount"), ({"amount": 0}, "amount"), ({"currency": None}, "currency")],
)
def test_invalid_charge_params_are_refused(
    client: stripe.StripeClient, params: dict[str, Any], param: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        charge(client, "k-invalid", **params)

    assert raised.value.param == param


def test_a_charge_for_an_unknown_customer_is_refused(fake: FakeStripe, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        charge(client, "k-nobody", customer="cus_nobody")

    assert (raised.value.code, raised.value.param) == ("resource_missing", "customer")
    assert fake.payment_intents == {}


# -- idempotency -----------------------------------------------------------------------------


def test_the_same_key_and_params_replay_the_first_answer(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    first = charge(client, "aibudget-topup-a1")
    again = charge(client, "aibudget-topup-a1")

    assert again.id == first.id
    assert again.latest_charge == first.latest_charge
    assert len(fake.payment_intents) == 1
    assert [r.replayed for r in fake.requests] == [False, True]
    assert again.last_response is not None
    assert again.last_response.headers["idempotent-replayed"] == "true"


def test_a_replayed_decline_is_the_same_decline(fake: FakeStripe, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as first:
        charge(client, "k-declined", payment_method=DECLINED)
    with pytest.raises(stripe.CardError) as again:
        charge(client, "k-declined", payment_method=DECLINED)

    assert first.value.error is not None
    assert again.value.error is not None
    assert first.value.error.payment_intent is not None
    assert again.value.error.payment_intent is not None
    assert again.value.error.payment_intent.id == first.value.error.payment_intent.id
    assert again.value.http_body == first.value.http_body
    assert len(fake.payment_intents) == 1


def test_the_same_key_with_other_params_is_an_idempotency_error(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    charge(client, "aibudget-topup-a1")

    with pytest.raises(stripe.IdempotencyError) as raised:
        charge(client, "aibudget-topup-a1", amount=1900)

    assert raised.value.http_status == 400
    assert raised.value.error is not None
    assert raised.value.error.type == "idempotency_error"
    assert len(fake.payment_intents) == 1


def test_a_post_without_a_key_gets_one_from_the_package(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    client.v1.payment_intents.create(params=charge_params())  # type: ignore[arg-type]
    client.v1.payment_intents.create(params=charge_params())  # type: ignore[arg-type]

    keys = [r.idempotency_key for r in fake.requests]
    assert all(keys)
    assert keys[0] != keys[1]
    assert len(fake.payment_intents) == 2


# -- customers, checkout, routing, auth ------------------------------------------------------


def test_payment_intents_are_listed_newest_first_declined_or_not(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.add_customer("cus_2")
    first = charge(client, "k1")
    with pytest.raises(stripe.CardError):
        charge(client, "k2", payment_method=DECLINED)
    other = charge(client, "k3", customer="cus_2")
    [declined] = set(fake.payment_intents) - {first.id, other.id}

    mine = client.v1.payment_intents.list(params={"customer": "cus_1"})

    assert isinstance(mine, stripe.ListObject)
    assert [intent.id for intent in mine.data] == [declined, first.id]
    assert isinstance(mine.data[0], stripe.PaymentIntent)
    assert mine.data[0].status == "requires_payment_method"
    assert mine.data[0].last_payment_error is not None
    assert mine.data[0].last_payment_error.code == "card_declined"
    assert mine.data[1].metadata is not None
    assert mine.data[1].metadata["aibudget_attempt_id"] == "a1"
    everyone = client.v1.payment_intents.list(params={"limit": 2})
    assert ([intent.id for intent in everyone.data], everyone.has_more) == ([other.id, declined], True)
    assert client.v1.payment_intents.list(params={"customer": "cus_nobody"}).data == []
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.list(params={"limit": 101})
    assert (refused.value.http_status, refused.value.param) == (400, "limit")


def test_a_known_customer_has_a_default_payment_method(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.add_customer("cus_2", payment_method="pm_card_mastercard")
    fake.add_customer("cus_nocard", payment_method=None)

    customer = client.v1.customers.retrieve("cus_2")

    assert isinstance(customer, stripe.Customer)
    assert customer.invoice_settings is not None
    assert customer.invoice_settings.default_payment_method == "pm_card_mastercard"
    nocard = client.v1.customers.retrieve("cus_nocard")
    assert nocard.invoice_settings is not None
    assert nocard.invoice_settings.default_payment_method is None
    assert client.v1.customers.retrieve("cus_1").email == "praxis@example.com"
    assert fake.requests[0].method == "GET"
    assert fake.requests[0].idempotency_key is None


def test_an_unknown_customer_is_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.retrieve("cus_nobody")

    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")


def test_a_customers_cards_are_listed_newest_first_default_or_not(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    # a card saved by Checkout is attached to the customer without becoming its invoice default
    fake.add_customer("cus_saved", payment_method=None, cards=["pm_card_visa", "pm_card_mastercard"])
    fake.add_customer("cus_both", payment_method="pm_card_visa", cards=["pm_card_amex"])

    saved = client.v1.customers.payment_methods.list("cus_saved", params={"type": "card"})

    assert isinstance(saved, stripe.ListObject)
    assert [pm.id for pm in saved.data] == ["pm_card_mastercard", "pm_card_visa"]
    assert saved.has_more is False
    assert saved.url == "/v1/customers/cus_saved/payment_methods"
    [newest] = client.v1.customers.payment_methods.list("cus_saved", params={"limit": 1}).data
    assert isinstance(newest, stripe.PaymentMethod)
    assert (newest.id, newest.type, newest.customer) == ("pm_card_mastercard", "card", "cus_saved")
    assert newest.card is not None
    assert newest.card.last4 == "4242"
    assert client.v1.customers.payment_methods.list("cus_saved", params={"limit": 1}).has_more is True
    invoice_settings = client.v1.customers.retrieve("cus_saved").invoice_settings
    assert invoice_settings is not None
    assert invoice_settings.default_payment_method is None
    both = client.v1.customers.payment_methods.list("cus_both", params={"type": "card"})
    assert [pm.id for pm in both.data] == ["pm_card_amex", "pm_card_visa"]  # the default was attached first
    assert client.v1.customers.payment_methods.list("cus_both", params={"type": "sepa_debit"}).data == []
    assert fake.requests[0].path == "/v1/customers/cus_saved/payment_methods"
    assert fake.requests[0].params == {"type": "card"}


def test_a_customer_without_cards_lists_none_and_an_unknown_one_is_missing(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.add_customer("cus_nocard", payment_method=None, default_source="card_legacy")

    assert client.v1.customers.payment_methods.list("cus_nocard", params={"type": "card"}).data == []
    assert client.v1.customers.retrieve("cus_nocard").default_source == "card_legacy"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.payment_methods.list("cus_nobody", params={"type": "card"})
    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.payment_methods.list("cus_nocard", params={"limit": 0})
    assert (refused.value.http_status, refused.value.param) == (400, "limit")


def checkout_params(**overrides: Any) -> dict[str, Any]:
    metadata = {"aibudget_practice_id": "p1", "aibudget_credit_micros": "10000000"}
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "quantity": 2,
                "price_data": {
                    "currency": "chf",
                    "unit_amount": 950,
                    "product_data": {"name": "AI credit 10 USD"},
                },
            }
        ],
        "success_url": "https://app.example/paid",
        "cancel_url": "https://app.example/cancelled",
        "client_reference_id": "p1",
        "customer": "cus_1",
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata, "setup_future_usage": "off_session"},
    }
    params.update(overrides)
    return {key: value for key, value in params.items() if value is not None}


def test_a_checkout_session_is_created_open_and_unpaid(fake: FakeStripe, client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(params=checkout_params())  # type: ignore[arg-type]

    assert isinstance(session, stripe.checkout.Session)
    assert session.id.startswith("cs_fake_")
    assert session.url == f"{fake.url}/pay/{session.id}"
    assert (session.mode, session.status, session.payment_status) == ("payment", "open", "unpaid")
    assert (session.amount_total, session.currency) == (1900, "chf")
    assert (session.customer, session.client_reference_id) == ("cus_1", "p1")
    assert session.metadata is not None
    # a StripeObject never equals a dict; compare its to_dict()
    assert session.metadata.to_dict() == {"aibudget_practice_id": "p1", "aibudget_credit_micros": "10000000"}
    assert session.payment_intent is None
    assert session.success_url == "https://app.example/paid"
    assert list(fake.checkout_sessions) == [session.id]
    sent = fake.requests[0].params
    assert sent["line_items"][0]["price_data"]["unit_amount"] == "950"
    assert sent["payment_intent_data"]["metadata"]["aibudget_practice_id"] == "p1"


@pytest.mark.parametrize("missing", ["mode", "success_url", "line_items"])
def test_a_checkout_session_needs_its_required_params(
    fake: FakeStripe, client: stripe.StripeClient, missing: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.checkout.sessions.create(params=checkout_params(**{missing: None}))  # type: ignore[arg-type]

    assert raised.value.http_status == 400
    assert raised.value.param == missing
    assert fake.checkout_sessions == {}


def test_anything_else_is_not_found(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.charges.retrieve("ch_1")

    assert raised.value.http_status == 404


def test_another_api_key_is_refused(fake: FakeStripe) -> None:
    with pytest.raises(stripe.AuthenticationError) as raised:
        make_client(fake, "sk_test_other").v1.customers.retrieve("cus_1")

    assert raised.value.http_status == 401
    assert fake.requests[0].status == 401


def test_the_default_httpx_client_cannot_make_synchronous_calls(fake: FakeStripe) -> None:
    # `stripe.HTTPXClient()` is async-only unless `allow_sync_methods=True`: nothing is even sent.
    client = stripe.StripeClient(
        FakeStripe.api_key, base_addresses={"api": fake.url}, http_client=stripe.HTTPXClient()
    )

    with pytest.raises(RuntimeError, match="allow_sync_methods"):
        client.v1.customers.retrieve("cus_1")
    assert fake.requests == []


# -- holding and failing ---------------------------------------------------------------------


def test_a_held_charge_exists_before_its_answer_arrives(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    answers: list[stripe.PaymentIntent] = []
    with fake.hold_payment_intents():
        caller = threading.Thread(target=lambda: answers.append(charge(client, "k-held")))
        caller.start()
        fake.wait_for(lambda: fake.held == 1)
        (intent_id,) = fake.payment_intents
        assert fake.requests[0].status == 200
        caller.join(0.2)
        assert caller.is_alive()
        assert answers == []
        # the same key again while the first is in flight: a 409 conflict, as Stripe answers
        with pytest.raises(stripe.APIError) as raised:
            charge(client, "k-held")
        assert raised.value.http_status == 409
        # other endpoints are not held
        assert client.v1.customers.retrieve("cus_1").id == "cus_1"
    caller.join(2)

    assert [intent.id for intent in answers] == [intent_id]
    assert fake.held == 0
    assert charge(client, "k-held").id == intent_id  # once answered, the key replays again


def test_release_without_the_context_manager(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.hold_payment_intents()
    caller = threading.Thread(target=charge, args=(client, "k-held"))
    caller.start()
    fake.wait_for(lambda: fake.held == 1)

    fake.release()
    caller.join(2)

    assert not caller.is_alive()
    assert charge(client, "k-next").status == "succeeded"  # no longer holding


def test_fail_next_answers_api_errors_then_serves_again(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.fail_next(2, status=503)

    for _ in range(2):
        with pytest.raises(stripe.APIError) as raised:
            charge(client, "aibudget-topup-a1")
        assert raised.value.http_status == 503
        assert raised.value.error is not None
        assert raised.value.error.type == "api_error"
    intent = charge(client, "aibudget-topup-a1")  # a failure is not stored under the key

    assert intent.status == "succeeded"
    assert list(fake.payment_intents) == [intent.id]
    assert [r.status for r in fake.requests] == [503, 503, 200]


def test_wait_for_times_out(fake: FakeStripe) -> None:
    with pytest.raises(TimeoutError):
        fake.wait_for(lambda: len(fake.requests) > 0, timeout=0.05)


# -- webhook helpers -------------------------------------------------------------------------


def test_sign_makes_a_header_stripe_accepts() -> None:
    payload = json.dumps(event("payment_intent.succeeded", payment_intent_object(id="pi_1"))).encode()

    header = sign(payload, SECRET)

    assert header.startswith("t=")
    assert stripe.WebhookSignature.verify_header(payload, header, SECRET, tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload, header, "whsec_other", tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload + b" ", header, SECRET, tolerance=300)
    stale = sign(payload, SECRET, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.WebhookSignature.verify_header(payload, stale, SECRET, tolerance=300)


def test_sign_during_secret_rotation_adds_one_v1_per_secret() -> None:
    payload = b'{"id": "evt_1", "object": "event"}'

    header = sign(payload, "whsec_old", 1_700_000_000, extra_secrets=[SECRET])

    parts = header.split(",")
    assert parts[0] == "t=1700000000"
    assert [part[:3] for part in parts[1:]] == ["v1=", "v1="]
    assert (
        header == f"{sign(payload, 'whsec_old', 1_700_000_000)},{sign(payload, SECRET, 1_700_000_000)[13:]}"
    )
    # the first v1 is wrong for the new secret; the second one matches
    assert stripe.WebhookSignature.verify_header(payload, header, SECRET, tolerance=None)


def test_event_builders_parse_as_stripe_events() -> None:
    sub = subscription(
        id="sub_1",
        customer="cus_1",
        practice_id="p7",
        lookup_key="pro",
        current_period_start=1764547200,
        current_period_end=1767225600,
        created=1764547100,
    )
    body = json.dumps(event("customer.subscription.updated", sub, event_id="evt_1", created=1764547300))

    parsed = stripe.Webhook.construct_event(body, sign(body, SECRET), SECRET)

    assert (parsed.id, parsed.type, parsed.created, parsed.livemode) == (
        "evt_1",
        "customer.subscription.updated",
        1764547300,
        False,
    )
    obj = json.loads(body)["data"]["object"]
    assert obj["metadata"] == {"practice_id": "p7"}
    assert obj["items"]["data"][0]["price"]["lookup_key"] == "pro"
    assert obj["items"]["data"][0]["current_period_start"] == obj["current_period_start"] == 1764547200
    assert obj["items"]["data"][0]["current_period_end"] == obj["current_period_end"] == 1767225600
    assert obj["created"] == 1764547100


def test_payment_intent_and_checkout_builders() -> None:
    failed = payment_intent_object(
        id="pi_1", status="requires_payment_method", metadata={"a": "1"}, failure_code="card_declined"
    )
    assert failed["last_payment_error"]["code"] == "card_declined"
    assert failed["amount_received"] == 0
    assert payment_intent_object()["last_payment_error"] is None

    done = checkout_session_completed_object(id="cs_1", payment_intent="pi_1", metadata={"k": "v"})
    assert (done["payment_status"], done["status"], done["payment_intent"]) == ("paid", "complete", "pi_1")
    assert (done["amount_total"], done["currency"], done["customer"]) == (2500, "eur", "cus_fake")


def test_complete_checkout_session_reuses_the_created_session(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    session = client.v1.checkout.sessions.create(params=checkout_params())  # type: ignore[arg-type]

    done = fake.complete_checkout_session(session.id, payment_intent="pi_paid")

    assert (done["id"], done["payment_intent"], done["amount_total"]) == (session.id, "pi_paid", 1900)
    assert done["metadata"]["aibudget_practice_id"] == "p1"


def test_decode_form_nests_like_the_stripe_encoder() -> None:
    assert decode_form("a[b][0][c]=1&a[b][1][c]=2&metadata[0]=x&expand[]=p&expand[]=q&flag=true&empty=") == {
        "a": {"b": [{"c": "1"}, {"c": "2"}]},
        "metadata": {"0": "x"},
        "expand": ["p", "q"],
        "flag": "true",
        "empty": "",
    }
