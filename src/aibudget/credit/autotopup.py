"""Automatic top-up attempts (SPEC §6, G5): claimed once, charged outside the database, credited once.

The life of an attempt:

    claim ──> pending ──confirmed──> succeeded   grant upserted on the payment id, payment pause lifted
                     └──declined───> failed      top-up paused with the card's reason (an operator's
                                                 pause stays), notified once

- **Claim** (inside the caller's write transaction, under the practice's lock): only when a
  subscription grants the practice access (a call settled after a cancellation claims nothing: there
  is no card to charge and nothing to spend the credit on), top-up is on, not paused, no attempt is
  in flight, availability is under the threshold (or an authorization would be refused), and the
  month's caps — count and USD, pending attempts included — leave room for one more package. The
  claim itself is one conditional update of `attempt_in_flight`, so two processes can never both
  win it: at most one attempt per practice is ever in flight.
- **Charge** (`payments.gateway`, no transaction open): idempotency key derived from the attempt id.
  The customer and card are chosen once and kept with the attempt (`keep_card`, its own committed
  transaction) before the first request is sent; every later try sends that same request, so a
  retry under the key is never refused for other parameters, whatever card was saved meanwhile. A
  crash between choosing and keeping sent nothing, and the next try chooses afresh; two processes
  choosing at once both charge the card kept first.
- **Outcome**: the synchronous answer and the `payment_intent.*` webhooks both call `succeed` or
  `fail`, in whichever order they arrive, as often as they arrive: the grant is unique on the payment
  id, a success is final (a late failure never undoes it), and a confirmed payment is always
  credited, even after its attempt was first reported failed.

`topup.succeeded` and `topup.failed` carry, besides the figures, `locale`, `title` and
`message_user` in the practice's language: what was credited and charged, or why top-up is paused
and what the practice has to do.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Connection, Row, and_, case, func, literal, select, update

from aibudget.accounts.service import get_practice
from aibudget.credit import service as credit
from aibudget.credit.service import CreditGrant
from aibudget.credit.topup import OPERATOR_PAUSE, TopupSettings, get_settings, read_settings
from aibudget.errors import NotFound
from aibudget.money import format_usd, to_decimal
from aibudget.notify import outbox
from aibudget.payments.packages import Offer
from aibudget.store import tables
from aibudget.store.dialect import lock_practices
from aibudget.views import texts
from aibudget.views.snapshot import Snapshot

attempts, settings_table = tables.topup_attempts, tables.auto_topup_settings
PAUSED, MONTHLY_LIMIT, PENDING = "auto_topup_paused", "auto_topup_monthly_limit", "auto_topup_pending"
COUNTED = ("pending", "succeeded")  # what the monthly caps count
# a pending attempt this old never got its answer (a crash, a timeout): charge it again, same key
RECHARGE_AFTER = timedelta(seconds=60)
# Stripe refused the request itself (the customer or card gone): nothing was charged, no card declined
_REQUEST_REFUSED = texts.N_("Notification: top-up of {amount} refused by the payment provider, paused")
# what `topup.failed` tells the practice, by failure code; any other code is the card's decline
_FAILURE_MESSAGES = {
    "authentication_required": texts.N_(
        "Notification: top-up of {amount} for {charge} needs authentication, paused"
    ),
    "no_payment_method": texts.N_("Notification: top-up of {amount} without a payment method, paused"),
    # the gateway could not tell whether the first request charged: never say that it did not
    "charge_unconfirmed": texts.N_("Notification: top-up of {amount} for {charge} unconfirmed, paused"),
    "invalid_request": _REQUEST_REFUSED,
    "resource_missing": _REQUEST_REFUSED,
}
_DECLINED = texts.N_("Notification: top-up of {amount} for {charge} declined, paused")


@dataclass(frozen=True, slots=True)
class TopupAttempt:
    attempt_id: str
    practice_id: str
    month: str
    credit_micros: int
    charge_amount: int
    currency: str
    trigger: str
    status: str
    payment_intent_id: str | None
    failure_code: str | None
    grant_id: int | None
    customer_id: str | None  # the customer and card every try charges, once kept (`keep_card`)
    payment_method_id: str | None
    created_at: datetime
    closed_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "attempt_id": self.attempt_id,
            "practice_id": self.practice_id,
            "month": self.month,
            "credit_usd": format_usd(self.credit_micros),
            "charge_amount": self.charge_amount,
            "currency": self.currency,
            "trigger": self.trigger,
            "status": self.status,
            "payment_intent_id": self.payment_intent_id,
            "failure_code": self.failure_code,
            "grant_id": self.grant_id,
            "created_at": self.created_at.isoformat(),
            "closed_at": None if self.closed_at is None else self.closed_at.isoformat(),
        }


def _attempt(row: Row[Any]) -> TopupAttempt:
    return TopupAttempt(**{field: getattr(row, field) for field in TopupAttempt.__slots__})


def month_of(now: datetime, timezone: str) -> str:
    """The calendar month (YYYY-MM) `now` falls in, in the practice's timezone."""
    return now.astimezone(ZoneInfo(timezone)).strftime("%Y-%m")


