"""Authorize, settle, void and expire: holds against availability, and the posting of real cost.

The two-phase life of a call (after TigerBeetle's pending transfers):

    authorize ──> active ──settle──> settled     cost posted through the waterfall, hold released
                        ├──void────> voided      hold released, nothing posted
                        └──expire──> expired     hold released by the sweeper after its TTL
    authorize ──> refused                        402; recorded as a `blocked` event

Settling without an authorization is allowed (record-after-the-call), and so is settling after a
hold expired or was voided: a call that happened is never lost. Authorizing a request that is
already settled is a `Conflict`: its hold would wait for a settle that already happened.

Every operation is idempotent on `(practice, request_id)`: the authorization row and the settlement
record (pointing at its event) are the idempotency records, so a replay finds what the first attempt
wrote and returns it; the same id with another body is an `IdempotencyConflict`. All functions run
inside the caller's write transaction and lock the practice first.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlalchemy import Connection

from aibudget.accounts.service import Device, Practice, get_period
from aibudget.credit import repository as credit_repository
from aibudget.errors import Conflict, IdempotencyConflict, InvalidInput, NotFound
from aibudget.ledger import repository
from aibudget.ledger.estimate import Estimate, canonical
from aibudget.ledger.metadata import scrub_metadata
from aibudget.ledger.repository import AuthorizationRow, EventRow
from aibudget.ledger.state import LedgerRules, State, load_state
from aibudget.ledger.waterfall import Allocation, allocate
from aibudget.money import to_decimal
from aibudget.pricing.catalog import Price, PriceCatalog, Usage
from aibudget.views.refusal import refusal_payload
from aibudget.views.snapshot import Snapshot

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
_OPERATION = re.compile(r"[A-Za-z0-9._:-]{1,32}")
SETTLE_STATUSES = ("success", "error")
# holds one sweep releases at most: a backlog takes a few passes, never one pass without end
SWEEP_LIMIT = 1_000


@dataclass(frozen=True, slots=True)
class Authorization:
    authorization_id: str
    practice_id: str
    request_id: str
    operation: str
    model: str
    status: str  # active | settled | voided | expired
    estimate_micros: int
    held_micros: int
    created_at: datetime
    expires_at: datetime
    replayed: bool = False  # True when this is the stored result of an earlier, identical authorize
    budget: Snapshot | None = None  # the practice's budget right after, read in the same transaction

    @property
    def held_usd(self) -> Decimal:
        return to_decimal(self.held_micros)

    @property
    def estimate_usd(self) -> Decimal:
        return to_decimal(self.estimate_micros)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused authorization: the 402 payload, as first given."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Deferred:
    """An authorization neither granted nor refused: the refusal hook started something that may fund
    the call (an automatic top-up), nothing was written, and the caller asks again afterwards."""

    reason: str


# Called with the refusal reason before a refusal is written; returns the reason to refuse with
# (possibly a more precise one), or None to defer the decision (see `Deferred`).
RefusalHook = Callable[[Connection, State, str], str | None]


@dataclass(frozen=True, slots=True)
class UsageEvent:
    event_id: int
    practice_id: str
    request_id: str
    status: str
    operation: str
    model: str
    priced_as: str | None
    cost_micros: int
    overage_micros: int
    price_source: str | None
    price_version: str | None
    period_id: int | None
    occurred_at: datetime
    allocations: tuple[Allocation, ...]
    replayed: bool = False  # True when this is the stored result of an earlier, identical settle
    budget: Snapshot | None = None  # the practice's budget right after, read in the same transaction

    @property
    def cost_usd(self) -> Decimal:
        return to_decimal(self.cost_micros)

    @property
    def overage_usd(self) -> Decimal:
        return to_decimal(self.overage_micros)


def _body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _check(value: object, field: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInput(f"{field}: {value!r} must be {what}", field=field)
    return value


def check_request_id(request_id: object) -> str:
    return _check(request_id, "request_id", _REQUEST_ID, "1-128 printable ASCII characters without spaces")


def check_operation(operation: object) -> str:
    return _check(operation, "operation", _OPERATION, "1-32 characters of A-Z a-z 0-9 . _ : -")


def _authorization(row: AuthorizationRow, *, replayed: bool = False) -> Authorization:
    return Authorization(
        row.authorization_id,
        row.practice_id,
        row.request_id,
        row.operation,
        row.model,
        row.status,
        row.estimate_micros,
        row.held_micros,
        row.created_at,
        row.expires_at,
        replayed,
    )


def budget_after(connection: Connection, practice_id: str, *, now: datetime, rules: LedgerRules) -> Snapshot:
    """The practice's snapshot inside the current write transaction, after its changes.

    The transaction already holds the practice's lock and brought its state up to date at `now`,
    so this is mostly a plain read; only a practice without a current period (which a read never
    takes as up to date) is loaded the writing way again.
    """
    state = load_state(connection, practice_id, now=now, rules=rules, write=False) or _write_state(
        connection, practice_id, now, rules
    )
    return state.snapshot()


def _write_state(connection: Connection, practice_id: str, now: datetime, rules: LedgerRules) -> State:
    state = load_state(connection, practice_id, now=now, rules=rules, write=True)
    assert state is not None  # a write load always brings the state up to date
    return state


def authorize(
    connection: Connection,
    practice_id: str,
    *,
    request_id: str,
    operation: str,
    model: str,
    estimate: Estimate,
    device: Device | None = None,
    now: datetime,
    rules: LedgerRules,
    catalog: PriceCatalog,
    on_refusal: RefusalHook | None = None,
) -> Authorization | Refusal | Deferred:
    """Hold the estimated cost against the practice's availability, or refuse (SPEC §4); `on_refusal`
    may refine the reason of a refusal or defer it (see `RefusalHook`)."""
    body = {"operation": check_operation(operation), "model": model, "estimate": estimate.as_json()}
    body_hash = _body_hash(body)
    state = _write_state(connection, practice_id, now, rules)
    practice = state.practice
    existing, settled = repository.authorization_or_settled(
        connection, practice.practice_id, check_request_id(request_id)
    )
    if existing is None and settled:  # a hold now would wait for a settle that already happened
        raise Conflict(
            f"request_id {request_id!r} is already settled; authorize a call before it is made",
            field="request_id",
        )
    if existing is not None:
        if existing.body_hash != body_hash:
            raise IdempotencyConflict(
                f"request_id {request_id!r} was authorized with another body", field="request_id"
            )
        if existing.status == "refused":
            assert existing.refusal is not None
            return Refusal(existing.refusal)
        return replace(
            _authorization(existing, replayed=True),
            budget=budget_after(connection, practice_id, now=now, rules=rules),
        )

    usage = estimate.usage(default_max_output_tokens=rules.default_max_output_tokens)
    estimated = catalog.price(model, usage, at=now)
    available = state.available_micros
    reason = None
    if state.period is None:
        reason = "no_active_subscription"
    elif available <= 0:
        reason = "included_exhausted_no_credit"
    elif practice.policy == "strict" and estimated.cost_micros > available:
        reason = "insufficient_for_estimate"
    if reason and on_refusal is not None:
        refined = on_refusal(connection, state, reason)
        if refined is None:
            return Deferred(reason)
        reason = refined
    hold = 0 if reason else min(estimated.cost_micros, available)

    authorization_id, expires_at = f"auth_{secrets.token_urlsafe(18)}", now + rules.hold_ttl
    values = {
        "authorization_id": authorization_id,
        "practice_id": practice.practice_id,
        "request_id": request_id,
        "period_id": state.period.period_id if state.period else None,
        "device_suffix": device.suffix if device else None,
        "operation": operation,
        "model": model,
        "estimate": estimate.as_json(),
        "body_hash": body_hash,
        "estimate_micros": estimated.cost_micros,
        "held_micros": hold,
        "status": "refused" if reason else "active",
        "created_at": now,
        "expires_at": expires_at,
    }
    if reason:
        payload = refusal_payload(state.snapshot(), reason=reason, request_id=request_id)
        repository.insert_authorization(connection, {**values, "refusal": payload, "closed_at": now})
        repository.insert_event(
            connection,
            _event_values(practice, state, request_id, operation, model, device, now, status="blocked")
            | {"error_code": reason, "period_id": values["period_id"]},
        )
        return Refusal(payload)
    repository.insert_authorization(connection, values)
    repository.change_held(connection, practice.practice_id, hold)
    after = replace(state, held_micros=state.held_micros + hold)  # what a read would now find
    return Authorization(
        authorization_id,
        practice.practice_id,
        request_id,
        operation,
        model,
        "active",
        estimated.cost_micros,
        hold,
        now,
        expires_at,
        budget=after.snapshot(),
    )


def settle(
    connection: Connection,
    practice_id: str,
    *,
    request_id: str,
    model: str,
    usage: Usage,
    operation: str | None = None,
    status: str = "success",
    error_code: str | None = None,
    meta: dict[str, Any] | None = None,
    estimated: bool = False,
    device: Device | None = None,
    now: datetime,
    rules: LedgerRules,
    catalog: PriceCatalog,
) -> UsageEvent:
    """Post the real cost of a call through the waterfall and release its hold, once per request."""
    if status not in SETTLE_STATUSES:
        raise InvalidInput(f"status: {status!r} is not one of success, error", field="status")
    if error_code is not None and (not isinstance(error_code, str) or not 1 <= len(error_code) <= 64):
        raise InvalidInput("error_code must be 1-64 characters", field="error_code")
    if not isinstance(estimated, bool):
        raise InvalidInput("estimated must be true or false", field="estimated")
    scrubbed = scrub_metadata(meta)
    body = {
        "model": model,
        "usage": [
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.output_tokens,
            usage.input_audio_tokens,
            canonical(usage.seconds),
        ],
        "operation": operation,
        "status": status,
        "error_code": error_code,
        "meta": scrubbed,
        "estimated": estimated,
    }
    body_hash = _body_hash(body)
    state = _write_state(connection, practice_id, now, rules)
    practice = state.practice
    existing, held = repository.settlement_and_authorization(
        connection, practice.practice_id, check_request_id(request_id)
    )
    if existing is not None:
        if existing.body_hash != body_hash:
            raise IdempotencyConflict(
                f"request_id {request_id!r} was settled with another body", field="request_id"
            )
        replayed = _event(connection, existing, replayed=True)
        return replace(replayed, budget=budget_after(connection, practice_id, now=now, rules=rules))

    if operation is None:
        operation = held.operation if held is not None else "unspecified"
    price = catalog.price(model, usage, at=now)
    period = state.period
    if (
        held is not None
        and held.period_id is not None
        and (period is None or held.period_id != period.period_id)
    ):
        period = get_period(connection, held.period_id)  # the call belongs to the period it was authorized in
    grants = []
    if price.cost_micros > (period.included_remaining_micros if period else 0) and state.credit_micros > 0:
        grants = credit_repository.usable_grants(connection, practice.practice_id, now)
    split = allocate(
        price.cost_micros,
        included_remaining_micros=period.included_remaining_micros if period else 0,
        grants=grants,
    )
    overage = sum(part.amount_micros for part in split if part.pot == "overage")
    values = (
        _event_values(
            practice, state, request_id, check_operation(operation), model, device, now, status=status
        )
        | _usage_values(usage, price)
        | {
            "period_id": period.period_id if period else None,
            "subscription_id": period.subscription_id if period else None,
            "authorization_id": held.authorization_id if held is not None else None,
            "device_suffix": device.suffix if device else (held.device_suffix if held is not None else None),
            "overage_micros": overage,
            "error_code": error_code,
            "estimated": estimated,
            "body_hash": body_hash,
            "meta": scrubbed or None,
        }
    )
    event_id = repository.insert_settlement(connection, values)
    if event_id is None:  # impossible under the practice lock; never charge twice regardless
        raise Conflict(f"request_id {request_id!r} is being settled concurrently", field="request_id")
    repository.insert_allocations(connection, event_id, values["period_id"], split)
    current = state.period
    if period is not None:
        included = sum(part.amount_micros for part in split if part.pot == "included")
        repository.charge_period(
            connection,
            period.period_id,
            included_micros=included,
            cost_micros=price.cost_micros,
            overage_micros=overage,
        )
        if current is not None and current.period_id == period.period_id:
            current = current.charged(
                included_micros=included, cost_micros=price.cost_micros, overage_micros=overage
            )
    credit = [part for part in split if part.pot == "credit"]
    for part in credit:
        assert part.grant_id is not None
        credit_repository.take_from_grant(connection, part.grant_id, part.amount_micros)
    if credit:
        credit_repository.change_credit(
            connection, practice.practice_id, -sum(part.amount_micros for part in credit)
        )
    released = 0
    if held is not None and held.status == "active":
        repository.close_authorization(connection, held.authorization_id, "settled", now)
        repository.change_held(connection, practice.practice_id, -held.held_micros)
        released = held.held_micros
    if credit:  # grants moved, and with them which credit expires soon: read the result back
        budget = budget_after(connection, practice_id, now=now, rules=rules)
    else:
        budget = replace(state, held_micros=state.held_micros - released, period=current).snapshot()
    return UsageEvent(
        event_id,
        practice.practice_id,
        request_id,
        status,
        values["operation"],
        model,
        price.priced_as,
        price.cost_micros,
        overage,
        price.source,
        price.version,
        values["period_id"],
        now,
        tuple(split),
        budget=budget,
    )


def void(
    connection: Connection, practice_id: str, *, request_id: str, now: datetime, rules: LedgerRules
) -> Authorization:
    """Release the hold of a call that was not made. Voiding twice returns the first result."""
    state = _write_state(connection, practice_id, now, rules)
    practice = state.practice
    held, settled = repository.authorization_or_settled(
        connection, practice.practice_id, check_request_id(request_id)
    )
    # a hold voided before its call was settled anyway stays voided: a replay gets that first result
    if (held is None and settled) or (held is not None and held.status == "settled"):
        raise Conflict(f"request_id {request_id!r} is settled; its cost stands", field="request_id")
    if held is None:
        raise NotFound(f"request_id {request_id!r} has no authorization to void", field="request_id")
    if held.status == "active":
        _release(connection, practice, state, held, "voided", now)
        held = repository.authorization(connection, practice.practice_id, request_id)
        assert held is not None
    return replace(_authorization(held), budget=budget_after(connection, practice_id, now=now, rules=rules))


def due_for_expiry(connection: Connection, *, now: datetime, limit: int) -> list[str]:
    """The sweeper's work list: the practices with holds past their TTL, the one with the oldest
    first (at most `limit` of them), then the other practices with grants past their expiry. Each is
    then swept by `expire_holds`."""
    due = repository.practices_with_due_holds(connection, now, limit)
    listed = set(due)
    due += (p for p in credit_repository.practices_with_due_grants(connection, now) if p not in listed)
    return due


def expire_holds(
    connection: Connection, practice_id: str, *, now: datetime, rules: LedgerRules, limit: int
) -> int:
    """Retire the practice's grants past their expiry and release its `limit` oldest holds past their
    TTL (the sweeper's work for one practice); returns how many holds expired.

    The holds are read after the practice is locked: one settled or voided since `due_for_expiry`
    read it is not among them."""
    state = _write_state(connection, practice_id, now, rules)
    due = repository.due_authorizations(connection, practice_id, now, limit) if limit > 0 else []
    return sum(_release(connection, state.practice, state, row, "expired", now) for row in due)


def _release(
    connection: Connection,
    practice: Practice,
    state: State,
    held: AuthorizationRow,
    status: str,
    now: datetime,
) -> int:
    if not repository.close_authorization(connection, held.authorization_id, status, now):
        return 0  # settled or voided meanwhile
    repository.change_held(connection, practice.practice_id, -held.held_micros)
    repository.insert_event(
        connection,
        _event_values(practice, state, held.request_id, held.operation, held.model, None, now, status=status)
        | {
            "period_id": held.period_id,
            "authorization_id": held.authorization_id,
            "device_suffix": held.device_suffix,
        },
    )
    return 1


def _event_values(
    practice: Practice,
    state: State,
    request_id: str,
    operation: str,
    model: str,
    device: Device | None,
    now: datetime,
    *,
    status: str,
) -> dict[str, Any]:
    return {
        "occurred_at": now,
        "practice_id": practice.practice_id,
        "subscription_id": state.period.subscription_id if state.period else None,
        "request_id": request_id,
        "device_suffix": device.suffix if device else None,
        "operation": operation,
        "model": model,
        "status": status,
    }


def _usage_values(usage: Usage, price: Price) -> dict[str, Any]:
    return {
        "priced_as": price.priced_as,
        "price_source": price.source,
        "price_version": price.version,
        "cost_micros": price.cost_micros,
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "input_audio_tokens": usage.input_audio_tokens,
        "audio_ms": int((usage.seconds * 1000).to_integral_value(rounding=ROUND_CEILING)),
    }


def _event(connection: Connection, row: EventRow, *, replayed: bool = False) -> UsageEvent:
    return UsageEvent(
        row.event_id,
        row.practice_id,
        row.request_id,
        row.status,
        row.operation,
        row.model,
        row.priced_as,
        row.cost_micros,
        row.overage_micros,
        row.price_source,
        row.price_version,
        row.period_id,
        row.occurred_at,
        tuple(repository.allocations_of(connection, row.event_id)),
        replayed,
    )
