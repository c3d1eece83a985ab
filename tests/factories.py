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


# Ledger and credit helpers (tests/ledger, tests/credit)

# Imported here, not at the top, so this block only ever appends to the file.
from decimal import Decimal  # noqa: E402

from sqlalchemy import Row, Table, select  # noqa: E402

from aibudget import UsageEvent  # noqa: E402
from aibudget.store.dialect import read_transaction  # noqa: E402

USD = 1_000_000  # micro-USD in one USD
# whisper-1 costs 0.006 USD per minute: 0.0001 USD, 100 micro-USD, per second of audio.
WHISPER_SECONDS_PER_USD = 10_000
MONEY_TABLES = (
    tables.usage_events,
    tables.allocations,
    tables.authorizations,
    tables.balances,
    tables.periods,
    tables.credit_grants,
)


def open_practice(
    budget: Budget,
    practice_id: str = "p1",
    *,
    included_usd: str = "20",
    policy: str = "allow_last_call",
    **subscription: Any,
) -> Practice:
    """A practice with an active subscription to a plan including `included_usd` per period.

    Without period fields the periods are calendar months in the practice's timezone.
    """
    plan = f"included-{included_usd}"
    budget.put_plan(plan, included_usd=included_usd)
    practice = create_practice(budget, practice_id, policy=policy)
    create_subscription(budget, f"sub_{practice_id}", practice_id, plan=plan, **subscription)
    return practice


def transcribe(
    budget: Budget, request_id: str, *, usd: str, practice_id: str = "p1", **settle: Any
) -> UsageEvent:
    """Settle a whisper-1 transcription whose audio costs exactly `usd` at the catalog price."""
    seconds = Decimal(usd) * WHISPER_SECONDS_PER_USD
    assert seconds == seconds.to_integral_value(), f"{usd} USD is not a whole number of audio seconds"
    return budget.settle(
        practice_id=practice_id,
        request_id=request_id,
        operation="transcribe",
        model="whisper-1",
        audio_seconds=int(seconds),
        **settle,
    )


def rows(budget: Budget, table: Table, *where: Any) -> list[Row[Any]]:
    """The rows of a table, in primary-key order (reading tables in assertions is fine)."""
    with read_transaction(budget.engine) as connection:
        return list(connection.execute(select(table).where(*where).order_by(*table.primary_key.columns)))


def usage_events(budget: Budget, *where: Any) -> list[Row[Any]]:
    return rows(budget, tables.usage_events, *where)


def money_tables(budget: Budget) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table that holds money, to show that a refused call wrote nothing."""
    return {table.name: [tuple(row) for row in rows(budget, table)] for table in MONEY_TABLES}
