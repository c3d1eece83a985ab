"""Usage reports filtered to one status, model or operation, through `Budget` on real databases, and
rendered as JSON and CSV like any other report."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from aibudget import Budget, BudgetExceeded
from aibudget.errors import InvalidInput
from aibudget.views import report as render
from tests.factories import open_practice, transcribe


@pytest.fixture
def calls(budget: Budget) -> Budget:
    """Two letters (one failed), one transcription, one voided hold and one refusal, in strict mode."""
    open_practice(budget, included_usd="1", policy="strict")
    for request_id, status in (("letter-1", "success"), ("letter-2", "error")):
        budget.settle(practice_id="p1", request_id=request_id, operation="letter", model="gpt-4o-mini",
                      input_tokens=1000, output_tokens=500, status=status)  # fmt: skip
    transcribe(budget, "dictation-1", usd="0.10")
    budget.authorize(practice_id="p1", request_id="never-made", operation="letter", model="gpt-4o",
                     input_tokens=100)  # fmt: skip
    budget.void(practice_id="p1", request_id="never-made")
    with pytest.raises(BudgetExceeded):
        budget.authorize(practice_id="p1", request_id="too-big", operation="letter", model="gpt-4o",
                         input_tokens=10**9)  # fmt: skip
    return budget


def request_ids(budget: Budget, **filters: Any) -> list[str]:
    return [row.request_id for row in budget.usage_report("p1", **filters).rows]


def test_events_are_filtered_by_status_model_and_operation(calls: Budget) -> None:
    assert request_ids(calls) == ["too-big", "never-made", "dictation-1", "letter-2", "letter-1"]
    assert request_ids(calls, status="error") == ["letter-2"]
    assert request_ids(calls, status="voided") == ["never-made"]
    assert request_ids(calls, model="gpt-4o") == ["too-big", "never-made"]
    assert request_ids(calls, operation="letter", status="success") == ["letter-1"]
    assert request_ids(calls, model="GPT-4O-MINI") == []  # exact, as sent
    assert request_ids(calls, operation="transcribe", limit=1) == ["dictation-1"]


def test_totals_are_filtered_too(calls: Budget) -> None:
    by_model = calls.usage_report("p1", group_by="model", operation="letter").rows
    assert [(row.key, row.calls, row.error, row.blocked) for row in by_model] == [
        ("gpt-4o-mini", 2, 1, 0), ("gpt-4o", 1, 0, 1)
    ]  # fmt: skip
    per_day = calls.usage_report("p1", group_by="day", status="blocked").rows
    assert [(row.calls, row.blocked) for row in per_day] == [(1, 1)]
    assert calls.usage_report("p1", group_by="operation", status="voided").rows == ()  # not calls


def test_a_filtered_report_renders_as_json_and_csv(calls: Budget) -> None:
    events = calls.usage_report("p1", status="error", model="gpt-4o-mini")
    totals = calls.usage_report("p1", group_by="operation", model="whisper-1")

    rendered = render.as_json(events)
    assert (rendered["status"], rendered["model"], rendered["operation"]) == ("error", "gpt-4o-mini", None)
    [row] = csv.DictReader(io.StringIO(render.to_csv(events)))
    assert (row["request_id"], row["status"], row["error_code"]) == ("letter-2", "error", "")
    assert row["cost_usd"] == rendered["rows"][0]["cost_usd"]
    [total] = csv.DictReader(io.StringIO(render.to_csv(totals)))
    assert (total["operation"], total["calls"], total["cost_usd"]) == ("transcribe", "1", "0.100000")


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"status": "refused"}, "status"),
        ({"status": "Success"}, "status"),
        ({"model": ""}, "model"),
        ({"model": "m" * 201}, "model"),
        ({"operation": "letter\x00"}, "operation"),
    ],
)
def test_a_bad_filter_names_its_field(calls: Budget, filters: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        calls.usage_report("p1", **filters)
    assert refused.value.field == field


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_no_csv_cell_a_caller_named_reads_as_a_formula_whatever_the_list_separator(
    budget: Budget, separator: str
) -> None:
    """Excel splits a CSV on the list separator of its region (`;` in de-CH, fr-CH): a caller's text
    cell is one cell there too, and never starts a formula."""
    open_practice(budget, included_usd="1")
    for request_id, model in (("r1", "gpt;=cmd|' /C calc'!A0;"), ("r2;=1+1;@SUM(A1)", "-2+3")):
        budget.settle(practice_id="p1", request_id=request_id, model=model, input_tokens=10)

    text = render.to_csv(budget.usage_report("p1"))

    rows = list(csv.reader(io.StringIO(text), delimiter=separator))
    assert [cell for row in rows for cell in row if cell.startswith(("=", "+", "-", "@"))] == []
    [r2, r1] = csv.DictReader(io.StringIO(text))  # the comma reading keeps the values, guarded
    assert (r1["request_id"], r1["model"]) == ("r1", "gpt;'=cmd|' /C calc'!A0;")
    assert (r2["request_id"], r2["model"]) == ("r2;'=1+1;'@SUM(A1)", "'-2+3")
