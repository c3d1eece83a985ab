"""The only code that talks to Stripe: off-session charges for automatic top-up, Checkout sessions.

Every call goes through the official `stripe` package (`StripeClient`, its HTTPX transport, the base
address from `AIBUDGET_STRIPE_API_BASE`). It is never called inside a database transaction: a charge
can take seconds, and a row lock held that long would stall the practice's every call.

A top-up is charged in two steps, each without a transaction open:

1. `choose_card` picks the card: the first the customer has of, in order,

   1. its invoice default (`invoice_settings.default_payment_method`), the card the customer or an
      operator chose for the account;
   2. its newest attached card (`GET /v1/customers/{id}/payment_methods?type=card`, which Stripe
      lists newest first) — where a card saved by Checkout (`setup_future_usage=off_session`, as our
      credit purchase asks) or by a subscription's Checkout lives: neither makes it the invoice
      default;
   3. its legacy default source (`default_source`, a Card from before PaymentMethods).

   A customer with none of them, or deleted, fails the attempt with `no_payment_method`. The caller
   keeps the choice with the attempt (`credit.autotopup.keep_card`, committed) before step 2, and
   never chooses again for that attempt.
2. `charge` sends the PaymentIntent for the kept customer and card, under the idempotency key
   `aibudget-topup-<attempt id>`. As every try of an attempt sends the very same request, charging
   it again — after a timeout, a crash, or from a second process — returns Stripe's first answer
   instead of charging twice, even when the customer has saved another card meanwhile.

The answer is one of three:

- `succeeded`: the money is in; credit it;
- `failed` with the card's code (`card_declined`, `authentication_required`, …), Stripe's code of a
  request it refused (`resource_missing`, …) or `charge_unconfirmed` (below): top-up pauses;
- `pending`: Stripe is processing (or did not answer); the webhook or the next try decides.

Stripe refuses a key reused with other parameters (400 `idempotency_error`): an attempt of a version
that did not keep its card, or one whose request changed in an upgrade. Then the PaymentIntent the
first request created is looked up among the customer's newest (`GET /v1/payment_intents?customer=`,
matched on the attempt id in its metadata) and its outcome is the answer; when it cannot be found,
the first request may still have charged somewhere, so the answer is `failed` with
`charge_unconfirmed`: top-up pauses with that reason rather than charge again under a new key, and a
`payment_intent.succeeded` webhook still credits the attempt if the money did come in. A 409
`idempotency_error` (the first request with the key still under way) is `pending`.
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
# the key was used before with other parameters and its first PaymentIntent cannot be found
CHARGE_UNCONFIRMED = "charge_unconfirmed"
# how many of the customer's newest PaymentIntents are searched for an attempt's first one (one page)
LOOKUP_LIMIT = 100
# a PaymentIntent in these is charged or being charged: the money may still come in
_UNDECIDED = ("processing", "requires_capture")
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
class Card:
    """The customer and saved card a top-up attempt is charged to: chosen once, kept with it."""

    customer_id: str
    payment_method_id: str


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

    def choose_card(self, customer_id: str | None) -> Card | Charge:
        """The card a top-up of `customer_id` is charged to (the module doc gives the order), or the
        answer that ends this try before anything is charged: `failed` (no card, the customer gone)
        or `pending` (Stripe did not answer; nothing was sent under the attempt's key yet)."""
        if customer_id is None:
            return Charge("failed", failure_code=NO_PAYMENT_METHOD)
        try:
            payment_method = self._saved_card(customer_id)
        except stripe.StripeError as exc:
            return _refused_or_unanswered(exc)
        if payment_method is None:
            return Charge("failed", failure_code=NO_PAYMENT_METHOD)
        return Card(customer_id, payment_method)

    def charge(self, attempt: TopupAttempt) -> Charge:
        """Charge the card kept with a top-up attempt off-session; every try sends the same request
        (see the module doc for the answers). `ValueError` if the attempt has no card kept yet."""
        if attempt.customer_id is None or attempt.payment_method_id is None:
            raise ValueError(f"top-up attempt {attempt.attempt_id} has no card kept: keep one first")
        try:
            intent = self._client.v1.payment_intents.create(
                params={
                    "amount": attempt.charge_amount,
                    "currency": attempt.currency,
                    "customer": attempt.customer_id,
                    "payment_method": attempt.payment_method_id,
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
        except stripe.IdempotencyError as exc:
            if exc.http_status == 409:  # the first request with this key is still under way
                log.warning("top-up charge %s still under way at Stripe; tried again", attempt.attempt_id)
                return Charge("pending")
            log.warning("top-up charge %s sent before with other parameters", attempt.attempt_id)
            return self._first_answer(attempt.attempt_id, attempt.customer_id)
        except stripe.StripeError as exc:
            return _refused_or_unanswered(exc)
        status: ChargeStatus = "succeeded" if intent.status == "succeeded" else "pending"
        return Charge(status, payment_intent_id=intent.id)

    def _first_answer(self, attempt_id: str, customer_id: str) -> Charge:
        """The outcome of the PaymentIntent the first request of `attempt_id` created, found among the
        customer's newest; `failed` with `charge_unconfirmed` when there is none to find."""
        try:
            intents = self._client.v1.payment_intents.list(
                params={"customer": customer_id, "limit": LOOKUP_LIMIT}
            )
        except stripe.InvalidRequestError as exc:  # the customer gone: nothing left to find
            log.warning("top-up charge %s: its PaymentIntents cannot be listed: %s", attempt_id, exc.code)
            return Charge("failed", failure_code=CHARGE_UNCONFIRMED)
        except stripe.StripeError as exc:
            return _refused_or_unanswered(exc)
        for intent in intents.data:
            metadata = intent.metadata
            if metadata is not None and ATTEMPT in metadata and metadata[ATTEMPT] == attempt_id:
                return _outcome(intent)
        log.error("top-up charge %s: no PaymentIntent of %s carries it", attempt_id, customer_id)
        return Charge("failed", failure_code=CHARGE_UNCONFIRMED)

    def _saved_card(self, customer_id: str) -> str | None:
        """The id of the card a top-up charges (the module doc gives the order), None if none.

        Raises what the `stripe` package raises; `choose_card` maps it."""
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


def _refused_or_unanswered(exc: stripe.StripeError) -> Charge:
    """The answer to a refusal other than the card's (`CardError`) and a key's reuse."""
    if isinstance(exc, stripe.InvalidRequestError):
        # A request Stripe will never accept as it is (customer gone, card detached): retrying
        # cannot help, so the attempt fails and top-up pauses until someone looks.
        log.warning("top-up charge refused by Stripe: %s", exc.code or "invalid_request")
        return Charge("failed", failure_code=exc.code or "invalid_request")
    log.warning("top-up charge not confirmed (%s); it is tried again", type(exc).__name__)
    return Charge("pending")


def _outcome(intent: stripe.PaymentIntent) -> Charge:
    """What a PaymentIntent found after the fact says: succeeded, still moving, or failed."""
    if intent.status == "succeeded":
        return Charge("succeeded", payment_intent_id=intent.id)
    if intent.status in _UNDECIDED:
        return Charge("pending", payment_intent_id=intent.id)
    error = intent.last_payment_error
    code = error.code if error is not None else None
    return Charge("failed", payment_intent_id=intent.id, failure_code=code or "payment_failed")


def _failed_intent_id(exc: stripe.CardError) -> str | None:
    error = exc.error
    intent = getattr(error, "payment_intent", None) if error is not None else None
    if intent is None:
        return None
    return intent if isinstance(intent, str) else str(intent.id)
