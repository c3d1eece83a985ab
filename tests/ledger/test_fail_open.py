"""Admissions without a hold (fail-open): kept until written, written once, never past the journal's
limit, never lost with the process that made them. End to end — a server whose database goes away —
in tests/api/test_database_unavailable.py."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aibudget import Budget, Settings
from aibudget.errors import DatabaseUnavailable, InvalidInput
from aibudget.ledger.fail_open import JOURNAL_DIRECTORY, Admission, AdmissionJournal
from aibudget.ledger.journal import ABANDONED_AFTER_SECONDS, JournalFull
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


def test_a_full_journal_admits_no_more_but_replays(tmp_path: Path, clock: FakeClock) -> None:
    journal = AdmissionJournal(tmp_path / JOURNAL_DIRECTORY, limit=2)
    journal.admit(admission("r1", clock))
    journal.admit(admission("r2", clock))
    assert journal.admit(admission("r1", clock)).replayed
    with pytest.raises(JournalFull):
        journal.admit(admission("r3", clock))


# admits two calls, says which, and waits to be killed
ADMITTING_PROCESS = """
import json, sys, time
from pathlib import Path
from aibudget import Budget, Settings
budget = Budget.open(sys.argv[1], settings=Settings.load(data_dir=Path(sys.argv[2])))
letter = json.loads(sys.argv[3])
ids = [budget.admit_without_hold(practice_id="p1", request_id=r, **letter).admission_id for r in ("r1", "r2")]
print(json.dumps(ids), flush=True)
time.sleep(600)
"""


def test_admissions_outlive_a_killed_process(budget: Budget, database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"  # the `budget` fixture's: the same server's next process
    process = subprocess.Popen(
        [sys.executable, "-c", ADMITTING_PROCESS, database_url, str(data_dir), json.dumps(LETTER)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        admitted = json.loads(process.stdout.readline())
        assert budget.record_admissions() == 0  # a living process's journal is its own
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    [left] = (data_dir / JOURNAL_DIRECTORY).glob("*.jsonl")
    with left.open("a") as cut_short:  # as if it had died writing a third, never admitted
        cut_short.write('{"practice_id": "p1", "request_id": "r3", "oper')

    assert budget.record_admissions() == 2
    recorded = budget.fail_open_admissions("p1")
    assert [(a.request_id, a.admission_id, a.estimate_micros) for a in recorded] == [
        ("r1", admitted[0], 450),
        ("r2", admitted[1], 450),
    ]
    assert list((data_dir / JOURNAL_DIRECTORY).iterdir()) == []
    assert budget.record_admissions() == 0


# Admits r1, then r2 with room on the "disk" for 20 bytes of its line only (the file size limit
# stands for a full disk), then r3 once there is room again, and dies without closing its journal.
APPENDING_PROCESS = """
import os, resource, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from aibudget.ledger.fail_open import Admission, AdmissionJournal
from aibudget.ledger.journal import JournalUnwritable
directory = Path(sys.argv[1])
journal = AdmissionJournal(directory)
def admit(request_id):
    journal.admit(Admission("p1", request_id, "letter", "gpt-4o-mini", 450, datetime.now(UTC)))
admit("r1")
[path] = directory.glob("*.jsonl")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 20, hard))
try:
    admit("r2")
except JournalUnwritable:
    print("r2 refused", flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
admit("r3")
os._exit(0)
"""


def test_an_admission_cut_short_by_a_full_disk_is_taken_back_out(budget: Budget, tmp_path: Path) -> None:
    directory = tmp_path / "var" / JOURNAL_DIRECTORY
    done = subprocess.run(
        [sys.executable, "-c", APPENDING_PROCESS, str(directory)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "r2 refused\n"), done.stderr
    assert budget.record_admissions() == 2
    assert [a.request_id for a in budget.fail_open_admissions("p1")] == ["r1", "r3"]
    assert list(directory.iterdir()) == []  # nothing set aside as unreadable


def test_a_journal_closed_with_admissions_waiting_leaves_them_to_the_next(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    settings = Settings.load(data_dir=tmp_path / "var")
    with Budget.open(database_url, settings=settings, clock=clock) as first:
        kept = first.admit_without_hold(practice_id="p1", request_id="r1", **LETTER)
    with Budget.open(database_url, settings=settings, clock=clock) as second:
        assert second.fail_open_admissions() == []
        assert second.record_admissions() == 1
        assert second.fail_open_admissions() == [kept]
        # a journal that wrote all it kept leaves no file behind
        second.admit_without_hold(practice_id="p1", request_id="r2", **LETTER)
        assert second.record_admissions() == 1
    assert list((tmp_path / "var" / JOURNAL_DIRECTORY).iterdir()) == []


def test_a_sweep_records_admissions_left_behind_even_with_fail_open_now_off(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    data_dir = tmp_path / "var"
    with Budget.open(
        database_url, settings=Settings.load(data_dir=data_dir, fail_open=True), clock=clock
    ) as first:
        kept = first.admit_without_hold(practice_id="p1", request_id="r1", **LETTER)
    with Budget.open(database_url, settings=Settings.load(data_dir=data_dir), clock=clock) as second:
        assert not second.settings.fail_open
        assert second.fail_open_admissions() == []
        assert second.sweep() == 0  # no hold expired; the admission is recorded all the same
        assert second.fail_open_admissions() == [kept]
    assert list((data_dir / JOURNAL_DIRECTORY).iterdir()) == []


def test_an_admission_the_journal_cannot_write_is_refused(budget: Budget, tmp_path: Path) -> None:
    (tmp_path / "var").mkdir(exist_ok=True)
    (tmp_path / "var" / JOURNAL_DIRECTORY).write_text("not a directory")
    with pytest.raises(DatabaseUnavailable, match="fail-open journal cannot be written"):
        budget.admit_without_hold(practice_id="p1", request_id="r1", **LETTER)
    (tmp_path / "var" / JOURNAL_DIRECTORY).unlink()
    assert budget.record_admissions() == 0
    assert budget.fail_open_admissions() == []


def test_an_unreadable_journal_file_is_set_aside_and_stops_no_other(
    budget: Budget, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kept = budget.admit_without_hold(practice_id="p1", request_id="r1", **LETTER)
    directory = tmp_path / "var" / JOURNAL_DIRECTORY
    (directory / "damaged.jsonl").write_text('{"practice_id": "p1"}\nnot json\n')
    assert budget.record_admissions() == 1
    assert budget.fail_open_admissions() == [kept]
    assert (directory / "damaged.unreadable").read_text() == '{"practice_id": "p1"}\nnot json\n'
    assert "damaged.jsonl is unreadable, set aside: line 1: no admission" in caplog.text


def test_a_journal_file_whose_maker_died_before_naming_it_is_removed(budget: Budget, tmp_path: Path) -> None:
    directory = tmp_path / "var" / JOURNAL_DIRECTORY
    directory.mkdir(parents=True)
    long_ago = os.stat(directory).st_mtime - ABANDONED_AFTER_SECONDS - 1
    abandoned, fresh, in_use = (directory / f"{name}.opening" for name in ("abandoned", "fresh", "in-use"))
    for path in (abandoned, fresh, in_use):
        path.touch()
    for path in (abandoned, in_use):
        os.utime(path, (long_ago, long_ago))
    with in_use.open("rb") as maker:  # its journal is between making and naming it
        fcntl.flock(maker, fcntl.LOCK_EX)
        assert budget.record_admissions() == 0
    assert sorted(path.name for path in directory.iterdir()) == ["fresh.opening", "in-use.opening"]
