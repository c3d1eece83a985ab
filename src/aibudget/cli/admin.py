"""Operator commands for accounts and money: `practice`, `plan`, `subscription`, `device`, `credit`.

Each command calls one `Budget` method and prints the stored result (`--json` for JSON). Times are
taken as Unix seconds or ISO 8601 with an offset (`2026-12-01T00:00:00Z`).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import typer

from aibudget.accounts.service import Device, Practice, Subscription
from aibudget.cli import app, emit, open_budget
from aibudget.credit.service import DEFAULT_PRIORITY, CreditGrant
from aibudget.money import format_usd

practice_app = typer.Typer(help="Practices: the tenants whose AI budgets are kept.", no_args_is_help=True)
plan_app = typer.Typer(help="Plans: the AI budget a subscription includes per period.", no_args_is_help=True)
subscription_app = typer.Typer(help="Subscriptions mirrored from the payment provider.", no_args_is_help=True)
device_app = typer.Typer(help="Desktop installations bound to a practice.", no_args_is_help=True)
credit_app = typer.Typer(help="Prepaid extra credit.", no_args_is_help=True)
app.add_typer(practice_app, name="practice")
app.add_typer(plan_app, name="plan")
app.add_typer(subscription_app, name="subscription")
app.add_typer(device_app, name="device")
app.add_typer(credit_app, name="credit")

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _instant(value: str) -> datetime:
    """ISO 8601 with an offset, or Unix seconds; a time without a zone is ambiguous and refused."""
    text = value.strip()
    try:
        instant = (
            datetime.fromtimestamp(int(text)).astimezone() if text.isdigit() else datetime.fromisoformat(text)
        )
    except (ValueError, OverflowError, OSError):
        raise typer.BadParameter(f"{value!r} is not Unix seconds or an ISO 8601 time") from None
    if instant.utcoffset() is None:
        raise typer.BadParameter(f"{value!r} needs a UTC offset, e.g. {text}Z or {text}+01:00")
    return instant


def _unix(value: str) -> int:
    return int(_instant(value).timestamp())


def _practice(practice: Practice) -> dict[str, Any]:
    return asdict(practice)


def _subscription(subscription: Subscription) -> dict[str, Any]:
    return asdict(subscription)


def _device(device: Device) -> dict[str, Any]:
    # the hash's suffix, as reports show it: the device id itself is never stored
    return {"practice_id": device.practice_id, "device_suffix": device.suffix,
            "user_key": device.user_key, "active": device.active}  # fmt: skip


def _grant(grant: CreditGrant) -> dict[str, Any]:
    return {
        "grant_id": grant.grant_id,
        "practice_id": grant.practice_id,
        "amount_usd": format_usd(grant.amount_micros),
        "remaining_usd": format_usd(grant.remaining_micros),
        "source": grant.source,
        "priority": grant.priority,
        "reference": grant.reference,
        "created_at": grant.created_at,
        "expires_at": grant.expires_at,
        "expired_at": grant.expired_at,
    }


@practice_app.command(
    "put", epilog="Example: aibudget practice put praxis-muster --name 'Praxis Muster' --policy strict"
)
def practice_put(
    ctx: typer.Context,
    practice_id: Annotated[str, typer.Argument(metavar="ID", help="1-64 characters of A-Z a-z 0-9 . _ : -")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    locale: Annotated[str | None, typer.Option(help="de-CH (default), fr-CH, it-CH, en-GB, ...")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA timezone, default Europe/Zurich.")] = None,
    policy: Annotated[str | None, typer.Option(help="allow_last_call (default) or strict.")] = None,
    warning_percent: Annotated[
        int | None, typer.Option(help="Warn the user below this % available (0-100, default 20).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Create practice ID, or change the fields given (the others keep their value)."""
    with open_budget(ctx, {"practice_id": "ID"}) as budget:
        practice = budget.put_practice(
            practice_id, name=name, locale=locale, timezone=timezone, policy=policy,
            warning_percent=warning_percent,
        )  # fmt: skip
    emit(_practice(practice), as_json)


@practice_app.command("show", epilog="Example: aibudget practice show praxis-muster --json")
def practice_show(
    ctx: typer.Context,
    practice_id: Annotated[str, typer.Argument(metavar="ID", help="The practice.")],
    as_json: AsJson = False,
) -> None:
    """The operator view of practice ID's budget now: USD included, used, held, left, overage."""
    with open_budget(ctx, {"practice_id": "ID"}) as budget:
        view = budget.snapshot(practice_id).as_json()
    if not as_json:
        auto_topup = view.pop("auto_topup")
        view |= {f"auto_topup_{key}": value for key, value in auto_topup.items()}
    emit(view, as_json)


