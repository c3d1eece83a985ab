"""Pruning old history (SPEC §12): events before a cut-off are removed, no balance changes, `verify`
still recomputes every balance, and the books go on after it."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest
from sqlalchemy import update

from aibudget import Budget
from aibudget.errors import InvalidInput
from aibudget.store import tables
from aibudget.store.dialect import write_transaction
from tests.conftest import FakeClock
from tests.factories import open_practice, rows, transcribe, usage_events

BALANCE_COLUMNS = {
    tables.periods: ("included_micros", "included_used_micros", "used_micros", "overage_micros"),
    tables.credit_grants: ("amount_micros", "remaining_micros", "expired_micros"),
    tables.balances: ("held_micros", "credit_micros"),
}


def balances(budget: Budget) -> dict[str, list[tuple[Any, ...]]]:
    """Every money column of the rows the hot path reads, which pruning must leave alone."""
    return {
        table.name: [tuple(getattr(row, column) for column in columns) for row in rows(budget, table)]
        for table, columns in BALANCE_COLUMNS.items()
    }


@pytest.fixture
def two_months(budget: Budget, clock: FakeClock) -> Budget:
    """November: included budget, then credit, a voided call and a hold left open; December: more."""
    open_practice(budget, "p1", included_usd="1")
    budget.grant_credit("p1", amount_usd="2", source="purchase", reference="pi_1")
    transcribe(budget, "nov-1", usd="0.6")
    budget.authorize(practice_id="p1", request_id="nov-2", operation="transcribe", model="whisper-1",
                     audio_seconds=6000)  # fmt: skip
    transcribe(budget, "nov-2", usd="0.6")  # 0.4 from the included budget, 0.2 from the credit
    budget.authorize(practice_id="p1", request_id="nov-3", operation="letter", model="gpt-4o-mini")
    budget.void(practice_id="p1", request_id="nov-3")
    budget.authorize(practice_id="p1", request_id="nov-open", operation="letter", model="gpt-4o-mini")
    clock.now = datetime(2026, 12, 3, 10, 0, tzinfo=clock.now.tzinfo)
    transcribe(budget, "dec-1", usd="0.3")
    return budget


def test_pruning_removes_old_events_and_changes_no_balance(two_months: Budget) -> None:
    budget = two_months
    before, snapshot = balances(budget), budget.snapshot("p1")
    pruned = budget.prune_usage(date(2026, 12, 1))
    assert pruned.events == 3  # two transcriptions and the voided call; the open hold has no event
    assert pruned.authorizations == 2  # nov-2 (settled) and nov-3 (voided)
    assert [event.request_id for event in usage_events(budget)] == ["dec-1"]
    assert {row.request_id for row in rows(budget, tables.authorizations)} == {"nov-open"}
    assert balances(budget) == before
    assert budget.snapshot("p1") == snapshot
    assert budget.verify() == []
    november = budget.usage_report("p1", since=date(2026, 11, 1), until=date(2026, 12, 1))
    assert not november.rows


def test_the_books_go_on_after_pruning(two_months: Budget, clock: FakeClock) -> None:
    budget = two_months
    budget.prune_usage(date(2026, 12, 1))
    transcribe(budget, "dec-2", usd="0.5")  # December's included budget, then what is left of the credit
    budget.settle(practice_id="p1", request_id="nov-open", model="gpt-4o-mini", input_tokens=100)
    assert budget.verify() == []
    assert budget.prune_usage(date(2026, 12, 1)).events == 0  # nothing older is left
    clock.advance(minutes=1)
    pruned = budget.prune_usage(clock.now)
    assert pruned.events == 3
    assert budget.verify() == []
    # the hold opened in November is charged to November, whose included budget is spent: 15 micro-USD
    # (100 input tokens of gpt-4o-mini) come from the credit
    assert budget.snapshot("p1").extra_credit_remaining_micros == 2_000_000 - 200_000 - 15


def test_verify_still_finds_a_tampered_balance_after_pruning(two_months: Budget) -> None:
    budget = two_months
    budget.prune_usage(date(2026, 12, 1))
    with write_transaction(budget.engine) as connection:
        connection.execute(
            update(tables.credit_grants).values(remaining_micros=tables.credit_grants.c.remaining_micros + 1)
        )
        connection.execute(update(tables.periods).values(used_micros=tables.periods.c.used_micros + 1))
    found = {(discrepancy.table, discrepancy.column) for discrepancy in budget.verify()}
    assert found == {("credit_grants", "remaining_micros"), ("periods", "used_micros")}


def test_a_cut_off_in_the_future_is_refused_and_nothing_is_removed(two_months: Budget) -> None:
    budget = two_months
    with pytest.raises(InvalidInput) as refused:
        budget.prune_usage(date(2026, 12, 4))
    assert refused.value.field == "before"
    assert len(usage_events(budget)) == 4
