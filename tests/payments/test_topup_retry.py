"""Charging an automatic top-up again (SPEC §6, G5): the card is chosen once and kept with the
attempt, so a retry under the attempt's idempotency key repeats the first request exactly, whatever
card the customer saved meanwhile; a key Stripe still refuses as reused with other parameters
(an attempt of an older version) ends in the first charge's own outcome, or in a pause that says
the payment is unconfirmed — never pending for ever, never "nothing was charged" when it may have
been. Told as worked examples against the local fake of Stripe."""

from __future__ import annotations

from contextlib import suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe

from aibudget import Budget, BudgetExceeded
from aibudget.credit.autotopup import TopupAttempt
from aibudget.payments.gateway import ATTEMPT, CREDIT
from aibudget.payments.gateway import PRACTICE as PRACTICE_KEY
from tests.conftest import FakeClock, wait_until
from tests.fake_stripe import DECLINED, FakeStripe, event, payment_intent_object
from tests.payments.conftest import CUSTOMER, PERIOD_END, PERIOD_START, PRACTICE, open_paying, signed

CREDIT_MICROS = 25_000_000
CHARGE_AMOUNT = 2450  # CHF 24.50 for 25 USD of credit (the de-CH practice pays in francs)


def exhaust(budget: Budget) -> None:
    """Top up only when a call would be refused, then spend all of the included 1 USD."""
    budget.put_auto_topup(PRACTICE, enabled=True, threshold_usd="0", package_usd="25",
                          monthly_max_count=2, monthly_max_usd="50")  # fmt: skip
    budget.settle(request_id="all-of-it", practice_id=PRACTICE, model="gpt-4o", input_tokens=400_000)


def ask(budget: Budget, request_id: str) -> Any:
    return budget.authorize(request_id=request_id, practice_id=PRACTICE, operation="letter",
                            model="gpt-4o", input_tokens=1000)  # fmt: skip


def refused_reason(budget: Budget, request_id: str) -> str:
    with pytest.raises(BudgetExceeded) as refused:
        ask(budget, request_id)
    return str(refused.value.payload["reason"])


def the_attempt(budget: Budget) -> TopupAttempt:
    [attempt] = budget.topup_attempts(PRACTICE)
    return attempt


def decided(budget: Budget) -> TopupAttempt | None:
    attempt = the_attempt(budget)
    return None if attempt.status == "pending" else attempt


def topup_grants(budget: Budget) -> list[Any]:
    return [grant for grant in budget.grants(PRACTICE) if grant.source == "auto_topup"]


def charges_sent(fake: FakeStripe) -> list[Any]:
    return [r for r in fake.requests if (r.method, r.path) == ("POST", "/v1/payment_intents")]


def retry_unconfirmed(budget: Budget, clock: FakeClock) -> None:
    """What the sweeper does a minute later: charge the attempt again, in the background."""
    clock.advance(seconds=61)
    budget.sweep()


def pending_without_a_kept_card(budget: Budget, fake: FakeStripe) -> TopupAttempt:
    """A pending attempt as a version before the card was kept leaves it: Stripe did not answer
    while the card was being chosen, so nothing about the card is stored."""
    exhaust(budget)
    fake.fail_next(3, status=500)  # the customer's read and the package's two retries
    assert refused_reason(budget, "during-outage") == "auto_topup_pending"
    fake.fail_next(0)
    attempt = the_attempt(budget)
    assert (attempt.status, attempt.customer_id, attempt.payment_method_id) == ("pending", None, None)
    return attempt


