"""Usage reports of one practice: its ledger events, or their totals per day, model or operation,
optionally of one status, model or operation; and, of one billing period, what each pot paid per day
and the totals per model or operation.

Reports read history, so unlike the hot path they scan: the events of one practice in a range, on
the `(practice_id, occurred_at)` index, aggregated by the database. The range is half-open,
`since <= occurred_at < until`; a bound given as a date is midnight of that date in the practice's
timezone, and a date-time without an offset is read in that timezone too.

Totals count calls — events that are `success`, `error` or `blocked` (refused) — and leave out the
`voided` and `expired` events, which close holds of calls that were never made or never settled and
carry no cost. Days are calendar days in the practice's timezone: the database sums per 15 minutes
of UTC (every timezone in use today is a whole number of quarter hours from UTC and changes offset on
a quarter hour, so each quarter hour lies within one local day) and the quarter hours are added up
into days here, so the work in Python is bounded by the range, not by the number of events.

A period's reports count the events charged to it — the ones its `used_micros` sums (pruned ones
aside) — not those of a range of time: a call authorized before the period began and settled after
belongs to the period before, wherever its time falls.

Amounts are integer micro-USD and audio integer milliseconds, as stored; `views.report` renders them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, ColumnElement, Connection, case, func, literal_column, select, type_coerce

from aibudget.accounts.service import get_practice
from aibudget.errors import InvalidInput
from aibudget.ledger.waterfall import Pot
from aibudget.store import tables
from aibudget.store.sql import LATEST_INSTANT

GroupBy = Literal["day", "model", "operation"]
GROUP_BYS: tuple[GroupBy, ...] = ("day", "model", "operation")
DEFAULT_LIMIT, MAX_LIMIT = 1_000, 10_000
CALL_STATUSES = ("success", "error", "blocked")
STATUSES = (*CALL_STATUSES, "voided", "expired")
MAX_FILTER_CHARS = 200
_CONTROL = frozenset(map(chr, [*range(0x20), 0x7F]))
_QUARTER_HOUR_MICROS = 15 * 60 * 1_000_000
# bounds outside these cannot be converted between timezones safely (`store.sql.LATEST_INSTANT`)
_YEARS = (1970, LATEST_INSTANT.year)
events, allocations, periods = tables.usage_events, tables.allocations, tables.periods


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One ledger event as a report shows it (no metadata: reports are flat)."""

    event_id: int
    occurred_at: datetime
    request_id: str
    status: str
    operation: str
    model: str
    priced_as: str | None
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    input_audio_tokens: int
    audio_ms: int
    cost_micros: int
    overage_micros: int
    price_source: str | None
    price_version: str | None
    error_code: str | None
    estimated: bool
    subscription_id: str | None
    period_id: int | None
    device_suffix: str | None


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """The calls of one group: `key` is the day (ISO date), the model as sent, or the operation."""

    key: str
    calls: int = 0
    success: int = 0
    error: int = 0
    blocked: int = 0
    cost_micros: int = 0
    overage_micros: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    input_audio_tokens: int = 0
    audio_ms: int = 0

    def __add__(self, other: UsageTotals) -> UsageTotals:
        sums = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)[1:]}
        return UsageTotals(self.key, **sums)


@dataclass(frozen=True, slots=True)
class UsageReport:
    """A report as asked for: the resolved range, and events (no `group_by`) or totals."""

    practice_id: str
    timezone: str
    since: datetime | None
    until: datetime | None
    group_by: GroupBy | None
    rows: tuple[UsageLine, ...] | tuple[UsageTotals, ...]
    status: str | None = None
    model: str | None = None
    operation: str | None = None


def parse_bound(text: str, *, field: str) -> date | datetime:
    """A range bound as typed: an ISO date (`2026-11-01`) or date-time (`2026-11-01T08:00:00+01:00`).

    A `+` of an offset that arrived unencoded in a query string (and so as a space) is restored.
    """
    value = text.strip()
    if "T" in value:
        value = value.replace(" ", "+")
    try:
        return date.fromisoformat(value) if len(value) <= 10 else datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{field}: {text!r} is not an ISO date (2026-11-01) or date-time (2026-11-01T08:00:00+01:00)",
            field=field,
        ) from None


