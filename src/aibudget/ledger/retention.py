"""Retention: removing old ledger history without changing any balance.

`prune_events` deletes, in batches, the usage events that occurred before a cut-off (with their
allocations); `prune_authorizations` the authorizations no longer open whose hold ran out before
it. What a deleted event added to its period (`used`, `included_used`, `overage`) and spent of a
grant is first added to that row's `pruned_*` columns, in the same transaction, so:

- no balance changes: `periods`, `credit_grants` and `balances` keep every money column as it was;
- `verify` still recomputes every balance: carried totals plus what is left of the ledger.

Active holds are never pruned. A request id whose records were pruned is no longer recognised as a
replay, so the cut-off should lie well behind any client's retry window (SPEC §5 G4); reports of a
pruned range come back empty.

Batches walk the events in id order (insertion order, so the old events come first) and stop at the
first one at or after the cut-off, which keeps each batch's cost bounded by its size, not by history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, Table, delete, func, select, update

from aibudget.errors import InvalidInput
from aibudget.ledger.reports import resolve_bound
from aibudget.store import tables
from aibudget.store.dialect import lock_practices

BATCH = 5_000
events, allocations = tables.usage_events, tables.allocations
periods, grants, authorizations = tables.periods, tables.credit_grants, tables.authorizations
CLOSED = ("settled", "voided", "expired", "refused")


@dataclass(frozen=True, slots=True)
class Pruned:
    events: int
    authorizations: int


def cutoff(before: date | datetime, *, now: datetime) -> datetime:
    """The instant `before` stands for (a date or naive date-time is UTC); never later than `now`."""
    instant = resolve_bound(before, "UTC", field="before")
    assert instant is not None
    if instant > now:
        raise InvalidInput(
            f"before: {instant.isoformat()} is in the future; only history can be pruned", field="before"
        )
    return instant


def prune_events(connection: Connection, before: datetime, *, limit: int = BATCH) -> int:
    """Delete up to `limit` events that occurred before `before`, oldest ids first; how many went.

    The caller's transaction is the unit: the carried totals and the deletion commit together.
    """
    batch = connection.execute(
        select(events.c.event_id, events.c.practice_id)
        .where(events.c.occurred_at < before)
        .order_by(events.c.event_id)
        .limit(limit)
    ).all()
    if not batch:
        return 0
    ids = [row.event_id for row in batch]
    lock_practices(connection, [row.practice_id for row in batch])

    # what the batch added to its periods and spent of its grants, carried before it goes
    settled = events.c.status.in_(("success", "error"))
    _carry(connection, periods, events.c.period_id,
           {"pruned_used_micros": events.c.cost_micros, "pruned_overage_micros": events.c.overage_micros},
           events.c.event_id.in_(ids), settled, events.c.period_id.is_not(None))  # fmt: skip
    _carry(connection, periods, allocations.c.period_id,
           {"pruned_included_used_micros": allocations.c.amount_micros},
           allocations.c.event_id.in_(ids), allocations.c.pot == "included")  # fmt: skip
    _carry(connection, grants, allocations.c.grant_id, {"pruned_spent_micros": allocations.c.amount_micros},
           allocations.c.event_id.in_(ids), allocations.c.pot == "credit")  # fmt: skip
    connection.execute(delete(tables.settlements).where(tables.settlements.c.event_id.in_(ids)))
    connection.execute(delete(allocations).where(allocations.c.event_id.in_(ids)))
    connection.execute(delete(events).where(events.c.event_id.in_(ids)))
    return len(ids)


def _carry(
    connection: Connection,
    target: Table,
    key: Column[Any],
    sums: dict[str, Column[Any]],
    *where: ColumnElement[bool],
) -> None:
    """Add `Σ sums[column]` of the rows matching `where`, per `key`, to `target.column` of the row
    with that key (the target's primary key has the key's name)."""
    totals = select(key, *(func.sum(summed) for summed in sums.values())).where(*where).group_by(key)
    target_key = target.c[key.name]
    for found, *amounts in connection.execute(totals.order_by(key)):
        additions = {column: target.c[column] + amount for column, amount in zip(sums, amounts, strict=True)}
        connection.execute(update(target).where(target_key == found).values(additions))


def prune_authorizations(connection: Connection, before: datetime, *, limit: int = BATCH) -> int:
    """Delete up to `limit` closed authorizations whose hold ran out before `before` (an open one,
    which holds money, is never touched); how many went."""
    ids = (
        select(authorizations.c.authorization_id)
        .where(authorizations.c.status.in_(CLOSED), authorizations.c.expires_at < before)
        .limit(limit)
        .scalar_subquery()
    )
    deleted = connection.execute(
        delete(authorizations)
        .where(authorizations.c.authorization_id.in_(ids))
        .returning(authorizations.c.authorization_id)
    )
    return len(deleted.all())
