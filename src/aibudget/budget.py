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

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from aibudget.accounts import service as accounts
from aibudget.accounts.service import Device, Period, Plan, Practice, Rules, Subscription
from aibudget.auth import service as auth
from aibudget.auth import sessions
from aibudget.auth.service import ApiKey, Principal
from aibudget.auth.sessions import AdminSession
from aibudget.config import Settings
from aibudget.credit import autotopup, topup
from aibudget.credit import service as credit
from aibudget.credit.autotopup import TopupAttempt
from aibudget.credit.service import CreditGrant
from aibudget.credit.topup import TopupSettings
from aibudget.dashboard import data
from aibudget.dashboard.data import BurnDown, OverviewPage
from aibudget.errors import AibudgetError, BudgetExceeded, DatabaseUnavailable, InvalidInput, PaymentsOff
from aibudget.ledger import alerts, fail_open, reports, retention
from aibudget.ledger import service as ledger
from aibudget.ledger.estimate import Estimate
from aibudget.ledger.fail_open import JOURNAL_DIRECTORY, Admission, AdmissionJournal
from aibudget.ledger.journal import JournalFull, JournalUnwritable
from aibudget.ledger.kept_settles import KEPT_DIRECTORY, KeptSettle, SettleJournal
from aibudget.ledger.reports import UsageReport
from aibudget.ledger.retention import Pruned
from aibudget.ledger.service import Authorization, Deferred, Refusal, UsageEvent
from aibudget.ledger.state import LedgerRules, State, load_state
from aibudget.ledger.verify import Discrepancy, verify
from aibudget.money import parse_usd
from aibudget.notify import delivery, outbox
from aibudget.notify.delivery import Notifier, Sender
from aibudget.notify.outbox import Notification
from aibudget.payments import gateway as payments
from aibudget.payments import packages, webhooks
from aibudget.payments.gateway import Charge, CheckoutSession, StripeGateway
from aibudget.payments.packages import Offer
from aibudget.pricing.catalog import Price, PriceCatalog, Usage
from aibudget.store import waiting
from aibudget.store.dialect import checkpoint, is_embedded, run_transaction, shared_reads
from aibudget.store.engine import open_engine
from aibudget.views.snapshot import Snapshot

Clock = Callable[[], datetime]
T = TypeVar("T")
log = logging.getLogger(__name__)
# refusals an automatic top-up may cure: the money ran out, not the subscription
TOPUP_REASONS = frozenset({"included_exhausted_no_credit", "insufficient_for_estimate"})