def resolve_bound(value: date | datetime | None, timezone: str, *, field: str) -> datetime | None:
    """The instant a bound stands for: dates are midnight, naive date-times local, in `timezone`."""
    if value is None:
        return None
    if not isinstance(value, date) or not _YEARS[0] <= value.year <= _YEARS[1]:
        raise InvalidInput(f"{field} must be a date or date-time in {_YEARS[0]}-{_YEARS[1]}", field=field)
    zone = ZoneInfo(timezone)
    if isinstance(value, datetime):
        return value if value.utcoffset() is not None else value.replace(tzinfo=zone)
    return datetime.combine(value, time(), tzinfo=zone)


def _filter_text(value: str | None, field: str) -> str | None:
    if value is not None and (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_FILTER_CHARS
        or not _CONTROL.isdisjoint(value)
    ):
        raise InvalidInput(f"{field} must be 1-{MAX_FILTER_CHARS} characters, none a control", field=field)
    return value


def usage_report(
    connection: Connection,
    practice_id: str,
    *,
    since: date | datetime | None = None,
    until: date | datetime | None = None,
    group_by: str | None = None,
    limit: int = DEFAULT_LIMIT,
    status: str | None = None,
    model: str | None = None,
    operation: str | None = None,
) -> UsageReport:
    """The practice's events in the range, newest first, at most `limit`; or their totals by `group_by`.

    `status`, `model` (as sent) and `operation` keep only the events equal to them; totals count
    calls only, so a filter on `voided` or `expired` leaves no totals.
    """
    practice = get_practice(connection, practice_id)
    if group_by is not None and group_by not in GROUP_BYS:
        raise InvalidInput(f"group_by: {group_by!r} is not one of {', '.join(GROUP_BYS)}", field="group_by")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number 1-{MAX_LIMIT}", field="limit")
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status: {status!r} is not one of {', '.join(STATUSES)}", field="status")
    exact = {"status": status, "model": _filter_text(model, "model"),
             "operation": _filter_text(operation, "operation")}  # fmt: skip
    start = resolve_bound(since, practice.timezone, field="since")
    end = resolve_bound(until, practice.timezone, field="until")
    if start is not None and end is not None and end < start:
        raise InvalidInput("until must not be before since", field="until")
    rows: tuple[UsageLine, ...] | tuple[UsageTotals, ...]
    if group_by is None:
        rows = tuple(
            usage_events(connection, practice.practice_id, since=start, until=end, limit=limit, **exact)
        )
    else:
        rows = tuple(
            usage_totals(
                connection,
                practice.practice_id,
                group_by=group_by,
                since=start,
                until=end,
                timezone=practice.timezone,
                **exact,
            )
        )
    return UsageReport(practice.practice_id, practice.timezone, start, end, group_by, rows, **exact)


def _matching(
    practice_id: str, since: datetime | None, until: datetime | None, exact: dict[str, str | None]
) -> list[ColumnElement[bool]]:
    """The events of the practice in `[since, until)` whose columns named in `exact` equal their value
    (a value of None: any)."""
    conditions = [events.c.practice_id == practice_id]
    if since is not None:
        conditions.append(events.c.occurred_at >= since)
    if until is not None:
        conditions.append(events.c.occurred_at < until)
    conditions.extend(events.c[name] == value for name, value in exact.items() if value is not None)
    return conditions


def usage_events(
    connection: Connection,
    practice_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    status: str | None = None,
    model: str | None = None,
    operation: str | None = None,
) -> list[UsageLine]:
    """The practice's events in `[since, until)`, newest first, at most `limit` of them; only those of
    `status`, `model` and `operation` when given."""
    names = [f.name for f in fields(UsageLine)]
    exact = {"status": status, "model": model, "operation": operation}
    statement = (
        select(*(events.c[name] for name in names))
        .where(*_matching(practice_id, since, until, exact))
        .order_by(events.c.occurred_at.desc(), events.c.event_id.desc())
        .limit(limit)
    )
    return [
        UsageLine(**dict(zip(names, row, strict=True)) | {"estimated": bool(row.estimated)})
        for row in connection.execute(statement)
    ]


_SUMMED = ("cost_micros", "overage_micros", "input_tokens", "cached_input_tokens", "output_tokens",
           "input_audio_tokens", "audio_ms")  # fmt: skip


def _aggregates() -> list[ColumnElement[Any]]:
    def count(status: str) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((events.c.status == status, 1), else_=0)), 0).label(status)

    return [
        func.count().label("calls"),
        *(count(status) for status in CALL_STATUSES),
        *(func.coalesce(func.sum(events.c[name]), 0).label(name) for name in _SUMMED),
    ]


