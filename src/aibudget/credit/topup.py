"""Automatic top-up settings of a practice (SPEC §6): validated, stored, read back.

A practice either has no settings row — automatic top-up is off — or one row saying whether it is
on, what triggers it (an amount in USD *or* a percentage of the period's included budget, exactly
one, which the database checks too), the package bought per top-up, and the monthly caps (how many
top-ups and how many USD per calendar month in the practice's timezone).

Charging lives in `credit.autotopup`. It sets `paused_reason` when a charge is declined or needs
the customer, and the operator may pause too (`pause`); saving the settings never clears it, because
resuming after a pause must be an explicit act (or, for a payment pause, a successful purchase), not
a side effect of editing a threshold. The operator's pause (`paused_by_operator`) wins over a payment
pause and ends only with an explicit resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, or_, select, update

from aibudget.accounts.service import get_practice
from aibudget.errors import InvalidInput
from aibudget.money import MICROS_PER_USD, parse_usd, to_decimal
from aibudget.store import tables
from aibudget.store.dialect import insert_if_absent, lock_practices

MAX_USD = 1_000_000  # per top-up, threshold or monthly cap: far above any real package
MAX_MONTHLY_COUNT = 1_000
CENT_MICROS = 10_000
OPERATOR_PAUSE = "paused_by_operator"
settings_table = tables.auto_topup_settings


@dataclass(frozen=True, slots=True)
class TopupSettings:
    """A practice's automatic top-up; `updated_at` None means never configured (the defaults)."""

    practice_id: str
    enabled: bool = False
    threshold_micros: int | None = None
    threshold_percent: int | None = None
    package_micros: int = 0
    monthly_max_count: int = 0
    monthly_max_micros: int = 0
    paused_reason: str | None = None
    paused_at: datetime | None = None
    attempt_in_flight: str | None = None  # the top-up being charged now (see `credit.autotopup`)
    updated_at: datetime | None = None

    @property
    def threshold_usd(self) -> Decimal | None:
        return None if self.threshold_micros is None else to_decimal(self.threshold_micros)

    @property
    def package_usd(self) -> Decimal:
        return to_decimal(self.package_micros)

    @property
    def monthly_max_usd(self) -> Decimal:
        return to_decimal(self.monthly_max_micros)


def _amount(value: object, field: str, *, positive: bool = False) -> int:
    micros = parse_usd(value, field=field)
    if positive and micros <= 0:
        raise InvalidInput(f"{field} must be more than 0", field=field)
    if micros > MAX_USD * MICROS_PER_USD:
        raise InvalidInput(f"{field} must be at most {MAX_USD} USD", field=field)
    return micros


def _cents(micros: int, field: str) -> int:
    if micros % CENT_MICROS:  # charged at face value in USD when no package matches: whole cents
        raise InvalidInput(f"{field} must be whole cents", field=field)
    return micros


def _whole(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field} must be a whole number {low}-{high}", field=field)
    return value


def put_settings(
    connection: Connection,
    practice_id: str,
    *,
    enabled: bool,
    package_usd: object,
    monthly_max_count: int,
    monthly_max_usd: object,
    threshold_usd: object | None = None,
    threshold_percent: int | None = None,
    now: datetime,
) -> TopupSettings:
    """Replace the practice's settings (all of them: this is a PUT); `paused_reason` is kept."""
    if not isinstance(enabled, bool):
        raise InvalidInput("enabled must be true or false", field="enabled")
    if (threshold_usd is None) == (threshold_percent is None):
        raise InvalidInput("give exactly one of threshold_usd and threshold_percent", field="threshold_usd")
    values: dict[str, Any] = {
        "enabled": enabled,
        "threshold_micros": None if threshold_usd is None else _amount(threshold_usd, "threshold_usd"),
        "threshold_percent": (
            None if threshold_percent is None else _whole(threshold_percent, "threshold_percent", 0, 100)
        ),
        "package_micros": _cents(_amount(package_usd, "package_usd", positive=True), "package_usd"),
        "monthly_max_count": _whole(monthly_max_count, "monthly_max_count", 0, MAX_MONTHLY_COUNT),
        "monthly_max_micros": _amount(monthly_max_usd, "monthly_max_usd"),
        "updated_at": now,
    }
    get_practice(connection, practice_id)
    row = values | {"practice_id": practice_id}
    if insert_if_absent(connection, settings_table, ["practice_id"], row) is None:
        by_practice = settings_table.c.practice_id == practice_id
        connection.execute(update(settings_table).where(by_practice).values(**values))
    return get_settings(connection, practice_id)


def get_settings(connection: Connection, practice_id: str) -> TopupSettings:
    """The practice's settings, or the defaults (off) when it never configured any."""
    get_practice(connection, practice_id)
    return read_settings(connection, practice_id)


def read_settings(connection: Connection, practice_id: str) -> TopupSettings:
    """`get_settings` of a practice the caller already knows exists."""
    by_practice = settings_table.c.practice_id == practice_id
    row = connection.execute(select(settings_table).where(by_practice)).first()
    return TopupSettings(practice_id) if row is None else _settings(row)


def _settings(row: Row[Any]) -> TopupSettings:
    return TopupSettings(
        practice_id=row.practice_id,
        enabled=bool(row.enabled),
        threshold_micros=row.threshold_micros,
        threshold_percent=row.threshold_percent,
        package_micros=row.package_micros,
        monthly_max_count=row.monthly_max_count,
        monthly_max_micros=row.monthly_max_micros,
        paused_reason=row.paused_reason,
        paused_at=row.paused_at,
        attempt_in_flight=row.attempt_in_flight,
        updated_at=row.updated_at,
    )


def pause(connection: Connection, practice_id: str, *, now: datetime) -> TopupSettings:
    """The operator pauses the practice's automatic top-up: nothing more is claimed until
    `credit.autotopup.resume` (a charge already in flight still gets its answer, and a decline then
    keeps this pause). The operator's pause replaces a payment pause in place (`card_declined`, …):
    a successful purchase ends a payment pause, and must not end the operator's with it; the card's
    code stays on its failed attempt. Pausing again keeps the first pause's time; a practice that
    never configured automatic top-up has none to pause and gets its settings (off) back unchanged."""
    get_practice(connection, practice_id)
    lock_practices(connection, [practice_id])  # after any claim under way, as `autotopup.resume` does
    not_yet: ColumnElement[bool] = or_(
        settings_table.c.paused_reason.is_(None), settings_table.c.paused_reason != OPERATOR_PAUSE
    )
    connection.execute(
        update(settings_table)
        .where(settings_table.c.practice_id == practice_id, not_yet)
        .values(paused_reason=OPERATOR_PAUSE, paused_at=now)
    )
    return read_settings(connection, practice_id)


def practices_charging(connection: Connection) -> set[str]:
    """The practices whose automatic top-up is being charged now (an attempt in flight)."""
    rows = connection.execute(
        select(settings_table.c.practice_id).where(settings_table.c.attempt_in_flight.is_not(None))
    )
    return set(rows.scalars())