def charge_as_an_older_version(
    fake: FakeStripe, attempt: TopupAttempt, *, payment_method: str, customer: str = CUSTOMER
) -> str:
    """The request an older version sent for `attempt` (it chose the card on every try) before it
    stopped without booking the answer; the id of the PaymentIntent it created."""
    client = stripe.StripeClient(
        fake.api_key,
        base_addresses={"api": fake.url},
        http_client=stripe.HTTPXClient(timeout=5, allow_sync_methods=True),
        max_network_retries=0,
    )
    params: dict[str, Any] = {
        "amount": CHARGE_AMOUNT, "currency": "chf", "customer": customer,
        "payment_method": payment_method, "off_session": True, "confirm": True,
        "description": "AI credit 25 USD (automatic top-up)",
        "metadata": {PRACTICE_KEY: PRACTICE, CREDIT: str(CREDIT_MICROS), ATTEMPT: attempt.attempt_id},
    }  # fmt: skip
    before = set(fake.payment_intents)
    with suppress(stripe.CardError):  # declined: the PaymentIntent exists all the same
        client.v1.payment_intents.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": f"aibudget-topup-{attempt.attempt_id}"},
        )
    [created] = set(fake.payment_intents) - before
    return created


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ({"payment_method": "pm_card_visa"}, {"payment_method": "pm_card_mastercard"}),
        ({"payment_method": None, "cards": ["pm_card_visa"]},
         {"payment_method": None, "cards": ["pm_card_visa", "pm_card_amex"]}),
    ],
    ids=["a new invoice default", "a newer card saved by a Checkout purchase"],
)  # fmt: skip
def test_a_charge_stripe_took_but_never_answered_is_credited_once_though_the_card_changed(
    database_url: str,
    tmp_path: Path,
    clock: FakeClock,
    fake_stripe: FakeStripe,
    first: dict[str, Any],
    then: dict[str, Any],
) -> None:
    fake_stripe.add_customer(CUSTOMER, **first)
    with open_paying(database_url, tmp_path, clock, fake_stripe, stripe_timeout_seconds=0.5) as paying:
        exhaust(paying)
        with fake_stripe.hold_payment_intents():  # Stripe charges the visa card; its answer is lost
            assert refused_reason(paying, "slow-stripe") == "auto_topup_pending"
            attempt = the_attempt(paying)
            # the card was kept before the request went out; the package's retries of that request
            # met the first one still under way (409) and left the attempt pending, not failed
            assert (attempt.status, attempt.customer_id, attempt.payment_method_id) == (
                "pending",
                CUSTOMER,
                "pm_card_visa",
            )
            assert paying.auto_topup(PRACTICE).paused_reason is None
            fake_stripe.add_customer(CUSTOMER, **then)  # meanwhile the practice saves another card
        fake_stripe.wait_for(lambda: fake_stripe.held == 0)

        retry_unconfirmed(paying, clock)

        succeeded = wait_until(lambda: decided(paying))
        [intent] = fake_stripe.payment_intents.values()  # charged once, on the first card
        assert (intent["payment_method"], intent["status"]) == ("pm_card_visa", "succeeded")
        assert (succeeded.status, succeeded.payment_intent_id) == ("succeeded", intent["id"])
        [grant] = topup_grants(paying)
        assert (grant.amount_usd, grant.reference) == (Decimal(25), intent["id"])
        sent = charges_sent(fake_stripe)
        assert {request.params["payment_method"] for request in sent} == {"pm_card_visa"}
        assert sent[-1].replayed  # the retry got Stripe's first answer back
        assert the_attempt(paying).payment_method_id == "pm_card_visa"
        assert ask(paying, "after-the-top-up").status == "active"
        assert paying.verify() == []


def test_an_older_versions_charge_that_succeeded_is_found_and_credited_once(
    paying: Budget, fake_stripe: FakeStripe, clock: FakeClock
) -> None:
    attempt = pending_without_a_kept_card(paying, fake_stripe)
    first = charge_as_an_older_version(fake_stripe, attempt, payment_method="pm_card_visa")
    fake_stripe.add_customer(CUSTOMER, payment_method="pm_card_mastercard")  # the card changed since

    retry_unconfirmed(paying, clock)

    succeeded = wait_until(lambda: decided(paying))
    assert (succeeded.status, succeeded.payment_intent_id) == ("succeeded", first)
    [last] = charges_sent(fake_stripe)[-1:]
    assert last.status == 400  # the other card under the same key: refused, and nothing charged
    assert list(fake_stripe.payment_intents) == [first]
    listed = [r for r in fake_stripe.requests if (r.method, r.path) == ("GET", "/v1/payment_intents")]
    assert [r.params["customer"] for r in listed] == [CUSTOMER]
    [grant] = topup_grants(paying)
    assert (grant.amount_usd, grant.reference) == (Decimal(25), first)
    assert paying.auto_topup(PRACTICE).paused_reason is None
    told = [n.event_type for n in paying.notifications(practice_id=PRACTICE)]
    assert [kind for kind in told if kind.startswith("topup.")] == ["topup.succeeded"]
    assert paying.verify() == []


