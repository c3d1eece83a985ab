"""Prepaid credit, automatic top-ups, Checkout and Stripe's webhooks: the payments layer of `Budget`."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine

from aibudget.accounts import service as accounts
from aibudget.accounts.service import Practice
from aibudget.budget.accounts import Accounts
from aibudget.budget.core import Clock, system_clock
from aibudget.config import Settings
from aibudget.credit import autotopup, topup
from aibudget.credit import service as credit
from aibudget.credit.autotopup import TopupAttempt
from aibudget.credit.service import CreditGrant
from aibudget.credit.topup import TopupSettings
from aibudget.errors import InvalidInput, PaymentsOff
from aibudget.payments import gateway as payments
from aibudget.payments import packages, webhooks
from aibudget.payments.gateway import Charge, CheckoutSession, StripeGateway
from aibudget.payments.packages import Offer

log = logging.getLogger(__name__)


def _log_failure(future: Future[None]) -> None:
    error = future.exception()
    if error is not None:  # the attempt stays pending; the sweeper charges it again
        log.error("charging an automatic top-up failed; retried by the sweeper", exc_info=error)


class Payments(Accounts):
    """Credit grants and their purchase: automatic top-ups charged off the caller's path, Checkout,
    and Stripe's webhooks."""

    def __init__(self, engine: Engine, settings: Settings, *, clock: Clock = system_clock) -> None:
        super().__init__(engine, settings, clock=clock)
        self._gateway = StripeGateway.from_settings(settings)
        # automatic top-ups triggered by a settle are charged here, so the settle never waits for Stripe
        self._charges = ThreadPoolExecutor(max_workers=2, thread_name_prefix="aibudget-topup")
        # top-ups this process is charging, queued or under way: never two charges of one at a time
        self._charging: set[str] = set()
        self._charging_lock = threading.Lock()

    def close(self) -> None:
        self._charges.shutdown(wait=True)
        super().close()

    def grant_credit(
        self,
        practice_id: str,
        *,
        amount_usd: Decimal | str | int,
        source: str,
        reference: str,
        expires_at: datetime | None = None,
        priority: int = credit.DEFAULT_PRIORITY,
    ) -> CreditGrant:
        """Add prepaid credit once per `reference`; a repeat returns the first grant."""
        return self._write(
            lambda connection: credit.grant_credit(
                connection,
                practice_id,
                amount_usd=amount_usd,
                source=source,
                reference=reference,
                expires_at=expires_at,
                priority=priority,
                now=self.clock(),
            )
        )

    def put_auto_topup(self, practice_id: str, **settings: Any) -> TopupSettings:
        """Set automatic top-up (see `credit.topup.put_settings` for the fields); a pause is kept."""
        return self._write(
            lambda connection: topup.put_settings(connection, practice_id, **settings, now=self.clock())
        )

    def auto_topup(self, practice_id: str) -> TopupSettings:
        """The practice's automatic top-up settings; the defaults (off) when never configured."""
        return self._read(lambda connection: topup.get_settings(connection, practice_id))

    def grants(self, practice_id: str) -> list[CreditGrant]:
        return self._read(lambda connection: credit.list_grants(connection, practice_id))

    def _topup_offer(self, credit_micros: int, locale: str) -> Offer:
        return packages.topup_offer(self.settings.credit_packages, credit_micros, locale=locale)

    def _start_charging(self, attempt_id: str) -> bool:
        """Take the charging of `attempt_id` for the caller; False when this process has it already."""
        with self._charging_lock:
            if attempt_id in self._charging:
                return False
            self._charging.add(attempt_id)
            return True

    def _stop_charging(self, attempt_id: str) -> None:
        with self._charging_lock:
            self._charging.discard(attempt_id)

    def _charge(self, attempt: TopupAttempt) -> None:
        """Charge a claimed top-up on this thread, unless this process is charging it already."""
        if self._start_charging(attempt.attempt_id):
            self._charge_taken(attempt)

    def _charge_in_background(self, attempt: TopupAttempt) -> bool:
        """Hand a top-up's charge to the `_charges` pool, unless this process is charging it already;
        whether it was handed over."""
        if not self._start_charging(attempt.attempt_id):
            return False
        try:
            future = self._charges.submit(self._charge_taken, attempt)
        except BaseException:  # the pool is shut down: the sweeper of the next process charges it
            self._stop_charging(attempt.attempt_id)
            raise
        future.add_done_callback(_log_failure)
        return True

    def _charge_taken(self, attempt: TopupAttempt) -> None:
        """Charge a top-up whose charging `_start_charging` gave the caller (no transaction open
        meanwhile) and book the answer; one decided meanwhile (by a webhook) is not charged again."""
        try:
            now = self._read(lambda connection: autotopup.get_attempt(connection, attempt.attempt_id))
            if now.status == "pending":
                self._charge_pending(now)
        finally:
            self._stop_charging(attempt.attempt_id)

    def _charge_pending(self, attempt: TopupAttempt) -> None:
        """Charge a pending top-up with the card kept for it. Its first try chooses the card and
        commits it with the attempt before anything is sent, so every try sends the same request."""
        gateway = payments.require(self._gateway)
        attempt_id, practice_id = attempt.attempt_id, attempt.practice_id
        if attempt.payment_method_id is None:

            def customer(connection: Connection) -> str | None:
                return accounts.customer_of(connection, practice_id, rules=self.rules.accounts)

            chosen = gateway.choose_card(self._read(customer))
            if isinstance(chosen, Charge):  # no card, or Stripe did not answer: nothing was sent
                self._book_charge(attempt_id, chosen)
                return
            attempt = self._write(
                lambda connection: autotopup.keep_card(
                    connection,
                    attempt_id,
                    customer_id=chosen.customer_id,
                    payment_method_id=chosen.payment_method_id,
                )
            )  # with the card another process kept first, if one did
            if attempt.status != "pending":  # decided meanwhile (a webhook)
                return
        self._book_charge(attempt_id, gateway.charge(attempt))

    def _book_charge(self, attempt_id: str, charge: Charge) -> None:
        """Book Stripe's answer to a top-up's charge; a pending one is left to the webhook or the
        next try."""
        if charge.status == "succeeded":
            assert charge.payment_intent_id is not None
            intent = charge.payment_intent_id
            self._write(
                lambda connection: autotopup.succeed(connection, attempt_id, intent, now=self.clock())
            )
        elif charge.status == "failed":
            code = charge.failure_code or "payment_failed"
            self._write(
                lambda connection: autotopup.fail(
                    connection,
                    attempt_id,
                    code,
                    payment_intent_id=charge.payment_intent_id,
                    now=self.clock(),
                )
            )

    def charge_unconfirmed_topups(self) -> int:
        """Charge again, with the same idempotency key and card, top-ups whose charge never answered
        (the sweeper runs this); returns how many were handed to the background charger.

        The charges run on the pool that charges a settle's top-ups, so the caller never waits for
        Stripe (`close` does). A top-up this process is charging already — its first charge still
        waiting for Stripe, or handed over by an earlier pass — is left to that charge.
        """
        older_than = self.clock() - autotopup.RECHARGE_AFTER
        due = self._read(lambda connection: autotopup.unconfirmed(connection, older_than=older_than))
        return sum(self._charge_in_background(attempt) for attempt in due)

    def resume_auto_topup(self, practice_id: str) -> TopupSettings:
        """Lift a pause of automatic top-up (after a declined card or a needed authentication)."""
        return self._write(lambda connection: autotopup.resume(connection, practice_id))

    def pause_auto_topup(self, practice_id: str) -> TopupSettings:
        """Stop automatic top-up charging the practice's card until `resume_auto_topup`; its calls are
        then refused as with any pause (`auto_topup_paused`) once the money runs out."""
        return self._write(lambda connection: topup.pause(connection, practice_id, now=self.clock()))

    def topup_attempts(self, practice_id: str, *, limit: int = 100) -> list[TopupAttempt]:
        """The practice's automatic top-ups, newest first."""
        return self._read(lambda connection: autotopup.list_attempts(connection, practice_id, limit=limit))

    def credit_offers(self, practice_id: str) -> list[Offer]:
        """The credit packages for sale to the practice, priced in its currency; none while payments
        are off (no Stripe key), as none could be bought."""
        practice = self.get_practice(practice_id)
        if self._gateway is None:
            return []
        return packages.offers(self.settings.credit_packages, locale=practice.locale)

    def checkout(
        self,
        practice_id: str,
        *,
        package_id: str,
        success_url: str | None = None,
        cancel_url: str | None = None,
    ) -> CheckoutSession:
        """A Stripe Checkout session selling package `package_id` to the practice; the grant follows
        from the `checkout.session.completed` webhook."""
        gateway = payments.require(self._gateway)
        success_url = success_url or self.settings.checkout_success_url
        cancel_url = cancel_url or self.settings.checkout_cancel_url
        if success_url is None:
            raise InvalidInput(
                "success_url is required (or set AIBUDGET_CHECKOUT_SUCCESS_URL)", field="success_url"
            )
        if cancel_url is None:
            raise InvalidInput(
                "cancel_url is required (or set AIBUDGET_CHECKOUT_CANCEL_URL)", field="cancel_url"
            )

        def customer(connection: Connection) -> tuple[Practice, str | None]:
            practice = accounts.get_practice(connection, practice_id)
            return practice, accounts.customer_of(connection, practice_id, rules=self.rules.accounts)

        practice, customer_id = self._read(customer)
        offer = packages.offer(self.settings.credit_packages, package_id, locale=practice.locale)
        return gateway.checkout(
            practice_id=practice_id,
            offer=offer,
            customer_id=customer_id,
            success_url=success_url,
            cancel_url=cancel_url,
        )

    def stripe_webhook(self, payload: bytes, signature: str | None) -> webhooks.Outcome:
        """Verify and apply one Stripe webhook delivery; returns `applied`, `duplicate` or `ignored`."""
        secret = self.settings.stripe_webhook_secret
        if secret is None:
            raise PaymentsOff("Stripe webhooks are off: set AIBUDGET_STRIPE_WEBHOOK_SECRET")
        event = webhooks.verify(payload, signature, secret.get_secret_value())
        return self._write(lambda connection: webhooks.apply(connection, event, now=self.clock()))