def _month_used(connection: Connection, practice_id: str, month: str) -> tuple[int, int]:
    """How many top-ups and how much credit the practice's month has taken so far (pending included)."""
    count, micros = connection.execute(
        select(func.count(), func.coalesce(func.sum(attempts.c.credit_micros), 0)).where(
            attempts.c.practice_id == practice_id,
            attempts.c.month == month,
            attempts.c.status.in_(COUNTED),
        )
    ).one()
    return int(count), int(micros)


def _within_caps(connection: Connection, settings: TopupSettings, snapshot: Snapshot, now: datetime) -> bool:
    count, micros = _month_used(connection, snapshot.practice_id, month_of(now, snapshot.timezone))
    return (
        count + 1 <= settings.monthly_max_count
        and micros + settings.package_micros <= settings.monthly_max_micros
    )


def refusal_reason(connection: Connection, snapshot: Snapshot, now: datetime) -> str | None:
    """Why automatic top-up cannot save a call now (`auto_topup_paused`, `auto_topup_pending` while
    a charge is under way, `auto_topup_monthly_limit`), or None when it is off or could still run."""
    settings = read_settings(connection, snapshot.practice_id)
    if not settings.enabled:
        return None
    if settings.attempt_in_flight is not None:  # credit is on its way (even if paused meanwhile)
        return PENDING
    if settings.paused_reason is not None:
        return PAUSED
    if not _within_caps(connection, settings, snapshot, now):
        return MONTHLY_LIMIT
    return None


def in_flight(connection: Connection, practice_id: str) -> bool:
    """Whether a top-up of the practice is claimed and not yet decided: credit may be on its way."""
    return read_settings(connection, practice_id).attempt_in_flight is not None


def threshold_micros(settings: TopupSettings, snapshot: Snapshot) -> int:
    if settings.threshold_micros is not None:
        return settings.threshold_micros
    assert settings.threshold_percent is not None
    return snapshot.included_micros * settings.threshold_percent // 100


def claim(
    connection: Connection,
    snapshot: Snapshot,
    *,
    trigger: str,
    offer_for: Callable[[int, str], Offer],
    now: datetime,
) -> TopupAttempt | None:
    """Claim a top-up for the practice if one is due and allowed (see module doc); None otherwise.

    `trigger` is `settle` (availability fell under the threshold) or `authorize` (a call would be
    refused). `offer_for(credit_micros, locale)` prices the package.
    """
    if snapshot.subscription_id is None:  # AI features are off: nothing to top up for, no card to charge
        return None
    settings = read_settings(connection, snapshot.practice_id)
    if not settings.enabled or settings.paused_reason is not None or settings.attempt_in_flight is not None:
        return None
    if trigger == "settle" and snapshot.available_micros >= threshold_micros(settings, snapshot):
        return None
    if not _within_caps(connection, settings, snapshot, now):
        return None
    offer = offer_for(settings.package_micros, snapshot.locale)
    attempt_id = f"topup_{secrets.token_urlsafe(18)}"
    claimed = connection.execute(
        update(settings_table)
        .where(
            settings_table.c.practice_id == snapshot.practice_id,
            settings_table.c.enabled.is_(True),
            settings_table.c.paused_reason.is_(None),
            settings_table.c.attempt_in_flight.is_(None),
        )
        .values(attempt_in_flight=attempt_id)
    )
    if claimed.rowcount != 1:
        return None
    values = {
        "attempt_id": attempt_id,
        "practice_id": snapshot.practice_id,
        "month": month_of(now, snapshot.timezone),
        "credit_micros": offer.credit_micros,
        "charge_amount": offer.amount,
        "currency": offer.currency,
        "trigger": trigger,
        "status": "pending",
        "created_at": now,
    }
    connection.execute(attempts.insert().values(**values))
    return get_attempt(connection, attempt_id)


