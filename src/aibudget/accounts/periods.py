"""Billing period rules: which period an instant belongs to. Pure functions, no I/O.

A period is identified by `(subscription_id, period_start)`, never by its end:

- the provider moving `current_period_end` (a trial extended, a billing anchor changed) extends the
  same period; usage is never reset by it;
- a new period begins only when `current_period_start` moves;
- a subscription without period fields gets whole calendar months in the practice's timezone.
  They are fixed by the calendar, never "the last 30 days from now", so they do not move with the
  clock. When the practice's timezone changes, its months keep their usage and take the new zone's
  bounds (`same_month_in`): a month is never billed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class PeriodKey:
    subscription_id: str
    start: int  # Unix seconds
    end: int


def calendar_month(at: datetime, timezone: str) -> tuple[int, int]:
    """Start and end (Unix seconds) of the calendar month containing `at` in `timezone`."""
    local = at.astimezone(ZoneInfo(timezone))
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        following = start.replace(year=start.year + 1, month=1)
    else:
        following = start.replace(month=start.month + 1)
    # ZoneInfo computes the offset of each wall time itself, so a month that starts in summer time
    # and ends in winter time gets its true local midnight at both ends.
    return int(start.timestamp()), int(following.timestamp())


def same_month_in(start: int, timezone: str, other: str) -> tuple[int, int]:
    """The bounds in `other` of the calendar month that begins at `start` in `timezone`."""
    first = datetime.fromtimestamp(start, ZoneInfo(timezone))
    return calendar_month(first.replace(day=15, hour=12), other)


def period_for(
    subscription_id: str,
    current_period_start: int | None,
    current_period_end: int | None,
    *,
    at: datetime,
    timezone: str,
) -> PeriodKey:
    """The period a subscription is in at `at` (see module doc)."""
    if current_period_start is not None and current_period_end is not None:
        return PeriodKey(subscription_id, current_period_start, current_period_end)
    start, end = calendar_month(at, timezone)
    return PeriodKey(subscription_id, start, end)
