"""The operator pauses a practice's automatic top-up (SPEC §6, G5: no charge while paused) through the
real `stripe` package against a local fake of Stripe: while paused no top-up is attempted, whatever
triggers it, and calls are refused as with any pause; once resumed, top-up is attempted again."""

from __future__ import annotations

import pytest

from aibudget import Budget, BudgetExceeded
from aibudget.errors import NotFound
from tests.conftest import FakeClock, wait_until
from tests.fake_stripe import FakeStripe
from tests.payments.conftest import PRACTICE, spend


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


def test_pausing_keeps_the_reason_of_a_pause_in_place(paying: Budget, fake_stripe: FakeStripe) -> None:
    fake_stripe.add_customer("cus_muster", payment_method="pm_card_chargeDeclined")
    paying.put_auto_topup(PRACTICE, enabled=True, threshold_usd="0", package_usd="25",
                          monthly_max_count=2, monthly_max_usd="50")  # fmt: skip
    spend(paying, "all-of-it", 100)
    with pytest.raises(BudgetExceeded):
        letter(paying, "declined")
    declined_at = paying.auto_topup(PRACTICE).paused_at

    again = paying.pause_auto_topup(PRACTICE)

    assert (again.paused_reason, again.paused_at) == ("card_declined", declined_at)


def test_a_practice_without_automatic_top_up_has_nothing_to_pause(paying: Budget) -> None:
    paying.put_practice("no-topup")

    settings = paying.pause_auto_topup("no-topup")

    assert (settings.enabled, settings.paused_reason, settings.updated_at) == (False, None, None)
    with pytest.raises(NotFound):
        paying.pause_auto_topup("nobody")
