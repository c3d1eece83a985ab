"""`verify`: recompute every cached balance from the ledger and list where they differ (G3).

The ledger is the truth; the balance rows are a cache the hot path reads. They must agree:

- each event's allocations add up to its cost, and its overage allocation to its `overage_micros`;
  every allocation has its event, every settled event its settlement record and back;
- a period's `included_used`, `used` and `overage` are the sums of its events' allocations and costs,
  plus what pruned events had added (`pruned_*`, see `ledger.retention`);
- a grant's `remaining + expired + pruned spent + Σ credit allocations = amount`;
- a practice's `credit` is the sum of its grants' remaining, its `held` the sum of its active holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, func, select

from aibudget.store import tables

events, allocations, settlements = tables.usage_events, tables.allocations, tables.settlements
periods, grants, balances, authorizations = (
    tables.periods,
    tables.credit_grants,
    tables.balances,
    tables.authorizations,
)


@dataclass(frozen=True, slots=True)
class Discrepancy:
    table: str
    key: str
    column: str
    stored: int
    recomputed: int

    def __str__(self) -> str:
        return f"{self.table}[{self.key}].{self.column}: stored {self.stored}, ledger says {self.recomputed}"


def _compare(
    table: str, stored: Iterable[tuple[object, Mapping[str, int]]], ledger: Mapping[Any, Mapping[str, int]]
) -> list[Discrepancy]:
    found = []
    for key, columns in stored:
        for column, value in columns.items():
            recomputed = int(ledger.get(key, {}).get(column, 0))  # PostgreSQL sums bigints as numeric
            if value != recomputed:
                found.append(Discrepancy(table, str(key), column, value, recomputed))
    return found


def verify(connection: Connection) -> list[Discrepancy]:
    """Every difference between the cached balances and the ledger; empty when the books balance."""
    found: list[Discrepancy] = []

    per_event = select(
        allocations.c.event_id,
        func.sum(allocations.c.amount_micros).label("allocated"),
        func.sum(case((allocations.c.pot == "overage", allocations.c.amount_micros), else_=0)).label(
            "overage"
        ),
    ).group_by(allocations.c.event_id)
    ledger_events = {
        row.event_id: {"cost_micros": row.allocated, "overage_micros": row.overage}
        for row in connection.execute(per_event)
    }
    event_rows = list(
        connection.execute(
            select(events.c.event_id, events.c.status, events.c.cost_micros, events.c.overage_micros)
        )
    )
    found += _compare(
        "usage_events",
        (
            (row.event_id, {"cost_micros": row.cost_micros, "overage_micros": row.overage_micros})
            for row in event_rows
        ),
        ledger_events,
    )
    # what foreign keys would check, were the events table free of them (see `store.tables`)
    event_ids = {row.event_id for row in event_rows}
    found += [
        Discrepancy("allocations", str(event_id), "amount_micros", int(allocated["cost_micros"]), 0)
        for event_id, allocated in ledger_events.items()
        if event_id not in event_ids
    ]
    settled_ids = {row.event_id for row in event_rows if row.status in ("success", "error")}
    recorded = dict(list(connection.execute(select(settlements.c.event_id, settlements.c.request_id))))
    found += [
        Discrepancy("settlements", request_id, "event_id", event_id, 0)
        for event_id, request_id in recorded.items()
        if event_id not in settled_ids
    ]
    found += [
        Discrepancy("usage_events", str(event_id), "settlement", 0, 1)
        for event_id in settled_ids - recorded.keys()
    ]

    period_rows = list(connection.execute(select(periods)))
    ledger_periods: dict[object, dict[str, int]] = {
        row.period_id: {
            "included_used_micros": row.pruned_included_used_micros,
            "used_micros": row.pruned_used_micros,
            "overage_micros": row.pruned_overage_micros,
        }
        for row in period_rows
    }
    settled = events.c.status.in_(("success", "error"))
    for period_id, used, overage in connection.execute(
        select(events.c.period_id, func.sum(events.c.cost_micros), func.sum(events.c.overage_micros))
        .where(settled, events.c.period_id.is_not(None))
        .group_by(events.c.period_id)
    ):
        ledger_periods[period_id]["used_micros"] += used  # every period_id names a row (foreign key)
        ledger_periods[period_id]["overage_micros"] += overage
    for period_id, included in connection.execute(
        select(allocations.c.period_id, func.sum(allocations.c.amount_micros))
        .where(allocations.c.pot == "included")
        .group_by(allocations.c.period_id)
    ):
        ledger_periods[period_id]["included_used_micros"] += included
    found += _compare(
        "periods",
        (
            (
                row.period_id,
                {
                    "included_used_micros": row.included_used_micros,
                    "used_micros": row.used_micros,
                    "overage_micros": row.overage_micros,
                },
            )
            for row in period_rows
        ),
        ledger_periods,
    )

    spent: dict[int, int] = dict(
        list(
            connection.execute(
                select(allocations.c.grant_id, func.sum(allocations.c.amount_micros))
                .where(allocations.c.pot == "credit")
                .group_by(allocations.c.grant_id)
            )
        )
    )

    def left_of(grant: Any) -> int:
        return int(
            grant.amount_micros
            - grant.expired_micros
            - grant.pruned_spent_micros
            - spent.get(grant.grant_id, 0)
        )

    credit_of: dict[str, dict[str, int]] = defaultdict(lambda: {"credit_micros": 0})
    grant_rows = list(connection.execute(select(grants)))
    found += _compare(
        "credit_grants",
        ((row.grant_id, {"remaining_micros": row.remaining_micros}) for row in grant_rows),
        {row.grant_id: {"remaining_micros": left_of(row)} for row in grant_rows},
    )
    for row in grant_rows:  # recomputed from the ledger, so a tampered grant is reported on the grant alone
        credit_of[row.practice_id]["credit_micros"] += left_of(row)
    held_of: dict[str, int] = dict(
        list(
            connection.execute(
                select(authorizations.c.practice_id, func.sum(authorizations.c.held_micros))
                .where(authorizations.c.status == "active")
                .group_by(authorizations.c.practice_id)
            )
        )
    )
    ledger_balances = {key: {**value, "held_micros": held_of.get(key, 0)} for key, value in credit_of.items()}
    for practice_id, held in held_of.items():
        ledger_balances.setdefault(practice_id, {"credit_micros": 0, "held_micros": held})
    found += _compare(
        "balances",
        (
            (row.practice_id, {"credit_micros": row.credit_micros, "held_micros": row.held_micros})
            for row in connection.execute(select(balances))
        ),
        ledger_balances,
    )
    return found
