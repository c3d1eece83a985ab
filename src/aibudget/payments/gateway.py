"""The only code that talks to Stripe: off-session charges for automatic top-up, Checkout sessions.

Every call goes through the official `stripe` package (`StripeClient`, its HTTPX transport, the base
address from `AIBUDGET_STRIPE_API_BASE`). It is never called inside a database transaction: a charge
can take seconds, and a row lock held that long would stall the practice's every call.

The card charged is the first the customer has of, in order:

1. its invoice default (`invoice_settings.default_payment_method`), the card the customer or an
   operator chose for the account;
2. its newest attached card (`GET /v1/customers/{id}/payment_methods?type=card`, which Stripe lists
   newest first) — where a card saved by Checkout (`setup_future_usage=off_session`, as our credit
   purchase asks) or by a subscription's Checkout lives: neither makes it the invoice default;
3. its legacy default source (`default_source`, a Card from before PaymentMethods).

A customer with none of them, or deleted, fails the attempt with `no_payment_method`.

A charge carries the idempotency key `aibudget-topup-<attempt id>`, so charging the same attempt again
— after a timeout, a crash, or from a second process — returns Stripe's first answer instead of
charging twice. The answer is one of three:

- `succeeded`: the money is in; credit it;
- `failed` with the card's code (`card_declined`, `authentication_required`, …): the customer must
  act; top-up pauses;
- `pending`: Stripe is processing (or did not answer); the webhook or the next try decides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import stripe

from aibudget.config import Settings
from aibudget.credit.autotopup import TopupAttempt
from aibudget.errors import PaymentProviderUnavailable, PaymentsOff
from aibudget.money import to_decimal
from aibudget.payments.packages import Offer

log = logging.getLogger(__name__)

ChargeStatus = Literal["succeeded", "failed", "pending"]
NO_PAYMENT_METHOD = "no_payment_method"
# Prefixes of the metadata aibudget writes on Stripe objects and reads back from webhooks.
PRACTICE, ATTEMPT, PACKAGE, CREDIT = (
    "aibudget_practice_id",
    "aibudget_attempt_id",
    "aibudget_package_id",
    "aibudget_credit_micros",
)


@dataclass(frozen=True, slots=True)
class Charge:
    status: ChargeStatus
    payment_intent_id: str | None = None
    failure_code: str | None = None


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    session_id: str
    url: str


class StripeGateway:
    """Stripe for one deployment; `None` from `from_settings` when no API key is configured."""

    def __init__(self, api_key: str, *, api_base: str, timeout_seconds: float) -> None:
        # a top-up charged during an authorization holds that call: each request to Stripe gets
        # `timeout_seconds` (the package's own default is 80), an unanswered charge stays pending
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            http_client=stripe.HTTPXClient(timeout=timeout_seconds, allow_sync_methods=True),
            max_network_retries=2,  # safe: every charge carries its idempotency key
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway | None:
        if settings.stripe_api_key is None:
            return None
        return cls(
            settings.stripe_api_key.get_secret_value(),
            api_base=settings.stripe_api_base,
            timeout_seconds=settings.stripe_timeout_seconds,
        )

    def charge(self, attempt: TopupAttempt, *, customer_id: str | None) -> Charge:
        """Charge the customer's saved card off-session for a top-up attempt; which card, and what
        the answers mean: see the module doc."""
        if customer_id is None:
            return Charge("failed", failure_code=NO_PAYMENT_METHOD)
        try:
            payment_method = self._saved_card(customer_id)
            if payment_method is None:
                return Charge("failed", failure_code=NO_PAYMENT_METHOD)
            intent = self._client.v1.payment_intents.create(
                params={
                    "amount": attempt.charge_amount,
                    "currency": attempt.currency,
                    "customer": customer_id,
                    "payment_method": payment_method,
                    "off_session": True,
                    "confirm": True,
                    "description": f"AI credit {usd_text(attempt.credit_micros)} USD (automatic top-up)",
                    "metadata": {
                        PRACTICE: attempt.practice_id,
                        CREDIT: str(attempt.credit_micros),
                        ATTEMPT: attempt.attempt_id,
                    },
                },
                options={"idempotency_key": f"aibudget-topup-{attempt.attempt_id}"},
            )
        except stripe.CardError as exc:
            intent_id = _failed_intent_id(exc)
            return Charge("failed", payment_intent_id=intent_id, failure_code=exc.code or "card_error")
        except stripe.InvalidRequestError as exc:
            # A request Stripe will never accept as it is (customer gone, card detached): retrying
            # cannot help, so the attempt fails and top-up pauses until someone looks.
            log.warning("top-up charge refused by Stripe: %s", exc.code or "invalid_request")
            return Charge("failed", failure_code=exc.code or "invalid_request")
        except stripe.StripeError as exc:
            log.warning("top-up charge not confirmed (%s); it is tried again", type(exc).__name__)
            return Charge("pending")
        status: ChargeStatus = "succeeded" if intent.status == "succeeded" else "pending"
        return Charge(status, payment_intent_id=intent.id)

    def _saved_card(self, customer_id: str) -> str | None:
        """The id of the card a top-up charges (the module doc gives the order), None if none.

        Raises what the `stripe` package raises; `charge` maps it."""
        customer = self._client.v1.customers.retrieve(customer_id)
        if getattr(customer, "deleted", False):
            return None
        invoice_settings = getattr(customer, "invoice_settings", None)
        chosen = _object_id(getattr(invoice_settings, "default_payment_method", None))
        if chosen is None:
            # one card is enough: the newest, so a card saved again by a later purchase wins
            cards = self._client.v1.customers.payment_methods.list(
                customer_id, params={"type": "card", "limit": 1}
            )
            chosen = cards.data[0].id if cards.data else None
        if chosen is None:
            chosen = _object_id(getattr(customer, "default_source", None))
        return chosen

    def checkout(
        self,
        *,
        practice_id: str,
        offer: Offer,
        customer_id: str | None,
        success_url: str,
        cancel_url: str,
    ) -> CheckoutSession:
        """A Checkout session selling `offer`; the card is saved for later automatic top-ups."""
        metadata = _metadata(practice_id, offer)
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": offer.currency,
                        "unit_amount": offer.amount,
                        "product_data": {"name": f"AI credit {usd_text(offer.credit_micros)} USD"},
                    },
                }
            ],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": practice_id,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata, "setup_future_usage": "off_session"},
        }
        if customer_id is not None:
            params["customer"] = customer_id
        else:  # the saved card needs a customer to live on
            params["customer_creation"] = "always"
        try:
            session = self._client.v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]
        except stripe.StripeError as exc:
            raise PaymentProviderUnavailable(
                f"Stripe did not create the Checkout session ({type(exc).__name__}); try again"
            ) from None
        if not session.url:
            raise PaymentProviderUnavailable("Stripe returned a Checkout session without a URL")
        return CheckoutSession(session.id, session.url)


def usd_text(micros: int) -> str:
    """`25` for 25 USD, `12.5` for 12.50 USD: an amount as a product name shows it."""
    return f"{to_decimal(micros).normalize():f}"


def require(gateway: StripeGateway | None) -> StripeGateway:
    if gateway is None:
        raise PaymentsOff("payments are off: set AIBUDGET_STRIPE_API_KEY")
    return gateway


def _metadata(practice_id: str, offer: Offer) -> dict[str, str]:
    return {PRACTICE: practice_id, CREDIT: str(offer.credit_micros), PACKAGE: offer.package_id}


def _object_id(value: Any) -> str | None:
    """The id of a reference Stripe returns as an id or, expanded, as the object; None if unset."""
    if not value:
        return None
    return value if isinstance(value, str) else str(value.id)


def _failed_intent_id(exc: stripe.CardError) -> str | None:
    error = exc.error
    intent = getattr(error, "payment_intent", None) if error is not None else None
    if intent is None:
        return None
    return intent if isinstance(intent, str) else str(intent.id)
