"""`aibudget usage report`, `admitted` and `prune`: a practice's ledger events or their totals per
day, model or operation, optionally of one status, model or operation; the calls admitted without a
hold while the database was unavailable (fail-open); removing old history without changing any
balance."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

import typer

from aibudget.cli import app, emit_json, emit_table, fail_on, open_budget
from aibudget.errors import InvalidInput
from aibudget.ledger.reports import DEFAULT_LIMIT, MAX_LIMIT, STATUSES, parse_bound
from aibudget.money import to_decimal
from aibudget.views import report as render

usage_app = typer.Typer(help="Usage reports.", no_args_is_help=True)
app.add_typer(usage_app, name="usage")

# a text table of events keeps to what fits a terminal; csv and json have every column
EVENT_TABLE = ("occurred_at", "status", "operation", "model", "input_tokens", "output_tokens",
               "audio_seconds", "cost_usd", "overage_usd", "request_id")  # fmt: skip


class GroupBy(StrEnum):
    day = "day"
    model = "model"
    operation = "operation"


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _parse(text: str | None, field: str) -> date | datetime | None:
    if text is None:
        return None
    try:
        return parse_bound(text, field=field)
    except InvalidInput as exc:
        fail_on(exc)


@usage_app.command(
    "report",
    epilog="Example: aibudget usage report praxis-muster --since 2026-11-01 --group-by day --format csv"
    "\n\nExample: aibudget usage report praxis-muster --status error --model gpt-4o-mini",
)
def report(
    ctx: typer.Context,
    practice_id: Annotated[str, typer.Argument(metavar="PRACTICE", help="The practice.")],
    since: Annotated[
        str | None, typer.Option(metavar="DATE", help="From this date or ISO time (in the practice's zone).")
    ] = None,
    until: Annotated[str | None, typer.Option(metavar="DATE", help="Up to, not including, this.")] = None,
    group_by: Annotated[GroupBy | None, typer.Option(help="Totals per group instead of events.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_LIMIT, help="Most events shown, newest first.")
    ] = DEFAULT_LIMIT,
    output: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
    status: Annotated[
        str | None, typer.Option(metavar="STATUS", help=f"Only events of this status: {', '.join(STATUSES)}.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only calls of this model, as sent.")] = None,
    operation: Annotated[str | None, typer.Option(help="Only calls of this operation.")] = None,
) -> None:
    """The events of PRACTICE in a range, newest first, or their totals per day, model or operation."""
    start, end = _parse(since, "since"), _parse(until, "until")
    with open_budget(ctx, {"practice_id": "PRACTICE"}) as budget:
        usage = budget.usage_report(
            practice_id, since=start, until=end, group_by=group_by.value if group_by else None, limit=limit,
            status=status, model=model, operation=operation,
        )  # fmt: skip
    if output is Format.json:
        emit_json(render.as_json(usage))
    elif output is Format.csv:
        typer.echo(render.to_csv(usage), nl=False)
    elif not usage.rows:
        typer.echo(f"no usage of {usage.practice_id} in this range")
    else:
        columns = EVENT_TABLE if usage.group_by is None else render.columns(usage.group_by)
        emit_table(render.rows_as_json(usage), columns)


@usage_app.command(
    "admitted",
    epilog="Example: aibudget usage admitted --practice praxis-muster --json",
)
def admitted(
    ctx: typer.Context,
    practice_id: Annotated[str | None, typer.Option("--practice", help="Only this practice's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """The calls admitted without a hold while the database was unavailable (AIBUDGET_FAIL_OPEN),
    oldest first; what each cost is charged by its settle, if one came."""
    with open_budget(ctx, {"practice_id": "--practice"}) as budget:
        rows = [
            {"admitted_at": admission.admitted_at, "practice_id": admission.practice_id,
             "request_id": admission.request_id, "operation": admission.operation, "model": admission.model,
             "estimate_usd": to_decimal(admission.estimate_micros), "admission_id": admission.admission_id}
            for admission in budget.fail_open_admissions(practice_id)
        ]  # fmt: skip
    if as_json:
        emit_json(rows)
    elif not rows:
        typer.echo("no call was admitted without a hold")
    else:
        emit_table(rows, list(rows[0])[:-1])  # the admission id is for matching, in JSON


@usage_app.command(
    "prune",
    epilog="Example: aibudget usage prune --before 2025-01-01",
)
def prune(
    ctx: typer.Context,
    before: Annotated[
        str, typer.Option(metavar="DATE", help="Remove what happened before this date (UTC) or ISO time.")
    ],
) -> None:
    """Remove old usage events and closed authorizations; no balance changes and verify still passes.

    What the removed events paid is kept as totals on their period and grant. A request id whose
    records are removed is no longer recognised as a replay: keep well behind any retry window.
    """
    cutoff = _parse(before, "before")
    assert cutoff is not None
    with open_budget(ctx) as budget:
        pruned = budget.prune_usage(cutoff)
    typer.echo(
        f"removed {pruned.events} usage events and {pruned.authorizations} closed authorizations "
        f"before {before}; balances unchanged"
    )
