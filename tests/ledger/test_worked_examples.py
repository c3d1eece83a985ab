"""Ledger stories with real numbers, told through `Budget` on a real SQLite file.

Catalog prices used throughout (genai-prices, pinned):

- gpt-4o-mini: 0.15 USD per 1M input tokens, 0.075 per 1M cached input tokens, 0.60 per 1M output
  tokens;
- whisper-1: 0.006 USD per minute of audio, which is 0.0001 USD (100 micro-USD) per second.

Every story ends with the books balancing: `budget.verify() == []`.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from aibudget import Budget, BudgetExceeded
from aibudget.ledger.waterfall import Allocation
from tests.conftest import FakeClock
from tests.factories import USD, open_practice, transcribe

FIELDS = (
    "used_usd",
    "held_usd",
    "included_remaining_usd",
    "extra_credit_remaining_usd",
    "available_usd",
    "overage_usd",
)


def money(budget: Budget, practice_id: str = "p1") -> dict[str, Decimal]:
    snapshot = budget.snapshot(practice_id)
    return {name: getattr(snapshot, name) for name in FIELDS}


def usd(
    *,
    used: str = "0",
    held: str = "0",
    included_left: str = "0",
    credit_left: str = "0",
    available: str = "0",
    overage: str = "0",
) -> dict[str, Decimal]:
    """The snapshot's money as `money()` reads it; amounts not named are 0."""
    amounts = (used, held, included_left, credit_left, available, overage)
    return dict(zip(FIELDS, map(Decimal, amounts), strict=True))


def test_a_month_of_letters_and_dictation_on_the_20_usd_plan(budget: Budget) -> None:
    open_practice(budget, included_usd="20")
    assert money(budget) == usd(included_left="20", available="20")

    # A letter: 1200 prompt tokens and at most 800 output tokens are held before the call:
    # 1200 x 0.15/1M + 800 x 0.60/1M = 0.000180 + 0.000480 = 0.000660 USD.
    letter = budget.authorize(
        practice_id="p1",
        request_id="letter-1",
        operation="letter",
        model="gpt-4o-mini",
        input_tokens=1200,
        max_output_tokens=800,
    )
    assert letter.held_usd == Decimal("0.000660")
    assert money(budget) == usd(held="0.000660", included_left="20", available="19.999340")

    # It used 1180 in, 640 out: 0.000177 + 0.000384 = 0.000561 USD; the rest of the hold is released.
    event = budget.settle(
        practice_id="p1",
        request_id="letter-1",
        model="gpt-4o-mini",
        input_tokens=1180,
        cached_input_tokens=0,
        output_tokens=640,
    )
    assert event.cost_usd == Decimal("0.000561")
    assert event.allocations == (Allocation("included", 561),)
    assert money(budget) == usd(used="0.000561", included_left="19.999439", available="19.999439")

    # A dictation of 90 s is held at 0.009000 USD; the real recording was 87 s: 0.008700 USD.
    held = budget.authorize(
        practice_id="p1",
        request_id="dictation-1",
        operation="transcribe",
        model="whisper-1",
        audio_seconds=90,
    )
    assert held.held_usd == Decimal("0.009000")
    assert money(budget) == usd(
        used="0.000561", held="0.009000", included_left="19.999439", available="19.990439"
    )
    dictation = budget.settle(practice_id="p1", request_id="dictation-1", model="whisper-1", audio_seconds=87)
    assert dictation.cost_usd == Decimal("0.008700")

    # A letter from a cached template: 2000 fresh + 8000 cached input tokens, 500 output tokens:
    # 0.000300 + 0.000600 + 0.000300 = 0.001200 USD.
    cached = budget.settle(
        practice_id="p1",
        request_id="letter-2",
        operation="letter",
        model="gpt-4o-mini",
        input_tokens=10_000,
        cached_input_tokens=8_000,
        output_tokens=500,
    )
    assert cached.cost_usd == Decimal("0.001200")

    # 0.000561 + 0.008700 + 0.001200 = 0.010461 USD used of 20.
    assert money(budget) == usd(used="0.010461", included_left="19.989539", available="19.989539")
    assert budget.verify() == []


def test_a_credit_grant_pays_once_the_included_budget_is_used_up(budget: Budget) -> None:
    open_practice(budget, included_usd="20")
    transcribe(budget, "marathon", usd="18")  # 50 hours of dictation: 180,000 s x 0.0001 USD
    grant = budget.grant_credit("p1", amount_usd="10", source="purchase", reference="pi_3Q0001")
    assert money(budget) == usd(used="18", included_left="2", credit_left="10", available="12")

    # 3 USD of audio: the last 2 USD of the plan, then 1 USD of the purchased credit.
    event = transcribe(budget, "long-day", usd="3")
    assert event.allocations == (
        Allocation("included", 2 * USD),
        Allocation("credit", 1 * USD, grant.grant_id),
    )
    assert money(budget) == usd(used="21", credit_left="9", available="9")
    assert [g.remaining_usd for g in budget.grants("p1")] == [Decimal("9")]
    assert budget.verify() == []