def test_an_older_versions_declined_charge_is_found_and_pauses_with_the_cards_reason(
    paying: Budget, fake_stripe: FakeStripe, clock: FakeClock
) -> None:
    attempt = pending_without_a_kept_card(paying, fake_stripe)
    first = charge_as_an_older_version(fake_stripe, attempt, payment_method=DECLINED)
    fake_stripe.add_customer(CUSTOMER, payment_method="pm_card_visa")

    retry_unconfirmed(paying, clock)

    failed = wait_until(lambda: decided(paying))
    assert (failed.status, failed.failure_code) == ("failed", "card_declined")
    assert failed.payment_intent_id == first
    assert list(fake_stripe.payment_intents) == [first]  # the new card was not charged under a new key
    assert paying.auto_topup(PRACTICE).paused_reason == "card_declined"
    assert topup_grants(paying) == []


def test_a_reused_key_whose_first_charge_cannot_be_found_pauses_as_unconfirmed_until_stripe_confirms(
    paying: Budget, fake_stripe: FakeStripe, clock: FakeClock
) -> None:
    """The older version charged the practice's former Stripe customer: the retry for today's
    customer is refused, and no PaymentIntent of today's customer carries the attempt. The money
    may have been taken, so the attempt is neither left pending nor charged again under a new key:
    it fails as `charge_unconfirmed`, top-up pauses, and the practice is told the payment is
    unconfirmed — not that it was declined. Stripe's confirmation still credits it, once."""
    fake_stripe.add_customer("cus_former", payment_method="pm_card_visa")
    attempt = pending_without_a_kept_card(paying, fake_stripe)
    first = charge_as_an_older_version(
        fake_stripe, attempt, payment_method="pm_card_visa", customer="cus_former"
    )

    retry_unconfirmed(paying, clock)

    failed = wait_until(lambda: decided(paying))
    assert (failed.status, failed.failure_code, failed.payment_intent_id) == (
        "failed",
        "charge_unconfirmed",
        None,
    )
    assert list(fake_stripe.payment_intents) == [first]
    assert paying.auto_topup(PRACTICE).paused_reason == "charge_unconfirmed"
    assert refused_reason(paying, "while-paused") == "auto_topup_paused"
    [told] = [n for n in paying.notifications(practice_id=PRACTICE) if n.event_type == "topup.failed"]
    assert told.payload["data"]["failure_code"] == "charge_unconfirmed"
    assert told.payload["data"]["message_user"] == (
        "Die Zahlung von CHF\xa024.50 für die automatische Aufladung von $\xa025.00 KI-Guthaben konnte "
        "nicht bestätigt werden und wurde möglicherweise ausgeführt; in diesem Fall wird das Guthaben "
        "gutgeschrieben. Die automatische Aufladung ist pausiert, bis die Zahlung geprüft ist."
    )

    intent = fake_stripe.payment_intents[first]
    confirmed = event(
        "payment_intent.succeeded",
        payment_intent_object(
            id=first, amount=intent["amount"], currency=intent["currency"], status="succeeded",
            customer="cus_former", metadata=intent["metadata"],
        ),
    )  # fmt: skip
    assert paying.stripe_webhook(*signed(confirmed)) == "applied"

    [grant] = topup_grants(paying)
    assert (grant.amount_usd, grant.reference) == (Decimal(25), first)
    assert (the_attempt(paying).status, the_attempt(paying).payment_intent_id) == ("succeeded", first)
    assert paying.auto_topup(PRACTICE).paused_reason is None  # the payment is proven: top-up runs again
    assert paying.verify() == []


def test_a_customer_stripe_no_longer_knows_is_not_told_the_card_was_declined(
    paying: Budget, fake_stripe: FakeStripe
) -> None:
    paying.put_subscription("sub_muster", practice_id=PRACTICE, plan="basic", status="active",
                            customer_id="cus_deleted", current_period_start=PERIOD_START,
                            current_period_end=PERIOD_END)  # fmt: skip
    exhaust(paying)

    assert refused_reason(paying, "call") == "auto_topup_paused"

    assert fake_stripe.payment_intents == {}
    assert paying.auto_topup(PRACTICE).paused_reason == "resource_missing"
    [told] = [n for n in paying.notifications(practice_id=PRACTICE) if n.event_type == "topup.failed"]
    assert told.payload["data"]["message_user"] == (
        "Die automatische Aufladung von $\xa025.00 KI-Guthaben konnte nicht belastet werden, weil der "
        "Zahlungsanbieter die Anfrage abgelehnt hat, etwa weil das hinterlegte Zahlungsmittel entfernt "
        "wurde. Es wurde nichts belastet. Die automatische Aufladung ist pausiert, bis die "
        "Zahlungsangaben in den Abrechnungseinstellungen geprüft sind."
    )