def find_attempt(connection: Connection, attempt_id: str) -> TopupAttempt | None:
    row = connection.execute(select(attempts).where(attempts.c.attempt_id == attempt_id)).first()
    return None if row is None else _attempt(row)


def get_attempt(connection: Connection, attempt_id: str) -> TopupAttempt:
    attempt = find_attempt(connection, attempt_id)
    if attempt is None:
        raise NotFound(f"no top-up attempt {attempt_id!r}", field="attempt_id")
    return attempt


def keep_card(
    connection: Connection, attempt_id: str, *, customer_id: str, payment_method_id: str
) -> TopupAttempt:
    """Keep the customer and card the pending attempt is charged to, unless one is kept already;
    the attempt as it is now. Commit before the charge is sent: its every try sends what is kept."""
    connection.execute(
        update(attempts)
        .where(
            attempts.c.attempt_id == attempt_id,
            attempts.c.status == "pending",
            attempts.c.payment_method_id.is_(None),
        )
        .values(customer_id=customer_id, payment_method_id=payment_method_id)
    )
    return get_attempt(connection, attempt_id)


def _release_flight(connection: Connection, attempt: TopupAttempt, values: dict[str, Any]) -> None:
    connection.execute(
        update(settings_table)
        .where(
            settings_table.c.practice_id == attempt.practice_id,
            settings_table.c.attempt_in_flight == attempt.attempt_id,
        )
        .values(attempt_in_flight=None, **values)
    )


def _pause_values(reason: str, now: datetime) -> dict[str, Any]:
    """Pause with `reason` — unless the operator paused meanwhile: that pause stays as it is, as only
    an explicit resume may end it, and a payment pause would end with the next purchase."""
    reason_column, at_column = settings_table.c.paused_reason, settings_table.c.paused_at
    kept = reason_column == OPERATOR_PAUSE
    return {
        "paused_reason": case((kept, reason_column), else_=literal(reason, reason_column.type)),
        "paused_at": case((kept, at_column), else_=literal(now, at_column.type)),
    }


def _outcome_texts(connection: Connection, attempt: TopupAttempt, failure_code: str | None) -> dict[str, str]:
    """`locale`, `title` and `message_user` of the notification of `attempt`'s outcome."""
    locale = get_practice(connection, attempt.practice_id).locale
    amounts = {
        "amount": texts.format_usd_amount(attempt.credit_micros, locale),
        "charge": texts.format_money(attempt.charge_amount, attempt.currency, locale),
    }
    if failure_code is None:
        title = texts.text("Notification title: {amount} of credit added", locale, **amounts)
        message = texts.text(
            "Notification: top-up of {amount} succeeded, {charge} charged", locale, **amounts
        )
    else:
        title = texts.text("Notification title: automatic top-up paused", locale)
        message = texts.text(_FAILURE_MESSAGES.get(failure_code, _DECLINED), locale, **amounts)
    return {"locale": locale, "title": title, "message_user": message}


