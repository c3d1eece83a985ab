"""G3 books balance: `verify()` recomputes every cached balance from the ledger and names each
difference by table, key, column, stored and recomputed value."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from aibudget import Budget, BudgetExceeded, Discrepancy
from aibudget.store import tables
from aibudget.store.dialect import write_transaction
from tests.conftest import FakeClock
from tests.factories import USD, open_practice, rows, transcribe


def a_busy_month(budget: Budget, clock: FakeClock) -> None:
    """Two practices, every kind of ledger row: settled, errored, voided, expired, blocked, overage,
    credit from three grants (one expired), a hold left open and a period that rolled over."""
    open_practice(budget, "p1", included_usd="1")
    open_practice(budget, "p2", included_usd="0.5", policy="strict")
    budget.grant_credit("p1", amount_usd="0.5", source="purchase", reference="pi_1")
    budget.grant_credit(
        "p1", amount_usd="0.25", source="promo", reference="promo-1", expires_at=clock() + timedelta(days=3)
    )
    budget.grant_credit("p2", amount_usd="0.1", source="refund", reference="refund-2", priority=1)

    transcribe(budget, "d1", usd="0.9")
    budget.authorize(practice_id="p1", request_id="l1", operation="letter", model="gpt-4o-mini")
    budget.settle(practice_id="p1", request_id="l1", model="gpt-4o-mini", input_tokens=900, output_tokens=700)
    transcribe(budget, "d2", usd="0.3", status="error", error_code="upstream_500")
    budget.authorize(practice_id="p1", request_id="v1", operation="letter", model="gpt-4o-mini")
    budget.void(practice_id="p1", request_id="v1")
    budget.authorize(practice_id="p1", request_id="x1", operation="letter", model="gpt-4o-mini")
    transcribe(budget, "d3", practice_id="p2", usd="0.55")
    with pytest.raises(BudgetExceeded):
        budget.authorize(
            practice_id="p2", request_id="big", operation="transcribe", model="whisper-1", audio_seconds=600
        )
    clock.advance(days=4)  # x1 expires, promo-1 expires with money left
    budget.sweep()
    transcribe(budget, "d4", usd="0.6")  # the 0.5 left of pi_1, then 0.1 overage
    clock.advance(days=30)  # a new calendar month
    transcribe(budget, "d5", usd="0.2")
    budget.authorize(practice_id="p1", request_id="open", operation="letter", model="gpt-4o-mini")


def tamper(budget: Budget, table: Any, where: Any, **values: Any) -> None:
    with write_transaction(budget.engine) as connection:
        connection.execute(update(table).where(where).values(**values))


def test_the_books_balance_after_a_busy_month(budget: Budget, clock: FakeClock) -> None:
    a_busy_month(budget, clock)
    statuses = {e.status for e in rows(budget, tables.usage_events)}
    assert statuses == {"success", "error", "voided", "expired", "blocked"}
    assert {a.pot for a in rows(budget, tables.allocations)} == {"included", "credit", "overage"}
    assert len(rows(budget, tables.periods)) == 3
    assert budget.verify() == []


def test_a_tampered_hold_balance_is_reported(budget: Budget, clock: FakeClock) -> None:
    a_busy_month(budget, clock)
    held = budget.snapshot("p1").held_micros
    balances = tables.balances
    tamper(budget, balances, balances.c.practice_id == "p1", held_micros=balances.c.held_micros + 7)
    assert budget.verify() == [Discrepancy("balances", "p1", "held_micros", held + 7, held)]


def test_a_tampered_credit_balance_is_reported(budget: Budget, clock: FakeClock) -> None:
    a_busy_month(budget, clock)
    balances = tables.balances
    tamper(budget, balances, balances.c.practice_id == "p2", credit_micros=USD)
    credit = budget.grants("p2")[0].remaining_micros
    assert budget.verify() == [Discrepancy("balances", "p2", "credit_micros", USD, credit)]


@pytest.mark.parametrize("column", ["used_micros", "included_used_micros", "overage_micros"])
def test_a_tampered_period_is_reported(budget: Budget, clock: FakeClock, column: str) -> None:
    a_busy_month(budget, clock)
    periods = tables.periods
    period = next(p for p in rows(budget, periods) if p.practice_id == "p1" and p.overage_micros)
    stored = getattr(period, column)
    tamper(budget, periods, periods.c.period_id == period.period_id, **{column: periods.c[column] + 1})
    assert budget.verify() == [Discrepancy("periods", str(period.period_id), column, stored + 1, stored)]


def test_a_tampered_grant_is_reported_on_the_grant_alone(budget: Budget, clock: FakeClock) -> None:
    a_busy_month(budget, clock)
    grants = tables.credit_grants
    grant = next(g for g in rows(budget, grants) if g.reference == "refund-2")
    tamper(budget, grants, grants.c.grant_id == grant.grant_id, remaining_micros=grant.remaining_micros - 1)
    assert budget.verify() == [
        Discrepancy(
            "credit_grants",
            str(grant.grant_id),
            "remaining_micros",
            grant.remaining_micros - 1,
            grant.remaining_micros,
        )
    ]


def test_an_event_whose_allocations_do_not_add_up_is_reported(budget: Budget, clock: FakeClock) -> None:
    a_busy_month(budget, clock)
    allocations = tables.allocations
    part = next(a for a in rows(budget, allocations) if a.pot == "overage")
    tamper(
        budget,
        allocations,
        (allocations.c.event_id == part.event_id) & (allocations.c.seq == part.seq),
        amount_micros=part.amount_micros + 5,
    )
    (event,) = rows(budget, tables.usage_events, tables.usage_events.c.event_id == part.event_id)
    assert budget.verify() == [
        Discrepancy(
            "usage_events", str(event.event_id), "cost_micros", event.cost_micros, event.cost_micros + 5
        ),
        Discrepancy(
            "usage_events",
            str(event.event_id),
            "overage_micros",
            event.overage_micros,
            event.overage_micros + 5,
        ),
    ]


def test_a_discrepancy_reads_as_one_line(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget)
    transcribe(budget, "d1", usd="0.5")
    (period,) = rows(budget, tables.periods)
    tamper(budget, tables.periods, tables.periods.c.period_id == period.period_id, used_micros=600_000)
    (found,) = budget.verify()
    assert str(found) == f"periods[{period.period_id}].used_micros: stored 600000, ledger says 500000"


def test_repairing_the_cache_makes_the_books_balance_again(budget: Budget, clock: FakeClock) -> None:
    a_busy_month(budget, clock)
    balances = tables.balances
    held = budget.snapshot("p1").held_micros
    tamper(budget, balances, balances.c.practice_id == "p1", held_micros=0)
    assert len(budget.verify()) == 1
    tamper(budget, balances, balances.c.practice_id == "p1", held_micros=held)
    assert budget.verify() == []
