"""The background sweeper releases expired holds on its own (G4: within TTL + one sweep interval),
each practice in a transaction of its own: a practice whose row another session holds locked keeps
no other practice's holds from expiring."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from aibudget import Budget, DatabaseUnavailable, InvalidInput, Settings
from aibudget.ledger.sweeper import Sweeper
from aibudget.store import tables
from tests.conftest import FakeClock
from tests.databases import PostgresServer, connect
from tests.factories import USD, create_practice, create_subscription, open_practice, rows, usage_events


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


# one transaction per practice


def hold(budget: Budget, request_id: str, practice_id: str) -> int:
    """Hold 30 seconds of whisper-1 (3,000 micro-USD) for the practice."""
    return budget.authorize(
        practice_id=practice_id,
        request_id=request_id,
        operation="transcribe",
        model="whisper-1",
        audio_seconds=30,
    ).held_micros


def statuses(budget: Budget) -> dict[str, str]:
    return {a.request_id: a.status for a in rows(budget, tables.authorizations)}


def test_a_sweep_releases_at_most_its_limit_of_holds_practice_by_practice_oldest_first(
    budget: Budget, clock: FakeClock
) -> None:
    """The practice whose hold is longest past its TTL goes first; the holds over the limit wait for the
    next pass; a practice with only a grant due is swept all the same."""
    for practice_id in ("p1", "p2", "p3"):
        open_practice(budget, practice_id)
    hold(budget, "r1", "p1")
    clock.advance(seconds=1)
    hold(budget, "r2", "p2")
    clock.advance(seconds=1)
    hold(budget, "r3", "p1")
    expiry = clock() + timedelta(seconds=1)
    budget.grant_credit("p3", amount_usd="1", source="promo", reference="promo-p3", expires_at=expiry)
    clock.advance(seconds=budget.settings.hold_ttl_seconds)

    assert budget.sweep(limit=2) == 2
    assert statuses(budget) == {"r1": "expired", "r2": "active", "r3": "expired"}
    (grant,) = rows(budget, tables.credit_grants)
    assert (grant.remaining_micros, grant.expired_micros) == (0, USD)
    assert budget.sweep(limit=2) == 1
    assert statuses(budget) == {"r1": "expired", "r2": "expired", "r3": "expired"}
    assert [b.held_micros for b in rows(budget, tables.balances)] == [0, 0, 0]
    assert budget.verify() == []


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_a_sweep_limit_that_is_no_count_of_holds_is_refused(budget: Budget, limit: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        budget.sweep(limit=limit)  # type: ignore[arg-type]
    assert refused.value.field == "limit"


@contextmanager
def locked_by_another_session(url: str, practice_id: str) -> Iterator[None]:
    """The practice's balance row held `FOR UPDATE` by a transaction left open, as a stuck session would."""
    with connect(url) as connection:
        connection.autocommit = False
        connection.execute("SELECT 1 FROM balances WHERE practice_id = %s FOR UPDATE", (practice_id,))
        yield
        connection.rollback()


def test_a_practice_locked_past_the_lock_timeout_holds_up_no_other_practices_expiry(
    postgres: PostgresServer, tmp_path: Path, clock: FakeClock
) -> None:
    """PostgreSQL, whose writers lock one practice's row: the locked practice's sweep fails after the
    lock timeout (lowered here to 0.3 s), spends none of the sweep's limit — although it has as many
    holds past their TTL as the limit, and the oldest — and is raised, but only after every other
    practice's holds were released; once the row is free, the next sweep releases its holds too."""
    url = postgres.create_database()
    timed = make_url(url).update_query_dict({"options": "-c lock_timeout=300"}).render_as_string(False)
    try:
        with Budget.open(timed, settings=Settings.load(data_dir=tmp_path / "var"), clock=clock) as budget:
            open_practice(budget, "praxis-a")
            open_practice(budget, "praxis-b")
            hold(budget, "a1", "praxis-a")  # the oldest due holds: their practice is swept first
            hold(budget, "a2", "praxis-a")
            clock.advance(seconds=1)
            hold(budget, "b1", "praxis-b")
            clock.advance(seconds=budget.settings.hold_ttl_seconds)

            with locked_by_another_session(url, "praxis-a"), pytest.raises(DatabaseUnavailable) as failed:
                budget.sweep(limit=2)
            assert "released 1 expired hold(s)" in str(failed.value)
            assert "1 practice(s) could not be swept ('praxis-a')" in str(failed.value)
            timed_out = failed.value.__cause__.__cause__  # type: ignore[union-attr]
            assert getattr(timed_out, "orig", None).sqlstate == "55P03"  # type: ignore[union-attr]
            assert budget.snapshot("praxis-b").held_micros == 0
            assert budget.snapshot("praxis-a").held_micros == 6_000
            assert [(e.request_id, e.status) for e in usage_events(budget)] == [("b1", "expired")]

            assert budget.sweep(limit=2) == 2
            assert budget.snapshot("praxis-a").held_micros == 0
            assert statuses(budget) == {"a1": "expired", "a2": "expired", "b1": "expired"}
            assert budget.sweep() == 0
            assert budget.verify() == []
    finally:
        postgres.drop_database(url)