def succeed(connection: Connection, attempt_id: str, payment_intent_id: str, *, now: datetime) -> CreditGrant:
    """The payment of `attempt_id` is confirmed: credit it once, close the attempt, lift any pause."""
    attempt = get_attempt(connection, attempt_id)
    lock_practices(connection, [attempt.practice_id])
    attempt = get_attempt(connection, attempt_id)  # as it is now that the practice is ours
    grant = credit.grant_credit(
        connection,
        attempt.practice_id,
        amount_usd=to_decimal(attempt.credit_micros),
        source="auto_topup",
        reference=payment_intent_id,
        now=now,
    )
    if attempt.status != "succeeded":
        connection.execute(
            update(attempts)
            .where(attempts.c.attempt_id == attempt_id)
            .values(
                status="succeeded",
                payment_intent_id=payment_intent_id,
                grant_id=grant.grant_id,
                failure_code=None,
                closed_at=now,
            )
        )
        _release_flight(connection, attempt, {})
        lift_pause(connection, attempt.practice_id)
        outbox.enqueue(
            connection,
            practice_id=attempt.practice_id,
            event_type="topup.succeeded",
            data={
                "attempt_id": attempt_id,
                "payment_intent_id": payment_intent_id,
                "credit_usd": format_usd(attempt.credit_micros),
                "charge_amount": attempt.charge_amount,
                "currency": attempt.currency,
                "grant_id": grant.grant_id,
            }
            | _outcome_texts(connection, attempt, None),
            dedupe_key=f"topup.succeeded:{attempt_id}",
            now=now,
        )
    return grant


def fail(
    connection: Connection,
    attempt_id: str,
    failure_code: str,
    *,
    payment_intent_id: str | None = None,
    now: datetime,
) -> TopupAttempt:
    """The charge of a pending attempt was refused: close it, pause top-up with the reason, notify
    once. An attempt already decided stays as it is."""
    attempt = get_attempt(connection, attempt_id)
    lock_practices(connection, [attempt.practice_id])
    closed = connection.execute(
        update(attempts)
        .where(attempts.c.attempt_id == attempt_id, attempts.c.status == "pending")
        .values(
            status="failed", failure_code=failure_code, payment_intent_id=payment_intent_id, closed_at=now
        )
    )
    if closed.rowcount == 1:
        _release_flight(connection, attempt, _pause_values(failure_code[:64], now))
        outbox.enqueue(
            connection,
            practice_id=attempt.practice_id,
            event_type="topup.failed",
            data={
                "attempt_id": attempt_id,
                "payment_intent_id": payment_intent_id,
                "failure_code": failure_code,
                "credit_usd": format_usd(attempt.credit_micros),
                "charge_amount": attempt.charge_amount,
                "currency": attempt.currency,
                "paused": True,
            }
            | _outcome_texts(connection, attempt, failure_code),
            dedupe_key=f"topup.failed:{attempt_id}",
            now=now,
        )
    return get_attempt(connection, attempt_id)


def lift_pause(connection: Connection, practice_id: str, *, explicit: bool = False) -> None:
    """End a pause: a successful purchase proves the card works again and ends a payment pause; only
    an explicit resume (`explicit`: the API's or CLI's resume) ends the pause an operator set."""
    pauses: ColumnElement[bool] = settings_table.c.paused_reason.is_not(None)
    if not explicit:
        pauses = and_(pauses, settings_table.c.paused_reason != OPERATOR_PAUSE)
    connection.execute(
        update(settings_table)
        .where(settings_table.c.practice_id == practice_id, pauses)
        .values(paused_reason=None, paused_at=None)
    )


def resume(connection: Connection, practice_id: str) -> TopupSettings:
    """Resume automatic top-up after a pause (the API's and CLI's explicit act)."""
    get_practice(connection, practice_id)
    lock_practices(connection, [practice_id])
    lift_pause(connection, practice_id, explicit=True)
    return get_settings(connection, practice_id)


def list_attempts(connection: Connection, practice_id: str, *, limit: int = 100) -> list[TopupAttempt]:
    get_practice(connection, practice_id)
    rows = connection.execute(
        select(attempts)
        .where(attempts.c.practice_id == practice_id)
        .order_by(attempts.c.created_at.desc(), attempts.c.attempt_id)
        .limit(limit)
    )
    return [_attempt(row) for row in rows]


def unconfirmed(connection: Connection, *, older_than: datetime, limit: int = 100) -> list[TopupAttempt]:
    """Pending attempts claimed before `older_than`: their charge never answered (a crash, a timeout)
    and is sent again with the same idempotency key."""
    rows = connection.execute(
        select(attempts)
        .where(and_(attempts.c.status == "pending", attempts.c.created_at < older_than))
        .order_by(attempts.c.created_at)
        .limit(limit)
    )
    return [_attempt(row) for row in rows]
