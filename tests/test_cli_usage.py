"""`aibudget usage report` filtered to one status, model or operation, run as the installed console
script against the database a library wrote; a bad filter exits 2 naming its option."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from aibudget import Budget, Settings
from tests.conftest import Aibudget


def test_usage_report_filters_by_status_model_and_operation(aibudget: Aibudget, workdir: Path) -> None:
    data_dir = workdir / "var"
    url = f"sqlite:///{data_dir / 'aibudget.sqlite3'}"
    with Budget.open(url, settings=Settings.load(data_dir=data_dir)) as budget:
        budget.put_practice("praxis-1")
        budget.put_subscription("sub_1", practice_id="praxis-1", status="active")
        calls = [("gpt-4o-mini", "letter", "success"), ("gpt-4o-mini", "letter", "error"),
                 ("whisper-1", "transcribe", "success")]  # fmt: skip
        for n, (model, operation, status) in enumerate(calls):
            budget.settle(
                practice_id="praxis-1", request_id=f"r{n}", model=model, operation=operation, status=status,
                input_tokens=1000, audio_seconds=60 * (model == "whisper-1"),
            )  # fmt: skip

    failed = aibudget("usage", "report", "praxis-1", "--status", "error", "--format", "json")
    assert failed.code == 0, failed.stderr
    assert [row["request_id"] for row in json.loads(failed.stdout)["rows"]] == ["r1"]
    letters = aibudget("usage", "report", "praxis-1", "--operation", "letter", "--model", "gpt-4o-mini",
                       "--group-by", "model", "--format", "csv")  # fmt: skip
    rows = csv.DictReader(io.StringIO(letters.stdout))
    assert [(row["model"], row["calls"], row["error"]) for row in rows] == [("gpt-4o-mini", "2", "1")]
    table = aibudget("usage", "report", "praxis-1", "--model", "whisper-1").stdout.splitlines()
    assert len(table) == 2
    assert "transcribe" in table[1]

    refused = aibudget("usage", "report", "praxis-1", "--status", "refused")
    assert (refused.code, refused.stdout) == (2, "")
    assert refused.message.startswith("Error: --status: 'refused' is not one of success, error, blocked")


def test_usage_admitted_lists_the_calls_let_through_without_a_hold(aibudget: Aibudget, workdir: Path) -> None:
    data_dir = workdir / "var"
    url = f"sqlite:///{data_dir / 'aibudget.sqlite3'}"
    with Budget.open(url, settings=Settings.load(data_dir=data_dir)) as budget:
        assert aibudget("usage", "admitted").stdout == "no call was admitted without a hold\n"
        kept = [budget.admit_without_hold(practice_id=practice_id, request_id=f"r-{practice_id}",
                                          operation="letter", model="gpt-4o-mini", input_tokens=1000,
                                          max_output_tokens=500)
                for practice_id in ("praxis-1", "praxis-2")]  # fmt: skip
        assert budget.record_admissions() == 2

    listed = aibudget("usage", "admitted", "--practice", "praxis-2", "--json")
    assert listed.code == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["request_id"], row["estimate_usd"], row["admission_id"]) == (
        "r-praxis-2", "0.000450", kept[1].admission_id,
    )  # fmt: skip
    table = aibudget("usage", "admitted").stdout.splitlines()
    assert table[0].split() == [
        "admitted_at",
        "practice_id",
        "request_id",
        "operation",
        "model",
        "estimate_usd",
    ]
    assert [line.split()[2] for line in table[1:]] == ["r-praxis-1", "r-praxis-2"]
