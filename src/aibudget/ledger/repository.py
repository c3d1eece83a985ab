"""SQL for authorizations, usage events, allocations and the balance rows they move.

These statements are the hot path of every AI call, so they are hand-written `store.sql.Statement`s
(see that module for why). Every balance change is a relative `UPDATE … SET x = x + :delta`, never a
value computed from an earlier read, so the database's CHECKs see the true result. Callers own the
transaction and hold the practice's lock (`store.dialect.lock_practices`) to write; `states`, the
operator's overview, reads the state rows of many practices at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, func, select

from aibudget.accounts.service import Period
from aibudget.ledger.waterfall import Allocation
from aibudget.store import tables
from aibudget.store.sql import Statement, as_json, from_json, instant, micros


class StateRow(NamedTuple):
    practice_id: str
    name: str
    locale: str
    timezone: str
    policy: str
    warning_percent: int
    held_micros: int
    credit_micros: int
    period_id: int | None
    period_valid_until: datetime | None
    next_grant_expiry: datetime | None
    subscription_id: str | None
    period_start: int | None
    period_end: int | None
    plan: str | None
    included_micros: int | None
    included_used_micros: int | None
    used_micros: int | None
    overage_micros: int | None
    auto_topup_enabled: bool | None
    auto_topup_paused_reason: str | None


_STATE_OF = """
    SELECT p.practice_id, p.name, p.locale, p.timezone, p.policy, p.warning_percent,
           b.held_micros, b.credit_micros, b.period_id, b.period_valid_until, b.next_grant_expiry,
           r.subscription_id, r.period_start, r.period_end, r.plan,
           r.included_micros, r.included_used_micros, r.used_micros, r.overage_micros,
           t.enabled, t.paused_reason
    FROM practices p
    JOIN balances b ON b.practice_id = p.practice_id
    LEFT JOIN periods r ON r.period_id = b.period_id
    LEFT JOIN auto_topup_settings t ON t.practice_id = p.practice_id
"""
_STATE = Statement(_STATE_OF + "WHERE p.practice_id = :practice_id")
_STATES = Statement(_STATE_OF)


def _state_row(row: tuple[Any, ...]) -> StateRow:
    values = list(row)
    values[9], values[10] = instant(values[9]), instant(values[10])
    return StateRow(*values)


def state(connection: Connection, practice_id: str) -> StateRow | None:
    """The practice, its balance row and its cached current period, in one query."""
    row = _STATE.one(connection, {"practice_id": practice_id})
    return None if row is None else _state_row(row)


def states(connection: Connection, *, matching: str = "") -> list[StateRow]:
    """`state` of every practice whose id or name contains `matching` (ignoring case), in one query
    and in no particular order; all practices when `matching` is empty.

    Matched here, not in SQL: SQLite's lower() and PostgreSQL's under the C locale fold ASCII only,
    and a search for "müller" must find "Praxis Müller". Every row is read either way.
    """
    folded = matching.casefold()
    rows = _STATES.run(connection, {}).fetchall()
    return [
        _state_row(row)
        for row in rows
        if not folded or folded in row[0].casefold() or folded in row[1].casefold()
    ]


def subscribed_practices(connection: Connection, statuses: Sequence[str]) -> set[str]:
    """The practices with a subscription in one of `statuses` (those granting AI access): for
    `states`, which of their rows without a cached period a subscription could give one."""
    subscriptions = tables.subscriptions
    found = connection.execute(
        select(subscriptions.c.practice_id).where(subscriptions.c.status.in_(statuses)).distinct()
    )
    return set(found.scalars())


class AuthorizationRow(NamedTuple):
    authorization_id: str
    practice_id: str
    request_id: str
    period_id: int | None
    device_suffix: str | None
    operation: str
    model: str
    body_hash: str
    estimate_micros: int
    held_micros: int
    status: str
    refusal: dict[str, Any] | None
    created_at: datetime
    expires_at: datetime


_AUTHORIZATION_COLUMNS = ", ".join(AuthorizationRow._fields)
_AUTHORIZATION = Statement(f"""
    SELECT {_AUTHORIZATION_COLUMNS} FROM authorizations
    WHERE practice_id = :practice_id AND request_id = :request_id
""")
# for authorize: the request's authorization, if any, and whether it was settled, in one round trip
_AUTHORIZATION_OR_SETTLED = Statement(f"""
    SELECT {", ".join("a." + name for name in AuthorizationRow._fields)},
        EXISTS (SELECT 1 FROM settlements s WHERE s.practice_id = :practice_id AND s.request_id = :request_id)
    FROM (SELECT 1 AS one) AS request
    LEFT JOIN authorizations a ON a.practice_id = :practice_id AND a.request_id = :request_id
""")
_INSERT_AUTHORIZATION = Statement("""
    INSERT INTO authorizations (authorization_id, practice_id, request_id, period_id, device_suffix,
        operation, model, estimate, body_hash, estimate_micros, held_micros, status, refusal,
        created_at, expires_at, closed_at)
    VALUES (:authorization_id, :practice_id, :request_id, :period_id, :device_suffix, :operation, :model,
        :estimate, :body_hash, :estimate_micros, :held_micros, :status, :refusal, :created_at, :expires_at,
        :closed_at)
