"""The funding waterfall: included budget first, then grants by (priority, earliest expiry, oldest),
then overage for whatever is left. Every micro-USD of a cost lands in exactly one allocation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aibudget.ledger.waterfall import Allocation, GrantFunds, allocate, funding_order

NOW = datetime(2026, 11, 15, 9, 30, tzinfo=UTC)
SOON, LATER = NOW + timedelta(days=7), NOW + timedelta(days=90)


def grant(
    grant_id: int, remaining: int, *, priority: int = 100, expires_at: datetime | None = None
) -> GrantFunds:
    return GrantFunds(grant_id, remaining, priority, expires_at)


def ids(grants: list[GrantFunds]) -> list[int]:
    return [g.grant_id for g in grants]


# funding_order


def test_a_lower_priority_number_pays_first_whatever_the_expiry() -> None:
    promo = grant(1, 500, priority=100, expires_at=SOON)
    refund = grant(2, 500, priority=10)
    assert ids(funding_order([promo, refund])) == [2, 1]


def test_within_a_priority_the_grant_expiring_soonest_pays_first() -> None:
    never, later, soon = grant(1, 500), grant(2, 500, expires_at=LATER), grant(3, 500, expires_at=SOON)
    assert ids(funding_order([never, later, soon])) == [3, 2, 1]


def test_a_grant_without_expiry_pays_after_every_expiring_one_of_its_priority() -> None:
    never = grant(1, 500)
    far = grant(2, 500, expires_at=NOW + timedelta(days=3650))
    assert ids(funding_order([never, far])) == [2, 1]


def test_among_equals_the_oldest_grant_pays_first() -> None:
    assert ids(funding_order([grant(7, 1), grant(3, 1), grant(5, 1)])) == [3, 5, 7]
    same_day = [grant(9, 1, expires_at=SOON), grant(4, 1, expires_at=SOON)]
    assert ids(funding_order(same_day)) == [4, 9]


# allocate


def test_the_included_budget_pays_first() -> None:
    assert allocate(600, included_remaining_micros=1_000, grants=[grant(1, 5_000)]) == [
        Allocation("included", 600)
    ]


def test_grants_pay_what_the_included_budget_cannot_in_funding_order() -> None:
    grants = [grant(1, 300), grant(2, 200, expires_at=SOON), grant(3, 50, priority=1)]
    assert allocate(1_000, included_remaining_micros=400, grants=grants) == [
        Allocation("included", 400),
        Allocation("credit", 50, 3),
        Allocation("credit", 200, 2),
        Allocation("credit", 300, 1),
        Allocation("overage", 50),
    ]


def test_what_nothing_funds_is_overage_never_dropped() -> None:
    assert allocate(2_500, included_remaining_micros=0, grants=[]) == [Allocation("overage", 2_500)]


def test_empty_grants_and_an_overdrawn_included_budget_pay_nothing() -> None:
    assert allocate(700, included_remaining_micros=-50, grants=[grant(1, 0)]) == [Allocation("overage", 700)]


def test_a_free_call_has_no_allocations() -> None:
    assert allocate(0, included_remaining_micros=1_000, grants=[grant(1, 10)]) == []


def test_a_negative_cost_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        allocate(-1, included_remaining_micros=1_000, grants=[])


# the property: any cost, any pots

expiries = st.one_of(st.none(), st.integers(0, 400).map(lambda days: NOW + timedelta(days=days)))


@st.composite
def grant_lists(draw: st.DrawFn) -> list[GrantFunds]:
    count = draw(st.integers(0, 6))
    ids_ = draw(st.lists(st.integers(1, 10_000), min_size=count, max_size=count, unique=True))
    return [
        grant(
            grant_id,
            draw(st.integers(0, 5_000_000)),
            priority=draw(st.integers(0, 3)),
            expires_at=draw(expiries),
        )
        for grant_id in ids_
    ]


@given(
    cost=st.integers(0, 30_000_000),
    included=st.integers(-1_000, 20_000_000),
    grants=grant_lists(),
)
def test_allocations_always_add_up_to_the_cost_in_waterfall_order(
    cost: int, included: int, grants: list[GrantFunds]
) -> None:
    split = allocate(cost, included_remaining_micros=included, grants=grants)

    assert sum(part.amount_micros for part in split) == cost
    assert all(part.amount_micros > 0 for part in split)
    pots = [part.pot for part in split]
    assert pots == sorted(pots, key=["included", "credit", "overage"].index)
    assert pots.count("included") <= 1
    assert pots.count("overage") <= 1

    included_part = sum(part.amount_micros for part in split if part.pot == "included")
    assert included_part == min(cost, max(0, included))

    remaining = {g.grant_id: g.remaining_micros for g in grants}
    credit = [part for part in split if part.pot == "credit"]
    assert all(part.amount_micros <= remaining[part.grant_id] for part in credit if part.grant_id)
    paying = [g.grant_id for g in funding_order(grants) if g.remaining_micros > 0]
    assert [part.grant_id for part in credit] == paying[: len(credit)]
    # every grant but the last that paid was emptied: a later grant never pays while an earlier has money
    assert all(part.amount_micros == remaining[part.grant_id] for part in credit[:-1] if part.grant_id)

    overage = sum(part.amount_micros for part in split if part.pot == "overage")
    funding = max(0, included) + sum(g.remaining_micros for g in grants)
    assert overage == max(0, cost - funding)


@given(grants=grant_lists())
def test_funding_order_is_a_permutation_sorted_by_priority_expiry_and_age(grants: list[GrantFunds]) -> None:
    ordered = funding_order(grants)
    assert sorted(ids(ordered)) == sorted(ids(grants))
    keys = [(g.priority, g.expires_at is None, g.expires_at or LATER, g.grant_id) for g in ordered]
    assert all(
        (a[0], a[1]) < (b[0], b[1]) or ((a[0], a[1]) == (b[0], b[1]) and (a[2], a[3]) < (b[2], b[3]))
        for a, b in pairwise(keys)
    )