def usage_totals(
    connection: Connection,
    practice_id: str,
    *,
    group_by: GroupBy,
    since: datetime | None = None,
    until: datetime | None = None,
    timezone: str,
    status: str | None = None,
    model: str | None = None,
    operation: str | None = None,
) -> list[UsageTotals]:
    """Totals of the practice's calls in `[since, until)` per day (in `timezone`), model or operation;
    only those of `status`, `model` and `operation` when given.

    Days come in calendar order; models and operations by cost, the most expensive first.
    """
    exact = {"status": status, "model": model, "operation": operation}
    return _totals(connection, _matching(practice_id, since, until, exact), group_by, timezone)


def period_totals(
    connection: Connection,
    practice_id: str,
    *,
    subscription_id: str,
    period_start: int,
    group_by: GroupBy,
    timezone: str,
) -> list[UsageTotals]:
    """Totals of the practice's calls charged to its period of `subscription_id` that began at
    `period_start` (Unix seconds), per day (in `timezone`), model or operation, ordered as
    `usage_totals` orders them: their costs add up to the period's `used_micros` (pruned events aside)."""
    return _totals(connection, _charged_to(practice_id, subscription_id, period_start), group_by, timezone)


def _totals(
    connection: Connection, matching: list[ColumnElement[bool]], group_by: GroupBy, timezone: str
) -> list[UsageTotals]:
    """Totals of the calls among the events `matching` selects, per `group_by`."""
    group = _quarter_hour() if group_by == "day" else events.c[group_by]
    statement = (
        select(group.label("key"), *_aggregates())
        .where(*matching, events.c.status.in_(CALL_STATUSES))
        .group_by(group)
    )
    # PostgreSQL sums BIGINT as NUMERIC: every aggregate is made an int here
    totals = [
        (row.key, UsageTotals("", *(int(value) for value in row[1:])))
        for row in connection.execute(statement)
    ]
    if group_by != "day":
        found = [replace(t, key=str(key)) for key, t in totals]
        return sorted(found, key=lambda t: (-t.cost_micros, t.key))
    return _by_day(totals, ZoneInfo(timezone))


def _quarter_hour() -> ColumnElement[Any]:
    """The quarter hour of UTC an event occurred in, as a number (see module doc)."""
    return type_coerce(events.c.occurred_at, BigInteger) // literal_column(
        str(_QUARTER_HOUR_MICROS), BigInteger
    )


def _local_day(quarter: Any, zone: ZoneInfo) -> date:
    seconds = int(quarter) * (_QUARTER_HOUR_MICROS // 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).astimezone(zone).date()


def _by_day(quarters: Iterable[tuple[Any, UsageTotals]], zone: ZoneInfo) -> list[UsageTotals]:
    days: dict[date, UsageTotals] = {}
    for quarter, totals in quarters:
        day = _local_day(quarter, zone)
        days[day] = days.get(day, UsageTotals("")) + totals
    return [replace(days[day], key=day.isoformat()) for day in sorted(days)]


def spend_per_day(
    connection: Connection, practice_id: str, *, subscription_id: str, period_start: int, timezone: str
) -> dict[date, dict[Pot, int]]:
    """What each pot paid per day (in `timezone`) for the practice's events charged to its period of
    `subscription_id` that began at `period_start` (Unix seconds): days with spending only, pots that
    paid only. From the allocations, so every micro-USD of cost is in exactly one pot."""
    quarter = _quarter_hour()
    statement = (
        select(quarter, allocations.c.pot, func.sum(allocations.c.amount_micros))
        .select_from(events.join(allocations, allocations.c.event_id == events.c.event_id))
        .where(*_charged_to(practice_id, subscription_id, period_start))
        .group_by(quarter, allocations.c.pot)
    )
    zone = ZoneInfo(timezone)
    days: dict[date, dict[Pot, int]] = {}
    for at, pot, micros in connection.execute(statement):
        paid = days.setdefault(_local_day(at, zone), {})
        paid[pot] = paid.get(pot, 0) + int(micros)  # PostgreSQL sums BIGINT as NUMERIC
    return days


def _charged_to(practice_id: str, subscription_id: str, period_start: int) -> list[ColumnElement[bool]]:
    """The practice's events charged to its period of `subscription_id` that began at `period_start`."""
    period = select(periods.c.period_id).where(
        periods.c.practice_id == practice_id,
        periods.c.subscription_id == subscription_id,
        periods.c.period_start == period_start,
    )
    return [
        events.c.practice_id == practice_id,
        # the period's events occur from its start on: the (practice_id, occurred_at) index skips the rest
        events.c.occurred_at >= datetime.fromtimestamp(period_start, UTC),
        events.c.period_id == period.scalar_subquery(),
    ]
