"""`aibudget notifications list`, `deliver` and `resend`: the log of notifications sent to the vendor's
backend, one delivery pass by hand (the server delivers on its own every `notify_interval_seconds`),
and failed ones sent again."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from aibudget.cli import app, emit_json, emit_table, fail, open_budget, settings
from aibudget.notify.outbox import MAX_LIMIT

notifications_app = typer.Typer(
    help="Notifications to your backend (AIBUDGET_NOTIFY_URL): the delivery log.", no_args_is_help=True
)
app.add_typer(notifications_app, name="notifications")

TABLE = ("created_at", "notification_id", "event_type", "practice_id", "status", "attempts",
         "last_status_code", "next_attempt_at", "last_error")  # fmt: skip


class Status(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class Format(StrEnum):
    table = "table"
    json = "json"


@notifications_app.command(
    "list",
    epilog="Example: aibudget notifications list --practice praxis-muster --status failed --format json",
)
def list_(
    ctx: typer.Context,
    practice: Annotated[str | None, typer.Option(metavar="ID", help="Only this practice's.")] = None,
    status: Annotated[Status | None, typer.Option(help="Only pending, delivered or failed ones.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIMIT, help="Most shown, newest first.")] = 100,
    output: Annotated[Format, typer.Option("--format", help="table or json (with payloads).")] = Format.table,
) -> None:
    """The notifications sent to your backend, newest first: attempts, last answer, next try."""
    with open_budget(ctx, {"practice_id": "--practice"}) as budget:
        found = budget.notifications(
            practice_id=practice, status=status.value if status else None, limit=limit
        )
    rows = [notification.as_json() for notification in found]
    if output is Format.json:
        emit_json(rows)
    elif not rows:
        typer.echo("no notifications")
    else:
        emit_table(rows, TABLE)


@notifications_app.command("deliver", epilog="Example: aibudget notifications deliver")
def deliver(ctx: typer.Context) -> None:
    """Send every notification due now, once (retries follow their backoff); print how many arrived."""
    if settings(ctx).notify_url is None:
        fail("notifications are off: set AIBUDGET_NOTIFY_URL and AIBUDGET_NOTIFY_SECRET")
    with open_budget(ctx) as budget:
        delivered = budget.deliver_notifications()
        pending = len(budget.notifications(status="pending", limit=MAX_LIMIT))
    more = "+" if pending == MAX_LIMIT else ""
    typer.echo(f"{delivered} notification(s) delivered; {pending}{more} pending")


@notifications_app.command(
    "resend",
    epilog="Example: aibudget notifications resend --practice praxis-muster   (or: resend ntf_…)",
)
def resend(
    ctx: typer.Context,
    notification_id: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", help="The failed notification; all failed ones without it."),
    ] = None,
    practice: Annotated[str | None, typer.Option(metavar="ID", help="Only this practice's.")] = None,
) -> None:
    """Send failed notifications again, with a new round of attempts, from the next delivery pass."""
    with open_budget(ctx, {"practice_id": "--practice", "notification_id": "ID"}) as budget:
        count = budget.resend_notifications(notification_id=notification_id, practice_id=practice)
    typer.echo(f"{count} notification(s) due again: the server sends them in its next pass "
               "(or run 'aibudget notifications deliver')")  # fmt: skip
