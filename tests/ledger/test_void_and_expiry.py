"""Void and expiry: every hold ends settled, voided or expired (G4), and grants retire at their expiry.

Holds live 10 minutes (the default TTL); `budget.sweep()` is the sweeper's pass. whisper-1 costs
100 micro-USD per second of audio.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from aibudget import Authorization, Budget, BudgetExceeded, Conflict, NotFound
from aibudget.ledger.waterfall import Allocation
from aibudget.store import tables
from tests.conftest import FakeClock
from tests.factories import USD, create_practice, open_practice, rows, transcribe, usage_events

events = tables.usage_events


def dictation(budget: Budget, request_id: str, seconds: int, practice_id: str = "p1") -> Authorization:
    return budget.authorize(
        practice_id=practice_id,
        request_id=request_id,
        operation="transcribe",
        model="whisper-1",
        audio_seconds=seconds,
    )


# void


def test_void_releases_the_hold_and_records_a_voided_event(budget: Budget) -> None:
    open_practice(budget)
    dictation(budget, "r1", 30)
    assert budget.snapshot("p1").held_micros == 3_000

    voided = budget.void(practice_id="p1", request_id="r1")
    assert (voided.status, voided.request_id) == ("voided", "r1")
    snapshot = budget.snapshot("p1")
    assert (snapshot.held_micros, snapshot.used_micros) == (0, 0)
    assert [(e.request_id, e.status, e.cost_micros) for e in usage_events(budget)] == [("r1", "voided", 0)]
    assert budget.verify() == []


def test_voiding_twice_returns_the_first_result_and_records_one_event(budget: Budget) -> None:
    open_practice(budget)
    dictation(budget, "r1", 30)
    first = budget.void(practice_id="p1", request_id="r1")
    again = budget.void(practice_id="p1", request_id="r1")
    assert again == first
    assert len(usage_events(budget, events.c.status == "voided")) == 1
    assert budget.snapshot("p1").held_micros == 0


def test_a_settled_request_cannot_be_voided_its_cost_stands(budget: Budget) -> None:
    open_practice(budget)
    dictation(budget, "r1", 30)
    transcribe(budget, "r1", usd="0.0025")
    with pytest.raises(Conflict) as conflict:
        budget.void(practice_id="p1", request_id="r1")
    assert conflict.value.field == "request_id"
    assert budget.snapshot("p1").used_micros == 2_500
    assert [e.status for e in usage_events(budget)] == ["success"]


def test_voiding_an_unknown_request_is_not_found(budget: Budget) -> None:
    open_practice(budget)
    with pytest.raises(NotFound) as missing:
        budget.void(practice_id="p1", request_id="never-authorized")
    assert missing.value.field == "request_id"
    assert usage_events(budget) == []


def test_a_request_of_another_practice_cannot_be_voided(budget: Budget) -> None:
    open_practice(budget, "praxis-a")
    open_practice(budget, "praxis-b")
    dictation(budget, "r1", 30, practice_id="praxis-a")
    with pytest.raises(NotFound):
        budget.void(practice_id="praxis-b", request_id="r1")
    assert budget.snapshot("praxis-a").held_micros == 3_000


# hold expiry


def test_a_hold_lives_for_its_ttl(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget)
    held = dictation(budget, "r1", 30)
    assert held.expires_at - held.created_at == timedelta(minutes=10)
    clock.advance(minutes=9, seconds=59)
    assert budget.sweep() == 0
    assert budget.snapshot("p1").held_micros == 3_000


def test_holds_expire_after_their_ttl_and_availability_is_restored(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget, included_usd="0.01")
    open_practice(budget, "p2", included_usd="0.01")
    dictation(budget, "r1", 40)
    dictation(budget, "r2", 60)
    dictation(budget, "r3", 25, practice_id="p2")
    assert budget.snapshot("p1").available_micros == 0

    clock.advance(minutes=10)
    assert budget.sweep() == 3

    for practice_id in ("p1", "p2"):
        snapshot = budget.snapshot(practice_id)
        assert (snapshot.held_micros, snapshot.available_micros) == (0, 10_000)
    assert sorted((e.request_id, e.status) for e in usage_events(budget)) == [
        ("r1", "expired"),
        ("r2", "expired"),
        ("r3", "expired"),
    ]
    assert {a.status for a in rows(budget, tables.authorizations)} == {"expired"}
    assert budget.sweep() == 0  # nothing twice
    assert budget.verify() == []


def test_no_hold_outlives_its_ttl_plus_one_sweep(budget: Budget, clock: FakeClock) -> None:
    """G4: authorized every minute for half an hour, swept every 30 seconds."""
    open_practice(budget)
    for minute in range(30):
        dictation(budget, f"r{minute}", 10)
        if minute % 3 == 0:
            transcribe(budget, f"r{minute}", usd="0.0009")
        elif minute % 3 == 1:
            budget.void(practice_id="p1", request_id=f"r{minute}")
        for _ in range(2):
            clock.advance(seconds=30)
            budget.sweep()
            overdue = [
                a
                for a in rows(budget, tables.authorizations)
                if a.status == "active" and a.expires_at <= clock.now - timedelta(seconds=30)
            ]
            assert overdue == []
    clock.advance(minutes=10)
    budget.sweep()
    assert {a.status for a in rows(budget, tables.authorizations)} == {"settled", "voided", "expired"}
    assert budget.snapshot("p1").held_micros == 0
    assert budget.verify() == []


def test_an_expired_hold_is_not_voided_again(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget)
    dictation(budget, "r1", 30)
    clock.advance(minutes=11)
    budget.sweep()
    assert budget.void(practice_id="p1", request_id="r1").status == "expired"
    assert [e.status for e in usage_events(budget)] == ["expired"]


# grant expiry


def test_a_grant_retires_at_its_expiry_and_the_books_still_balance(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget)
    transcribe(budget, "month", usd="20")
    expiry = clock() + timedelta(days=1)
    grant = budget.grant_credit("p1", amount_usd="5", source="promo", reference="promo-1", expires_at=expiry)
    transcribe(budget, "call", usd="2")
    assert budget.snapshot("p1").extra_credit_remaining_usd == 3

    clock.advance(days=1)
    snapshot = budget.snapshot("p1")
    assert (snapshot.extra_credit_remaining_micros, snapshot.available_micros) == (0, 0)
    (row,) = rows(budget, tables.credit_grants)
    assert (row.grant_id, row.remaining_micros, row.expired_micros) == (grant.grant_id, 0, 3 * USD)
    assert row.expired_at == expiry
    assert budget.grants("p1")[0].expired_at == expiry
    assert budget.verify() == []


def test_the_sweeper_retires_due_grants_of_every_practice(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget, "p1")
    open_practice(budget, "p2")
    for practice_id in ("p1", "p2"):
        budget.grant_credit(
            practice_id,
            amount_usd="1",
            source="promo",
            reference=f"promo-{practice_id}",
            expires_at=clock() + timedelta(hours=1),
        )
    budget.grant_credit("p2", amount_usd="2", source="purchase", reference="pi_lasting")
    clock.advance(hours=1)
    budget.sweep()
    assert [
        (g.reference, g.remaining_micros, g.expired_micros) for g in rows(budget, tables.credit_grants)
    ] == [
        ("promo-p1", 0, USD),
        ("promo-p2", 0, USD),
        ("pi_lasting", 2 * USD, 0),
    ]
    assert [b.credit_micros for b in rows(budget, tables.balances)] == [0, 2 * USD]
    assert budget.verify() == []


def test_an_expired_grant_is_never_spent_even_before_the_sweeper_runs(
    budget: Budget, clock: FakeClock
) -> None:
    open_practice(budget, policy="strict")
    transcribe(budget, "month", usd="20")
    budget.grant_credit(
        "p1", amount_usd="1", source="promo", reference="promo-1", expires_at=clock() + timedelta(hours=1)
    )
    assert dictation(budget, "fits", 100).held_micros == 10_000
    budget.void(practice_id="p1", request_id="fits")

    clock.advance(hours=2)  # no sweep
    with pytest.raises(BudgetExceeded) as refused:
        dictation(budget, "after-expiry", 1)
    assert refused.value.reason == "included_exhausted_no_credit"

    late = transcribe(budget, "recorded-anyway", usd="0.5")
    assert late.allocations == (Allocation("overage", 500_000),)
    (grant,) = rows(budget, tables.credit_grants)
    assert (grant.remaining_micros, grant.expired_micros) == (0, USD)
    assert budget.verify() == []


def test_strict_never_overspends_when_a_grant_expires_while_a_hold_counts_on_it(
    budget: Budget, clock: FakeClock
) -> None:
    """Strict promises zero overspend. A hold that counted on a grant expiring before the hold can
    end must either be refused up front or, once settled, not turn into overage."""
    open_practice(budget, policy="strict")
    transcribe(budget, "month", usd="20")
    budget.grant_credit(
        "p1", amount_usd="1", source="promo", reference="promo-1", expires_at=clock() + timedelta(minutes=5)
    )
    try:
        dictation(budget, "r1", 5_000)  # 0.5 USD, held against the grant that expires in 5 minutes
    except BudgetExceeded:
        return  # refused up front: strict kept its promise
    clock.advance(minutes=6)  # the call took 6 minutes; the grant expired meanwhile
    event = budget.settle(practice_id="p1", request_id="r1", model="whisper-1", audio_seconds=5_000)
    assert event.overage_micros == 0
    assert budget.snapshot("p1").overage_micros == 0


def test_a_request_settled_without_an_authorization_cannot_be_voided_either(budget: Budget) -> None:
    open_practice(budget)
    transcribe(budget, "r1", usd="0.0025")  # recorded after the call, never authorized
    with pytest.raises(Conflict):
        budget.void(practice_id="p1", request_id="r1")
    assert budget.snapshot("p1").used_micros == 2_500


def test_a_practice_without_a_subscription_gets_its_budget_back_from_void_and_settle(budget: Budget) -> None:
    """No current period: the snapshot each answer carries is still made (regression: a 500)."""
    create_practice(budget, "p1")
    with pytest.raises(BudgetExceeded):
        dictation(budget, "r1", 30)
    voided = budget.void(practice_id="p1", request_id="r1")
    assert voided.status == "refused"
    assert voided.budget is not None
    assert voided.budget.available_micros == 0
    event = budget.settle(practice_id="p1", request_id="r2", model="gpt-4o-mini", input_tokens=10)
    assert event.budget is not None
    assert (event.budget.practice_id, event.cost_micros) == ("p1", 2)
    assert budget.verify() == []
