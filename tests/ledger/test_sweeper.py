"""The background sweeper releases expired holds on its own (G4: within TTL + one sweep interval)."""

from __future__ import annotations

import time

from aibudget import Budget
from aibudget.ledger.sweeper import Sweeper
from tests.conftest import FakeClock
from tests.factories import create_practice, create_subscription


def test_the_sweeper_releases_expired_holds_without_being_asked(budget: Budget, clock: FakeClock) -> None:
    create_practice(budget)
    budget.put_plan("basic", included_usd="20")
    create_subscription(budget)
    budget.authorize(
        practice_id="p1",
        request_id="r1",
        operation="letter",
        model="gpt-4o-mini",
        input_tokens=1000,
        max_output_tokens=1000,
    )
    assert budget.snapshot("p1").held_micros > 0
    sweeper = Sweeper(budget.sweep, interval=0.05).start()
    try:
        clock.advance(seconds=budget.settings.hold_ttl_seconds + 1)
        deadline = time.monotonic() + 10
        while budget.snapshot("p1").held_micros and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sweeper.stop()
    assert budget.snapshot("p1").held_micros == 0
    assert sweeper.passes >= 1
    assert budget.verify() == []


def test_a_stopped_sweeper_stops(budget: Budget) -> None:
    sweeper = Sweeper(budget.sweep, interval=0.01).start()
    sweeper.stop()
    passes = sweeper.passes
    time.sleep(0.05)
    assert sweeper.passes == passes
