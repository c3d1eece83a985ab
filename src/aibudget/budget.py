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
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from aibudget.accounts import service as accounts
from aibudget.accounts.service import Device, Period, Plan, Practice, Rules, Subscription
from aibudget.auth import service as auth
from aibudget.auth.service import ApiKey, Principal
from aibudget.config import Settings
from aibudget.credit import repository as credit_repository
from aibudget.credit import service as credit
from aibudget.credit import topup
from aibudget.credit.service import CreditGrant
from aibudget.credit.topup import TopupSettings
from aibudget.errors import BudgetExceeded
from aibudget.ledger import reports, retention
from aibudget.ledger import service as ledger
from aibudget.ledger.estimate import Estimate
from aibudget.ledger.reports import UsageReport
from aibudget.ledger.retention import Pruned
from aibudget.ledger.service import Authorization, Refusal, UsageEvent
from aibudget.ledger.state import LedgerRules, load_state
from aibudget.ledger.verify import Discrepancy, verify
from aibudget.money import parse_usd
from aibudget.pricing.catalog import Price, PriceCatalog, Usage
from aibudget.store.dialect import run_transaction
from aibudget.store.engine import open_engine
from aibudget.views.snapshot import Snapshot

Clock = Callable[[], datetime]
T = TypeVar("T")


def system_clock() -> datetime:
    return datetime.now(UTC)


