"""Practices, plans, subscriptions and devices: the accounts layer of `Budget`."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Connection

from aibudget.accounts import service as accounts
from aibudget.accounts.service import Device, Period, Plan, Practice, Subscription
from aibudget.budget.core import Core


class Accounts(Core):
    """Practices, plans, subscriptions, periods and devices."""

    def put_practice(
        self,
        practice_id: str,
        *,
        name: str | None = None,
        locale: str | None = None,
        timezone: str | None = None,
        policy: str | None = None,
        warning_percent: int | None = None,
    ) -> Practice:
        """Create a practice (locale de-CH, timezone Europe/Zurich, policy allow_last_call) or update it."""
        return self._write(
            lambda connection: accounts.put_practice(
                connection,
                practice_id,
                name=name,
                locale=locale,
                timezone=timezone,
                policy=policy,
                warning_percent=warning_percent,
                now=self.clock(),
            )
        )

    def get_practice(self, practice_id: str) -> Practice:
        return self._read(lambda connection: accounts.get_practice(connection, practice_id))

    def put_plan(self, lookup_key: str, *, included_usd: Decimal | str | int) -> Plan:
        """Set the AI budget a plan includes per period, in USD."""
        return self._write(
            lambda connection: accounts.put_plan(
                connection, lookup_key, included_usd=included_usd, now=self.clock()
            )
        )

    def put_subscription(
        self,
        subscription_id: str,
        *,
        practice_id: str,
        status: str,
        plan: str | None = None,
        current_period_start: int | None = None,
        current_period_end: int | None = None,
        customer_id: str | None = None,
        customer_email: str | None = None,
        updated_at: int | None = None,
    ) -> Subscription:
        """Mirror the payment provider's subscription (period bounds and `updated_at` in Unix seconds)."""
        return self._write(
            lambda connection: accounts.put_subscription(
                connection,
                subscription_id,
                practice_id=practice_id,
                status=status,
                plan=plan,
                current_period_start=current_period_start,
                current_period_end=current_period_end,
                customer_id=customer_id,
                customer_email=customer_email,
                updated_at=updated_at,
                now=self.clock(),
            )
        )

    def current_period(self, practice_id: str) -> Period | None:
        """The billing period the practice is in now; None without a subscription granting access."""
        return self._write(
            lambda connection: accounts.current_period(
                connection, practice_id, at=self.clock(), rules=self.rules.accounts
            )
        )

    def bind_device(self, device_id: str, *, practice_id: str, user_key: str | None = None) -> Device:
        """Bind a desktop installation to a practice; only its keyed hash is stored."""
        return self._write(
            lambda connection: accounts.bind_device(
                connection,
                self._secret,
                device_id,
                practice_id=practice_id,
                user_key=user_key,
                now=self.clock(),
            )
        )

    def deactivate_device(self, device_id: str) -> Device:
        return self._write(
            lambda connection: accounts.deactivate_device(
                connection, self._secret, device_id, now=self.clock()
            )
        )

    def resolve_practice(self, *, practice_id: str | None = None, device_id: str | None = None) -> Practice:
        """The practice a request spends from; a device of another practice raises `DeviceNotInPractice`."""

        def work(connection: Connection) -> Practice:
            resolved, _device = accounts.resolve(
                connection, self._secret, practice_id=practice_id, device_id=device_id
            )
            return accounts.get_practice(connection, resolved)

        return self._read(work)