@plan_app.command("put", epilog="Example: aibudget plan put basic --included-usd 20")
def plan_put(
    ctx: typer.Context,
    lookup_key: Annotated[str, typer.Argument(metavar="KEY", help="The price's lookup key.")],
    included_usd: Annotated[str, typer.Option(help="AI budget per period in USD, e.g. 20 or 7.50.")],
    as_json: AsJson = False,
) -> None:
    """Set the AI budget plan KEY includes per billing period."""
    with open_budget(ctx, {"lookup_key": "KEY"}) as budget:
        plan = budget.put_plan(lookup_key, included_usd=included_usd)
    emit({"lookup_key": plan.lookup_key, "included_usd": format_usd(plan.included_micros)}, as_json)


@subscription_app.command(
    "put",
    epilog="Example: aibudget subscription put sub_1 --practice praxis-muster --status active --plan basic "
    "--period-start 2026-12-01T00:00:00Z --period-end 2027-01-01T00:00:00Z",
)
def subscription_put(
    ctx: typer.Context,
    subscription_id: Annotated[str, typer.Argument(metavar="ID", help="The provider's subscription id.")],
    practice: Annotated[str, typer.Option(help="The practice it belongs to.")],
    status: Annotated[str, typer.Option(help="active, trialing, past_due, canceled, ...")],
    plan: Annotated[str | None, typer.Option(help="Plan lookup key; unknown: the default budget.")] = None,
    period_start: Annotated[
        int | None, typer.Option(parser=_unix, metavar="TIME", help="Current period start.")
    ] = None,
    period_end: Annotated[
        int | None, typer.Option(parser=_unix, metavar="TIME", help="Current period end.")
    ] = None,
    customer_id: Annotated[str | None, typer.Option(help="The provider's customer id.")] = None,
    customer_email: Annotated[str | None, typer.Option(help="The customer's billing e-mail.")] = None,
    updated_at: Annotated[
        int | None,
        typer.Option(parser=_unix, metavar="TIME", help="Provider's change time; older is ignored."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Mirror subscription ID as the payment provider has it (without a period: calendar months)."""
    names = {"subscription_id": "ID", "practice_id": "--practice", "current_period_start": "--period-start",
             "current_period_end": "--period-end"}  # fmt: skip
    with open_budget(ctx, names) as budget:
        subscription = budget.put_subscription(
            subscription_id, practice_id=practice, status=status, plan=plan,
            current_period_start=period_start, current_period_end=period_end, customer_id=customer_id,
            customer_email=customer_email, updated_at=updated_at,
        )  # fmt: skip
    emit(_subscription(subscription), as_json)


@device_app.command("bind", epilog="Example: aibudget device bind laptop-7f3a --practice praxis-muster")
def device_bind(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID", help="The X-Device-Id it sends.")],
    practice: Annotated[str, typer.Option(help="The practice whose budget it spends.")],
    user_key: Annotated[str | None, typer.Option(help="Who uses it, in your own terms.")] = None,
    as_json: AsJson = False,
) -> None:
    """Bind DEVICE_ID to a practice (again: reactivate it); only its keyed hash is stored."""
    with open_budget(ctx, {"device_id": "DEVICE_ID", "practice_id": "--practice"}) as budget:
        device = budget.bind_device(device_id, practice_id=practice, user_key=user_key)
    emit(_device(device), as_json)


@device_app.command("deactivate", epilog="Example: aibudget device deactivate laptop-7f3a")
def device_deactivate(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID", help="The X-Device-Id it sends.")],
    as_json: AsJson = False,
) -> None:
    """Stop DEVICE_ID from spending; it stays bound to its practice."""
    with open_budget(ctx, {"device_id": "DEVICE_ID"}) as budget:
        device = budget.deactivate_device(device_id)
    emit(_device(device), as_json)


@credit_app.command(
    "grant",
    epilog="Example: aibudget credit grant praxis-muster --amount-usd 10 --source manual --reference gift-1",
)
def credit_grant(
    ctx: typer.Context,
    practice_id: Annotated[str, typer.Argument(metavar="PRACTICE", help="The practice to credit.")],
    amount_usd: Annotated[str, typer.Option(help="Credit in USD, e.g. 10 or 12.50.")],
    source: Annotated[str, typer.Option(help="purchase, auto_topup, promo, manual or refund.")],
    reference: Annotated[str, typer.Option(help="Unique external reference: a repeat credits nothing.")],
    expires_at: Annotated[
        datetime | None, typer.Option(parser=_instant, metavar="TIME", help="When what is left expires.")
    ] = None,
    priority: Annotated[int, typer.Option(help="Lower pays first (0-1000000).")] = DEFAULT_PRIORITY,
    as_json: AsJson = False,
) -> None:
    """Add prepaid credit to PRACTICE, once per reference (a repeat shows the first grant)."""
    with open_budget(ctx, {"practice_id": "PRACTICE"}) as budget:
        grant = budget.grant_credit(
            practice_id, amount_usd=amount_usd, source=source, reference=reference, expires_at=expires_at,
            priority=priority,
        )  # fmt: skip
    emit(_grant(grant), as_json)