def _log_failure(future: Future[None]) -> None:
    error = future.exception()
    if error is not None:  # the attempt stays pending; the sweeper charges it again
        log.error("charging an automatic top-up failed; retried by the sweeper", exc_info=error)


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
        self._gateway = StripeGateway.from_settings(settings)
        # automatic top-ups triggered by a settle are charged here, so the settle never waits for Stripe
        self._charges = ThreadPoolExecutor(max_workers=2, thread_name_prefix="aibudget-topup")
        # top-ups this process is charging, queued or under way: never two charges of one at a time
        self._charging: set[str] = set()
        self._charging_lock = threading.Lock()
        self._sender: Sender | None = None  # made on first delivery: no HTTP client unless needed
        self._sender_lock = threading.Lock()
        # calls admitted without a hold (fail-open), until written
        self._journal = AdmissionJournal(settings.data_dir / JOURNAL_DIRECTORY)
        # settles of served calls the database could not take, until posted
        self._kept_settles = SettleJournal(settings.data_dir / KEPT_DIRECTORY)

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock = system_clock,
        background_checkpoints: bool = False,
    ) -> Budget:
        """Open (and migrate) the database at `url`, default the configured one.

        `background_checkpoints`: the caller calls `checkpoint` every fraction of a second on a
        thread of its own (the server does), so calls do not copy SQLite's log themselves.
        """
        settings = settings or Settings.load()
        engine = open_engine(
            url or settings.resolved_database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.pool_size,
            pool_max_overflow=settings.pool_max_overflow,
            background_checkpoints=background_checkpoints,
        )
        return cls(engine, settings, clock=clock)

    def _write(self, work: Callable[[Connection], T]) -> T:
        return run_transaction(self.engine, work, write=True)

    def _read(self, work: Callable[[Connection], T]) -> T:
        return run_transaction(self.engine, work, write=False)

    def consistent_reads(self) -> AbstractContextManager[None]:
        """`with budget.consistent_reads():` every read of this budget in the block sees one
        committed state, as of the block's first read (writes in the block are not seen).

        A `snapshot` of a practice whose period ended or whose credit expired writes first and
        answers from that write; take one before the block, so the block's state has it too."""
        return shared_reads(self.engine)

    def close(self) -> None:
        self._charges.shutdown(wait=True)
        self._journal.close()
        self._kept_settles.close()
        if self._sender is not None:
            self._sender.close()
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
        claimed: list[TopupAttempt] = []  # the top-up this call claimed, if any
        may_claim = self._gateway is not None

        def on_refusal(connection: Connection, state: State, reason: str) -> str | None:
            now = self.clock()
            if reason in TOPUP_REASONS and state.auto_topup.enabled:
                if may_claim:
                    attempt = autotopup.claim(
                        connection,
                        state.snapshot(),
                        trigger="authorize",
                        offer_for=self._topup_offer,
                        now=now,
                    )
                    if attempt is not None:
                        claimed.append(attempt)
                        return None  # charge first, then decide again
                reason = autotopup.refusal_reason(connection, state.snapshot(), now) or reason
            if reason in alerts.EXHAUSTION_REASONS:
                alerts.exhausted(connection, state.snapshot(), reason=reason, now=now)
            return reason

        def work(connection: Connection) -> Authorization | Refusal | Deferred:
            claimed.clear()  # a transaction run again starts from nothing
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
                on_refusal=on_refusal,
            )

        def decided(result: Authorization | Refusal | Deferred) -> Authorization:
            if isinstance(result, Refusal):  # raised after the commit: the refusal is on the books
                raise BudgetExceeded(result.payload)
            assert not isinstance(result, Deferred)  # one top-up per call: the second pass decides
            return result

        def after_topup() -> Authorization:
            self._charge(claimed[0])
            return decided(self._write(work))

        result = self._write(work)
        if isinstance(result, Deferred):  # an automatic top-up was claimed: charge it, then ask again
            may_claim = False
            return waiting.then(after_topup)  # the charge waits for Stripe: never on an event loop
        return decided(result)

    def admit_without_hold(
        self,
        *,
        practice_id: str,
        request_id: str,
        operation: str,
        model: str,
        input_tokens: int | None = None,
        prompt_chars: int | None = None,
        max_output_tokens: int | None = None,
        audio_seconds: Decimal | int | None = None,
    ) -> Admission:
        """Fail open: admit a call `authorize` could not decide because the database is unavailable.

        Only for `AIBUDGET_FAIL_OPEN` (see `ledger.fail_open`): nothing is held or checked, the call
        is logged and kept for `record_admissions`, in memory and in a file under the data directory
        that outlives the process. A replay gets the first admission while it is kept (`.replayed`
        True). Raises `DatabaseUnavailable` when `JOURNAL_LIMIT` admissions already wait or the
        file cannot be written.
        """
        estimate = Estimate(input_tokens, prompt_chars, max_output_tokens, audio_seconds)
        now = self.clock()
        usage = estimate.usage(default_max_output_tokens=self.rules.default_max_output_tokens)
        admission = Admission(
            practice_id=accounts.check_practice_id(practice_id),
            request_id=ledger.check_request_id(request_id),
            operation=ledger.check_operation(operation),
            model=model,
            estimate_micros=self.catalog.price(model, usage, at=now).cost_micros,
            admitted_at=now,
        )
        try:
            admitted = self._journal.admit(admission)
        except (JournalFull, JournalUnwritable) as refused:
            raise DatabaseUnavailable(f"the database is unavailable and {refused}") from refused
        if not admitted.replayed:
            log.warning(
                "fail-open: admitted request %r of practice %r without a hold; the database is unavailable",
                request_id, practice_id,
            )  # fmt: skip
        return admitted

    def record_admissions(self) -> int:
        """Write the admissions `admit_without_hold` kept, and those a process that died kept in the
        same data directory; how many. Raises `DatabaseUnavailable`."""
        return self._journal.write(self.engine, self.clock())

    def fail_open_admissions(self, practice_id: str | None = None) -> list[Admission]:
        """Calls admitted without a hold and recorded since, oldest first."""
        return self._read(lambda connection: fail_open.admissions(connection, practice_id))

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

        claimed: TopupAttempt | None = None

        def work(connection: Connection) -> UsageEvent:
            nonlocal claimed
            claimed = None  # a transaction run again starts from nothing
            practice, device = accounts.resolve(
                connection, self._secret, practice_id=practice_id, device_id=device_id, recording=True
            )
            event = ledger.settle(
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
            after = event.budget
            if event.replayed or after is None:
                return event
            now = self.clock()
            if (
                self._gateway is not None
                and after.auto_topup.enabled
                and after.auto_topup.paused_reason is None
            ):
                claimed = autotopup.claim(
                    connection, after, trigger="settle", offer_for=self._topup_offer, now=now
                )
            thresholds = self.settings.notify_thresholds
            alerts.after_settle(connection, after, period_id=event.period_id, thresholds=thresholds, now=now)
            return event

        event = self._write(work)
        if claimed is not None:  # charged in the background: the settle's answer does not wait for Stripe
            self._charge_in_background(claimed)
        return event

    def settle_or_keep(
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
        estimated: bool = False,
    ) -> UsageEvent | None:
        """`settle` a call that was served; when the database is unavailable, keep the settle on
        local disk for `post_kept_settles` and return None (see `ledger.kept_settles`).

        Raises `DatabaseUnavailable` only when the settle can be neither posted nor kept.
        """
        kept = KeptSettle(
            request_id=request_id, model=model, practice_id=practice_id, device_id=device_id,
            input_tokens=input_tokens, cached_input_tokens=cached_input_tokens, output_tokens=output_tokens,
            input_audio_tokens=input_audio_tokens, audio_seconds=Decimal(audio_seconds), operation=operation,
            status=status, error_code=error_code, estimated=estimated, kept_at=self.clock(),
        )  # fmt: skip
        try:
            return self.settle(**kept.arguments())
        except DatabaseUnavailable as unavailable:
            try:
                self._kept_settles.keep(kept)
            except (JournalFull, JournalUnwritable) as refused:
                raise DatabaseUnavailable(f"the database is unavailable and {refused}") from unavailable
        log.warning("settle of request %r kept to post later: the database is unavailable", request_id)
        return None

    def post_kept_settles(self) -> int:
        """Post the settles `settle_or_keep` kept, and those a process that died kept in the same
        data directory; how many. Raises `DatabaseUnavailable` (they stay kept).

        One the database refuses (its practice or device gone, another settle with the same request
        id) cannot be posted later either: it is logged as an error and let go.
        """

        def take(batch: list[KeptSettle]) -> None:
            for kept in batch:
                try:
                    self.settle(**kept.arguments())
                except DatabaseUnavailable:
                    raise
                except AibudgetError as refused:
                    log.error(
                        "kept settle of request %r (practice %r, model %r, kept %s) not posted: %s",
                        kept.request_id, kept.practice_id, kept.model, kept.kept_at.isoformat(), refused,
                    )  # fmt: skip

        posted = self._kept_settles.drain(take)
        if posted:
            log.info("posted %d settles kept while the database was unavailable", posted)
        return posted

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

    @property
    def embedded_database(self) -> bool:
        """Whether the database runs inside this process (SQLite): no call waits on a network, and
        a long-running process should call `checkpoint`."""
        return is_embedded(self.engine)

    @property
    def quick_commits(self) -> bool:
        """Whether a commit is this process's own quick work, never a wait for a network or the disk:
        SQLite with `synchronous=normal`, whose commits only append to the write-ahead log (the
        server then makes its calls on the event loop, `store.waiting`)."""
        return self.embedded_database and self.settings.sqlite_synchronous == "normal"

    def checkpoint(self) -> int:
        """Copy SQLite's write-ahead log into the database file without waiting for any call; how
        many of the log's pages are in the file now (0 on PostgreSQL). See `store.dialect.checkpoint`."""
        return checkpoint(self.engine)

    def sweep(self, *, limit: int = ledger.SWEEP_LIMIT) -> int:
        """Expire holds past their TTL — the `limit` longest past it; the rest are left to the next
        sweep — and grants past their expiry; returns how many holds expired.

        Each practice is swept in a transaction of its own (`ledger.expire_holds`), so one whose
        balance row another session holds past the lock timeout (PostgreSQL) keeps its holds until a
        later sweep and holds up no other practice's; the first such failure is raised once the rest
        of the pass is done. (SQLite's write lock is every practice's: a sweep that cannot have it
        ends at once.)

        Also records calls admitted without a hold that are still in this data directory's journal
        files — a process that died during an outage left them — whether fail-open is still on or
        not; hands the top-ups Stripe never answered to the background charger
        (`charge_unconfirmed_topups`: a sweep never waits for Stripe, so a slow Stripe delays no
        hold's expiry); and posts the settles kept while the database was unavailable
        (`post_kept_settles`): last, so one the database fails on for a reason of its own holds up
        no other work. (A kept settle whose hold ran out meanwhile is charged all the same: a settle
        needs no hold.)
        """
        now = self.clock()
        due = self._read(lambda connection: ledger.due_for_expiry(connection, now=now, limit=limit))
        expired = 0
        failure: Exception | None = None  # the first practice's whose sweep failed
        for practice_id, holds in due.items():
            expire = partial(
                ledger.expire_holds, practice_id=practice_id, now=now, rules=self.rules, limit=holds
            )
            try:
                expired += self._write(expire)
            except DatabaseUnavailable as unavailable:
                if self.embedded_database:
                    raise  # the next practice would wait as long for the same lock
                failure = failure or unavailable
            except SQLAlchemyError as error:  # the database answered, with an error of this practice's
                failure = failure or error
        self.record_admissions()
        if self._gateway is not None:
            self.charge_unconfirmed_topups()
        self.post_kept_settles()
        if failure is not None:
            raise failure
        return expired

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
        status: str | None = None,
        model: str | None = None,
        operation: str | None = None,
    ) -> UsageReport:
        """The practice's events in `[since, until)`, newest first (at most `limit`), or their totals
        per `group_by` (`day` in the practice's timezone, `model`, `operation`); dates are midnight
        in the practice's timezone. `status` (success, error, blocked, voided, expired), `model` and
        `operation` keep only the events equal to them. Render with `aibudget.views.report`."""
        return self._read(
            lambda connection: reports.usage_report(
                connection,
                practice_id,
                since=since,
                until=until,
                group_by=group_by,
                limit=limit,
                status=status,
                model=model,
                operation=operation,
            )
        )

    # the operator dashboard

    def overview(
        self,
        *,
        query: str = "",
        sort: str = "practice_id",
        descending: bool = False,
        page: int = 1,
        per_page: int = 25,
    ) -> OverviewPage:
        """One page of all practices whose id or name contains `query` (ignoring case), with their
        budget now, sorted by `sort` (`practice_id`, `name`, `plan`, `available_percent`, `spend`;
        ties by practice id). Costs O(practices) per call: see `aibudget.dashboard.data`."""
        return data.overview(
            read=self._read, snapshot=self.snapshot, now=self.clock(), rules=self.rules, query=query,
            sort=sort, descending=descending, page=page, per_page=per_page,
        )  # fmt: skip

    def burn_down(self, practice_id: str) -> BurnDown:
        """The practice's current period day by day (in its timezone) up to today: spent per pot and
        the included budget left at each day's end; and the period's calls per model and operation."""
        snapshot = self.snapshot(practice_id)
        return self._read(lambda connection: data.burn_down(connection, snapshot, now=self.clock()))

    def devices(self, practice_id: str) -> list[Device]:
        """The practice's devices, the most recently bound first."""
        return self._read(lambda connection: data.devices(connection, practice_id))

    # payments

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

    # dashboard sessions

    def sign_in(self, admin_key: str) -> AdminSession:
        """A dashboard session for an admin key (`Unauthorized` for any other key); the key is not kept."""
        principal = self.authenticate(admin_key)
        env_key = self._env_key_hmac()  # kept with a session it opens, to tell it from a new one
        return self._write(
            lambda connection: sessions.open_session(connection, principal, now=self.clock(), env_key=env_key)
        )

    def dashboard_session(self, token: str | None) -> AdminSession | None:
        """The live session behind a cookie's token; None when unknown, expired, signed out or revoked
        (for a session of `AIBUDGET_ADMIN_KEY`: when the variable no longer holds the key that opened it)."""
        env_key = self._env_key_hmac()
        return self._read(
            lambda connection: sessions.find_session(connection, token, now=self.clock(), env_key=env_key)
        )

    def _env_key_hmac(self) -> str | None:
        admin = self.settings.admin_key
        return sessions.env_key_hmac(self._secret, admin.get_secret_value() if admin else None)

    def sign_out(self, token: str) -> None:
        self._write(lambda connection: sessions.close_session(connection, token))

    def verify(self) -> list[Discrepancy]:
        """Every difference between cached balances and the ledger; empty when the books balance."""
        return self._read(lambda connection: verify(connection))

    # notifications

    def notifications(
        self, *, practice_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[Notification]:
        """The notifications delivery log, newest first, optionally of one practice or one status
        (`pending`, `delivered`, `failed`)."""
        return self._read(
            lambda connection: outbox.list_notifications(
                connection, practice_id=practice_id, status=status, limit=limit
            )
        )

    def resend_notifications(
        self, *, notification_id: str | None = None, practice_id: str | None = None
    ) -> int:
        """Send failed notifications again — the one named, else every failed one (of a practice) —
        with a new round of attempts from the next delivery pass; how many (see `outbox.resend`)."""
        return self._write(
            lambda connection: outbox.resend(
                connection, now=self.clock(), notification_id=notification_id, practice_id=practice_id
            )
        )

    def _notify_sender(self) -> Sender:
        with self._sender_lock:
            if self._sender is None:
                self._sender = Sender.from_settings(self.settings)
            return self._sender

    def deliver_notifications(self) -> int:
        """One delivery pass (the server's `Notifier` runs one every `notify_interval_seconds`): POST
        every due notification to `notify_url` and record each outcome; returns how many were
        delivered. Does nothing without `notify_url`; `ConfigError` without `notify_secret`."""
        if self.settings.notify_url is None:
            return 0
        return delivery.deliver_due(
            read=self._read, write=self._write, sender=self._notify_sender(), clock=self.clock,
            max_attempts=self.settings.notify_max_attempts,
        )  # fmt: skip

    def notifier(self) -> Notifier | None:
        """The background delivery worker (not started), or None without `notify_url`; raises
        `ConfigError` at once when `notify_url` is set without `notify_secret`."""
        if self.settings.notify_url is None:
            return None
        self._notify_sender()
        return Notifier(self.deliver_notifications, interval=self.settings.notify_interval_seconds)

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
