"""Incoming Stripe webhooks: trusted only when signed, applied once, in one transaction with their effect.

- **Signature**: checked on the raw body by the `stripe` package (HMAC-SHA256 of `t.body`, any `v1`
  of the header may match — Stripe signs with old and new secret while one is rolled — and a
  timestamp at most 300 s old). A bad, missing, non-ASCII or stale signature, or a body that is not
  a Stripe event (or JSON Python will not read: an integer of over 4,300 digits, nesting too deep),
  is `InvalidWebhook` (400) and nothing is written.
- **Once**: the event id is recorded in `webhook_events` in the same transaction as the event's
  effect; a redelivery finds it and changes nothing. An event whose effect fails (an unknown
  practice, say) is not recorded, so Stripe's retry can apply it once the cause is fixed.
- **Effects**: `customer.subscription.created|updated|deleted` update the subscription mirror (the
  mirror's own ordering keeps a late, older event from rolling it back);
  `checkout.session.completed|async_payment_succeeded` credit a paid purchase, once per payment;
  `payment_intent.succeeded|payment_failed` decide an automatic top-up. Every other type is
  acknowledged and ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import stripe
from sqlalchemy import Connection

from aibudget.accounts import repository as accounts_repository
from aibudget.accounts import service as accounts
from aibudget.credit import autotopup
from aibudget.credit import service as credit
from aibudget.errors import InvalidInput, InvalidWebhook
from aibudget.money import to_decimal
from aibudget.payments.gateway import ATTEMPT, CREDIT, PRACTICE
from aibudget.store import tables
from aibudget.store.dialect import insert_if_absent, lock_practices

TOLERANCE_SECONDS = 300
Outcome = Literal["applied", "duplicate", "ignored"]
SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
PURCHASE_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
TOPUP_EVENTS = ("payment_intent.succeeded", "payment_intent.payment_failed")


def verify(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """The event in `payload` if its signature is valid and fresh; `InvalidWebhook` otherwise."""
    if not signature:
        raise InvalidWebhook("the Stripe-Signature header is missing", field="Stripe-Signature")
    if not signature.isascii():  # Stripe's never is; the package's comparison would raise TypeError
        raise InvalidWebhook("the Stripe-Signature header is not ASCII", field="Stripe-Signature")
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance=TOLERANCE_SECONDS)
    except UnicodeDecodeError:  # the package decodes the body before it compares signatures
        raise InvalidWebhook("the body is not UTF-8 text", field="body") from None
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(
            f"signature rejected: {exc.user_message or exc}", field="Stripe-Signature"
        ) from None
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON, an integer over 4,300 digits, nesting too deep
        raise InvalidWebhook("the body is not JSON", field="body") from None
    if not isinstance(event, dict):
        raise InvalidWebhook("the body is not a Stripe event object", field="body")
    for field, kind in (("id", str), ("type", str), ("created", int)):
        if not isinstance(event.get(field), kind) or isinstance(event.get(field), bool):
            raise InvalidWebhook(f"{field} is missing or not a {kind.__name__}", field=field)
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise InvalidWebhook("data.object is missing", field="data.object")
    return event


def apply(connection: Connection, event: dict[str, Any], *, now: datetime) -> Outcome:
    """Apply a verified event once: `applied` (an event about aibudget's objects, taken into account
    — a late one changes nothing), `duplicate` (seen before) or `ignored` (a type or an object
    aibudget has nothing to do with)."""
    handler = _HANDLERS.get(event["type"])
    if handler is None:
        return "ignored"
    recorded = insert_if_absent(
        connection,
        tables.webhook_events,
        ["event_id"],
        {"event_id": event["id"], "source": "stripe", "event_type": event["type"], "received_at": now},
    )
    if recorded is None:
        return "duplicate"
    return handler(connection, event, now)


def _text(value: object, field: str) -> str:
    if isinstance(value, dict):  # an expanded object: its id
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{field} is missing or not a string", field=field)
    return value


def _optional_text(value: object, field: str) -> str | None:
    return (
        None
        if value is None or (isinstance(value, dict) and value.get("id") is None)
        else _text(value, field)
    )


def _int(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} is not a whole number", field=field)
    return value


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidInput("data.object.metadata is not an object", field="data.object.metadata")
    return metadata


def _subscription(connection: Connection, event: dict[str, Any], now: datetime) -> Outcome:
    obj = event["data"]["object"]
    items = obj.get("items")
    listed = items.get("data") if isinstance(items, dict) else None
    item = listed[0] if isinstance(listed, list) and listed and isinstance(listed[0], dict) else {}
    price = item.get("price")
    lookup_key = price.get("lookup_key") if isinstance(price, dict) else None
    plan = _optional_text(lookup_key, "data.object.items.data.0.price.lookup_key")
    # Stripe API versions from 2025-03-31 keep the period on the item, older ones on the subscription.
    start = obj.get("current_period_start", item.get("current_period_start"))
    end = obj.get("current_period_end", item.get("current_period_end"))
    practice_id = _text(_metadata(obj).get("practice_id"), "data.object.metadata.practice_id")
    subscription_id = _text(obj.get("id"), "data.object.id")
    status = _text(obj.get("status"), "data.object.status")
    if _older_in_its_second(connection, event, subscription_id, status, practice_id):
        return "applied"  # read and found older than the mirror, like any late event
    accounts.put_subscription(
        connection,
        subscription_id,
        practice_id=practice_id,
        status=status,
        plan=plan,
        current_period_start=_int(start, "data.object.current_period_start"),
        current_period_end=_int(end, "data.object.current_period_end"),
        customer_id=_optional_text(obj.get("customer"), "data.object.customer"),
        updated_at=event["created"],  # the provider's clock orders the mirror's updates
        now=now,
    )
    return "applied"


def _older_in_its_second(
    connection: Connection, event: dict[str, Any], subscription_id: str, status: str, practice_id: str
) -> bool:
    """Whether an event from the same second as the stored mirror is in fact the older one.

    Stripe's `created` has whole seconds, and `created`, `updated` and `deleted` of one subscription
    often share one; the mirror already orders by time (`accounts.put_subscription`), this breaks the
    tie: a creation never follows anything, and nothing follows a cancellation.
    """
    lock_practices(connection, [practice_id])  # no concurrent delivery changes the row meanwhile
    stored = accounts_repository.get_subscription(connection, subscription_id)
    if stored is None or stored.updated_at != event["created"]:
        return False
    return event["type"] == "customer.subscription.created" or (
        stored.status == "canceled" and status != "canceled"
    )


def _purchase(connection: Connection, event: dict[str, Any], now: datetime) -> Outcome:
    obj = event["data"]["object"]
    metadata = _metadata(obj)
    if PRACTICE not in metadata:
        return "ignored"  # a Checkout aibudget did not create (the vendor's own sign-up, say)
    if obj.get("payment_status") != "paid":
        return "applied"  # paid later by a delayed method: `async_payment_succeeded` brings the credit
    practice_id = _text(metadata.get(PRACTICE), f"data.object.metadata.{PRACTICE}")
    credit_micros = _micros(metadata.get(CREDIT), f"data.object.metadata.{CREDIT}")
    reference = _optional_text(obj.get("payment_intent"), "data.object.payment_intent")
    credit.grant_credit(
        connection,
        practice_id,
        amount_usd=to_decimal(credit_micros),
        source="purchase",
        reference=reference or _text(obj.get("id"), "data.object.id"),
        now=now,
    )
    autotopup.lift_pause(connection, practice_id)  # a successful purchase proves the card again
    return "applied"


def _micros(value: object, field: str) -> int:
    if not isinstance(value, str) or not value.isdigit() or len(value) > 15 or int(value) <= 0:
        raise InvalidInput(f"{field} must be a positive amount in micro-USD", field=field)
    return int(value)


def _topup(connection: Connection, event: dict[str, Any], now: datetime) -> Outcome:
    obj = event["data"]["object"]
    attempt_id = _metadata(obj).get(ATTEMPT)
    if attempt_id is None:
        return "ignored"  # a payment aibudget did not start off-session (a purchase, another product)
    attempt_field = f"data.object.metadata.{ATTEMPT}"
    attempt = autotopup.get_attempt(connection, _text(attempt_id, attempt_field))
    intent_id = _text(obj.get("id"), "data.object.id")
    if event["type"] == "payment_intent.succeeded":
        autotopup.succeed(connection, attempt.attempt_id, intent_id, now=now)
    else:
        error = obj.get("last_payment_error") or {}
        code = error.get("code") if isinstance(error, dict) else None
        autotopup.fail(
            connection, attempt.attempt_id, code or "payment_failed", payment_intent_id=intent_id, now=now
        )
    return "applied"


_HANDLERS: dict[str, Callable[[Connection, dict[str, Any], datetime], Outcome]] = {
    **dict.fromkeys(SUBSCRIPTION_EVENTS, _subscription),
    **dict.fromkeys(PURCHASE_EVENTS, _purchase),
    **dict.fromkeys(TOPUP_EVENTS, _topup),
}
