"""SQL for practices, plans, subscriptions, periods and devices. Callers own the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from aibudget.accounts.periods import PeriodKey
from aibudget.store import tables
from aibudget.store.dialect import insert_if_absent
from aibudget.store.sql import Statement

practices, plans, subscriptions = tables.practices, tables.plans, tables.subscriptions
periods, devices, balances = tables.periods, tables.devices, tables.balances


def get_practice(connection: Connection, practice_id: str) -> Row[Any] | None:
    return connection.execute(select(practices).where(practices.c.practice_id == practice_id)).first()


def insert_practice(connection: Connection, values: dict[str, Any]) -> bool:
    """Create the practice and its balance row; False if it already existed."""
    created = insert_if_absent(connection, practices, ["practice_id"], values) is not None
    if created:
        insert_if_absent(connection, balances, ["practice_id"], {"practice_id": values["practice_id"]})
    return created


def update_practice(connection: Connection, practice_id: str, values: dict[str, Any]) -> None:
    connection.execute(update(practices).where(practices.c.practice_id == practice_id).values(**values))


def get_plan(connection: Connection, lookup_key: str) -> Row[Any] | None:
    return connection.execute(select(plans).where(plans.c.lookup_key == lookup_key)).first()


def upsert_plan(connection: Connection, lookup_key: str, included_micros: int, now: datetime) -> None:
    values = {"lookup_key": lookup_key, "included_micros": included_micros, "updated_at": now}
    if insert_if_absent(connection, plans, ["lookup_key"], values) is None:
        connection.execute(
            update(plans)
            .where(plans.c.lookup_key == lookup_key)
            .values(included_micros=included_micros, updated_at=now)
        )


def get_subscription(connection: Connection, subscription_id: str) -> Row[Any] | None:
    return connection.execute(
        select(subscriptions).where(subscriptions.c.subscription_id == subscription_id)
    ).first()


def upsert_subscription(connection: Connection, values: dict[str, Any]) -> bool:
    """Insert or replace the mirror unless the stored one is newer; True if `values` were applied.

    The comparison runs inside the UPDATE, so an older update arriving late never overwrites a
    newer one, whatever the interleaving.
    """
    if insert_if_absent(connection, subscriptions, ["subscription_id"], values) is not None:
        return True
    changed = connection.execute(
        update(subscriptions)
        .where(
            subscriptions.c.subscription_id == values["subscription_id"],
            subscriptions.c.updated_at <= values["updated_at"],
        )
        .values(**values)
    )
    return bool(changed.rowcount)


def governing_subscription(
    connection: Connection, practice_id: str, statuses: tuple[str, ...]
) -> Row[Any] | None:
    """The most recently updated subscription of the practice whose status grants AI access."""
    return connection.execute(
        select(subscriptions)
        .where(subscriptions.c.practice_id == practice_id, subscriptions.c.status.in_(statuses))
        .order_by(subscriptions.c.updated_at.desc(), subscriptions.c.subscription_id.desc())
        .limit(1)
    ).first()


def get_or_create_period(
    connection: Connection, practice_id: str, key: PeriodKey, *, plan: str | None, included_micros: int
) -> Row[Any]:
    """The period row for `key`, created on first use; its end, plan and budget kept current."""
    identity = (
        periods.c.practice_id == practice_id,
        periods.c.subscription_id == key.subscription_id,
        periods.c.period_start == key.start,
    )
    row = connection.execute(select(periods).where(*identity)).first()
    if row is None:
        insert_if_absent(
            connection,
            periods,
            ["practice_id", "subscription_id", "period_start"],
            {
                "practice_id": practice_id,
                "subscription_id": key.subscription_id,
                "period_start": key.start,
                "period_end": key.end,
                "plan": plan,
                "included_micros": included_micros,
            },
        )
    elif (row.period_end, row.plan, row.included_micros) != (key.end, plan, included_micros):
        connection.execute(
            update(periods)
            .where(*identity)
            .values(period_end=key.end, plan=plan, included_micros=included_micros)
        )
    else:
        return row
    return connection.execute(select(periods).where(*identity)).one()


def get_period(connection: Connection, period_id: int) -> Row[Any]:
    return connection.execute(select(periods).where(periods.c.period_id == period_id)).one()


_DEVICE = Statement("SELECT practice_id, user_key, active FROM devices WHERE device_hash = :device_hash")


def device_binding(connection: Connection, device_hash: str) -> tuple[str, str | None, bool] | None:
    """(practice_id, user_key, active) of a device; on every device request, so a hand-written statement."""
    row = _DEVICE.one(connection, {"device_hash": device_hash})
    return None if row is None else (row[0], row[1], bool(row[2]))


def get_device(connection: Connection, device_hash: str) -> Row[Any] | None:
    return connection.execute(select(devices).where(devices.c.device_hash == device_hash)).first()


def insert_device(connection: Connection, values: dict[str, Any]) -> bool:
    return insert_if_absent(connection, devices, ["device_hash"], values) is not None


def update_device(connection: Connection, device_hash: str, values: dict[str, Any]) -> None:
    connection.execute(update(devices).where(devices.c.device_hash == device_hash).values(**values))


def list_devices(connection: Connection, practice_id: str) -> list[Row[Any]]:
    return list(
        connection.execute(
            select(devices).where(devices.c.practice_id == practice_id).order_by(devices.c.created_at)
        )
    )


def cache_period(
    connection: Connection, practice_id: str, period_id: int, valid_until: datetime | None
) -> None:
    connection.execute(
        update(balances)
        .where(balances.c.practice_id == practice_id)
        .values(period_id=period_id, period_valid_until=valid_until)
    )


def move_calendar_period(
    connection: Connection, practice_id: str, start: int, bounds: tuple[int, int]
) -> None:
    """Give the practice's calendar-month periods that begin at `start` (of its subscriptions without
    provider periods) the `bounds` of the same month in another timezone, where no period begins yet."""
    calendar = select(subscriptions.c.subscription_id).where(subscriptions.c.current_period_start.is_(None))
    other = periods.alias("other")
    taken = (
        select(other.c.period_id)
        .where(
            other.c.practice_id == practice_id,
            other.c.subscription_id == periods.c.subscription_id,
            other.c.period_start == bounds[0],
            other.c.period_id != periods.c.period_id,
        )
        .exists()
    )
    connection.execute(
        update(periods)
        .where(
            periods.c.practice_id == practice_id,
            periods.c.period_start == start,
            periods.c.subscription_id.in_(calendar),
            ~taken,
        )
        .values(period_start=bounds[0], period_end=bounds[1])
    )


def forget_period(connection: Connection, practice_id: str) -> None:
    """Make the next call resolve the practice's current period afresh."""
    connection.execute(
        update(balances)
        .where(balances.c.practice_id == practice_id)
        .values(period_id=None, period_valid_until=None)
    )


def forget_periods_of_plan(connection: Connection, lookup_key: str) -> None:
    connection.execute(
        update(balances)
        .where(balances.c.period_id.in_(select(periods.c.period_id).where(periods.c.plan == lookup_key)))
        .values(period_id=None, period_valid_until=None)
    )
