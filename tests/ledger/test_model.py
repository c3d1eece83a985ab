"""Model-based test of the books: random sequences against a plain in-memory model (SPEC §2, §4, §5).

A `RuleBasedStateMachine` drives the real `Budget` on a fresh SQLite file per example and, beside it,
a model made of ints (micro-USD) and dicts. Every rule predicts its outcome exactly — the hold or the
refusal and its reason, a settlement's split over included budget, grants and overage, a sweep's
count, a replay's first result — and after every step each practice's snapshot must equal the
model's, `verify()` must find nothing, and posted cost must stay within funding (G2).

Prices come from an overrides file, so the model prices calls itself: `model-a` costs 1 micro-USD per
input token and 2 per output token; an estimate without `max_output_tokens` holds the configured
default of 50 output tokens. Holds live 60 s, so expiry is common.

The model resolves the current period afresh on every touch (the governing subscription, its
provider period or the calendar month in the practice's timezone, the plan's budget now); the real
code caches it (the real snapshot after every step resolves it too). Period and grant ids are the
database's, learnt when first seen and held to afterwards.

Rules draw a request as a number: mostly one the model has seen authorized, often one still
holding (a settle, void or retry of it), otherwise any of 16 `(practice, request id)` pairs, so
unauthorized settles, voids of unknown requests and reused ids happen too.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, currently_in_test_context, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from aibudget import (
    AibudgetError,
    Budget,
    BudgetExceeded,
    Conflict,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    Settings,
)
from aibudget.ledger.reports import UsageLine
from aibudget.money import to_decimal
from tests.conftest import FakeClock
from tests.databases import PostgresServer

MODEL = "model-a"
INPUT_MICROS, OUTPUT_MICROS = 1, 2  # per token, see PRICES
PRICES = f'[models."{MODEL}"]\ninput_mtok = "{INPUT_MICROS}"\noutput_mtok = "{OUTPUT_MICROS}"\n'
DEFAULT_MAX_OUTPUT = 50
DEFAULT_INCLUDED = 1_000  # micro-USD, for a subscription whose plan is unknown
HOLD_TTL = timedelta(seconds=60)
GRANTING = ("active", "trialing")

START = datetime(2026, 1, 31, 21, 0, tzinfo=UTC)  # hours before February in Zurich and New York
PROVIDER_STARTS = tuple(int(START.timestamp()) + days * 86_400 for days in (-5, 25, 55))
PRACTICES = ("p1", "p2")
TIMEZONES = ("Europe/Zurich", "America/New_York", "Pacific/Auckland")
POLICIES = ("strict", "allow_last_call")
REQUESTS = tuple(f"r{i}" for i in range(8))
REFERENCES = tuple(f"pay-{i}" for i in range(6))
PLANS = ("basic", "pro", "later")  # "later" has no budget until put_plan names it

# Shrinks towards the first element: replay the first body rather than send another one.
rarely = st.sampled_from([False, False, False, True])
requests = st.integers(0, 31)  # see `Books.request`


@cache
def migrated_database() -> Path:
    """A database migrated once per process: each example starts on a copy (migrating takes ~50 ms)."""
    directory = tempfile.TemporaryDirectory(prefix="aibudget-model-template-")
    _keep.append(directory)
    Budget.open(settings=Settings.load(data_dir=Path(directory.name))).close()
    return Path(directory.name) / "aibudget.sqlite3"


_keep: list[tempfile.TemporaryDirectory[str]] = []


@dataclass(frozen=True)
class Databases:
    """Where each example's fresh, migrated database comes from, on the engine under test."""

    create: Callable[[Path], str]  # data directory -> URL
    drop: Callable[[str], None]


def sqlite_copy(data_dir: Path) -> str:
    shutil.copy(migrated_database(), data_dir / "aibudget.sqlite3")
    return f"sqlite:///{data_dir / 'aibudget.sqlite3'}"


