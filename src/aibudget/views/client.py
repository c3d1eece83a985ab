"""The client (desktop) view of a practice's budget: percent available, warning, renewal date, label.

What the desktop shows is derived from the operator `Snapshot` with integer arithmetic only:

- the percent base is what the customer has this period, `included + extra credit remaining`;
- `available_percent` is floor(available * 100 / base) clamped to 0..100, and it is 0 *only* when
  the practice is blocked: a practice with anything left sees at least 1 %, never a misleading 0 %;
- `show_warning` is true when availability is below the practice's warning threshold — including
  under 1 % (the old module hid the warning there) and when blocked;
- the renewal date is the date of `period_end` (the exclusive end instant) in the practice's
  timezone, not the server's: the day the allowance renews where the practice is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from aibudget.views import texts

if TYPE_CHECKING:
    from aibudget.views.snapshot import Snapshot

WarningLevel = Literal["none", "low", "exhausted"]


@dataclass(frozen=True, slots=True)
class ClientView:
    """What the desktop app shows about the practice's AI allowance, already localized."""

    available_percent: int  # 0 only when blocked; otherwise 1..100
    show_warning: bool
    warning_level: WarningLevel
    user_label: str
    period_end: int | None  # Unix seconds, as in the snapshot
    renewal_date: str | None  # ISO date in the practice's timezone
    renewal_date_display: str | None
    extra_credit_active: bool
    locale: str

    def as_json(self) -> dict[str, object]:
        """The view as the HTTP API renders it; every value is a str, int, bool or None."""
        return {
            "available_percent": self.available_percent,
            "show_warning": self.show_warning,
            "warning_level": self.warning_level,
            "user_label": self.user_label,
            "period_end": self.period_end,
            "renewal_date": self.renewal_date,
            "renewal_date_display": self.renewal_date_display,
            "extra_credit_active": self.extra_credit_active,
            "locale": self.locale,
        }


def percent_base_micros(snapshot: Snapshot) -> int:
    """What the customer has this period: the included budget plus the extra credit still left."""
    return snapshot.included_micros + snapshot.extra_credit_remaining_micros


def available_percent(snapshot: Snapshot) -> int:
    """Whole percent of the base still available: 0 only when blocked, at least 1 otherwise."""
    base = percent_base_micros(snapshot)
    if snapshot.blocked or base <= 0:
        return 0
    return max(1, min(100, snapshot.available_micros * 100 // base))


def shows_warning(snapshot: Snapshot) -> bool:
    """Blocked, or availability strictly below `warning_percent` of the base."""
    if snapshot.blocked:
        return True
    return snapshot.available_micros * 100 < snapshot.warning_percent * percent_base_micros(snapshot)


def warning_level(snapshot: Snapshot) -> WarningLevel:
    """`exhausted` when blocked, `low` when the warning shows, else `none`."""
    return "exhausted" if snapshot.blocked else "low" if shows_warning(snapshot) else "none"


def renewal_date(snapshot: Snapshot) -> date | None:
    """The day the allowance renews: the date of `period_end` in the practice's timezone."""
    if snapshot.period_end is None:
        return None
    return datetime.fromtimestamp(snapshot.period_end, ZoneInfo(snapshot.timezone)).date()


def client_view(snapshot: Snapshot, *, locale: str) -> ClientView:
    """The desktop's view of `snapshot`, with texts and dates in `locale`."""
    percent = available_percent(snapshot)
    if snapshot.subscription_id is None:
        label = texts.text("AI not included: no active subscription", locale)
    elif snapshot.blocked:
        label = texts.text("AI allowance used up", locale)
    else:
        label = texts.text(
            "AI allowance: {percent} available", locale, percent=texts.format_percent(percent, locale)
        )
    renews = renewal_date(snapshot)
    return ClientView(
        available_percent=percent,
        show_warning=shows_warning(snapshot),
        warning_level=warning_level(snapshot),
        user_label=label,
        period_end=snapshot.period_end,
        renewal_date=renews.isoformat() if renews is not None else None,
        renewal_date_display=texts.format_date(renews, locale) if renews is not None else None,
        extra_credit_active=snapshot.extra_credit_remaining_micros > 0,
        locale=locale,
    )
