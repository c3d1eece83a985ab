"""aibudget: prepaid AI budgets per customer.

The library surface (SPEC §10); everything else is internal and may change.
"""

from aibudget.accounts.service import Device, Period, Plan, Practice, Subscription
from aibudget.budget import Budget
from aibudget.config import Settings
from aibudget.credit.autotopup import TopupAttempt
from aibudget.credit.service import CreditGrant
from aibudget.credit.topup import TopupSettings
from aibudget.errors import (
    AibudgetError,
    BudgetExceeded,
    ConfigError,
    Conflict,
    DatabaseUnavailable,
    DeviceNotInPractice,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    InvalidWebhook,
    NotFound,
    PaymentProviderUnavailable,
    PaymentsOff,
    UnknownModel,
    UnreadableAudio,
)
from aibudget.guard import UnsettledAnswer, guard
from aibudget.ledger.service import Authorization, UsageEvent
from aibudget.ledger.verify import Discrepancy
from aibudget.notify.outbox import Notification
from aibudget.payments.gateway import CheckoutSession
from aibudget.payments.packages import Offer
from aibudget.pricing.audio import AudioDuration, read_duration
from aibudget.pricing.catalog import Price, PriceCatalog, Usage
from aibudget.views.client import ClientView
from aibudget.views.snapshot import Snapshot

__all__ = [
    "AibudgetError",
    "AudioDuration",
    "Authorization",
    "Budget",
    "BudgetExceeded",
    "CheckoutSession",
    "ClientView",
    "ConfigError",
    "Conflict",
    "CreditGrant",
    "DatabaseUnavailable",
    "Device",
    "DeviceNotInPractice",
    "Discrepancy",
    "Forbidden",
    "IdempotencyConflict",
    "InvalidInput",
    "InvalidWebhook",
    "NotFound",
    "Notification",
    "Offer",
    "PaymentProviderUnavailable",
    "PaymentsOff",
    "Period",
    "Plan",
    "Practice",
    "Price",
    "PriceCatalog",
    "Settings",
    "Snapshot",
    "Subscription",
    "TopupAttempt",
    "TopupSettings",
    "UnknownModel",
    "UnreadableAudio",
    "UnsettledAnswer",
    "Usage",
    "UsageEvent",
    "guard",
    "read_duration",
]
