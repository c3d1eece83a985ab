"""SQL for credit grants and the practice's credit balance. Callers own the transaction.

What a settle paid from credit runs — its usable grants, taking from them, the balance's credit and
next expiry, credit expiring within a hold's TTL — is hand-written (`store.sql`); the rest is
SQLAlchemy Core.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from aibudget.ledger.waterfall import GrantFunds
from aibudget.store import tables
from aibudget.store.dialect import insert_if_absent
from aibudget.store.sql import Statement, instant, micros

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


_USABLE_GRANTS = Statement("""
    SELECT grant_id, remaining_micros, priority, expires_at FROM credit_grants
    WHERE practice_id = :practice_id AND remaining_micros > 0 AND expired_at IS NULL
      AND (expires_at IS NULL OR expires_at > :now)
""")
_TAKE_FROM_GRANT = Statement("""
    UPDATE credit_grants SET remaining_micros = remaining_micros - :amount WHERE grant_id = :grant_id
""")
_CREDIT_EXPIRING_BY = Statement("""
    SELECT SUM(remaining_micros) FROM credit_grants
    WHERE practice_id = :practice_id AND expired_at IS NULL AND remaining_micros > 0
      AND expires_at <= :moment
""")
# the balance's credit, and the earliest expiry among the grants with money left (None without one)
_CHANGE_CREDIT = Statement("""
    UPDATE balances SET credit_micros = credit_micros + :delta,
        next_grant_expiry = (
            SELECT MIN(expires_at) FROM credit_grants
            WHERE practice_id = :practice_id AND expired_at IS NULL AND remaining_micros > 0
        )
    WHERE practice_id = :practice_id
""")


def usable_grants(connection: Connection, practice_id: str, now: datetime) -> list[GrantFunds]:
    rows = _USABLE_GRANTS.run(connection, {"practice_id": practice_id, "now": micros(now)}).fetchall()
    return [
        GrantFunds(grant_id, left, priority, instant(expires)) for grant_id, left, priority, expires in rows
    ]


def take_from_grant(connection: Connection, grant_id: int, amount_micros: int) -> None:
    """Spend from a grant; the CHECK on remaining_micros refuses to take more than is left."""
    _TAKE_FROM_GRANT.run(connection, {"grant_id": grant_id, "amount": amount_micros})


def credit_expiring_by(connection: Connection, practice_id: str, moment: datetime) -> int:
    """Money left on the practice's grants that expire by `moment`."""
    row = _CREDIT_EXPIRING_BY.one(connection, {"practice_id": practice_id, "moment": micros(moment)})
    return int(row[0]) if row and row[0] is not None else 0


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


def practices_with_due_grants(connection: Connection, now: datetime) -> list[str]:
    return list(
        connection.execute(
            select(balances.c.practice_id)
            .where(balances.c.next_grant_expiry <= now)
            .order_by(balances.c.practice_id)
        ).scalars()
    )


def change_credit(connection: Connection, practice_id: str, delta_micros: int) -> None:
    """Add `delta_micros` to the practice's credit; after its grants changed, so the next expiry the
    balance keeps is read from them anew."""
    _CHANGE_CREDIT.run(connection, {"practice_id": practice_id, "delta": delta_micros})