def test_an_expiring_grant_pays_before_a_lasting_one_of_the_same_priority(
    budget: Budget, clock: FakeClock
) -> None:
    open_practice(budget)
    transcribe(budget, "month", usd="20")
    lasting = budget.grant_credit("p1", amount_usd="5", source="manual", reference="gift-1")
    expiring = budget.grant_credit(
        "p1", amount_usd="5", source="promo", reference="promo-1", expires_at=clock() + timedelta(days=30)
    )
    assert money(budget) == usd(used="20", credit_left="10", available="10")

    first = transcribe(budget, "call-1", usd="3")
    assert first.allocations == (Allocation("credit", 3 * USD, expiring.grant_id),)

    second = transcribe(budget, "call-2", usd="4")
    assert second.allocations == (
        Allocation("credit", 2 * USD, expiring.grant_id),
        Allocation("credit", 2 * USD, lasting.grant_id),
    )
    assert {g.reference: g.remaining_usd for g in budget.grants("p1")} == {
        "gift-1": Decimal("3"),
        "promo-1": Decimal("0"),
    }
    assert money(budget) == usd(used="27", credit_left="3", available="3")
    assert budget.verify() == []


def test_a_lower_priority_number_pays_first_even_if_another_grant_expires_sooner(
    budget: Budget, clock: FakeClock
) -> None:
    open_practice(budget)
    transcribe(budget, "month", usd="20")
    promo = budget.grant_credit(
        "p1", amount_usd="5", source="promo", reference="winter", expires_at=clock() + timedelta(days=7)
    )
    refund = budget.grant_credit("p1", amount_usd="2", source="refund", reference="refund-1", priority=10)

    event = transcribe(budget, "call", usd="3")
    assert event.allocations == (
        Allocation("credit", 2 * USD, refund.grant_id),
        Allocation("credit", 1 * USD, promo.grant_id),
    )
    assert money(budget) == usd(used="23", credit_left="4", available="4")
    assert budget.verify() == []


def test_cost_nothing_can_fund_is_recorded_as_overage_not_dropped(budget: Budget) -> None:
    open_practice(budget)
    transcribe(budget, "month", usd="19.5")
    grant = budget.grant_credit("p1", amount_usd="1", source="purchase", reference="pi_1")

    # 2 USD: 0.5 from the plan, 1 from the credit, and 0.5 that nothing funds.
    event = transcribe(budget, "too-long", usd="2")
    assert event.cost_usd == Decimal("2")
    assert event.overage_usd == Decimal("0.5")
    assert event.allocations == (
        Allocation("included", 500_000),
        Allocation("credit", 1 * USD, grant.grant_id),
        Allocation("overage", 500_000),
    )
    assert money(budget) == usd(used="21.5", overage="0.5")

    # Nothing is left, so the next call is refused; a call settled anyway is still on the books.
    with pytest.raises(BudgetExceeded):
        budget.authorize(practice_id="p1", request_id="next", operation="transcribe", model="whisper-1")
    late = transcribe(budget, "recorded-after-the-call", usd="0.25")
    assert late.allocations == (Allocation("overage", 250_000),)
    assert money(budget) == usd(used="21.75", overage="0.75")
    assert budget.verify() == []


def test_the_last_call_is_allowed_and_what_it_overshoots_is_overage(budget: Budget) -> None:
    open_practice(budget)  # allow_last_call, the default policy
    transcribe(budget, "month", usd="19.999")
    assert money(budget)["available_usd"] == Decimal("0.001")

    # Without max_output_tokens the estimate caps output at 4096 tokens:
    # 1000 x 0.15/1M + 4096 x 0.60/1M = 0.000150 + 0.0024576, rounded up: 0.002608 USD.
    last = budget.authorize(
        practice_id="p1", request_id="last", operation="letter", model="gpt-4o-mini", input_tokens=1000
    )
    assert (last.estimate_usd, last.held_usd) == (Decimal("0.002608"), Decimal("0.001"))
    assert money(budget) == usd(used="19.999", held="0.001", included_left="0.001")

    # It used 1000 in and 2250 out: 0.000150 + 0.001350 = 0.001500 USD, 0.0005 more than was left.
    event = budget.settle(
        practice_id="p1", request_id="last", model="gpt-4o-mini", input_tokens=1000, output_tokens=2250
    )
    assert event.allocations == (Allocation("included", 1_000), Allocation("overage", 500))
    assert money(budget) == usd(used="20.0005", overage="0.0005")
    assert budget.verify() == []


def test_two_practices_never_share_money(budget: Budget) -> None:
    open_practice(budget, "praxis-a", included_usd="20")
    open_practice(budget, "praxis-b", included_usd="5")
    budget.grant_credit("praxis-b", amount_usd="1", source="purchase", reference="pi_b")

    transcribe(budget, "same-id", practice_id="praxis-a", usd="4")
    transcribe(budget, "same-id", practice_id="praxis-b", usd="5.5")

    assert money(budget, "praxis-a") == usd(used="4", included_left="16", available="16")
    assert money(budget, "praxis-b") == usd(used="5.5", credit_left="0.5", available="0.5")
    assert budget.verify() == []