""")
_CLOSE_AUTHORIZATION = Statement("""
    UPDATE authorizations SET status = :status, closed_at = :now
    WHERE authorization_id = :authorization_id AND status = 'active'
""")


def _authorization(row: tuple[Any, ...]) -> AuthorizationRow:
    values = list(row)
    values[11], values[12], values[13] = from_json(values[11]), instant(values[12]), instant(values[13])
    return AuthorizationRow(*values)


def authorization(connection: Connection, practice_id: str, request_id: str) -> AuthorizationRow | None:
    row = _AUTHORIZATION.one(connection, {"practice_id": practice_id, "request_id": request_id})
    return None if row is None else _authorization(row)


def authorization_or_settled(
    connection: Connection, practice_id: str, request_id: str
) -> tuple[AuthorizationRow | None, bool]:
    """The request's authorization (None without one) and whether the request is settled."""
    row = _AUTHORIZATION_OR_SETTLED.one(connection, {"practice_id": practice_id, "request_id": request_id})
    assert row is not None  # one row always: the authorization is joined to it
    *found, settled = row
    return (None if found[0] is None else _authorization(tuple(found))), bool(settled)


def insert_authorization(connection: Connection, values: dict[str, Any]) -> None:
    """Insert a new authorization; the unique `(practice, request_id)` refuses a second one."""
    _INSERT_AUTHORIZATION.run(
        connection,
        values
        | {
            "estimate": as_json(values["estimate"]),
            "refusal": as_json(values.get("refusal")),
            "created_at": micros(values["created_at"]),
            "expires_at": micros(values["expires_at"]),
            "closed_at": micros(values.get("closed_at")),
        },
    )


def close_authorization(connection: Connection, authorization_id: str, status: str, now: datetime) -> bool:
    """Move an active authorization to `status`; False if it was no longer active."""
    cursor = _CLOSE_AUTHORIZATION.run(
        connection, {"authorization_id": authorization_id, "status": status, "now": micros(now)}
    )
    return bool(cursor.rowcount == 1)


def practices_with_due_holds(connection: Connection, now: datetime, limit: int) -> list[str]:
    """The practices with active authorizations past their expiry, the one with the oldest first; at
    most `limit` of them (the sweeper's work list)."""
    a = tables.authorizations
    return list(
        connection.execute(
            select(a.c.practice_id)
            .where(a.c.status == "active", a.c.expires_at <= now)
            .group_by(a.c.practice_id)
            .order_by(func.min(a.c.expires_at), a.c.practice_id)
            .limit(limit)
        ).scalars()
    )


def due_authorizations(
    connection: Connection, practice_id: str, now: datetime, limit: int
) -> list[AuthorizationRow]:
    """The practice's active authorizations past their expiry, the `limit` oldest, oldest first."""
    a = tables.authorizations
    rows = connection.execute(
        select(*(a.c[name] for name in AuthorizationRow._fields))
        .where(a.c.practice_id == practice_id, a.c.status == "active", a.c.expires_at <= now)
        .order_by(a.c.expires_at)
        .limit(limit)
    )
    return [AuthorizationRow(*row) for row in rows]


_CHANGE_HELD = Statement("""
    UPDATE balances SET held_micros = held_micros + :delta WHERE practice_id = :practice_id
""")
_CHARGE_PERIOD = Statement("""
    UPDATE periods SET included_used_micros = included_used_micros + :included,
        used_micros = used_micros + :cost, overage_micros = overage_micros + :overage
    WHERE period_id = :period_id
""")


# the columns of `accounts.Period`, in its order
_PERIOD = Statement("""
    SELECT period_id, practice_id, subscription_id, period_start, period_end, plan, included_micros,
        included_used_micros, used_micros, overage_micros
    FROM periods WHERE period_id = :period_id
""")


def period(connection: Connection, period_id: int) -> Period:
    """One period as this transaction sees it (after a settle charged it to a period that is no
    longer the current one, for its notifications): hand-written, as it runs on a settle."""
    row = _PERIOD.one(connection, {"period_id": period_id})
    if row is None:
        raise LookupError(f"period {period_id} does not exist")
    return Period(*row)


def change_held(connection: Connection, practice_id: str, delta_micros: int) -> None:
    _CHANGE_HELD.run(connection, {"practice_id": practice_id, "delta": delta_micros})


def charge_period(
    connection: Connection, period_id: int, *, included_micros: int, cost_micros: int, overage_micros: int
) -> None:
    _CHARGE_PERIOD.run(
        connection,
        {"period_id": period_id, "included": included_micros, "cost": cost_micros, "overage": overage_micros},
    )


class EventRow(NamedTuple):
    event_id: int
    occurred_at: datetime
    practice_id: str
    subscription_id: str | None
    period_id: int | None
    authorization_id: str | None
    request_id: str
    device_suffix: str | None
    operation: str
    model: str
    priced_as: str | None
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    input_audio_tokens: int
    audio_ms: int
    cost_micros: int
    overage_micros: int
    price_source: str | None
    price_version: str | None
    status: str
    error_code: str | None
    estimated: bool
    body_hash: str | None
    meta: dict[str, Any] | None


