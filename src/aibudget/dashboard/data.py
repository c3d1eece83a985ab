"""What the operator dashboard shows, at the library level: the overview of all practices, the
burn-down of a practice's period with its spend per model and operation, and its devices. No HTTP
and no HTML here.

The overview is O(practices) per page view: every practice matching the search is computed, so that
sorting and counting see them all, at a few microseconds of Python each, in a constant number of
queries — the state rows of all matching practices in one (`ledger.repository.states`), and who has
a subscription and who is being charged a top-up in two more. A row that is not up to date (its
period ended, a grant expires within a hold's TTL: see `ledger.state.current_state`) takes the full
path of `Budget.snapshot`, which also brings the row up to date for the next view. Fine for
thousands of practices; far beyond that, sorting would have to move into the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from aibudget.accounts import repository as accounts_repository
from aibudget.accounts.service import Device, get_practice
from aibudget.credit import topup
from aibudget.errors import InvalidInput
from aibudget.ledger import reports, repository
from aibudget.ledger.reports import UsageTotals
from aibudget.ledger.state import LedgerRules, current_state
from aibudget.store.dialect import Transaction
from aibudget.views.client import WarningLevel, available_percent, warning_level
from aibudget.views.snapshot import Snapshot

TopupStatus = Literal["off", "on", "paused", "charging"]
MAX_PER_PAGE = 200
MAX_QUERY_CHARS = 200


@dataclass(frozen=True, slots=True)
class OverviewRow:
    """One practice in the overview; the numbers are those of `Budget.snapshot` and its client view."""

    practice_id: str
    name: str
    plan: str | None
    subscribed: bool  # whether a subscription grants AI access now; without, nothing is available
    available_percent: int
    warning_level: WarningLevel
    spend_micros: int  # all cost posted this period, whichever pot paid (the snapshot's `used_micros`)
    included_micros: int
    extra_credit_micros: int
    held_micros: int
    topup: TopupStatus  # `charging`: an automatic top-up is being charged now
    topup_paused_reason: str | None


@dataclass(frozen=True, slots=True)
class OverviewPage:
    """One page of the overview, and what was asked for; `pages` is at least 1."""

    rows: tuple[OverviewRow, ...]
    total: int  # practices matching `query`, on all pages
    page: int
    pages: int
    per_page: int
    query: str
    sort: str
    descending: bool


_SORT_KEYS: dict[str, Callable[[OverviewRow], Any]] = {
    "practice_id": lambda row: row.practice_id,
    "name": lambda row: row.name.casefold(),
    "plan": lambda row: (row.plan is None, row.plan or ""),
    "available_percent": lambda row: row.available_percent,
    "spend": lambda row: row.spend_micros,
}
SORTS = tuple(_SORT_KEYS)


def _check(query: str, sort: str, descending: bool, page: int, per_page: int) -> None:
    if not isinstance(query, str) or len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"query must be text of at most {MAX_QUERY_CHARS} characters", field="query")
    if sort not in _SORT_KEYS:
        raise InvalidInput(f"sort: {sort!r} is not one of {', '.join(SORTS)}", field="sort")
    if not isinstance(descending, bool):
        raise InvalidInput("descending must be true or false", field="descending")
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise InvalidInput("page must be a whole number from 1", field="page")
    if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidInput(f"per_page must be a whole number 1-{MAX_PER_PAGE}", field="per_page")


def _topup(snapshot: Snapshot, charging: bool) -> TopupStatus:
    if not snapshot.auto_topup.enabled:
        return "off"
    if snapshot.auto_topup.paused_reason is not None:
        return "paused"
    return "charging" if charging else "on"


def _row(name: str, snapshot: Snapshot, *, charging: bool) -> OverviewRow:
    return OverviewRow(
        practice_id=snapshot.practice_id,
        name=name,
        plan=snapshot.plan,
        subscribed=snapshot.subscription_id is not None,
        available_percent=available_percent(snapshot),
        warning_level=warning_level(snapshot),
        spend_micros=snapshot.used_micros,
        included_micros=snapshot.included_micros,
        extra_credit_micros=snapshot.extra_credit_remaining_micros,
        held_micros=snapshot.held_micros,
        topup=_topup(snapshot, charging),
        topup_paused_reason=snapshot.auto_topup.paused_reason,
    )


def overview(
    *,
    read: Transaction,
    snapshot: Callable[[str], Snapshot],
    now: datetime,
    rules: LedgerRules,
    query: str,
    sort: str,
    descending: bool,
    page: int,
    per_page: int,
) -> OverviewPage:
    """Page `page` of the practices whose id or name contains `query` (ignoring case), sorted by
    `sort` (ties by practice id); `read` runs a read transaction, `snapshot` is `Budget.snapshot`,
    the full path of a practice whose row is not up to date (see module doc)."""
    _check(query, sort, descending, page, per_page)
    granting = rules.accounts.granting_statuses

    def load(connection: Connection) -> tuple[list[repository.StateRow], set[str], set[str]]:
        return (
            repository.states(connection, matching=query),
            repository.subscribed_practices(connection, granting),
            topup.practices_charging(connection),
        )

    rows, subscribed, charging = read(load)
    found = []
    for row in rows:
        state = current_state(row, now=now, rules=rules, subscribed=row.practice_id in subscribed)
        shown = snapshot(row.practice_id) if state is None else state.snapshot()
        found.append(_row(row.name, shown, charging=row.practice_id in charging))
    found.sort(key=_SORT_KEYS["practice_id"])
    found.sort(key=_SORT_KEYS[sort], reverse=descending)  # stable, also reversed: ties stay by id
    first = (page - 1) * per_page
    return OverviewPage(
        rows=tuple(found[first : first + per_page]),
        total=len(found),
        page=page,
        pages=max(1, -(-len(found) // per_page)),
        per_page=per_page,
        query=query,
        sort=sort,
        descending=descending,
    )


@dataclass(frozen=True, slots=True)
class BurnDownDay:
    """One calendar day of a period in the practice's timezone: what was spent, from which pot."""

    day: date
    spent_micros: int  # all cost posted that day: included + credit + overage
    included_spent_micros: int
    credit_spent_micros: int
    overage_micros: int  # cost no pot covered
    included_left_micros: int  # included budget left at the end of the day, never below 0