@pytest.fixture(autouse=True)
def databases(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        Books.databases = Databases(sqlite_copy, lambda _url: None)
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres")
        Books.databases = Databases(lambda _dir: postgres.create_database(), postgres.drop_database)


def month_bounds(at: datetime, timezone: str) -> tuple[int, int]:
    """Start and end (Unix seconds) of the calendar month containing `at` in `timezone`."""
    zone = ZoneInfo(timezone)
    local = at.astimezone(zone)
    following = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    start = datetime(local.year, local.month, 1, tzinfo=zone)
    return int(start.timestamp()), int(datetime(*following, 1, tzinfo=zone).timestamp())


PeriodKey = tuple[str, str, int]  # practice, subscription, start


@dataclass
class MPeriod:
    key: PeriodKey
    end: int
    plan: str | None
    included: int
    max_included: int  # the most this period's budget ever was: its funding for G2
    included_used: int = 0
    used: int = 0
    overage: int = 0

    @property
    def included_remaining(self) -> int:
        return max(0, self.included - self.included_used)


@dataclass
class MSubscription:
    practice_id: str
    status: str
    plan: str | None
    start: int | None
    end: int | None
    updated_at: int


@dataclass
class MGrant:
    grant_id: int
    practice_id: str
    amount: int
    source: str
    priority: int
    expires_at: datetime | None
    remaining: int
    retired: bool = False
    expired_amount: int = 0


@dataclass
class MAuthorization:
    body: tuple[Any, ...]
    status: str  # active | settled | voided | expired | refused
    estimate: int
    held: int
    period: PeriodKey | None
    expires_at: datetime
    est_input: int
    est_output: int
    reason: str | None = None
    period_end: int | None = None


@dataclass
class MSettlement:
    body: tuple[Any, ...]
    event_id: int
    cost: int
    overage: int
    period_id: int | None
    allocations: tuple[tuple[str, int, int | None], ...]


@dataclass
class MPractice:
    timezone: str
    policy: str
    posted: int = 0  # all cost settled
    uncovered: int = 0  # G2: cost no live hold covered (unauthorized, late, above the hold)
    periods: list[PeriodKey] = field(default_factory=list)
    events: Counter[tuple[str, str, int]] = field(default_factory=Counter)  # request, status, cost


def label(value: str) -> None:
    """Count what happened, for `--hypothesis-show-statistics` (not in the plain replays below)."""
    if currently_in_test_context():
        event(value)


def usd(micros: int) -> str:
    return str(to_decimal(micros))


def outcome(call: Any, /, *args: Any, **kwargs: Any) -> tuple[Any, AibudgetError | None]:
    """The call's result, or the deliberate error it raised."""
    try:
        return call(*args, **kwargs), None
    except AibudgetError as exc:
        return None, exc


def expect_error(error: AibudgetError | None, kind: type[AibudgetError], what: str) -> None:
    assert type(error) is kind, f"{what}: expected {kind.__name__}, got {error!r}"


class Books(RuleBasedStateMachine):
    databases: ClassVar[Databases]

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory(prefix="aibudget-model-")
        root = Path(self._dir.name)
        prices = root / "prices.toml"
        prices.write_text(PRICES)
        (root / "var").mkdir()
        self.url = self.databases.create(root / "var")
        self.clock = FakeClock(START)
        self.budget = Budget.open(
            self.url,
            settings=Settings.load(
                data_dir=root / "var",
                price_overrides=prices,
                hold_ttl_seconds=int(HOLD_TTL.total_seconds()),
                default_max_output_tokens=DEFAULT_MAX_OUTPUT,
                default_included_usd=usd(DEFAULT_INCLUDED),
            ),
            clock=self.clock,
        )
        self.pids: list[str] = []
        self.practices: dict[str, MPractice] = {}
        self.plans: dict[str, int] = {}
        self.subscriptions: dict[str, MSubscription] = {}
        self.periods: dict[PeriodKey, MPeriod] = {}
        self.grants: dict[str, MGrant] = {}  # by reference
        self.auths: dict[tuple[str, str], MAuthorization] = {}
        self.settled: dict[tuple[str, str], MSettlement] = {}
        self.tick = 0
        self.seen: dict[str, PeriodKey | None] = {}
        self.period_ids: dict[PeriodKey, int] = {}  # the database's id of each period, once seen

    def teardown(self) -> None:
        self.budget.close()
        self.databases.drop(self.url)
        self._dir.cleanup()

    # the model

    @property
    def now(self) -> datetime:
        return self.clock.now

    def pid(self, index: int) -> str:
        return self.pids[index % len(self.pids)]

    def request(self, number: int, *, known_below: int) -> tuple[str, str]:
        """Request `number`: below `known_below` one authorize has seen, an open one if `number` is
        even and there is one; otherwise (or when none is known) any of the 16 pairs."""
        if number < known_below and self.auths:
            holding = [request for request, auth in self.auths.items() if auth.status == "active"]
            known = holding if number % 2 == 0 and holding else list(self.auths)
            return known[number // 2 % len(known)]
        return self.pid(number), REQUESTS[number // 2 % len(REQUESTS)]

    def fresh_updated_at(self) -> int:
        self.tick += 1
        return int(self.now.timestamp()) + self.tick

    def returned_budget(self, pid: str, result: Any, what: str) -> None:
        """The budget an answer carries is what a read right after it finds."""
        if result is not None:
            assert result.budget == self.budget.snapshot(pid), f"{what}: budget returned differs"

    def refresh(self, pid: str) -> MPeriod | None:
        """Retire due grants and resolve the current period, as a write `load_state` does."""
        for grant in self.grants.values():
            due = grant.expires_at is not None and grant.expires_at <= self.now
            if grant.practice_id == pid and due and not grant.retired and grant.remaining > 0:
                grant.retired, grant.expired_amount, grant.remaining = True, grant.remaining, 0
        granting = [
            (sub.updated_at, sid, sub)
            for sid, sub in self.subscriptions.items()
            if sub.practice_id == pid and sub.status in GRANTING
        ]
        if not granting:
            return None
        _, sid, sub = max(granting, key=lambda entry: entry[:2])
        if sub.start is not None and sub.end is not None:
            start, end = sub.start, sub.end
        else:
            start, end = month_bounds(self.now, self.practices[pid].timezone)
        included = DEFAULT_INCLUDED if sub.plan is None else self.plans.get(sub.plan, DEFAULT_INCLUDED)
        key = (pid, sid, start)
        period = self.periods.get(key)
        if period is None:
            period = self.periods[key] = MPeriod(key, end, sub.plan, included, included)
            self.practices[pid].periods.append(key)
        period.end, period.plan, period.included = end, sub.plan, included
        period.max_included = max(period.max_included, included)
        return period

    def credit(self, pid: str) -> int:
        return sum(g.remaining for g in self.grants.values() if g.practice_id == pid and not g.retired)

    def held(self, pid: str) -> int:
        return sum(a.held for (p, _), a in self.auths.items() if p == pid and a.status == "active")

    def gate_available(self, pid: str, period: MPeriod | None) -> int:
        """What authorize may hold: availability less credit that expires before a hold could settle."""
        expiring = sum(
            g.remaining
            for g in self.grants.values()
            if g.practice_id == pid
            and not g.retired
            and g.expires_at is not None
            and g.expires_at <= self.now + HOLD_TTL
        )
        included = period.included_remaining if period else 0
        return included + self.credit(pid) - expiring - self.held(pid)

    def usable_grants(self, pid: str) -> list[MGrant]:
        """The practice's grants with money left, in the order they pay (SPEC §2)."""
        usable = [
            g
            for g in self.grants.values()
            if g.practice_id == pid
            and not g.retired
            and g.remaining > 0
            and (g.expires_at is None or g.expires_at > self.now)
        ]
        return sorted(
            usable,
            key=lambda g: (g.priority, g.expires_at is None, g.expires_at or datetime.max, g.grant_id),
        )

    # setup

    @initialize(
        count=st.integers(1, 2),
        policies=st.tuples(st.sampled_from(POLICIES), st.sampled_from(POLICIES)),
        zones=st.tuples(st.sampled_from(TIMEZONES), st.sampled_from(TIMEZONES)),
        included=st.integers(0, 5_000),
    )
    def setup(self, count: int, policies: tuple[str, str], zones: tuple[str, str], included: int) -> None:
        """One or two practices, each with an active subscription on calendar months, plan `basic`."""
        self.budget.put_plan("basic", included_usd=usd(included))
        self.plans["basic"] = included
        for pid, policy, zone in list(zip(PRACTICES, policies, zones, strict=True))[:count]:
            self.budget.put_practice(pid, name=f"Praxis {pid}", policy=policy, timezone=zone)
            self.practices[pid] = MPractice(zone, policy)
            self.pids.append(pid)
            updated_at = self.fresh_updated_at()
            self.budget.put_subscription(
                f"{pid}_sub_a", practice_id=pid, status="active", plan="basic", updated_at=updated_at
            )
            self.subscriptions[f"{pid}_sub_a"] = MSubscription(pid, "active", "basic", None, None, updated_at)

    # gating and the ledger

    @rule(
        request=requests,
        other_body=rarely,
        operation=st.sampled_from(["chat", "letter"]),
        input_tokens=st.integers(0, 600),
        by_chars=rarely,
        max_output=st.one_of(st.none(), st.integers(0, 300)),
    )
    def authorize(
        self,
        request: int,
        other_body: bool,
        operation: str,
        input_tokens: int,
        by_chars: bool,
        max_output: int | None,
    ) -> None:
        pid, rid = self.request(request, known_below=8)  # a quarter are retries or reused ids
        self._authorize(pid, rid, other_body, operation, input_tokens, by_chars, max_output)

    @rule(
        request=requests,
        input_tokens=st.integers(0, 600),
        max_output=st.one_of(st.none(), st.integers(0, 300)),
        used=st.sampled_from([100, 0, 50, 99, 101, 150]),
    )
    def call(self, request: int, input_tokens: int, max_output: int | None, used: int) -> None:
        """The usual flow: authorize, make the call, settle at once with `used` % of the estimate."""
        pid, rid = self.pid(request), f"call-{len(self.auths)}"
        self._authorize(pid, rid, False, "letter", input_tokens, False, max_output)
        auth = self.auths[(pid, rid)]
        if auth.status == "active":
            self._settle(
                pid, rid, False, auth.est_input * used // 100, auth.est_output * used // 100, "success"
            )

    def _authorize(
        self,
        pid: str,
        rid: str,
        other_body: bool,
        operation: str,
        input_tokens: int,
        by_chars: bool,
        max_output: int | None,
    ) -> None:
        first = self.auths.get((pid, rid))
        body: tuple[Any, ...] = (operation, by_chars, input_tokens, max_output)
        if first is not None and not other_body:
            body = first.body
        operation, by_chars, input_tokens, max_output = body
        sizes = {"prompt_chars": input_tokens} if by_chars else {"input_tokens": input_tokens}
        result, error = outcome(
            self.budget.authorize,
            practice_id=pid,
            request_id=rid,
            operation=operation,
            model=MODEL,
            max_output_tokens=max_output,
            **sizes,
        )
        self.returned_budget(pid, result, f"authorize {pid}/{rid}")
        period = self.refresh(pid)

        if first is None and (pid, rid) in self.settled:
            label("authorize: a request settled without authorization")
            expect_error(error, Conflict, f"authorize {pid}/{rid}, settled without authorization")
            return
        if first is not None:  # a replay returns the first result; another body is a conflict
            label(f"authorize: {'replay' if body == first.body else 'another body'}")
            if body != first.body:
                expect_error(error, IdempotencyConflict, f"authorize {pid}/{rid} again with another body")
            elif first.status == "refused":
                assert isinstance(error, BudgetExceeded), f"replayed refusal of {pid}/{rid}: {error!r}"
                assert (error.payload["reason"], error.payload["period_end"]) == (
                    first.reason,
                    first.period_end,
                ), f"replayed refusal of {pid}/{rid}"
            else:
                assert error is None, f"replayed authorization of {pid}/{rid}: {error!r}"
                assert result.replayed
                assert (result.status, result.held_micros, result.estimate_micros, result.expires_at) == (
                    first.status,
                    first.held,
                    first.estimate,
                    first.expires_at,
                ), f"replayed authorization of {pid}/{rid}"
            return

        est_input = math.ceil(input_tokens / 2) if by_chars else input_tokens
        est_output = DEFAULT_MAX_OUTPUT if max_output is None else max_output
        estimate = est_input * INPUT_MICROS + est_output * OUTPUT_MICROS
        available = self.gate_available(pid, period)
        if available < (period.included_remaining if period else 0) + self.credit(pid) - self.held(pid):
            label("authorize: credit expiring within the hold's TTL not counted")
        reason = None
        if period is None:
            reason = "no_active_subscription"
        elif available <= 0:
            reason = "included_exhausted_no_credit"
        elif self.practices[pid].policy == "strict" and estimate > available:
            reason = "insufficient_for_estimate"
        auth = MAuthorization(
            body,
            "refused" if reason else "active",
            estimate,
            0 if reason else min(estimate, available),
            period.key if period else None,
            self.now + HOLD_TTL,
            est_input,
            est_output,
            reason,
            period.end if period else None,
        )
        self.auths[(pid, rid)] = auth
        if reason:
            self.practices[pid].events[(rid, "blocked", 0)] += 1
        label(
            f"authorize: refused {reason}"
            if reason
            else f"authorize: held {'all' if auth.held == estimate else 'less than'} the estimate"
        )
        what = f"authorize {pid}/{rid} (estimate {estimate}, available {available})"
        if reason:
            assert isinstance(error, BudgetExceeded), f"{what}: should be refused ({reason}), not {error!r}"
            payload = error.payload
            assert (payload["reason"], payload["request_id"], payload["available_percent"]) == (
                reason,
                rid,
                0,
            ), what
            assert payload["period_end"] == auth.period_end, what
        else:
            assert error is None, f"{what}: should hold {auth.held}, not {error!r}"
            assert not result.replayed
            assert (result.status, result.held_micros, result.estimate_micros, result.expires_at) == (
                "active",
                auth.held,
                estimate,
                auth.expires_at,
            ), what

    @rule(
        request=requests,
        other_body=rarely,
        within_estimate=st.booleans(),
        input_tokens=st.integers(0, 800),
        output_tokens=st.integers(0, 400),
        status=st.sampled_from(["success", "error"]),
    )
    def settle(
        self,
        request: int,
        other_body: bool,
        within_estimate: bool,
        input_tokens: int,
        output_tokens: int,
        status: str,
    ) -> None:
        pid, rid = self.request(request, known_below=24)
        auth = self.auths.get((pid, rid))
        if within_estimate and auth is not None:
            input_tokens, output_tokens = (
                min(input_tokens, auth.est_input),
                min(output_tokens, auth.est_output),
            )
        self._settle(pid, rid, other_body, input_tokens, output_tokens, status)

    def _settle(
        self, pid: str, rid: str, other_body: bool, input_tokens: int, output_tokens: int, status: str
    ) -> None:
        auth = self.auths.get((pid, rid))
        first = self.settled.get((pid, rid))
        body = (input_tokens, output_tokens, status)
        if first is not None and not other_body:
            body = first.body
        input_tokens, output_tokens, status = body
        posted, error = outcome(
            self.budget.settle,
            practice_id=pid,
            request_id=rid,
            model=MODEL,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            status=status,
            error_code="upstream_error" if status == "error" else None,
        )
        self.returned_budget(pid, posted, f"settle {pid}/{rid}")
        current = self.refresh(pid)
        what = f"settle {pid}/{rid}"

        if first is not None:  # a replay returns the first event and charges nothing
            label(f"settle: {'replay' if body == first.body else 'another body'}")
            if body != first.body:
                expect_error(error, IdempotencyConflict, f"{what} again with another body")
                return
            assert error is None, f"replayed {what}: {error!r}"
            assert posted.replayed
            assert (posted.event_id, posted.cost_micros, posted.overage_micros, posted.period_id) == (
                first.event_id,
                first.cost,
                first.overage,
                first.period_id,
            ), f"replayed {what}"
            assert (
                tuple((a.pot, a.amount_micros, a.grant_id) for a in posted.allocations) == first.allocations
            )
            return

        cost = input_tokens * INPUT_MICROS + output_tokens * OUTPUT_MICROS
        period = current
        if auth is not None and auth.period is not None:
            period = self.periods[auth.period]  # charged to the period it was authorized in
        left = cost
        split: list[tuple[str, int, int | None]] = []
        from_included = min(left, period.included_remaining) if period else 0
        if from_included:
            split.append(("included", from_included, None))
            left -= from_included
        for grant in self.usable_grants(pid):
            taken = min(left, grant.remaining)
            if taken:
                split.append(("credit", taken, grant.grant_id))
                grant.remaining -= taken
                left -= taken
        if left:
            split.append(("overage", left, None))
        label(f"settle: {'unauthorized' if auth is None else auth.status} request")
        label(f"settle: paid by {'+'.join(dict.fromkeys(pot for pot, _, _ in split)) or 'nothing'}")
        if period is not current:
            label("settle: charged to the period of its authorization, not the current one")
        if period is not None:
            period.included_used += from_included
            period.used += cost
            period.overage += left
        practice = self.practices[pid]
        practice.posted += cost
        practice.events[(rid, status, cost)] += 1
        if auth is not None and auth.status == "active" and self.now < auth.expires_at:
            practice.uncovered += max(0, cost - auth.held)
        else:
            practice.uncovered += cost  # no live hold covered it: unauthorized, refused or late
            if auth is not None and auth.status == "active":
                label("settle: hold past its TTL, not swept yet")
        if auth is not None and auth.status == "active":
            auth.status = "settled"

        assert error is None, f"{what}: {error!r}"
        assert not posted.replayed
        period_id = None
        if period is not None:  # the first event of a period tells its id; -1 if it had none
            period_id = self.period_ids.setdefault(period.key, posted.period_id or -1)
            assert list(self.period_ids.values()).count(period_id) == 1, f"{what}: one id per period"
        expected = (cost, left, period_id, tuple(split))
        actual = (
            posted.cost_micros,
            posted.overage_micros,
            posted.period_id,
            tuple((a.pot, a.amount_micros, a.grant_id) for a in posted.allocations),
        )
        assert actual == expected, f"{what}: (cost, overage, period_id, allocations)"
        self.settled[(pid, rid)] = MSettlement(body, posted.event_id, cost, left, period_id, tuple(split))

    @rule(request=requests)
    def void(self, request: int) -> None:
        pid, rid = self.request(request, known_below=24)
        result, error = outcome(self.budget.void, practice_id=pid, request_id=rid)
        self.returned_budget(pid, result, f"void {pid}/{rid}")
        self.refresh(pid)
        auth = self.auths.get((pid, rid))
        label(f"void: {'unauthorized' if auth is None else auth.status} request")
        if auth is None and (pid, rid) in self.settled:
            expect_error(error, Conflict, f"void {pid}/{rid}, settled without authorization")
        elif auth is None:
            expect_error(error, NotFound, f"void {pid}/{rid}, never authorized")
        elif auth.status == "settled":
            expect_error(error, Conflict, f"void {pid}/{rid}, settled")
        else:
            if auth.status == "active":
                auth.status = "voided"
                self.practices[pid].events[(rid, "voided", 0)] += 1
            assert error is None, f"void {pid}/{rid}: {error!r}"
            assert (result.status, result.held_micros) == (auth.status, auth.held), f"void {pid}/{rid}"

    @rule(
        seconds=st.sampled_from([30, 61, 1, 600, 3_600, 6 * 3_600, 86_400, 3 * 86_400, 12 * 86_400]),
        sweep=st.booleans(),
    )
    def advance_clock(self, seconds: int, sweep: bool) -> None:
        """Time passes; with `sweep`, the sweeper runs then (else holds stay active past their TTL)."""
        self.clock.advance(seconds=seconds)
        if sweep:
            expired = self.budget.sweep()
            due = [
                (pid, rid)
                for (pid, rid), auth in self.auths.items()
                if auth.status == "active" and auth.expires_at <= self.now
            ]
            for pid, rid in due:
                self.auths[(pid, rid)].status = "expired"
                self.practices[pid].events[(rid, "expired", 0)] += 1
            label(f"sweep: {min(len(due), 2)} holds expired")
            assert expired == len(due), "holds the sweep expired"

    # credit

    @rule(
        index=st.integers(0, 1),
        reference=st.sampled_from(REFERENCES),
        other_body=rarely,
        amount=st.integers(1, 3_000),
        source=st.sampled_from(["manual", "promo"]),
        priority=st.sampled_from([100, 0, 50]),
        expires_in=st.sampled_from([None, 30, 90, 3_600, 86_400, 40 * 86_400, 0]),
    )
    def grant_credit(
        self,
        index: int,
        reference: str,
        other_body: bool,
        amount: int,
        source: str,
        priority: int,
        expires_in: int | None,
    ) -> None:
        pid = self.pid(index)
        expires_at = None if expires_in is None else self.now + timedelta(seconds=expires_in)
        first = self.grants.get(reference)
        if first is not None and not other_body:  # the payment's webhook, delivered again
            pid, amount, source, priority = first.practice_id, first.amount, first.source, first.priority
            expires_at = first.expires_at
        grant, error = outcome(
            self.budget.grant_credit,
            pid,
            amount_usd=usd(amount),
            source=source,
            reference=reference,
            expires_at=expires_at,
            priority=priority,
        )
        past = expires_at is not None and expires_at <= self.now
        label(f"grant: {'first' if first is None else 'again'}{', expiry passed' if past else ''}")
        what = f"grant {reference} to {pid} (expires {expires_at})"
        if first is not None:
            body = (pid, amount, source, priority, expires_at)
            if body != (first.practice_id, first.amount, first.source, first.priority, first.expires_at):
                expect_error(error, Conflict, f"{what} again with another body")
                return
            # SPEC §11: the same reference returns the same grant, also once its expiry has passed
            assert error is None, f"{what} again, same body: {error!r}"
            assert (grant.grant_id, grant.remaining_micros) == (first.grant_id, first.remaining), what
            return
        if past:
            expect_error(error, InvalidInput, what)
            return
        assert error is None, f"{what}: {error!r}"
        assert (grant.amount_micros, grant.remaining_micros, grant.priority) == (amount, amount, priority)
        assert grant.grant_id > max((g.grant_id for g in self.grants.values()), default=0)
        self.grants[reference] = MGrant(grant.grant_id, pid, amount, source, priority, expires_at, amount)

    # accounts: plans, subscriptions, practices

    @rule(lookup_key=st.sampled_from(PLANS), included=st.integers(0, 5_000))
    def put_plan(self, lookup_key: str, included: int) -> None:
        self.budget.put_plan(lookup_key, included_usd=usd(included))
        self.plans[lookup_key] = included

    @rule(
        index=st.integers(0, 1),
        which=st.sampled_from(["a", "b", "shared"]),
        status=st.sampled_from(["active", "canceled", "trialing", "past_due"]),
        plan=st.sampled_from([*PLANS, None]),
        provider_start=st.one_of(st.none(), st.sampled_from(PROVIDER_STARTS)),
        length=st.sampled_from([30 * 86_400, 86_400, 3_600]),
        stale=rarely,
    )
    def put_subscription(
        self,
        index: int,
        which: str,
        status: str,
        plan: str | None,
        provider_start: int | None,
        length: int,
        stale: bool,
    ) -> None:
        """Plan change, cancel, reactivate, a second subscription, provider periods, an update out of
        order; `shared` moves between the practices (the provider's metadata names another one)."""
        pid = self.pid(index)
        sid = "sub_shared" if which == "shared" else f"{pid}_sub_{which}"
        updated_at = 1_000_000 + self.tick if stale else self.fresh_updated_at()
        end = None if provider_start is None else provider_start + length
        self.budget.put_subscription(
            sid,
            practice_id=pid,
            status=status,
            plan=plan,
            current_period_start=provider_start,
            current_period_end=end,
            updated_at=updated_at,
        )
        stored = self.subscriptions.get(sid)
        if stored is None or stored.updated_at <= updated_at:  # an older update never wins
            if stored is not None and stored.practice_id != pid:
                label("subscription: moved to another practice")
            self.subscriptions[sid] = MSubscription(pid, status, plan, provider_start, end, updated_at)

    @rule(
        index=st.integers(0, 1),
        policy=st.one_of(st.none(), st.sampled_from(POLICIES)),
        timezone=st.one_of(st.none(), st.sampled_from(TIMEZONES)),
    )
    def put_practice(self, index: int, policy: str | None, timezone: str | None) -> None:
        pid = self.pid(index)
        self.budget.put_practice(pid, policy=policy, timezone=timezone)
        practice = self.practices[pid]
        if timezone is not None and timezone != practice.timezone:
            label("practice: timezone changed")
            self.move_calendar_months(pid, practice.timezone, timezone)
        practice.policy, practice.timezone = policy or practice.policy, timezone or practice.timezone

    def move_calendar_months(self, pid: str, old: str, new: str) -> None:
        """A new timezone moves the bounds of the running calendar month and the ones either side,
        their usage kept: the new zone's reading of the date finds them (never a month billed twice)."""
        running, after = month_bounds(self.now, old)
        before = month_bounds(datetime.fromtimestamp(running - 1, UTC), old)[0]
        for start in (before, running, after):
            middle = datetime.fromtimestamp(start, ZoneInfo(old)).replace(day=15, hour=12)
            new_start, new_end = month_bounds(middle, new)
            for sid, sub in self.subscriptions.items():
                old_key, new_key = (pid, sid, start), (pid, sid, new_start)
                if sub.start is not None or old_key not in self.periods or new_key in self.periods:
                    continue
                period = self.periods.pop(old_key)
                period.key, period.end, self.periods[new_key] = new_key, new_end, period
                if old_key in self.period_ids:
                    self.period_ids[new_key] = self.period_ids.pop(old_key)
                keys = self.practices[pid].periods
                keys[keys.index(old_key)] = new_key
                for auth in self.auths.values():
                    if auth.period == old_key:
                        auth.period = new_key

    # after every step

    @invariant()
    def books_agree(self) -> None:
        for pid in self.pids:
            snapshot = self.budget.snapshot(pid)
            period = self.refresh(pid)
            practice = self.practices[pid]
            key = period.key if period else None
            if pid in self.seen and self.seen[pid] != key:
                calendar = key is not None and key[2] == month_bounds(self.now, practice.timezone)[0]
                label(f"period: now {'none' if key is None else 'calendar' if calendar else 'provider'}")
            self.seen[pid] = key
            included_remaining = period.included_remaining if period else 0
            gate = self.gate_available(pid, period) if period else 0
            expected = {
                "subscription_id": period.key[1] if period else None,
                "plan": period.plan if period else None,
                "period_start": period.key[2] if period else None,
                "period_end": period.end if period else None,
                "included_micros": period.included if period else 0,
                "used_micros": period.used if period else 0,
                "held_micros": self.held(pid),
                "included_remaining_micros": included_remaining,
                "extra_credit_remaining_micros": self.credit(pid),
                "overage_micros": period.overage if period else 0,
                # SPEC §2 less credit expiring within a hold's TTL: what authorize counts
                "available_micros": max(0, gate),
                "blocked": gate <= 0,  # 0 % shown exactly when authorize refuses any call (§8)
                "policy": practice.policy,
                "timezone": practice.timezone,
            }
            actual = {name: getattr(snapshot, name) for name in expected}
            wrong = {
                name: f"{actual[name]} (model: {value})"
                for name, value in expected.items()
                if actual[name] != value
            }
            assert not wrong, f"snapshot of {pid} at {self.now.isoformat()}: {wrong}"
            # G1 and §4: each settle in the ledger once, each refusal a `blocked` event
            ledger = Counter(
                (line.request_id, line.status, line.cost_micros)
                for line in self.budget.usage_report(pid).rows
                if isinstance(line, UsageLine)
            )
            assert ledger == practice.events, (
                f"events of {pid}: missing {practice.events - ledger}, unexpected {ledger - practice.events}"
            )
        assert self.budget.verify() == []

    @invariant()
    def spend_is_bounded(self) -> None:
        """G2: posted cost <= funding + cost no live hold covered; in strict mode (hold = estimate)
        that is zero overspend for every call settled within its estimate while its hold lived."""
        for pid in self.pids:
            practice = self.practices[pid]
            included = sum(self.periods[key].max_included for key in practice.periods)
            grants = [g for g in self.grants.values() if g.practice_id == pid]
            funding = included + sum(g.amount - g.expired_amount for g in grants)
            assert practice.posted <= funding + practice.uncovered, (
                f"{pid} ({practice.policy}) posted {practice.posted} > funding {funding} "
                f"+ cost no hold covered {practice.uncovered}"
            )


# Examples per engine: each PostgreSQL step costs round trips to the server, so it runs fewer of
# the same sequences. Passing takes under a minute each; a failure's shrinking may take minutes more.
EXAMPLES = {"sqlite": 100, "postgresql": 30}


@pytest.mark.timeout(900)
def test_books(backend: str) -> None:
    run_state_machine_as_test(
        Books,
        settings=settings(
            max_examples=EXAMPLES[backend],
            stateful_step_count=40,
            deadline=None,
            phases=[
                Phase.explicit,
                Phase.reuse,
                Phase.generate,
                Phase.target,
                Phase.shrink,
            ],  # no slow explain
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# Sequences the machine shrank failures to, replayed step by step with the invariants after each
# step as hypothesis runs them: fast, readable reproductions of what it found.


def replay(*steps: Callable[[Books], object]) -> None:
    machine = Books()
    try:
        for step in steps:
            step(machine)
            machine.books_agree()
            machine.spend_is_bounded()
    finally:
        machine.teardown()


def practices(count: int, *, included: int) -> Callable[[Books], None]:
    zones = (TIMEZONES[0], TIMEZONES[0])
    return lambda m: m.setup(count=count, policies=("strict", "strict"), zones=zones, included=included)


def test_a_grant_delivered_again_after_its_expiry_is_the_first_grant() -> None:
    """SPEC §11 "same reference → 200 same grant": a payment webhook retried after the grant's
    expiry gets the first grant back, not a 422 for the (unchanged) `expires_at`."""
    grant = {"index": 0, "reference": "pay-0", "other_body": False, "amount": 1, "source": "manual"}
    replay(
        practices(1, included=1_000),
        lambda m: m.grant_credit(**grant, priority=100, expires_in=30),
        lambda m: m.advance_clock(seconds=30, sweep=False),
        lambda m: m.grant_credit(**grant, priority=100, expires_in=None),  # replays the first body
    )


def test_a_subscription_moved_to_another_practice_no_longer_funds_the_first() -> None:
    """SPEC §2: a practice is funded by its own granting subscriptions only. When the provider's
    subscription names another practice, the first one falls back to its own subscription."""
    subscription = {"length": 30 * 86_400, "plan": "basic", "provider_start": None, "stale": False}
    replay(
        practices(2, included=0),
        lambda m: m.put_subscription(index=0, which="shared", status="active", **subscription),
        lambda m: m.put_subscription(index=1, which="shared", status="active", **subscription),
    )


def test_a_practice_the_gate_refuses_is_shown_blocked() -> None:
    """Credit expiring within a hold's TTL is not counted by authorize (G2), so a practice with
    only such credit is refused every call: its snapshot must say `blocked` (0 %), not 1 µUSD left."""
    grant = {"index": 0, "reference": "pay-0", "other_body": False, "amount": 1, "source": "manual"}
    replay(
        practices(1, included=0),
        lambda m: m.grant_credit(**grant, priority=100, expires_in=30),
    )
