"""SQL for credit grants and the practice's credit balance. Callers own the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select, update

from aibudget.ledger.waterfall import GrantFunds
from aibudget.store import tables
from aibudget.store.dialect import insert_if_absent

grants, balances = tables.credit_grants, tables.balances


def insert_grant(connection: Connection, values: dict[str, Any]) -> bool:
    """Insert unless a grant with the same reference exists; True if inserted."""
    return insert_if_absent(connection, grants, ["reference"], values) is not None


def grant_by_reference(connection: Connection, reference: str) -> Row[Any] | None:
    return connection.execute(select(grants).where(grants.c.reference == reference)).first()


def list_grants(connection: Connection, practice_id: str) -> list[Row[Any]]:
    return list(
        connection.execute(
            select(grants).where(grants.c.practice_id == practice_id).order_by(grants.c.grant_id)
        )
    )


def usable_grants(connection: Connection, practice_id: str, now: datetime) -> list[GrantFunds]:
    rows = connection.execute(
        select(grants.c.grant_id, grants.c.remaining_micros, grants.c.priority, grants.c.expires_at).where(
            grants.c.practice_id == practice_id,
            grants.c.remaining_micros > 0,
            grants.c.expired_at.is_(None),
            (grants.c.expires_at.is_(None)) | (grants.c.expires_at > now),
        )
    )
    return [GrantFunds(row.grant_id, row.remaining_micros, row.priority, row.expires_at) for row in rows]


def take_from_grant(connection: Connection, grant_id: int, amount_micros: int) -> None:
    """Spend from a grant; the CHECK on remaining_micros refuses to take more than is left."""
    connection.execute(
        update(grants)
        .where(grants.c.grant_id == grant_id)
        .values(remaining_micros=grants.c.remaining_micros - amount_micros)
    )


def credit_expiring_by(connection: Connection, practice_id: str, moment: datetime) -> int:
    """Money left on the practice's grants that expire by `moment`."""
    total: int | None = connection.execute(
        select(func.sum(grants.c.remaining_micros)).where(
            grants.c.practice_id == practice_id,
            grants.c.expired_at.is_(None),
            grants.c.remaining_micros > 0,
            grants.c.expires_at <= moment,
        )
    ).scalar()
    return total or 0


def due_grants(connection: Connection, practice_id: str, now: datetime) -> list[Row[Any]]:
    """Grants whose expiry has come while money is left on them."""
    return list(
        connection.execute(
            select(grants.c.grant_id, grants.c.remaining_micros).where(
                grants.c.practice_id == practice_id,
                grants.c.expired_at.is_(None),
                grants.c.remaining_micros > 0,
                grants.c.expires_at <= now,
            )
        )
    )


def expire_grant(connection: Connection, grant_id: int, remaining_micros: int, now: datetime) -> None:
    connection.execute(
        update(grants)
        .where(grants.c.grant_id == grant_id)
        .values(expired_at=now, expired_micros=remaining_micros, remaining_micros=0)
    )


def next_expiry(connection: Connection, practice_id: str) -> datetime | None:
    """The earliest expiry among the practice's grants with money left."""
    expiry: datetime | None = connection.execute(
        select(func.min(grants.c.expires_at)).where(
            grants.c.practice_id == practice_id,
            grants.c.expired_at.is_(None),
            grants.c.remaining_micros > 0,
        )
    ).scalar()
    return expiry


def practices_with_due_grants(connection: Connection, now: datetime) -> list[str]:
    return list(
        connection.execute(
            select(balances.c.practice_id)
            .where(balances.c.next_grant_expiry <= now)
            .order_by(balances.c.practice_id)
        ).scalars()
    )


def change_credit(
    connection: Connection, practice_id: str, delta_micros: int, next_grant_expiry: datetime | None
) -> None:
    connection.execute(
        update(balances)
        .where(balances.c.practice_id == practice_id)
        .values(credit_micros=balances.c.credit_micros + delta_micros, next_grant_expiry=next_grant_expiry)
    )
