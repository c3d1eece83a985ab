"""Plain helpers that build state for tests through the public API, with sensible defaults."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from aibudget import Budget, Practice, Subscription
from aibudget.store import tables
from aibudget.store.dialect import write_transaction

DECEMBER_2025 = (1764547200, 1767225600)  # 2025-12-01 .. 2026-01-01 UTC


def create_practice(budget: Budget, practice_id: str = "p1", **overrides: Any) -> Practice:
    return budget.put_practice(practice_id, **{"name": "Praxis Muster", **overrides})


def create_subscription(
    budget: Budget, subscription_id: str = "sub_1", practice_id: str = "p1", **overrides: Any
) -> Subscription:
    fields: dict[str, Any] = {"plan": "basic", "status": "active"}
    fields.update(overrides)
    return budget.put_subscription(subscription_id, practice_id=practice_id, **fields)


def spend_included(budget: Budget, period_id: int, micros: int) -> None:
    """Mark part of a period's included budget as used, as the ledger's settle does."""
    periods = tables.periods
    with write_transaction(budget.engine) as connection:
        connection.execute(
            update(periods)
            .where(periods.c.period_id == period_id)
            .values(
                included_used_micros=periods.c.included_used_micros + micros,
                used_micros=periods.c.used_micros + micros,
            )
        )
