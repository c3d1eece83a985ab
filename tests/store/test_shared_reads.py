"""`Budget.consistent_reads`: the reads of one block see one committed state — what another process
commits meanwhile shows after the block, not halfway through it (a page whose numbers belong
together) — and a database that fails inside it answers `DatabaseUnavailable` like any read."""

from __future__ import annotations

from pathlib import Path

import pytest

from aibudget import Budget, DatabaseUnavailable, Settings
from tests.conftest import FakeClock
from tests.databases import PostgresServer
from tests.factories import open_practice
from tests.relay import relayed_budget


def test_reads_in_one_block_see_one_state_and_the_next_block_sees_the_new_one(
    budget: Budget, database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    open_practice(budget, "p1")
    budget.snapshot("p1")  # its first period is made now, not by a snapshot inside the block
    with Budget.open(database_url, settings=Settings.load(data_dir=tmp_path / "other"), clock=clock) as other:
        with budget.consistent_reads():
            grants_before = budget.grants("p1")
            credit_before = budget.snapshot("p1").extra_credit_remaining_micros
            other.grant_credit("p1", amount_usd="5", source="manual", reference="meanwhile")
            assert budget.grants("p1") == grants_before
            assert budget.snapshot("p1").extra_credit_remaining_micros == credit_before
            with budget.consistent_reads():  # nested: the same state still
                assert budget.grants("p1") == grants_before
        assert len(budget.grants("p1")) == len(grants_before) + 1
        assert budget.snapshot("p1").extra_credit_remaining_micros == credit_before + 5_000_000


def test_a_database_gone_inside_the_block_answers_database_unavailable(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    with relayed_budget(postgres, tmp_path / "var") as (budget, relay):
        open_practice(budget, "p1")
        with budget.consistent_reads():
            budget.grants("p1")
            relay.stop()  # every connection cut
            with pytest.raises(DatabaseUnavailable):  # from the read itself, for a caller in the block
                budget.grants("p1")
        relay.start()
        assert budget.grants("p1") == []  # served again, on a fresh connection
