"""`Budget`, the library's front door: opens the store, wires the services, one transaction per call.

```python
from aibudget import Budget
b = Budget.open("sqlite:///var/aibudget.sqlite3")        # migrates the schema first
b.put_practice("p1", name="Praxis Muster", policy="strict")
b.put_plan("basic", included_usd="20")
b.put_subscription("sub_1", practice_id="p1", plan="basic", status="active",
                   current_period_start=1764547200, current_period_end=1767225600)
b.bind_device("laptop-7f3a", practice_id="p1")
b.price("gpt-4o-mini", input_tokens=1200, output_tokens=600).cost_usd
```
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine

from aibudget.accounts import service as accounts
from aibudget.accounts.service import Device, Period, Plan, Practice, Rules, Subscription
from aibudget.config import Settings
from aibudget.money import parse_usd
from aibudget.pricing.catalog import Price, PriceCatalog, Usage
from aibudget.store.dialect import read_transaction, write_transaction
from aibudget.store.engine import open_engine

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class Budget:
    """AI budgets of many practices over one database. Thread-safe; share one per process."""

    def __init__(self, engine: Engine, settings: Settings, *, clock: Clock = system_clock) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.catalog = PriceCatalog.from_settings(settings)
        self.rules = Rules(
            granting_statuses=settings.granting_statuses,
            default_included_micros=parse_usd(settings.default_included_usd, field="default_included_usd"),
        )
        self._secret = settings.secret()

    @classmethod
    def open(
        cls, url: str | None = None, *, settings: Settings | None = None, clock: Clock = system_clock
    ) -> Budget:
        """Open (and migrate) the database at `url`, default the configured one."""
        settings = settings or Settings.load()
        return cls(open_engine(url or settings.resolved_database_url), settings, clock=clock)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Budget:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # accounts

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
        with write_transaction(self.engine) as connection:
            return accounts.put_practice(
                connection,
                practice_id,
                name=name,
                locale=locale,
                timezone=timezone,
                policy=policy,
                warning_percent=warning_percent,
                now=self.clock(),
            )

    def get_practice(self, practice_id: str) -> Practice:
        with read_transaction(self.engine) as connection:
            return accounts.get_practice(connection, practice_id)

    def put_plan(self, lookup_key: str, *, included_usd: Decimal | str | int) -> Plan:
        """Set the AI budget a plan includes per period, in USD."""
        with write_transaction(self.engine) as connection:
            return accounts.put_plan(connection, lookup_key, included_usd=included_usd, now=self.clock())

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
        with write_transaction(self.engine) as connection:
            return accounts.put_subscription(
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

    def current_period(self, practice_id: str) -> Period | None:
        """The billing period the practice is in now; None without a subscription granting access."""
        with write_transaction(self.engine) as connection:
            return accounts.current_period(connection, practice_id, at=self.clock(), rules=self.rules)

    def bind_device(self, device_id: str, *, practice_id: str, user_key: str | None = None) -> Device:
        """Bind a desktop installation to a practice; only its keyed hash is stored."""
        with write_transaction(self.engine) as connection:
            return accounts.bind_device(
                connection,
                self._secret,
                device_id,
                practice_id=practice_id,
                user_key=user_key,
                now=self.clock(),
            )

    def deactivate_device(self, device_id: str) -> Device:
        with write_transaction(self.engine) as connection:
            return accounts.deactivate_device(connection, self._secret, device_id, now=self.clock())

    def resolve_practice(self, *, practice_id: str | None = None, device_id: str | None = None) -> Practice:
        """The practice a request spends from; a device of another practice raises `DeviceNotInPractice`."""
        with read_transaction(self.engine) as connection:
            practice, _device = accounts.resolve(
                connection, self._secret, practice_id=practice_id, device_id=device_id
            )
            return practice

    # prices

    def price(
        self,
        model: str,
        *,
        input_tokens: int = 0,
        cached_input_tokens: int = 0,
        output_tokens: int = 0,
        input_audio_tokens: int = 0,
        audio_seconds: Decimal | int = 0,
    ) -> Price:
        """What one call of `model` with this usage costs now, and where the price came from."""
        usage = Usage(
            input_tokens, cached_input_tokens, output_tokens, input_audio_tokens, Decimal(audio_seconds)
        )
        return self.catalog.price(model, usage, at=self.clock())
