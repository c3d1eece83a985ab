"""Credit grants: prepaid extra credit, once per payment reference, never silently lost (SPEC §2, §6)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy.exc import DatabaseError

from aibudget import Budget, Conflict, InvalidInput, NotFound
from aibudget.ledger.waterfall import Allocation
from aibudget.store import tables
from tests.conftest import FakeClock
from tests.factories import USD, money_tables, open_practice, rows, transcribe, usage_events


def test_a_grant_credits_the_practice(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget)
    grant = budget.grant_credit("p1", amount_usd="10", source="purchase", reference="pi_3Q0001")
    assert (grant.practice_id, grant.amount_usd, grant.remaining_usd) == ("p1", Decimal(10), Decimal(10))
    assert (grant.source, grant.priority, grant.reference) == ("purchase", 100, "pi_3Q0001")
    assert (grant.created_at, grant.expires_at, grant.expired_at) == (clock.now, None, None)
    snapshot = budget.snapshot("p1")
    assert (snapshot.extra_credit_remaining_usd, snapshot.available_usd) == (Decimal(10), Decimal(30))
    assert budget.grants("p1") == [grant]
    assert budget.verify() == []


def test_a_repeated_reference_returns_the_first_grant_and_credits_nothing(budget: Budget) -> None:
    open_practice(budget)
    first = budget.grant_credit("p1", amount_usd="10", source="purchase", reference="pi_1")
    again = budget.grant_credit("p1", amount_usd="10", source="purchase", reference="pi_1")
    assert (first.replayed, again.replayed) == (False, True)
    assert replace(again, replayed=False) == first
    assert budget.snapshot("p1").extra_credit_remaining_usd == Decimal(10)
    assert len(rows(budget, tables.credit_grants)) == 1


def test_a_repeat_after_spending_returns_the_same_grant_as_it_is_now(budget: Budget) -> None:
    open_practice(budget)
    transcribe(budget, "month", usd="20")
    first = budget.grant_credit("p1", amount_usd="10", source="purchase", reference="pi_1")
    transcribe(budget, "call", usd="4")
    again = budget.grant_credit("p1", amount_usd="10", source="purchase", reference="pi_1")
    assert (again.grant_id, again.remaining_usd) == (first.grant_id, Decimal(6))
    assert budget.snapshot("p1").extra_credit_remaining_usd == Decimal(6)


@pytest.mark.parametrize(
    "changed",
    [
        {"amount_usd": "20"},
        {"practice_id": "p2"},
        {"source": "manual"},
    ],
)
def test_the_same_reference_for_other_money_is_a_conflict_and_writes_nothing(
    budget: Budget, changed: dict[str, str]
) -> None:
    open_practice(budget, "p1")
    open_practice(budget, "p2")
    budget.grant_credit("p1", amount_usd="10", source="purchase", reference="pi_1")
    before = money_tables(budget)
    grant = {"practice_id": "p1", "amount_usd": "10", "source": "purchase", **changed}
    with pytest.raises(Conflict) as conflict:
        budget.grant_credit(grant.pop("practice_id"), reference="pi_1", **grant)  # type: ignore[arg-type]
    assert conflict.value.field == "reference"
    assert money_tables(budget) == before


def in_the_past(now: datetime) -> datetime:
    return now - timedelta(seconds=1)


def right_now(now: datetime) -> datetime:
    return now


def naive_tomorrow(now: datetime) -> datetime:
    return (now + timedelta(days=1)).replace(tzinfo=None)


def past_the_year_9998(_now: datetime) -> datetime:
    """The year 10000 in UTC: it could be written, but not read back."""
    return datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14)))


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        pytest.param({"amount_usd": "0"}, "amount_usd", id="zero"),
        pytest.param({"amount_usd": "-5"}, "amount_usd", id="negative"),
        pytest.param({"amount_usd": "0.0000001"}, "amount_usd", id="below a micro-USD"),
        pytest.param({"amount_usd": 10.5}, "amount_usd", id="float"),
        pytest.param({"amount_usd": "ten"}, "amount_usd", id="words"),
        pytest.param({"amount_usd": "1e3"}, "amount_usd", id="exponent"),
        pytest.param({"amount_usd": "1_000"}, "amount_usd", id="underscores"),
        pytest.param({"amount_usd": "NaN"}, "amount_usd", id="NaN"),
        pytest.param({"amount_usd": "Infinity"}, "amount_usd", id="infinite"),
        pytest.param({"amount_usd": True}, "amount_usd", id="boolean"),
        # 10^19 micro-USD does not fit a 64-bit column: a clear 422, not an OverflowError
        pytest.param({"amount_usd": "10000000000000"}, "amount_usd", id="overflowing amount"),
        pytest.param({"source": "gift"}, "source", id="unknown source"),
        pytest.param({"source": "PURCHASE"}, "source", id="source in capitals"),
        pytest.param({"reference": ""}, "reference", id="empty reference"),
        pytest.param({"reference": "x" * 201}, "reference", id="long reference"),
        pytest.param({"reference": "pi\n1"}, "reference", id="reference with a newline"),
        pytest.param({"reference": " "}, "reference", id="blank reference"),
        pytest.param({"reference": "gift\u200b-1"}, "reference", id="reference with a zero-width space"),
        pytest.param({"priority": -1}, "priority", id="negative priority"),
        pytest.param({"priority": 1_000_001}, "priority", id="priority too large"),
        pytest.param({"priority": 1.5}, "priority", id="float priority"),
        pytest.param({"priority": True}, "priority", id="boolean priority"),
        pytest.param({"expires_at": in_the_past}, "expires_at", id="expiry in the past"),
        pytest.param({"expires_at": right_now}, "expires_at", id="expiry now"),
        pytest.param({"expires_at": naive_tomorrow}, "expires_at", id="expiry without timezone"),
        pytest.param({"expires_at": past_the_year_9998}, "expires_at", id="expiry past the year 9998"),
    ],
)
def test_a_bad_grant_is_refused_naming_the_field_and_writes_nothing(
    budget: Budget, clock: FakeClock, arguments: dict[str, object], field: str
) -> None:
    open_practice(budget)
    before = money_tables(budget)
    grant = {"amount_usd": "10", "source": "purchase", "reference": "pi_1", **arguments}
    expires_at = grant.get("expires_at")
    if callable(expires_at):
        grant["expires_at"] = expires_at(clock.now)
    with pytest.raises(InvalidInput) as invalid:
        budget.grant_credit("p1", **grant)  # type: ignore[arg-type]
    assert invalid.value.field == field
    assert money_tables(budget) == before


def test_credit_for_an_unknown_practice_is_not_found(budget: Budget) -> None:
    with pytest.raises(NotFound):
        budget.grant_credit("nobody", amount_usd="10", source="purchase", reference="pi_1")
    with pytest.raises(NotFound):
        budget.grants("nobody")


def test_credit_waits_while_no_subscription_grants_access(budget: Budget) -> None:
    open_practice(budget, status="canceled")
    budget.grant_credit("p1", amount_usd="10", source="purchase", reference="pi_1")
    snapshot = budget.snapshot("p1")
    assert (snapshot.extra_credit_remaining_usd, snapshot.available_usd) == (Decimal(10), Decimal(0))


def test_grants_are_listed_oldest_first(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget)
    budget.grant_credit("p1", amount_usd="1", source="promo", reference="a", priority=5)
    clock.advance(minutes=1)
    budget.grant_credit(
        "p1", amount_usd="2", source="refund", reference="b", expires_at=clock() + timedelta(days=9)
    )
    assert [(g.reference, g.amount_micros, g.priority) for g in budget.grants("p1")] == [
        ("a", USD, 5),
        ("b", 2 * USD, 100),
    ]


def _rename(budget: Budget, old: str, new: str) -> None:
    with budget.engine.begin() as connection:
        connection.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")


def test_a_failing_credit_path_raises_instead_of_dropping_purchased_credit(budget: Budget) -> None:
    """Regression "purchased credit silently dropped when the credit path fails".

    The credit grants table is made unreadable by a real database fault while the practice depends
    on its credit. The settle must fail loudly and write nothing; never record the call as if there
    were no credit (as overage, or paid from nothing).
    """
    open_practice(budget)
    transcribe(budget, "month", usd="20")
    grant = budget.grant_credit("p1", amount_usd="10", source="purchase", reference="pi_1")
    before = money_tables(budget)
    snapshot_before = budget.snapshot("p1")

    _rename(budget, "credit_grants", "credit_grants_broken")
    try:
        with pytest.raises(DatabaseError):
            transcribe(budget, "needs-credit", usd="3")
        assert budget.snapshot("p1") == snapshot_before
        assert len(usage_events(budget)) == 1
    finally:
        _rename(budget, "credit_grants_broken", "credit_grants")

    assert money_tables(budget) == before
    event = transcribe(budget, "needs-credit", usd="3")
    assert event.allocations == (Allocation("credit", 3 * USD, grant.grant_id),)
    assert budget.snapshot("p1").extra_credit_remaining_usd == Decimal(7)
    assert budget.verify() == []
