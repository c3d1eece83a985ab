"""The clock jumps (SPEC §5 under faults): forward across a period's end or far past a hold's TTL, or
back after an NTP correction. Holds expire when their time has come and not before, a new period
starts with its full allowance, a call is recorded exactly once whenever its settle arrives, and the
books balance after every jump."""

from __future__ import annotations

from datetime import UTC, datetime

from aibudget import Budget
from tests.conftest import FakeClock
from tests.factories import open_practice, transcribe

NOVEMBER_END = datetime(2026, 12, 1, tzinfo=UTC)  # the calendar month ends at midnight Zurich time


def hold(budget: Budget, request_id: str) -> int:
    return budget.authorize(
        practice_id="p1", request_id=request_id, operation="letter", model="gpt-4o-mini",
        input_tokens=1000, max_output_tokens=1000,
    ).held_micros  # fmt: skip


def test_a_jump_across_the_period_end_starts_the_new_period_in_full(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget, "p1", included_usd="5")  # calendar months in Europe/Zurich
    transcribe(budget, "november", usd="2")
    held = hold(budget, "open-at-the-jump")
    november = budget.snapshot("p1")
    assert (november.included_remaining_micros, november.held_micros) == (3_000_000, held)

    clock.now = NOVEMBER_END.replace(day=10)  # nine days and more pass at once
    december = budget.snapshot("p1")

    assert november.period_end is not None
    assert december.period_start == november.period_end
    assert december.included_remaining_micros == 5_000_000
    assert december.used_micros == 0
    assert budget.sweep() == 1  # the hold from November has long expired
    assert budget.snapshot("p1").held_micros == 0
    assert budget.verify() == []


def test_a_late_settle_after_a_jump_is_recorded_once_in_the_period_of_its_authorization(
    budget: Budget, clock: FakeClock
) -> None:
    open_practice(budget, "p1", included_usd="5")
    hold(budget, "slow-call")
    november = budget.current_period("p1")
    clock.now = NOVEMBER_END.replace(day=2)
    budget.sweep()  # its hold expired long ago

    first = transcribe(budget, "slow-call", usd="0.50")
    again = transcribe(budget, "slow-call", usd="0.50")

    assert (first.cost_micros, first.replayed, again.replayed) == (500_000, False, True)
    assert november is not None
    assert first.period_id == november.period_id  # the call was made then
    december = budget.snapshot("p1")
    assert (december.used_micros, december.held_micros, december.included_remaining_micros) == (
        0,
        0,
        5_000_000,
    )
    assert budget.verify() == []


def test_a_jump_back_expires_no_hold_early_and_charges_nothing_twice(
    budget: Budget, clock: FakeClock
) -> None:
    open_practice(budget, "p1", included_usd="5")
    held = hold(budget, "r1")
    clock.advance(minutes=5)
    transcribe(budget, "r2", usd="1")
    clock.advance(hours=-2)  # the clock is corrected backwards

    assert budget.sweep() == 0  # r1's hold is not due, whatever the clock did
    assert budget.snapshot("p1").held_micros == held
    assert transcribe(budget, "r2", usd="1").replayed is True
    transcribe(budget, "r1", usd="0.25")
    snapshot = budget.snapshot("p1")
    assert (snapshot.used_micros, snapshot.held_micros) == (1_250_000, 0)
    clock.advance(hours=2, minutes=10)  # back where it was, and past r1's TTL: nothing left to expire
    assert budget.sweep() == 0
    assert budget.verify() == []


def test_a_jump_far_past_the_ttl_releases_every_hold_in_one_sweep(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget, "p1", included_usd="5")
    holds = [hold(budget, f"r{number}") for number in range(5)]
    assert budget.snapshot("p1").held_micros == sum(holds)
    clock.advance(hours=6)

    assert budget.sweep() == 5
    assert budget.sweep() == 0
    snapshot = budget.snapshot("p1")
    assert (snapshot.held_micros, snapshot.used_micros) == (0, 0)
    assert snapshot.included_remaining_micros == 5_000_000
    assert budget.verify() == []
