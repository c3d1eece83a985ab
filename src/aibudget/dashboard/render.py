"""How the dashboard shows values: USD amounts, instants, the chart's series and the notices after
an action. Amounts stay `Decimal` from micro-USD to the page; the chart gets whole micro-USD."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aibudget.dashboard.data import BurnDown
from aibudget.money import format_usd
from aibudget.views import texts

NOTICES = {
    "credit-granted": "Credit granted.",
    "topup-paused": "Automatic top-up paused.",
    "topup-resumed": "Automatic top-up resumed.",
    "device-bound": "Device bound.",
    "device-deactivated": "Device deactivated.",
}
LOCALE = "en"  # the dashboard speaks English
NOTHING = "\N{EN DASH}"  # an amount or time that is not there


def usd(micros: int | None) -> str:
    """An amount for a summary, to the cent: 12_345_678 -> "$12.35"."""
    return NOTHING if micros is None else texts.format_usd_amount(micros, LOCALE)


def usd_exact(micros: int | None) -> str:
    """An amount to the micro-USD, as the ledger holds it: 2400 -> "$0.002400"."""
    return NOTHING if micros is None else "$" + format_usd(micros)


def minor(amount: int, currency: str) -> str:
    """A charge in the currency's minor units as a price: (2500, "chf") -> "CHF 25.00"."""
    return texts.format_money(amount, currency, LOCALE)


def when(instant: datetime | int | None, timezone: str = "UTC") -> str:
    """An instant (or Unix seconds) in `timezone` to the minute: "2026-11-28 14:05"."""
    if instant is None:
        return NOTHING
    if isinstance(instant, int):
        instant = datetime.fromtimestamp(instant, UTC)
    return instant.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")


def chart_data(burn_down: BurnDown) -> dict[str, Any]:
    """The burn-down chart's series: days as ISO dates, amounts in whole micro-USD."""
    return {
        "days": [entry.day.isoformat() for entry in burn_down.days],
        "spent": [entry.spent_micros for entry in burn_down.days],
        "included_left": [entry.included_left_micros for entry in burn_down.days],
        "included": burn_down.included_micros,
        "credit": burn_down.extra_credit_micros,
        "held": burn_down.held_micros,
    }


def notice(code: str | None) -> str | None:
    """The sentence for a notice code in the address after an action; unknown codes show nothing."""
    return NOTICES.get(code or "")