@dataclass(frozen=True, slots=True)
class BurnDown:
    """The current period day by day, from its first day to today (or its last day, if earlier), and
    its calls per model and per operation.

    Without a subscription granting access there is no period: the period fields are None and there
    are no days and no calls. Credit and holds are as they are now; days and calls are the events in
    the ledger charged to the period (pruned ones are gone): a call settled after the period ended is
    in it, one of the period before settled after this one began is not.
    """

    practice_id: str
    timezone: str
    period_start: date | None  # the period's first day
    period_end: date | None  # its last day, included
    included_micros: int
    extra_credit_micros: int  # left now
    held_micros: int  # now
    days: tuple[BurnDownDay, ...]
    by_model: tuple[UsageTotals, ...] = ()  # the most expensive first, as `reports.usage_totals` orders
    by_operation: tuple[UsageTotals, ...] = ()


def burn_down(connection: Connection, snapshot: Snapshot, *, now: datetime) -> BurnDown:
    """The burn-down of the period `snapshot` is in, up to `now`."""
    without_days = BurnDown(
        practice_id=snapshot.practice_id,
        timezone=snapshot.timezone,
        period_start=None,
        period_end=None,
        included_micros=snapshot.included_micros,
        extra_credit_micros=snapshot.extra_credit_remaining_micros,
        held_micros=snapshot.held_micros,
        days=(),
    )
    if snapshot.subscription_id is None:
        return without_days
    assert snapshot.period_start is not None
    assert snapshot.period_end is not None
    zone = ZoneInfo(snapshot.timezone)
    first = datetime.fromtimestamp(snapshot.period_start, zone).date()
    last = datetime.fromtimestamp(snapshot.period_end - 1, zone).date()  # the end is exclusive
    spent = reports.spend_per_day(
        connection,
        snapshot.practice_id,
        subscription_id=snapshot.subscription_id,
        period_start=snapshot.period_start,
        timezone=snapshot.timezone,
    )
    # included budget the days shown do not account for: events pruned from the ledger (the period's
    # row keeps their sums), so the last day's `included_left_micros` is the snapshot's
    shown = sum(paid.get("included", 0) for paid in spent.values())
    carried = max(0, snapshot.included_micros - snapshot.included_remaining_micros - shown)
    days, included_used, day = [], carried, first
    while day <= min(last, now.astimezone(zone).date()):
        paid = spent.get(day, {})
        included, credit, overage = paid.get("included", 0), paid.get("credit", 0), paid.get("overage", 0)
        included_used += included
        left = max(0, snapshot.included_micros - included_used)
        days.append(BurnDownDay(day, included + credit + overage, included, credit, overage, left))
        day += timedelta(days=1)

    subscription_id, period_start = snapshot.subscription_id, snapshot.period_start

    def calls_by(group_by: reports.GroupBy) -> tuple[UsageTotals, ...]:
        return tuple(
            reports.period_totals(
                connection,
                snapshot.practice_id,
                subscription_id=subscription_id,
                period_start=period_start,
                group_by=group_by,
                timezone=snapshot.timezone,
            )
        )

    return replace(
        without_days,
        period_start=first,
        period_end=last,
        days=tuple(days),
        by_model=calls_by("model"),
        by_operation=calls_by("operation"),
    )


def devices(connection: Connection, practice_id: str) -> list[Device]:
    """The practice's devices, the most recently bound first; `NotFound` for an unknown practice."""
    get_practice(connection, practice_id)
    rows = accounts_repository.list_devices(connection, practice_id)  # oldest first
    return [Device(row.device_hash, row.practice_id, row.user_key, row.active) for row in reversed(rows)]
