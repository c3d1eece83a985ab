"""Authorize, settle, void, snapshot and sweep: the gating layer of `Budget`, over the ledger."""

from __future__ import annotations

import logging
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from aibudget.accounts import service as accounts
from aibudget.budget.core import Clock, system_clock
from aibudget.budget.payments import Payments
from aibudget.config import Settings
from aibudget.credit import autotopup
from aibudget.credit.autotopup import TopupAttempt
from aibudget.errors import AibudgetError, BudgetExceeded, DatabaseUnavailable, InvalidInput
from aibudget.ledger import alerts, fail_open
from aibudget.ledger import service as ledger
from aibudget.ledger.estimate import Estimate
from aibudget.ledger.fail_open import JOURNAL_DIRECTORY, Admission, AdmissionJournal
from aibudget.ledger.journal import JournalFull, JournalUnwritable
from aibudget.ledger.kept_settles import KEPT_DIRECTORY, KeptSettle, SettleJournal
from aibudget.ledger.service import Authorization, Deferred, Refusal, UsageEvent
from aibudget.ledger.state import State, load_state
from aibudget.pricing.catalog import Price, Usage
from aibudget.store import waiting
from aibudget.views.snapshot import Snapshot

log = logging.getLogger(__name__)
# refusals an automatic top-up may cure: the money ran out, not the subscription
TOPUP_REASONS = frozenset({"included_exhausted_no_credit", "insufficient_for_estimate"})


class Gating(Payments):
    """Every call's way through the ledger: held, settled or voided, expired by the sweeper; admitted
    without a hold or kept to post later while the database is unavailable."""

    def __init__(self, engine: Engine, settings: Settings, *, clock: Clock = system_clock) -> None:
        super().__init__(engine, settings, clock=clock)
        # calls admitted without a hold (fail-open), until written
        self._journal = AdmissionJournal(settings.data_dir / JOURNAL_DIRECTORY)
        # settles of served calls the database could not take, until posted
        self._kept_settles = SettleJournal(settings.data_dir / KEPT_DIRECTORY)

    def close(self) -> None:
        self._journal.close()
        self._kept_settles.close()
        super().close()

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

    def sweep(self, *, limit: int = ledger.SWEEP_LIMIT) -> int:
        """Expire holds past their TTL and grants past their expiry; returns how many holds expired.

        Practice by practice, the one whose oldest hold is longest past its TTL first, each in a
        transaction of its own (`ledger.expire_holds`); at most `limit` holds in all, the rest are
        left to the next sweep. A practice whose balance row another session holds past the lock
        timeout (PostgreSQL) keeps its holds until a later sweep, spends none of the limit and holds
        up no other practice's: once the rest of the pass is done, `DatabaseUnavailable` says how
        many holds were released and which practices could not be swept. (SQLite's write lock is
        every practice's: a sweep that cannot have it ends at once.)

        Also records calls admitted without a hold that are still in this data directory's journal
        files — a process that died during an outage left them — whether fail-open is still on or
        not; hands the top-ups Stripe never answered to the background charger
        (`charge_unconfirmed_topups`: a sweep never waits for Stripe, so a slow Stripe delays no
        hold's expiry); and posts the settles kept while the database was unavailable
        (`post_kept_settles`): last, so one the database fails on for a reason of its own holds up
        no other work. (A kept settle whose hold ran out meanwhile is charged all the same: a settle
        needs no hold.)
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"limit: {limit!r} is not a whole number of holds, 1 or more", field="limit")
        now = self.clock()
        due = self._read(lambda connection: ledger.due_for_expiry(connection, now=now, limit=limit))
        expired = 0
        failed: dict[str, Exception] = {}  # the practices whose sweep failed, with why
        for practice_id in due:
            expire = partial(
                ledger.expire_holds, practice_id=practice_id, now=now, rules=self.rules,
                limit=max(limit - expired, 0),
            )  # fmt: skip
            try:
                expired += self._write(expire)
            except DatabaseUnavailable as unavailable:
                if self.embedded_database:
                    raise  # the next practice would wait as long for the same lock
                failed[practice_id] = unavailable
            except SQLAlchemyError as error:  # the database answered, with an error of this practice's
                failed[practice_id] = error
        self.record_admissions()
        if self._gateway is not None:
            self.charge_unconfirmed_topups()
        self.post_kept_settles()
        if failed:
            first = next(iter(failed.values()))
            if not isinstance(first, DatabaseUnavailable):
                raise first
            shown = ", ".join(map(repr, list(failed)[:5])) + (", ..." if len(failed) > 5 else "")
            raise DatabaseUnavailable(
                f"the sweep released {expired} expired hold(s), but {len(failed)} practice(s) could not "
                f"be swept ({shown}): the database is unavailable for them; their holds wait for the "
                "next sweep"
            ) from first
        return expired

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
