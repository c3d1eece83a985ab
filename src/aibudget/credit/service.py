"""Credit grants: prepaid extra credit, unique per external reference, expiring on time.

A grant is created once per `reference` (the payment id for a purchase): granting the same
reference again returns the first grant and credits nothing. A grant's money left at its expiry is
retired, recorded on the grant (`expired_micros`) so the books still balance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Connection, Row

from aibudget.accounts.service import get_practice
from aibudget.credit import repository
from aibudget.errors import Conflict, InvalidInput
from aibudget.money import parse_usd, to_decimal
from aibudget.store.dialect import lock_practices
from aibudget.store.sql import LATEST_INSTANT

Source = Literal["purchase", "auto_topup", "promo", "manual", "refund"]
SOURCES: tuple[Source, ...] = ("purchase", "auto_topup", "promo", "manual", "refund")
DEFAULT_PRIORITY = 100


@dataclass(frozen=True, slots=True)
class CreditGrant:
    grant_id: int
    practice_id: str
    amount_micros: int
    remaining_micros: int
    source: str
    priority: int
    reference: str
    created_at: datetime
    expires_at: datetime | None
    expired_at: datetime | None
    replayed: bool = False  # True when the reference was granted before and this returns that grant

    @property
    def amount_usd(self) -> Decimal:
        return to_decimal(self.amount_micros)

    @property
    def remaining_usd(self) -> Decimal:
        return to_decimal(self.remaining_micros)


def _grant(row: Row[Any]) -> CreditGrant:
    return CreditGrant(
        row.grant_id,
        row.practice_id,
        row.amount_micros,
        row.remaining_micros,
        row.source,
        row.priority,
        row.reference,
        row.created_at,
        row.expires_at,
        row.expired_at,
    )


def grant_credit(
    connection: Connection,
    practice_id: str,
    *,
    amount_usd: object,
    source: str,
    reference: str,
    expires_at: datetime | None = None,
    priority: int = DEFAULT_PRIORITY,
    now: datetime,
) -> CreditGrant:
    """Credit the practice once per `reference`; a repeat returns the first grant unchanged."""
    amount = parse_usd(amount_usd, field="amount_usd")
    if amount <= 0:
        raise InvalidInput("amount_usd must be more than 0", field="amount_usd")
    if source not in SOURCES:
        raise InvalidInput(f"source: {source!r} is not one of {', '.join(SOURCES)}", field="source")
    if not isinstance(reference, str) or not 1 <= len(reference) <= 200 or not reference.isprintable():
        raise InvalidInput("reference must be 1-200 printable characters", field="reference")
    if reference.isspace():
        raise InvalidInput("reference must not be blank", field="reference")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 1_000_000:
        raise InvalidInput("priority must be a whole number 0-1000000 (lower pays first)", field="priority")
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInput("expires_at must be a timezone-aware time", field="expires_at")
    if expires_at is not None and expires_at > LATEST_INSTANT:
        raise InvalidInput("expires_at must be before the year 9999", field="expires_at")
    # A payment retried after its grant expired gets that grant back: "in the future" is a rule for
    # new grants only.
    new = repository.grant_by_reference(connection, reference) is None
    if new and expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at must be in the future", field="expires_at")
    get_practice(connection, practice_id)
    lock_practices(connection, [practice_id])
    values = {
        "practice_id": practice_id,
        "amount_micros": amount,
        "remaining_micros": amount,
        "source": source,
        "priority": priority,
        "reference": reference,
        "created_at": now,
        "expires_at": expires_at,
    }
    inserted = repository.insert_grant(connection, values)
    if inserted:
        repository.change_credit(connection, practice_id, amount)
    existing = repository.grant_by_reference(connection, reference)
    assert existing is not None
    first = replace(_grant(existing), replayed=not inserted)
    if (first.practice_id, first.amount_micros, first.source, first.priority, first.expires_at) != (
        practice_id,
        amount,
        source,
        priority,
        expires_at,
    ):
        raise Conflict(
            f"reference {reference!r} already credited {first.amount_usd} USD ({first.source}) "
            f"to practice {first.practice_id!r}",
            field="reference",
        )
    return first


def list_grants(connection: Connection, practice_id: str) -> list[CreditGrant]:
    get_practice(connection, practice_id)
    return [_grant(row) for row in repository.list_grants(connection, practice_id)]


def expire_due_grants(connection: Connection, practice_id: str, now: datetime) -> int:
    """Retire what is left on the practice's grants whose expiry has come; returns the micro-USD retired.

    The caller holds the practice's lock (see `store.dialect.lock_practices`).
    """
    retired = 0
    for row in repository.due_grants(connection, practice_id, now):
        repository.expire_grant(connection, row.grant_id, row.remaining_micros, now)
        retired += row.remaining_micros
    repository.change_credit(connection, practice_id, -retired)
    return retired
