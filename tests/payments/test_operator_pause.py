"""The operator pauses a practice's automatic top-up (SPEC §6, G5: no charge while paused) through the
real `stripe` package against a local fake of Stripe: while paused no top-up is attempted, whatever
triggers it, and calls are refused as with any pause; once resumed, top-up is attempted again. Only
that explicit resume ends the operator's pause: neither a purchase nor a declined charge does."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from aibudget import Budget, BudgetExceeded
from aibudget.errors import NotFound
from tests.conftest import FakeClock, wait_until
from tests.fake_stripe import FakeStripe, checkout_session_completed_object, event
from tests.payments.conftest import CUSTOMER, PRACTICE, signed, spend


def letter(budget: Budget, request_id: str) -> None:
    budget.authorize(request_id=request_id, practice_id=PRACTICE, operation="letter", model="gpt-4o",
                     input_tokens=1000)  # fmt: skip


def test_a_paused_practice_is_never_charged_and_is_again_once_resumed(
    paying: Budget, fake_stripe: FakeStripe, clock: FakeClock
) -> None:
    paused = paying.pause_auto_topup(PRACTICE)
    assert (paused.paused_reason, paused.paused_at, paused.enabled) == ("paused_by_operator", clock.now, True)
    assert paying.snapshot(PRACTICE).auto_topup.paused_reason == "paused_by_operator"

    spend(paying, "under-the-threshold", 60)  # 0.40 left, under 0.50: a settle would top up
    spend(paying, "all-of-it", 40)
    with pytest.raises(BudgetExceeded) as refused:
        letter(paying, "refused")  # an authorization would top up too

    assert refused.value.payload["reason"] == "auto_topup_paused"
    assert fake_stripe.payment_intents == {}
    assert paying.topup_attempts(PRACTICE) == []

    clock.advance(minutes=5)
    assert paying.resume_auto_topup(PRACTICE).paused_reason is None
    letter(paying, "after-resume")

    [attempt] = wait_until(lambda: paying.topup_attempts(PRACTICE))
    assert (attempt.trigger, attempt.status) == ("authorize", "succeeded")
    assert len(fake_stripe.payment_intents) == 1
    assert paying.verify() == []


def buy_credit(budget: Budget, request_id: str) -> None:
    """The practice buys 10 USD of credit through Checkout and spends all of it: its card works again."""
    metadata = {"aibudget_practice_id": PRACTICE, "aibudget_credit_micros": "10000000",
                "aibudget_package_id": "credit-10"}  # fmt: skip
    completed = event("checkout.session.completed", checkout_session_completed_object(metadata=metadata))
    assert budget.stripe_webhook(*signed(completed)) == "applied"
    spend(budget, request_id, 1000)


def test_an_operator_pause_over_a_declined_card_outlasts_a_purchase(
    paying: Budget, fake_stripe: FakeStripe, clock: FakeClock
) -> None:
    """A purchase ends a pause of the card's making, never the operator's: pausing a practice whose
    top-up a declined card paused makes the pause the operator's."""
    fake_stripe.add_customer(CUSTOMER, payment_method="pm_card_chargeDeclined")
    paying.put_auto_topup(PRACTICE, enabled=True, threshold_usd="0", package_usd="25",
                          monthly_max_count=5, monthly_max_usd="500")  # fmt: skip
    spend(paying, "all-of-it", 100)
    with pytest.raises(BudgetExceeded):
        letter(paying, "declined")
    assert paying.auto_topup(PRACTICE).paused_reason == "card_declined"
    clock.advance(minutes=5)

    paused = paying.pause_auto_topup(PRACTICE)
    assert (paused.paused_reason, paused.paused_at) == ("paused_by_operator", clock.now)
    assert paying.pause_auto_topup(PRACTICE).paused_at == clock.now  # pausing again changes nothing
    fake_stripe.add_customer(CUSTOMER, payment_method="pm_card_visa")
    buy_credit(paying, "the-credit-bought")

    assert paying.auto_topup(PRACTICE).paused_reason == "paused_by_operator"
    with pytest.raises(BudgetExceeded) as refused:
        letter(paying, "still-paused")
    assert refused.value.payload["reason"] == "auto_topup_paused"
    assert [intent["status"] for intent in fake_stripe.payment_intents.values()] == [
        "requires_payment_method"
    ]
    [declined] = paying.topup_attempts(PRACTICE)
    assert (declined.status, declined.failure_code) == ("failed", "card_declined")  # the card's reason


def test_a_charge_declined_after_the_operator_paused_keeps_the_operators_pause(
    paying: Budget, fake_stripe: FakeStripe, clock: FakeClock
) -> None:
    fake_stripe.add_customer(CUSTOMER, payment_method="pm_card_chargeDeclined")
    paying.put_auto_topup(PRACTICE, enabled=True, threshold_usd="0", package_usd="25",
                          monthly_max_count=5, monthly_max_usd="500")  # fmt: skip
    spend(paying, "all-of-it", 100)
    with fake_stripe.hold_payment_intents(), ThreadPoolExecutor(1) as pool:
        call = pool.submit(letter, paying, "waits-for-the-charge")
        fake_stripe.wait_for(lambda: fake_stripe.held == 1)
        paused_at = paying.pause_auto_topup(PRACTICE).paused_at
        clock.advance(minutes=1)
        fake_stripe.release()
        with pytest.raises(BudgetExceeded) as refused:
            call.result(timeout=20)
    assert refused.value.payload["reason"] == "auto_topup_paused"
    [declined] = paying.topup_attempts(PRACTICE)
    assert (declined.status, declined.failure_code) == ("failed", "card_declined")
    settings = paying.auto_topup(PRACTICE)
    assert (settings.paused_reason, settings.paused_at) == ("paused_by_operator", paused_at)

    fake_stripe.add_customer(CUSTOMER, payment_method="pm_card_visa")
    buy_credit(paying, "the-credit-bought")

    assert paying.auto_topup(PRACTICE).paused_reason == "paused_by_operator"
    with pytest.raises(BudgetExceeded):
        letter(paying, "still-paused")
    assert len(fake_stripe.payment_intents) == 1  # the declined one: no charge since
    assert paying.resume_auto_topup(PRACTICE).paused_reason is None  # only this ends it


def test_a_practice_without_automatic_top_up_has_nothing_to_pause(paying: Budget) -> None:
    paying.put_practice("no-topup")

    settings = paying.pause_auto_topup("no-topup")

    assert (settings.enabled, settings.paused_reason, settings.updated_at) == (False, None, None)
    with pytest.raises(NotFound):
        paying.pause_auto_topup("nobody")