class Budget:
    """AI budgets of many practices over one database. Thread-safe; share one per process."""

    def __init__(self, engine: Engine, settings: Settings, *, clock: Clock = system_clock) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.catalog = PriceCatalog.from_settings(settings)
        self.rules = LedgerRules(
            accounts=Rules(
                granting_statuses=settings.granting_statuses,
                default_included_micros=parse_usd(
                    settings.default_included_usd, field="default_included_usd"
                ),
            ),
            hold_ttl=timedelta(seconds=settings.hold_ttl_seconds),
            default_max_output_tokens=settings.default_max_output_tokens,
        )
        self._secret = settings.secret()

    @classmethod
    def open(
        cls, url: str | None = None, *, settings: Settings | None = None, clock: Clock = system_clock
    ) -> Budget:
        """Open (and migrate) the database at `url`, default the configured one."""
        settings = settings or Settings.load()
        engine = open_engine(
            url or settings.resolved_database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.pool_size,
            pool_max_overflow=settings.pool_max_overflow,
        )
        return cls(engine, settings, clock=clock)

    def _write(self, work: Callable[[Connection], T]) -> T:
        return run_transaction(self.engine, work, write=True)

    def _read(self, work: Callable[[Connection], T]) -> T:
        return run_transaction(self.engine, work, write=False)

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

    # gating and the ledger

    def authorize(
        self,
        *,
        request_id: str,
        operation: str,
        model: str,
        practice_id: str | None = None,
        device_id: str | None = None,
        input_tokens: int | None = None,
        prompt_chars: int | None = None,
        max_output_tokens: int | None = None,
        audio_seconds: Decimal | int | None = None,
    ) -> Authorization:
        """Hold the estimated cost of a call before it is made; raises `BudgetExceeded` (402) if refused.

        The estimate: `input_tokens`, or a bound from `prompt_chars`; `max_output_tokens` (default
        the configured cap); `audio_seconds` of an upload. Replaying a request id returns the first
        result; the same id with another estimate raises `IdempotencyConflict`.
        """
        estimate = Estimate(input_tokens, prompt_chars, max_output_tokens, audio_seconds)

        def work(connection: Connection) -> Authorization | Refusal:
            practice, device = accounts.resolve(
                connection, self._secret, practice_id=practice_id, device_id=device_id
            )
            return ledger.authorize(
                connection,
                practice,
                request_id=request_id,
                operation=operation,
                model=model,
                estimate=estimate,
                device=device,
                now=self.clock(),
                rules=self.rules,
                catalog=self.catalog,
            )

        result = self._write(work)
        if isinstance(result, Refusal):  # raised after the commit: the refusal is on the books
            raise BudgetExceeded(result.payload)
        return result

    def settle(
        self,
        *,
        request_id: str,
        model: str,
        practice_id: str | None = None,
        device_id: str | None = None,
        input_tokens: int = 0,
        cached_input_tokens: int = 0,
        output_tokens: int = 0,
        input_audio_tokens: int = 0,
        audio_seconds: Decimal | int = 0,
        operation: str | None = None,
        status: str = "success",
        error_code: str | None = None,
        meta: dict[str, Any] | None = None,
        estimated: bool = False,
    ) -> UsageEvent:
        """Record a call's real usage: priced, charged through the waterfall, its hold released.

        Works with or without a prior `authorize`. Replaying a request id returns the first event
        (`.replayed` is True) and charges nothing; another body raises `IdempotencyConflict`.
        """
        usage = Usage(input_tokens, cached_input_tokens, output_tokens, input_audio_tokens, audio_seconds)

        def work(connection: Connection) -> UsageEvent:
            practice, device = accounts.resolve(
                connection, self._secret, practice_id=practice_id, device_id=device_id, recording=True
            )
            return ledger.settle(
                connection,
                practice,
                request_id=request_id,
                model=model,
                usage=usage,
                operation=operation,
                status=status,
                error_code=error_code,
                meta=meta,
                estimated=estimated,
                device=device,
                now=self.clock(),
                rules=self.rules,
                catalog=self.catalog,
            )

        return self._write(work)

    def void(
        self, *, request_id: str, practice_id: str | None = None, device_id: str | None = None
    ) -> Authorization:
        """Release the hold of a call that was not made."""

        def work(connection: Connection) -> Authorization:
            practice, _device = accounts.resolve(
                connection, self._secret, practice_id=practice_id, device_id=device_id
            )
            return ledger.void(
                connection, practice, request_id=request_id, now=self.clock(), rules=self.rules
            )

        return self._write(work)

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

    def snapshot(self, practice_id: str) -> Snapshot:
        """The operator view of the practice's budget now; `.client_view()` for the desktop."""
        now = self.clock()
        state = self._read(
            lambda connection: load_state(connection, practice_id, now=now, rules=self.rules, write=False)
        )
        if state is None:  # a period ended or a grant expired: bring the rows up to date first
            state = self._write(
                lambda connection: load_state(connection, practice_id, now=now, rules=self.rules, write=True)
            )
        assert state is not None
        return state.snapshot()

    def sweep(self) -> int:
        """Expire holds past their TTL and grants past their expiry; returns how many holds expired."""
        now = self.clock()

        def work(connection: Connection) -> int:
            expired = ledger.expire_holds(connection, now=now, rules=self.rules)
            for practice_id in credit_repository.practices_with_due_grants(connection, now):
                load_state(connection, practice_id, now=now, rules=self.rules, write=True)
            return expired

        return self._write(work)

    def prune_usage(self, before: date | datetime) -> Pruned:
        """Remove usage events that occurred before `before` (a date is midnight UTC) and the closed
        authorizations of that time; no balance changes and `verify` still passes (see
        `ledger.retention`). Runs in batches of its own transactions, so traffic goes on meanwhile."""
        cutoff = retention.cutoff(before, now=self.clock())
        removed = Pruned(events=0, authorizations=0)
        while batch := self._write(lambda connection: retention.prune_events(connection, cutoff)):
            removed = replace(removed, events=removed.events + batch)
        while batch := self._write(lambda connection: retention.prune_authorizations(connection, cutoff)):
            removed = replace(removed, authorizations=removed.authorizations + batch)
        return removed

    def usage_report(
        self,
        practice_id: str,
        *,
        since: date | datetime | None = None,
        until: date | datetime | None = None,
        group_by: str | None = None,
        limit: int = reports.DEFAULT_LIMIT,
    ) -> UsageReport:
        """The practice's events in `[since, until)`, newest first (at most `limit`), or their totals
        per `group_by` (`day` in the practice's timezone, `model`, `operation`); dates are midnight
        in the practice's timezone. Render with `aibudget.views.report`."""
        return self._read(
            lambda connection: reports.usage_report(
                connection, practice_id, since=since, until=until, group_by=group_by, limit=limit
            )
        )

    # API keys

    def create_key(
        self, *, role: str, practice_id: str | None = None, label: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new API key and its text, shown this once: only its hash is stored."""
        return self._write(
            lambda connection: auth.create_key(
                connection, role=role, practice_id=practice_id, label=label, now=self.clock()
            )
        )

    def authenticate(self, presented: str | None) -> Principal:
        """Who a presented API key stands for; raises `Unauthorized`."""
        admin = self.settings.admin_key
        return self._read(
            lambda connection: auth.authenticate(
                connection, presented, admin_key=admin.get_secret_value() if admin else None
            )
        )

    def api_keys(self) -> list[ApiKey]:
        return self._read(lambda connection: auth.list_keys(connection))

    def revoke_key(self, key_id: str) -> ApiKey:
        return self._write(lambda connection: auth.revoke_key(connection, key_id, now=self.clock()))

    def verify(self) -> list[Discrepancy]:
        """Every difference between cached balances and the ledger; empty when the books balance."""
        return self._read(lambda connection: verify(connection))

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
        usage = Usage(input_tokens, cached_input_tokens, output_tokens, input_audio_tokens, audio_seconds)
        return self.catalog.price(model, usage, at=self.clock())
