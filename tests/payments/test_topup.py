"""Automatic top-up (SPEC §6, G5) through the real `stripe` package against a local fake of Stripe:
triggered by a settle or a would-be refusal, single-flight, capped per month, paused on a declined
card, credited once per payment whichever confirmation arrives first, retried with the same key; the
practice is told each outcome in its own language."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aibudget import Budget, BudgetExceeded
from aibudget.credit import autotopup
from tests.conftest import FakeClock, wait_until
from tests.fake_stripe import DAY, FakeStripe, event, payment_intent_object
from tests.payments.conftest import (
    CUSTOMER,
    PERIOD_END,
    PERIOD_START,
    PRACTICE,
    open_paying,
    signed,
    spend,
)


def exhaust_without_topup(budget: Budget, request_id: str) -> None:
    """Top up only when a call would be refused (threshold 0), then spend all of the included 1 USD."""
    budget.put_auto_topup(PRACTICE, enabled=True, threshold_usd="0", package_usd="25",
                          monthly_max_count=2, monthly_max_usd="50")  # fmt: skip
    spend(budget, request_id, 100)


def topup_grants(budget: Budget) -> list[object]:
    return [grant for grant in budget.grants(PRACTICE) if grant.source == "auto_topup"]


def created_intents(fake: FakeStripe) -> list[dict[str, object]]:
    return list(fake.payment_intents.values())


def test_a_settle_under_the_threshold_buys_the_package_in_the_practices_currency(
    paying: Budget, fake_stripe: FakeStripe
) -> None:
    spend(paying, "letter-1", 40)  # 0.60 left: above the threshold, nothing happens
    spend(paying, "letter-2", 20)  # 0.40 left: under 0.50

    grants = wait_until(lambda: topup_grants(paying))
    [intent] = created_intents(fake_stripe)
    assert (intent["amount"], intent["currency"], intent["customer"]) == (2450, "chf", CUSTOMER)
    [sent] = [request.params for request in fake_stripe.requests if request.path == "/v1/payment_intents"]
    assert (sent["off_session"], sent["confirm"], sent["payment_method"]) == ("true", "true", "pm_card_visa")
    [grant] = grants
    assert (grant.amount_usd, grant.reference) == (Decimal("25.000000"), intent["id"])
    [attempt] = paying.topup_attempts(PRACTICE)
    assert (attempt.status, attempt.trigger, attempt.payment_intent_id) == (
        "succeeded",
        "settle",
        intent["id"],
    )
    assert paying.snapshot(PRACTICE).available_usd == Decimal("25.400000")
    [succeeded] = [n for n in paying.notifications(practice_id=PRACTICE) if n.event_type == "topup.succeeded"]
    assert succeeded.payload["data"] == {
        "attempt_id": attempt.attempt_id, "payment_intent_id": intent["id"], "credit_usd": "25.000000",
        "charge_amount": 2450, "currency": "chf", "grant_id": grant.grant_id,
        "locale": "de-CH", "title": "KI-Guthaben von $\xa025.00 aufgeladen",
        "message_user": "Die automatische Aufladung hat Ihrer Praxis $\xa025.00 KI-Guthaben gutgeschrieben. "
                        "Das hinterlegte Zahlungsmittel wurde mit CHF\xa024.50 belastet.",
    }  # fmt: skip
    assert paying.verify() == []


def test_a_call_that_would_be_refused_is_topped_up_first_and_then_allowed(
    paying: Budget, fake_stripe: FakeStripe
) -> None:
    exhaust_without_topup(paying, "letter-1")  # nothing left, and 0 is not under a 0 threshold
    assert fake_stripe.payment_intents == {}

    held = paying.authorize(request_id="letter-2", practice_id=PRACTICE, operation="letter",
                            model="gpt-4o", input_tokens=1000)  # fmt: skip

    assert held.status == "active"
    assert held.held_micros > 0
    assert len(fake_stripe.payment_intents) == 1
    [attempt] = paying.topup_attempts(PRACTICE)
    assert (attempt.trigger, attempt.status) == ("authorize", "succeeded")


@pytest.mark.parametrize(
    ("card", "code", "message"),
    [
        ("pm_card_chargeDeclined", "card_declined",
         "Die Zahlung von CHF\xa024.50 für die automatische Aufladung von $\xa025.00 KI-Guthaben wurde "
         "abgelehnt. Die automatische Aufladung ist pausiert, bis die Zahlungsangaben in den "
         "Abrechnungseinstellungen aktualisiert sind."),
        ("pm_card_authenticationRequired", "authentication_required",
         "Die Bank verlangt für die Zahlung von CHF\xa024.50 für die automatische Aufladung von "
         "$\xa025.00 KI-Guthaben eine Bestätigung, daher wurde sie nicht ausgeführt. Die automatische "
         "Aufladung ist pausiert, bis die Zahlungsangaben in den Abrechnungseinstellungen "
         "aktualisiert sind."),
    ],
)  # fmt: skip
def test_a_declined_charge_pauses_notifies_once_and_never_retries_until_resumed(
    paying: Budget, fake_stripe: FakeStripe, clock: FakeClock, card: str, code: str, message: str
) -> None:
    fake_stripe.add_customer(CUSTOMER, payment_method=card)
    exhaust_without_topup(paying, "letter-1")

    for attempt in range(3):
        with pytest.raises(BudgetExceeded) as refused:
            paying.authorize(request_id=f"call-{attempt}", practice_id=PRACTICE, operation="letter",
                             model="gpt-4o", input_tokens=1000)  # fmt: skip
        assert refused.value.payload["reason"] == "auto_topup_paused"
        assert "die automatische Aufladung ist" in refused.value.payload["message_user"]  # de-CH
    assert len(fake_stripe.payment_intents) == 1  # the one declined charge, nothing after it
    settings = paying.auto_topup(PRACTICE)
    assert settings.paused_reason == code
    assert settings.paused_at is not None
    [failed] = [n for n in paying.notifications(practice_id=PRACTICE) if n.event_type == "topup.failed"]
    [declined] = paying.topup_attempts(PRACTICE)
    assert failed.payload["data"] == {
        "attempt_id": declined.attempt_id, "payment_intent_id": declined.payment_intent_id,
        "failure_code": code, "credit_usd": "25.000000", "charge_amount": 2450, "currency": "chf",
        "paused": True, "locale": "de-CH", "title": "Automatische Aufladung pausiert",
        "message_user": message,
    }  # fmt: skip

    fake_stripe.add_customer(CUSTOMER, payment_method="pm_card_visa")  # the customer fixed the card
    clock.advance(hours=2)
    assert paying.resume_auto_topup(PRACTICE).paused_reason is None
    held = paying.authorize(request_id="call-after-resume", practice_id=PRACTICE, operation="letter",
                            model="gpt-4o", input_tokens=1000)  # fmt: skip
    assert held.status == "active"
    assert [attempt.status for attempt in paying.topup_attempts(PRACTICE)] == ["succeeded", "failed"]


def test_an_english_practice_is_told_each_outcome_in_english_with_its_own_currency(
    paying: Budget, fake_stripe: FakeStripe
) -> None:
    paying.put_practice(PRACTICE, locale="en-US", timezone="America/New_York")
    spend(paying, "letter-1", 60)  # 0.40 left: a top-up of 25 USD, paid in USD
    wait_until(lambda: topup_grants(paying))
    fake_stripe.add_customer(CUSTOMER, payment_method="pm_card_chargeDeclined")
    spend(paying, "letter-2", 2500)  # the next one is declined
    wait_until(lambda: paying.auto_topup(PRACTICE).paused_reason)

    told = {
        n.event_type: (
            n.payload["data"]["locale"],
            n.payload["data"]["title"],
            n.payload["data"]["message_user"],
        )
        for n in paying.notifications(practice_id=PRACTICE)
        if n.event_type.startswith("topup.")
    }
    assert told == {
        "topup.succeeded": (
            "en-US",
            "$25.00 of AI credit added",
            "Automatic top-up has added $25.00 of AI credit for your practice. "
            "The saved payment method was charged $25.00.",
        ),
        "topup.failed": (
            "en-US",
            "Automatic top-up paused",
            "The payment of $25.00 for the automatic top-up of $25.00 of AI credit was declined. "
            "Automatic top-up is paused until the payment details are updated in the billing settings.",
        ),
    }


@pytest.mark.parametrize(
    ("locale", "message"),
    [
        ("fr-CH", "La recharge automatique de 25,00\xa0$US de crédit IA n'a pas pu être facturée, car aucun "
                  "moyen de paiement n'est enregistré. La recharge automatique est suspendue jusqu'à l'ajout "
                  "d'informations de paiement dans les paramètres de facturation."),
        ("it-CH", "La ricarica automatica di USD\xa025.00 di credito IA non ha potuto essere addebitata "
                  "perché non è registrato alcun metodo di pagamento. La ricarica automatica è sospesa "
                  "finché non saranno inseriti i dati di pagamento nelle impostazioni di fatturazione."),
    ],
)  # fmt: skip
def test_a_customer_without_a_saved_card_is_asked_to_add_one(
    paying: Budget, fake_stripe: FakeStripe, locale: str, message: str
) -> None:
    paying.put_practice(PRACTICE, locale=locale)
    fake_stripe.add_customer(CUSTOMER, payment_method=None)
    exhaust_without_topup(paying, "letter-1")

    with pytest.raises(BudgetExceeded):
        paying.authorize(request_id="call", practice_id=PRACTICE, operation="letter", model="gpt-4o",
                         input_tokens=1000)  # fmt: skip

    [failed] = [n for n in paying.notifications(practice_id=PRACTICE) if n.event_type == "topup.failed"]
    assert failed.payload["data"]["failure_code"] == "no_payment_method"
    assert failed.payload["data"]["message_user"] == message


def test_the_monthly_cap_is_never_exceeded_and_the_refusal_says_so(
    paying: Budget, fake_stripe: FakeStripe, clock: FakeClock
) -> None:
    paying.put_auto_topup(PRACTICE, enabled=True, threshold_usd="0", package_usd="25",
                          monthly_max_count=5, monthly_max_usd="50")  # fmt: skip
    spend(paying, "start", 100)
    for number in range(2):  # two top-ups of 25 USD reach the 50 USD cap (the count cap of 5 does not bind)
        paying.authorize(request_id=f"call-{number}", practice_id=PRACTICE, operation="letter",
                         model="gpt-4o", input_tokens=1000)  # fmt: skip
        spend(paying, f"call-{number}", 2500)  # uses up the 25 USD just bought

    with pytest.raises(BudgetExceeded) as refused:
        paying.authorize(request_id="call-2", practice_id=PRACTICE, operation="letter", model="gpt-4o",
                         input_tokens=1000)  # fmt: skip

    assert refused.value.payload["reason"] == "auto_topup_monthly_limit"
    assert len(fake_stripe.payment_intents) == 2
    assert sum(grant.amount_usd for grant in topup_grants(paying)) == Decimal(50)


def test_twenty_callers_at_once_make_exactly_one_charge_and_one_grant(
    paying: Budget, fake_stripe: FakeStripe
) -> None:
    exhaust_without_topup(paying, "start")
    start = threading.Barrier(20)

    def call(number: int) -> str:
        start.wait()
        try:
            paying.authorize(request_id=f"rush-{number}", practice_id=PRACTICE, operation="letter",
                             model="gpt-4o", input_tokens=1000)  # fmt: skip
        except BudgetExceeded as refused:
            return str(refused.payload["reason"])
        return "authorized"

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(call, range(20)))

    assert "authorized" in outcomes
    assert len(fake_stripe.payment_intents) == 1
    assert len(topup_grants(paying)) == 1
    assert paying.verify() == []


def test_a_webhook_before_the_synchronous_answer_and_its_redeliveries_credit_once(
    paying: Budget, fake_stripe: FakeStripe
) -> None:
    exhaust_without_topup(paying, "start")
    with fake_stripe.hold_payment_intents(), ThreadPoolExecutor(1) as pool:
        call = pool.submit(
                paying.authorize, request_id="waiting", practice_id=PRACTICE, operation="letter",
                model="gpt-4o", input_tokens=1000,
            )  # fmt: skip
        [intent] = wait_until(lambda: created_intents(fake_stripe))
        succeeded = event(
                "payment_intent.succeeded",
                payment_intent_object(
                    id=intent["id"], amount=intent["amount"], currency=intent["currency"],
                    status="succeeded", customer=CUSTOMER, metadata=intent["metadata"],
                ),
            )  # fmt: skip
        outcomes = [paying.stripe_webhook(*signed(succeeded)) for _ in range(3)]
        assert outcomes == ["applied", "duplicate", "duplicate"]
        assert len(topup_grants(paying)) == 1  # credited before Stripe's answer arrived
        fake_stripe.release()
        assert call.result(timeout=10).status == "active"
    assert len(topup_grants(paying)) == 1
    assert len(fake_stripe.payment_intents) == 1
    assert paying.verify() == []


def test_a_charge_stripe_never_answered_is_sent_again_with_the_same_key(
    paying: Budget, fake_stripe: FakeStripe, clock: FakeClock
) -> None:
    exhaust_without_topup(paying, "start")
    fake_stripe.fail_next(10, status=500)
    with pytest.raises(BudgetExceeded) as refused:
        paying.authorize(request_id="during-outage", practice_id=PRACTICE, operation="letter",
                         model="gpt-4o", input_tokens=1000)  # fmt: skip
    [attempt] = paying.topup_attempts(PRACTICE)
    assert attempt.status == "pending"  # not failed: the card was never refused
    # the refusal says credit is on its way, not that it is used up: buying more now would pay twice
    assert refused.value.payload["reason"] == "auto_topup_pending"
    assert "gerade automatisch aufgeladen" in str(refused.value.payload["message_user"])
    with pytest.raises(BudgetExceeded) as again:
        paying.authorize(request_id="still-pending", practice_id=PRACTICE, operation="letter",
                         model="gpt-4o", input_tokens=1000)  # fmt: skip
    assert again.value.payload["reason"] == "auto_topup_pending"
    assert len(paying.topup_attempts(PRACTICE)) == 1  # single flight: no second charge was claimed
    fake_stripe.fail_next(0)

    clock.advance(seconds=30)
    paying.sweep()
    assert fake_stripe.payment_intents == {}  # too young to be charged again
    clock.advance(seconds=31)
    paying.sweep()  # hands the charge to the background charger

    [attempt] = wait_until(lambda: [a for a in paying.topup_attempts(PRACTICE) if a.status == "succeeded"])
    assert len(topup_grants(paying)) == 1
    keys = {
        request.idempotency_key for request in fake_stripe.requests if request.path == "/v1/payment_intents"
    }
    assert keys == {f"aibudget-topup-{attempt.attempt_id}"}


def test_a_charge_stripe_does_not_answer_in_time_leaves_the_call_refused_not_waiting(
    database_url: str, tmp_path: Path, clock: FakeClock, fake_stripe: FakeStripe
) -> None:
    with open_paying(database_url, tmp_path, clock, fake_stripe, stripe_timeout_seconds=0.5) as paying:
        exhaust_without_topup(paying, "start")
        with fake_stripe.hold_payment_intents():  # Stripe takes the charge and does not answer
            started = time.monotonic()
            with pytest.raises(BudgetExceeded) as refused:
                paying.authorize(request_id="slow-stripe", practice_id=PRACTICE, operation="letter",
                                 model="gpt-4o", input_tokens=1000)  # fmt: skip
            waited = time.monotonic() - started
        # three tries of 0.5 s and the package's pauses between them; its own timeout would be 3 x 80 s
        assert waited < 15
        assert refused.value.payload["reason"] == "auto_topup_pending"
        [attempt] = paying.topup_attempts(PRACTICE)
        assert attempt.status == "pending"  # charged again later, with the same idempotency key


def test_a_slow_stripe_never_delays_the_release_of_expired_holds(
    database_url: str, tmp_path: Path, clock: FakeClock, fake_stripe: FakeStripe
) -> None:
    """G4 whatever Stripe does: the sweep hands a charge Stripe never answered to the background
    charger and goes on; while that charge waits, later sweeps do not send it a second time."""
    with open_paying(database_url, tmp_path, clock, fake_stripe, stripe_timeout_seconds=5,
                     hold_ttl_seconds=60) as paying:  # fmt: skip
        exhaust_without_topup(paying, "start")
        fake_stripe.fail_next(10, status=500)
        with pytest.raises(BudgetExceeded):
            paying.authorize(request_id="during-outage", practice_id=PRACTICE, operation="letter",
                             model="gpt-4o", input_tokens=1000)  # fmt: skip
        fake_stripe.fail_next(0)
        [attempt] = paying.topup_attempts(PRACTICE)
        paying.put_practice("praxis-zwei")
        paying.put_subscription("sub_zwei", practice_id="praxis-zwei", plan="basic", status="active",
                                current_period_start=PERIOD_START, current_period_end=PERIOD_END)  # fmt: skip
        paying.authorize(request_id="walked-away", practice_id="praxis-zwei", operation="letter",
                         model="gpt-4o", input_tokens=1000)  # fmt: skip
        clock.advance(seconds=61)  # the hold's TTL has passed, and the charge is due again

        with fake_stripe.hold_payment_intents():  # Stripe takes the charge and does not answer
            started = time.monotonic()
            assert paying.sweep() == 1
            assert time.monotonic() - started < 2  # not 3 tries of 5 s
            assert paying.snapshot("praxis-zwei").held_micros == 0
            fake_stripe.wait_for(lambda: fake_stripe.held == 1)
            clock.advance(seconds=30)
            paying.sweep()
            paying.sweep()
            time.sleep(0.3)  # time enough for a second charge to ask Stripe for the customer
            customer_reads = [r for r in fake_stripe.requests if r.path == f"/v1/customers/{CUSTOMER}"]
            assert len(customer_reads) == 3 + 1  # the outage's three tries, then one charge only
            assert fake_stripe.held == 1

        [succeeded] = wait_until(
            lambda: [a for a in paying.topup_attempts(PRACTICE) if a.status == "succeeded"]
        )
        assert succeeded.attempt_id == attempt.attempt_id
        assert len(topup_grants(paying)) == 1
        keys = {r.idempotency_key for r in fake_stripe.requests if r.path == "/v1/payment_intents"}
        assert keys == {f"aibudget-topup-{attempt.attempt_id}"}
        assert paying.verify() == []


def test_no_exhaustion_notice_while_a_top_up_is_on_its_way(paying: Budget, fake_stripe: FakeStripe) -> None:
    """`budget.exhausted` tells the practice to buy credit: not while credit is being bought for it."""

    def notified() -> list[str]:
        return sorted(n.event_type for n in paying.notifications(practice_id=PRACTICE))

    with fake_stripe.hold_payment_intents():
        spend(paying, "under-the-threshold", 60)  # 0.40 left: a top-up is claimed, its charge waits
        fake_stripe.wait_for(lambda: fake_stripe.held == 1)
        spend(paying, "the-last-of-it", 40)  # the money runs out while the charge is under way
    wait_until(lambda: topup_grants(paying))
    spend(paying, "all-of-the-top-up", 2500)  # runs out again, and claims the second top-up

    wait_until(lambda: len(topup_grants(paying)) == 2)
    assert "budget.exhausted" not in notified()
    spend(paying, "all-of-the-second", 2500)  # the monthly cap (two) is reached: no top-up now

    assert notified() == [
        "budget.exhausted", "budget.threshold_crossed", "budget.threshold_crossed", "topup.succeeded",
        "topup.succeeded",
    ]  # fmt: skip
    assert len(fake_stripe.payment_intents) == 2
    assert paying.verify() == []


def test_a_refusal_while_a_charge_is_under_way_says_pending_even_if_paused_meanwhile(
    paying: Budget, fake_stripe: FakeStripe
) -> None:
    """The operator's pause stops the next charge, not the one Stripe is answering: its credit may
    still arrive, so the practice is neither told that top-up is paused nor that the money is gone."""
    with fake_stripe.hold_payment_intents():
        spend(paying, "under-the-threshold", 60)  # a top-up is claimed, its charge waits
        fake_stripe.wait_for(lambda: fake_stripe.held == 1)
        spend(paying, "the-last-of-it", 40)
        paying.pause_auto_topup(PRACTICE)
        with pytest.raises(BudgetExceeded) as refused:
            paying.authorize(request_id="meanwhile", practice_id=PRACTICE, operation="letter",
                             model="gpt-4o", input_tokens=1000)  # fmt: skip
        assert refused.value.payload["reason"] == "auto_topup_pending"
    wait_until(lambda: topup_grants(paying))  # it succeeded: the credit is there, the pause stays
    assert paying.auto_topup(PRACTICE).paused_reason == "paused_by_operator"
    events = [n.event_type for n in paying.notifications(practice_id=PRACTICE)]
    assert "budget.exhausted" not in events
    assert "topup.succeeded" in events


def test_a_call_settled_after_the_subscription_ended_claims_no_top_up(
    paying: Budget, fake_stripe: FakeStripe
) -> None:
    """The call was authorized before the cancellation: it is recorded, but buys nothing — there is
    no card to charge, and a failed charge would pause top-up for when the practice subscribes again."""
    paying.authorize(request_id="long-call", practice_id=PRACTICE, operation="letter", model="gpt-4o",
                     input_tokens=1000)  # fmt: skip
    paying.put_subscription("sub_muster", practice_id=PRACTICE, plan="basic", status="canceled",
                            customer_id=CUSTOMER, current_period_start=PERIOD_START,
                            current_period_end=PERIOD_END)  # fmt: skip

    paying.settle(request_id="long-call", practice_id=PRACTICE, model="gpt-4o", input_tokens=80 * 4_000)

    assert paying.topup_attempts(PRACTICE) == []
    assert paying.auto_topup(PRACTICE).paused_reason is None
    assert paying.notifications(practice_id=PRACTICE) == []
    paying.put_subscription("sub_again", practice_id=PRACTICE, plan="basic", status="active",
                            customer_id=CUSTOMER, current_period_start=PERIOD_START + DAY,
                            current_period_end=PERIOD_END + DAY)  # fmt: skip
    spend(paying, "after-subscribing-again", 60)  # 0.40 left of the new period: topped up
    wait_until(lambda: topup_grants(paying))
    assert [(a.trigger, a.status) for a in paying.topup_attempts(PRACTICE)] == [("settle", "succeeded")]
    assert len(fake_stripe.payment_intents) == 1
    assert paying.verify() == []


def test_no_subscription_means_no_top_up(paying: Budget, fake_stripe: FakeStripe) -> None:
    paying.put_subscription("sub_muster", practice_id=PRACTICE, plan="basic", status="canceled",
                            customer_id=CUSTOMER, current_period_start=PERIOD_START,
                            current_period_end=PERIOD_END)  # fmt: skip
    with pytest.raises(BudgetExceeded) as refused:
        paying.authorize(request_id="late", practice_id=PRACTICE, operation="letter", model="gpt-4o",
                         input_tokens=1000)  # fmt: skip
    assert refused.value.payload["reason"] == "no_active_subscription"
    assert fake_stripe.payment_intents == {}


def test_the_caps_count_calendar_months_of_the_practices_timezone() -> None:
    late_in_november_utc = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert autotopup.month_of(late_in_november_utc, "Europe/Zurich") == "2026-12"
    assert autotopup.month_of(late_in_november_utc, "America/New_York") == "2026-11"


def test_a_card_saved_by_checkout_but_not_the_invoice_default_is_charged(
    paying: Budget, fake_stripe: FakeStripe
) -> None:
    """Checkout's `setup_future_usage` (the credit purchase) and a subscription's Checkout attach the
    card to the customer without making it the invoice default: top-up charges it all the same."""
    fake_stripe.add_customer(CUSTOMER, payment_method=None, cards=["pm_card_mastercard"])
    spend(paying, "letter-1", 60)  # 0.40 left: under 0.50

    [grant] = wait_until(lambda: topup_grants(paying))
    [intent] = created_intents(fake_stripe)
    assert (intent["customer"], intent["payment_method"], intent["status"]) == (
        CUSTOMER,
        "pm_card_mastercard",
        "succeeded",
    )
    assert grant.reference == intent["id"]
    [attempt] = paying.topup_attempts(PRACTICE)
    assert (attempt.status, attempt.payment_intent_id) == ("succeeded", intent["id"])
    assert paying.auto_topup(PRACTICE).paused_reason is None
    listed = [r for r in fake_stripe.requests if r.path == f"/v1/customers/{CUSTOMER}/payment_methods"]
    assert [r.params["type"] for r in listed] == ["card"]
    assert paying.verify() == []


@pytest.mark.parametrize(
    ("saved", "charged"),
    [
        ({"cards": ["pm_card_visa", "pm_card_amex"]}, "pm_card_amex"),  # the newest of several cards
        ({"default_source": "card_legacy"}, "card_legacy"),  # a Card from before PaymentMethods
    ],
    ids=["the newest of several cards", "a legacy default source"],
)
def test_without_an_invoice_default_the_customer_s_saved_card_is_charged(
    paying: Budget, fake_stripe: FakeStripe, saved: dict[str, Any], charged: str
) -> None:
    fake_stripe.add_customer(CUSTOMER, payment_method=None, **saved)
    spend(paying, "letter-1", 60)

    wait_until(lambda: topup_grants(paying))
    [intent] = created_intents(fake_stripe)
    assert intent["payment_method"] == charged


def test_the_invoice_default_is_charged_before_any_other_saved_card(
    paying: Budget, fake_stripe: FakeStripe
) -> None:
    fake_stripe.add_customer(CUSTOMER, payment_method="pm_card_visa", cards=["pm_card_amex"])
    spend(paying, "letter-1", 60)

    wait_until(lambda: topup_grants(paying))
    [intent] = created_intents(fake_stripe)
    assert intent["payment_method"] == "pm_card_visa"
    assert not [r for r in fake_stripe.requests if r.path.endswith("/payment_methods")]  # not even listed


def test_a_customer_with_no_card_at_all_fails_with_no_payment_method_and_pauses(
    paying: Budget, fake_stripe: FakeStripe
) -> None:
    fake_stripe.add_customer(CUSTOMER, payment_method=None)
    exhaust_without_topup(paying, "letter-1")

    with pytest.raises(BudgetExceeded) as refused:
        paying.authorize(request_id="call", practice_id=PRACTICE, operation="letter", model="gpt-4o",
                         input_tokens=1000)  # fmt: skip

    assert refused.value.payload["reason"] == "auto_topup_paused"
    assert fake_stripe.payment_intents == {}  # nothing to charge: nothing sent
    [attempt] = paying.topup_attempts(PRACTICE)
    assert attempt.status == "failed"
    assert paying.auto_topup(PRACTICE).paused_reason == "no_payment_method"
    listed = [r for r in fake_stripe.requests if r.path == f"/v1/customers/{CUSTOMER}/payment_methods"]
    assert len(listed) == 1  # the saved cards were looked for before giving up
    assert topup_grants(paying) == []
