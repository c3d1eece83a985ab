"""`aibudget topup`: a practice's automatic top-up — settings, pausing and resuming, its attempts."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer

from aibudget.cli import app, emit, emit_json, emit_table, open_budget
from aibudget.credit.topup import TopupSettings
from aibudget.money import format_usd

topup_app = typer.Typer(help="Automatic top-up of extra credit from the saved card.", no_args_is_help=True)
app.add_typer(topup_app, name="topup")

Practice = Annotated[str, typer.Argument(metavar="PRACTICE", help="The practice.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
NAMES = {"practice_id": "PRACTICE"}


def _settings(settings: TopupSettings) -> dict[str, Any]:
    view = asdict(settings)
    for field in ("threshold_micros", "package_micros", "monthly_max_micros"):
        micros = view.pop(field)
        view[field.replace("_micros", "_usd")] = None if micros is None else format_usd(micros)
    return view


@topup_app.command("show", epilog="Example: aibudget topup show praxis-muster")
def show(ctx: typer.Context, practice_id: Practice, as_json: AsJson = False) -> None:
    """PRACTICE's automatic top-up settings (off when never configured)."""
    with open_budget(ctx, NAMES) as budget:
        settings = budget.auto_topup(practice_id)
    emit(_settings(settings), as_json)


@topup_app.command(
    "set",
    epilog="Example: aibudget topup set praxis-muster --enabled --threshold-usd 2 --package-usd 25 "
    "--monthly-max-count 3 --monthly-max-usd 75",
)
def set_(
    ctx: typer.Context,
    practice_id: Practice,
    package_usd: Annotated[str, typer.Option(help="Credit bought per top-up, in USD (whole cents).")],
    monthly_max_count: Annotated[int, typer.Option(help="At most this many top-ups per calendar month.")],
    monthly_max_usd: Annotated[str, typer.Option(help="At most this much credit per calendar month.")],
    enabled: Annotated[bool, typer.Option("--enabled/--disabled", help="Turn top-up on or off.")] = True,
    threshold_usd: Annotated[
        str | None, typer.Option(help="Top up when less than this is available.")
    ] = None,
    threshold_percent: Annotated[
        int | None, typer.Option(help="… or less than this percentage of the included budget.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Set PRACTICE's automatic top-up (all settings at once; a pause is kept until `resume`)."""
    with open_budget(ctx, NAMES) as budget:
        settings = budget.put_auto_topup(
            practice_id, enabled=enabled, threshold_usd=threshold_usd, threshold_percent=threshold_percent,
            package_usd=package_usd, monthly_max_count=monthly_max_count, monthly_max_usd=monthly_max_usd,
        )  # fmt: skip
    emit(_settings(settings), as_json)


@topup_app.command("pause", epilog="Example: aibudget topup pause praxis-muster")
def pause(ctx: typer.Context, practice_id: Practice, as_json: AsJson = False) -> None:
    """Pause PRACTICE's automatic top-up: its card is not charged again until `resume`."""
    with open_budget(ctx, NAMES) as budget:
        settings = budget.pause_auto_topup(practice_id)
    emit(_settings(settings), as_json)


@topup_app.command("resume", epilog="Example: aibudget topup resume praxis-muster")
def resume(ctx: typer.Context, practice_id: Practice, as_json: AsJson = False) -> None:
    """Resume PRACTICE's automatic top-up after a pause, a declined card or a needed authentication."""
    with open_budget(ctx, NAMES) as budget:
        settings = budget.resume_auto_topup(practice_id)
    emit(_settings(settings), as_json)


@topup_app.command("attempts", epilog="Example: aibudget topup attempts praxis-muster --limit 20")
def attempts(
    ctx: typer.Context,
    practice_id: Practice,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 100,
    as_json: AsJson = False,
) -> None:
    """PRACTICE's automatic top-ups, newest first: charged amount, outcome, failure code."""
    with open_budget(ctx, NAMES) as budget:
        rows = [attempt.as_json() for attempt in budget.topup_attempts(practice_id, limit=limit)]
    if as_json:
        emit_json(rows)
    else:
        columns = [
            "created_at",
            "attempt_id",
            "status",
            "credit_usd",
            "charge_amount",
            "currency",
            "failure_code",
        ]
        emit_table(rows, columns)
