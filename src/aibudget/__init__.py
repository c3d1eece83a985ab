"""aibudget: prepaid AI budgets per customer.

The library surface (SPEC §10); everything else is internal and may change.
"""

from aibudget.accounts.service import Device, Period, Plan, Practice, Subscription
from aibudget.budget import Budget
from aibudget.config import Settings
from aibudget.errors import (
    AibudgetError,
    ConfigError,
    Conflict,
    DeviceNotInPractice,
    Forbidden,
    InvalidInput,
    NotFound,
    UnknownModel,
    UnreadableAudio,
)
from aibudget.pricing.audio import AudioDuration, read_duration
from aibudget.pricing.catalog import Price, PriceCatalog, Usage

__all__ = [
    "AibudgetError",
    "AudioDuration",
    "Budget",
    "ConfigError",
    "Conflict",
    "Device",
    "DeviceNotInPractice",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "Period",
    "Plan",
    "Practice",
    "Price",
    "PriceCatalog",
    "Settings",
    "Subscription",
    "UnknownModel",
    "UnreadableAudio",
    "Usage",
    "read_duration",
]
