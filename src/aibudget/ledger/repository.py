"""SQL for authorizations, usage events, allocations and the balance rows they move.

Every balance change is a relative `UPDATE … SET x = x + :delta`, never a value computed from an
earlier read, so the database's CHECKs see the true result. Callers own the transaction and hold the
practice's lock (`store.dialect.lock_practices`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Row, select, update

from aibudget.ledger.waterfall import Allocation
from aibudget.store import tables
from aibudget.store.dialect import insert_if_absent

practices, balances, periods = tables.practices, tables.balances, tables.periods
authorizations, events, allocations = tables.authorizations, tables.usage_events, tables.allocations

_SETTLEMENT = events.c.status.in_(("success", "error"))

_STATE = select(
    practices.c.practice_id,
    practices.c.name,
    practices.c.locale,
    practices.c.timezone,
    practices.c.policy,
    practices.c.warning_percent,
    balances.c.held_micros,
    balances.c.credit_micros,
    balances.c.period_id,
    balances.c.period_valid_until,
    balances.c.next_grant_expiry,
    periods.c.subscription_id,
    periods.c.period_start,
    periods.c.period_end,
    periods.c.plan,
    periods.c.included_micros,
    periods.c.included_used_micros,
    periods.c.used_micros,
    periods.c.overage_micros,
).select_from(
    practices.join(balances, balances.c.practice_id == practices.c.practice_id).outerjoin(
        periods, periods.c.period_id == balances.c.period_id
    )
)


def state(connection: Connection, practice_id: str) -> Row[Any] | None:
    """The practice, its balance row and its cached current period, in one query."""
    return cast(
        "Row[Any] | None", connection.execute(_STATE.where(practices.c.practice_id == practice_id)).first()
    )


def authorization(connection: Connection, practice_id: str, request_id: str) -> Row[Any] | None:
    return connection.execute(
        select(authorizations).where(
            authorizations.c.practice_id == practice_id, authorizations.c.request_id == request_id
        )
    ).first()


def insert_authorization(connection: Connection, values: dict[str, Any]) -> bool:
    """Insert unless the request already has an authorization; True if inserted."""
    return insert_if_absent(connection, authorizations, ["practice_id", "request_id"], values) is not None


def close_authorization(connection: Connection, authorization_id: str, status: str, now: datetime) -> bool:
    """Move an active authorization to `status`; False if it was no longer active."""
    closed = connection.execute(
        update(authorizations)
        .where(authorizations.c.authorization_id == authorization_id, authorizations.c.status == "active")
        .values(status=status, closed_at=now)
    )
    return closed.rowcount == 1


def due_authorizations(connection: Connection, now: datetime, limit: int) -> list[Row[Any]]:
    return list(
        connection.execute(
            select(authorizations)
            .where(authorizations.c.status == "active", authorizations.c.expires_at <= now)
            .order_by(authorizations.c.expires_at)
            .limit(limit)
        )
    )


def change_held(connection: Connection, practice_id: str, delta_micros: int) -> None:
    connection.execute(
        update(balances)
        .where(balances.c.practice_id == practice_id)
        .values(held_micros=balances.c.held_micros + delta_micros)
    )


def charge_period(
    connection: Connection, period_id: int, *, included_micros: int, cost_micros: int, overage_micros: int
) -> None:
    connection.execute(
        update(periods)
        .where(periods.c.period_id == period_id)
        .values(
            included_used_micros=periods.c.included_used_micros + included_micros,
            used_micros=periods.c.used_micros + cost_micros,
            overage_micros=periods.c.overage_micros + overage_micros,
        )
    )


def insert_settlement(connection: Connection, values: dict[str, Any]) -> int | None:
    """Insert the settlement event of a request; None if the request is settled already."""
    event_id: int | None = insert_if_absent(
        connection, events, ["practice_id", "request_id"], values, where=_SETTLEMENT
    )
    return event_id


def insert_event(connection: Connection, values: dict[str, Any]) -> int:
    """Insert a blocked, voided or expired event."""
    event_id: int = connection.execute(
        events.insert().values(**values).returning(events.c.event_id)
    ).scalar_one()
    return event_id


def settlement(connection: Connection, practice_id: str, request_id: str) -> Row[Any] | None:
    return connection.execute(
        select(events).where(
            events.c.practice_id == practice_id, events.c.request_id == request_id, _SETTLEMENT
        )
    ).first()


def event(connection: Connection, event_id: int) -> Row[Any]:
    return connection.execute(select(events).where(events.c.event_id == event_id)).one()


def insert_allocations(
    connection: Connection, event_id: int, period_id: int | None, split: Sequence[Allocation]
) -> None:
    if split:
        connection.execute(
            allocations.insert(),
            [
                {
                    "event_id": event_id,
                    "seq": seq,
                    "pot": part.pot,
                    "period_id": period_id if part.pot == "included" else None,
                    "grant_id": part.grant_id,
                    "amount_micros": part.amount_micros,
                }
                for seq, part in enumerate(split)
            ],
        )


def allocations_of(connection: Connection, event_id: int) -> list[Allocation]:
    rows = connection.execute(
        select(allocations.c.pot, allocations.c.amount_micros, allocations.c.grant_id)
        .where(allocations.c.event_id == event_id)
        .order_by(allocations.c.seq)
    )
    return [Allocation(row.pot, row.amount_micros, row.grant_id) for row in rows]