EVENT_DEFAULTS: dict[str, Any] = {
    "subscription_id": None, "period_id": None, "authorization_id": None, "device_suffix": None,
    "priced_as": None, "input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0,
    "input_audio_tokens": 0, "audio_ms": 0, "cost_micros": 0, "overage_micros": 0, "price_source": None,
    "price_version": None, "error_code": None, "estimated": False, "body_hash": None, "meta": None,
}  # fmt: skip
_EVENT_COLUMNS = EventRow._fields[1:]
_INSERT_EVENT = f"""
    INSERT INTO usage_events ({", ".join(_EVENT_COLUMNS)})
    VALUES ({", ".join(":" + name for name in _EVENT_COLUMNS)})
"""
_INSERT_EVENT_RETURNING = Statement(_INSERT_EVENT + " RETURNING event_id")
_INSERT_SETTLEMENT = Statement("""
    INSERT INTO settlements (practice_id, request_id, event_id, occurred_at)
    VALUES (:practice_id, :request_id, :event_id, :occurred_at)
    ON CONFLICT (practice_id, request_id) DO NOTHING RETURNING event_id
""")


def _event_params(values: dict[str, Any]) -> dict[str, Any]:
    params = EVENT_DEFAULTS | values
    params["occurred_at"] = micros(params["occurred_at"])
    params["meta"] = as_json(params["meta"])
    return params


def insert_settlement(connection: Connection, values: dict[str, Any]) -> int | None:
    """Insert the settlement event of a request and its settlement record; None, with nothing
    inserted once the caller's transaction rolls back, if the request is settled already."""
    params = _event_params(values)
    event_id = insert_event(connection, values)
    recorded = _INSERT_SETTLEMENT.one(
        connection,
        {"practice_id": params["practice_id"], "request_id": params["request_id"], "event_id": event_id,
         "occurred_at": params["occurred_at"]},
    )  # fmt: skip
    return None if recorded is None else event_id


def insert_event(connection: Connection, values: dict[str, Any]) -> int:
    """Insert an event (a settlement's through `insert_settlement`); its id."""
    row = _INSERT_EVENT_RETURNING.one(connection, _event_params(values))
    assert row is not None
    return int(row[0])


# for settle: the request's settlement event, if any, and its authorization, if any, in one round trip
_SETTLEMENT_AND_AUTHORIZATION = Statement(f"""
    SELECT {", ".join("e." + name for name in EventRow._fields)},
        {", ".join("a." + name for name in AuthorizationRow._fields)}
    FROM (SELECT 1 AS one) AS request
    LEFT JOIN settlements s ON s.practice_id = :practice_id AND s.request_id = :request_id
    LEFT JOIN usage_events e ON e.event_id = s.event_id AND e.occurred_at = s.occurred_at
    LEFT JOIN authorizations a ON a.practice_id = :practice_id AND a.request_id = :request_id
""")


def _event_row(row: tuple[Any, ...]) -> EventRow:
    values = list(row)
    values[1], values[22], values[24] = instant(values[1]), bool(values[22]), from_json(values[24])
    return EventRow(*values)


def settlement_and_authorization(
    connection: Connection, practice_id: str, request_id: str
) -> tuple[EventRow | None, AuthorizationRow | None]:
    """The request's settlement event and its authorization; None for what it does not have."""
    row = _SETTLEMENT_AND_AUTHORIZATION.one(
        connection, {"practice_id": practice_id, "request_id": request_id}
    )
    assert row is not None  # one row always: both are joined to it
    event, held = row[: len(EventRow._fields)], row[len(EventRow._fields) :]
    return (
        None if event[0] is None else _event_row(event),
        None if held[0] is None else _authorization(held),
    )


_INSERT_ALLOCATION = Statement("""
    INSERT INTO allocations (event_id, seq, pot, period_id, grant_id, amount_micros)
    VALUES (:event_id, :seq, :pot, :period_id, :grant_id, :amount_micros)
""")
_ALLOCATIONS = Statement("""
    SELECT pot, amount_micros, grant_id FROM allocations WHERE event_id = :event_id ORDER BY seq
""")


def insert_allocations(
    connection: Connection, event_id: int, period_id: int | None, split: Sequence[Allocation]
) -> None:
    for seq, part in enumerate(split):
        _INSERT_ALLOCATION.run(
            connection,
            {
                "event_id": event_id,
                "seq": seq,
                "pot": part.pot,
                "period_id": period_id if part.pot == "included" else None,
                "grant_id": part.grant_id,
                "amount_micros": part.amount_micros,
            },
        )


def allocations_of(connection: Connection, event_id: int) -> list[Allocation]:
    rows = _ALLOCATIONS.run(connection, {"event_id": event_id}).fetchall()
    return [Allocation(pot, amount, grant_id) for pot, amount, grant_id in rows]
