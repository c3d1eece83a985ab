"""A practice's money at one instant, read in O(1) from its balance row and its current period.

Loading state for a write also brings the rows up to date first: grants whose expiry has come are
retired, and the current period is resolved again when the cached one has ended or a subscription,
plan or practice change cleared it. A read that finds either due returns None, and the caller
retries in a write transaction, so reads never write. `current_state` makes the same decision for a
row read with many others (the operator's overview), so only the practices due go the long way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection

from aibudget.accounts import service as accounts
from aibudget.accounts.service import Period, Policy, Practice, Rules
from aibudget.credit.repository import credit_expiring_by
from aibudget.credit.service import expire_due_grants
from aibudget.errors import NotFound
from aibudget.ledger import repository
from aibudget.ledger.repository import StateRow
from aibudget.store.dialect import lock_practices
from aibudget.views.snapshot import AutoTopupState, Snapshot


@dataclass(frozen=True, slots=True)
class LedgerRules:
    """Settings the ledger's decisions depend on."""

    accounts: Rules = field(default_factory=Rules)
    hold_ttl: timedelta = timedelta(minutes=10)
    default_max_output_tokens: int = 4096


@dataclass(frozen=True, slots=True)
class State:
    practice: Practice
    held_micros: int
    credit_micros: int
    period: Period | None
    auto_topup: AutoTopupState = field(default_factory=AutoTopupState)
    # credit that expires before a hold taken now could be settled: a new call cannot count on it
    expiring_credit_micros: int = 0

    @property
    def available_micros(self) -> int:
        """Included left + lasting credit left - holds; may be negative when settled cost outran holds."""
        included = self.period.included_remaining_micros if self.period else 0
        return included + self.credit_micros - self.expiring_credit_micros - self.held_micros

    def snapshot(self) -> Snapshot:
        return Snapshot(
            practice_id=self.practice.practice_id,
            locale=self.practice.locale,
            timezone=self.practice.timezone,
            policy=self.practice.policy,
            warning_percent=self.practice.warning_percent,
            held_micros=self.held_micros,
            extra_credit_remaining_micros=self.credit_micros,
            auto_topup=self.auto_topup,
            expiring_credit_micros=self.expiring_credit_micros,
            **period_figures(self.period),
        )


def period_figures(period: Period | None) -> dict[str, Any]:
    """The fields of a `Snapshot` that its period gives (those of no period when None)."""
    if period is None:
        return {"period_id": None, "subscription_id": None, "plan": None, "period_start": None,
                "period_end": None, "included_micros": 0, "used_micros": 0, "included_remaining_micros": 0,
                "overage_micros": 0}  # fmt: skip
    return {
        "period_id": period.period_id,
        "subscription_id": period.subscription_id,
        "plan": period.plan,
        "period_start": period.start,
        "period_end": period.end,
        "included_micros": period.included_micros,
        "used_micros": period.used_micros,
        "included_remaining_micros": period.included_remaining_micros,
        "overage_micros": period.overage_micros,
    }


def _stale_period(row: StateRow, now: datetime) -> bool:
    if row.period_id is None:
        return True
    until = row.period_valid_until
    start = row.period_start or 0
    return until is not None and not (start <= now.timestamp() < until.timestamp())


def _expiry_by(row: StateRow, moment: datetime) -> bool:
    """Whether a grant with money left expires by `moment`."""
    return row.next_grant_expiry is not None and row.next_grant_expiry <= moment


def state_of(row: StateRow, *, expiring_credit_micros: int = 0) -> State:
    """The state a row shows, as it is (`load_state` and `current_state` bring it up to date)."""
    practice = Practice(
        row.practice_id, row.name, row.locale, row.timezone, cast(Policy, row.policy), row.warning_percent
    )
    period = None if row.period_id is None else accounts.period_from_row(row)
    auto_topup = AutoTopupState(bool(row.auto_topup_enabled), row.auto_topup_paused_reason)
    return State(practice, row.held_micros, row.credit_micros, period, auto_topup, expiring_credit_micros)


def current_state(row: StateRow, *, now: datetime, rules: LedgerRules, subscribed: bool) -> State | None:
    """The state `load_state` would give from `row`, read by the caller with many others (see
    `repository.states`), without writing or querying again; None when only `load_state` can tell,
    because the period is to be resolved again (it ended, or a change cleared it while a subscription
    grants the practice access: `subscribed`) or credit expires within a hold's TTL (which includes
    grants whose expiry has come). Without a cached period nor a subscription, the period stays None."""
    period_due = _stale_period(row, now) and (row.period_id is not None or subscribed)
    if period_due or _expiry_by(row, now + rules.hold_ttl):
        return None
    return state_of(row)


def load_state(
    connection: Connection, practice_id: str, *, now: datetime, rules: LedgerRules, write: bool
) -> State | None:
    """The practice's state; with `write`, locked and brought up to date (see module doc)."""
    if write:
        lock_practices(connection, [practice_id])
    row = repository.state(connection, practice_id)
    if row is None:
        raise NotFound(f"practice {practice_id!r} does not exist", field="practice_id")
    grants_due, period_stale = _expiry_by(row, now), _stale_period(row, now)
    if grants_due or period_stale:
        if not write:
            return None
        if grants_due:
            expire_due_grants(connection, practice_id, now)
        if period_stale:
            accounts.current_period(connection, practice_id, at=now, rules=rules.accounts)
        row = repository.state(connection, practice_id)
        assert row is not None
    expiring = 0
    if _expiry_by(row, now + rules.hold_ttl):
        expiring = credit_expiring_by(connection, practice_id, now + rules.hold_ttl)
    return state_of(row, expiring_credit_micros=expiring)
