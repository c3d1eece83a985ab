"""Admissions without a hold (fail-open): kept until written, written once, never past the journal's
limit. End to end — a server whose database goes away — in tests/api/test_database_unavailable.py."""

from __future__ import annotations

import pytest

from aibudget import Budget
from aibudget.errors import InvalidInput
from aibudget.ledger.fail_open import Admission, Journal, JournalFull
from tests.conftest import FakeClock

LETTER = {"operation": "letter", "model": "gpt-4o-mini", "input_tokens": 1000, "max_output_tokens": 500}


def admission(request_id: str, clock: FakeClock) -> Admission:
    return Admission("p1", request_id, "letter", "gpt-4o-mini", 450, clock())


def test_an_admission_is_priced_kept_and_written_once(budget: Budget, clock: FakeClock) -> None:
    first = budget.admit_without_hold(practice_id="p1", request_id="r1", **LETTER)
    again = budget.admit_without_hold(practice_id="p1", request_id="r1", **LETTER)
    assert (first.estimate_micros, first.replayed) == (450, False)  # 1000 x 0.15 + 500 x 0.60 per million
    assert (again.admission_id, again.replayed) == (first.admission_id, True)
    assert budget.fail_open_admissions() == []

    clock.advance(seconds=5)
    assert budget.record_admissions() == 1
    assert budget.record_admissions() == 0
    assert budget.fail_open_admissions("p1") == [first]
    # a replay after it was written is admitted again, and the database keeps the first row
    budget.admit_without_hold(practice_id="p1", request_id="r1", **LETTER)
    assert budget.record_admissions() == 1
    assert budget.fail_open_admissions() == [first]
    assert budget.fail_open_admissions("another") == []


@pytest.mark.parametrize(
    ("change", "field"),
    [({"request_id": "has space"}, "request_id"), ({"practice_id": "no/slash"}, "practice_id"),
     ({"operation": ""}, "operation"), ({"model": ""}, "model"),
     ({"max_output_tokens": -1}, "estimate.max_output_tokens")],
)  # fmt: skip
def test_a_bad_call_is_refused_not_admitted(budget: Budget, change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        budget.admit_without_hold(**{"practice_id": "p1", "request_id": "r1", **LETTER, **change})  # type: ignore[arg-type]
    assert refused.value.field == field
    assert budget.record_admissions() == 0


def test_a_full_journal_admits_no_more_but_replays(clock: FakeClock) -> None:
    journal = Journal(limit=2)
    journal.admit(admission("r1", clock))
    journal.admit(admission("r2", clock))
    assert journal.admit(admission("r1", clock)).replayed
    with pytest.raises(JournalFull):
        journal.admit(admission("r3", clock))
