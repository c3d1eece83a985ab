"""The operator view of one practice's budget at one instant (SPEC §8), as the engine computed it.

Amounts are integer micro-USD (`*_micros`); the `*_usd` properties give `Decimal`, `as_json()` the
decimal strings of the HTTP API. `client_view()` derives what the desktop shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aibudget.money import format_usd, to_decimal
from aibudget.views.client import ClientView, client_view


@dataclass(frozen=True, slots=True)
class AutoTopupState:
    """Automatic top-up of a practice (configured by the payments feature; off until then)."""

    enabled: bool = False
    paused_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One practice's budget now. Without a subscription granting access nothing is available for a
    new call, whatever credit is left: the practice's AI features are off until it subscribes again.
    A call that already happened is still recorded and paid from that credit when it is settled."""

    practice_id: str
    locale: str
    timezone: str
    policy: str
    warning_percent: int
    subscription_id: str | None  # None: no subscription grants AI access now
    plan: str | None
    period_start: int | None  # Unix seconds
    period_end: int | None
    included_micros: int
    used_micros: int  # all cost posted in the period, whichever pot paid
    held_micros: int
    included_remaining_micros: int
    extra_credit_remaining_micros: int
    overage_micros: int
    auto_topup: AutoTopupState = AutoTopupState()
    # part of the extra credit that expires before a call started now could be settled: not available
    expiring_credit_micros: int = 0
    period_id: int | None = None  # the current period's row, None without one

    @property
    def available_micros(self) -> int:
        """What a new call may still spend: included left plus lasting credit left minus open holds."""
        if self.subscription_id is None:
            return 0
        lasting_credit = self.extra_credit_remaining_micros - self.expiring_credit_micros
        return max(0, self.included_remaining_micros + lasting_credit - self.held_micros)

    @property
    def blocked(self) -> bool:
        """Whether an authorization would be refused whatever its size."""
        return self.available_micros <= 0

    @property
    def included_usd(self) -> Decimal:
        return to_decimal(self.included_micros)

    @property
    def used_usd(self) -> Decimal:
        return to_decimal(self.used_micros)

    @property
    def held_usd(self) -> Decimal:
        return to_decimal(self.held_micros)

    @property
    def included_remaining_usd(self) -> Decimal:
        return to_decimal(self.included_remaining_micros)

    @property
    def extra_credit_remaining_usd(self) -> Decimal:
        return to_decimal(self.extra_credit_remaining_micros)

    @property
    def available_usd(self) -> Decimal:
        return to_decimal(self.available_micros)

    @property
    def overage_usd(self) -> Decimal:
        return to_decimal(self.overage_micros)

    def client_view(self, *, locale: str | None = None) -> ClientView:
        """What the desktop shows, in `locale` (default the practice's)."""
        return client_view(self, locale=self.locale if locale is None else locale)

    def as_json(self) -> dict[str, Any]:
        """The operator view as the HTTP API renders it: amounts as decimal strings."""
        return {
            "practice_id": self.practice_id,
            "subscription_id": self.subscription_id,
            "plan": self.plan,
            "policy": self.policy,
            "period_start": self.period_start,
            "period_end": self.period_end,
            "included_usd": format_usd(self.included_micros),
            "used_usd": format_usd(self.used_micros),
            "held_usd": format_usd(self.held_micros),
            "included_remaining_usd": format_usd(self.included_remaining_micros),
            "extra_credit_remaining_usd": format_usd(self.extra_credit_remaining_micros),
            "available_usd": format_usd(self.available_micros),
            "overage_usd": format_usd(self.overage_micros),
            "auto_topup": {
                "enabled": self.auto_topup.enabled,
                "paused_reason": self.auto_topup.paused_reason,
            },
        }
