"""G1, G2, G3 under concurrency: many threads sharing one `Budget`, and many processes sharing one
SQLite file, spend one practice's money at once.

- G1: every acknowledged settle is in the ledger exactly once;
- G2: in `strict` mode the posted cost never exceeds the funding (included + grants), to the micro-USD;
  in `allow_last_call` mode the overshoot is at most Σ(actual - held) of the calls authorized while
  availability was short;
- G3: `verify()` finds the cached balances equal to the ledger afterwards.

Each call is a gpt-4o-mini letter estimated at 1000 input and at most 500 output tokens:
1000 x 0.15/1M + 500 x 0.60/1M = 450 micro-USD held. Its real output is 0-500 tokens, so the real
cost (150-450 micro-USD) never exceeds the estimate. Loops are bounded by count.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, select

from aibudget import Budget, BudgetExceeded, Settings
from aibudget.store import tables
from aibudget.store.dialect import read_transaction
from tests.factories import DECEMBER_2025, open_practice, usage_events

ESTIMATE_MICROS = 450
THREADS, PROCESSES = 8, 4
CALLS_PER_WORKER = 200
REFUSALS_BEFORE_GIVING_UP = 3
T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    request_id: str
    held_micros: int
    cost_micros: int
    event_id: int


def letters_until_refused(budget: Budget, practice_id: str, worker: str, seed: int) -> list[Call]:
    """Authorize and settle letters until refused a few times; the settles acknowledged."""
    rng, calls, refusals = random.Random(seed), [], 0
    for i in range(CALLS_PER_WORKER):
        request_id = f"{worker}-{i}"
        try:
            held = budget.authorize(
                practice_id=practice_id,
                request_id=request_id,
                operation="letter",
                model="gpt-4o-mini",
                input_tokens=1000,
                max_output_tokens=500,
            )
        except BudgetExceeded:
            refusals += 1
            if refusals == REFUSALS_BEFORE_GIVING_UP:
                break
            continue
        assert held.estimate_micros == ESTIMATE_MICROS
        event = budget.settle(
            practice_id=practice_id,
            request_id=request_id,
            model="gpt-4o-mini",
            input_tokens=1000,
            output_tokens=rng.randint(0, 500),
        )
        calls.append(Call(request_id, held.held_micros, event.cost_micros, event.event_id))
    return calls


def in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Run `work(0..count-1)` in `count` threads released at the same instant."""
    start = threading.Barrier(count)

    def run(index: int) -> T:
        start.wait()
        return work(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def fund(budget: Budget, *, policy: str) -> int:
    """A practice with 0.1 USD included and two grants of 0.03 and 0.02 USD; the funding in micros."""
    open_practice(
        budget,
        included_usd="0.1",
        policy=policy,
        current_period_start=DECEMBER_2025[0],  # a provider period does not roll over with the clock
        current_period_end=DECEMBER_2025[1],
    )
    budget.grant_credit("p1", amount_usd="0.03", source="purchase", reference="pi_1")
    budget.grant_credit("p1", amount_usd="0.02", source="promo", reference="promo-1", priority=1)
    return 150_000


def assert_each_acknowledged_settle_is_in_the_ledger_once(budget: Budget, calls: list[Call]) -> None:
    settled = usage_events(budget, tables.usage_events.c.status == "success")
    per_request = Counter(e.request_id for e in settled)
    assert all(count == 1 for count in per_request.values())
    assert set(per_request) == {call.request_id for call in calls}
    assert {e.event_id: e.cost_micros for e in settled} == {c.event_id: c.cost_micros for c in calls}


def assert_strict_spend_is_bounded(budget: Budget, calls: list[Call], funding: int) -> None:
    posted = sum(call.cost_micros for call in calls)
    snapshot = budget.snapshot("p1")
    assert posted <= funding
    assert (snapshot.used_micros, snapshot.overage_micros, snapshot.held_micros) == (posted, 0, 0)
    assert snapshot.included_remaining_micros + snapshot.extra_credit_remaining_micros == funding - posted
    assert all(call.held_micros == ESTIMATE_MICROS for call in calls)
    assert snapshot.available_micros < ESTIMATE_MICROS  # it ran until the next call no longer fit
    assert budget.verify() == []


def test_strict_threads_never_spend_more_than_the_funding(budget: Budget) -> None:
    funding = fund(budget, policy="strict")
    per_thread = in_threads(THREADS, lambda n: letters_until_refused(budget, "p1", f"t{n}", seed=n))
    calls = [call for thread in per_thread for call in thread]

    assert len(calls) >= funding // ESTIMATE_MICROS  # every call fit until the money ran out
    assert_strict_spend_is_bounded(budget, calls, funding)
    assert_each_acknowledged_settle_is_in_the_ledger_once(budget, calls)


def letters_in_a_process(
    url: str, data_dir: str, number: int, start: Barrier, results: multiprocessing.Queue[list[Call]]
) -> None:
    """A worker process: its own `Budget` on the shared SQLite file, started with the others."""
    with Budget.open(url, settings=Settings.load(data_dir=Path(data_dir))) as budget:
        start.wait(timeout=60)
        results.put(letters_until_refused(budget, "p1", f"process{number}", seed=number))


def test_strict_processes_never_spend_more_than_the_funding(database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(PROCESSES), context.Queue()
    with Budget.open(database_url, settings=Settings.load(data_dir=data_dir)) as budget:
        funding = fund(budget, policy="strict")
        workers = [
            context.Process(
                target=letters_in_a_process, args=(database_url, str(data_dir), n, start, results)
            )
            for n in range(PROCESSES)
        ]
        for worker in workers:
            worker.start()
        per_process = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        assert [worker.exitcode for worker in workers] == [0] * PROCESSES
        calls = [call for process in per_process for call in process]

        assert len({call.request_id.split("-")[0] for call in calls}) > 1  # they really ran side by side
        assert_strict_spend_is_bounded(budget, calls, funding)
        assert_each_acknowledged_settle_is_in_the_ledger_once(budget, calls)


def test_allow_last_call_overshoots_at_most_what_short_calls_used_beyond_their_holds(
    budget: Budget,
) -> None:
    funding = fund(budget, policy="allow_last_call")
    per_thread = in_threads(THREADS, lambda n: letters_until_refused(budget, "p1", f"t{n}", seed=100 + n))
    calls = [call for thread in per_thread for call in thread]

    posted = sum(call.cost_micros for call in calls)
    short = [call for call in calls if call.held_micros < ESTIMATE_MICROS]
    bound = sum(max(0, call.cost_micros - call.held_micros) for call in short)
    snapshot = budget.snapshot("p1")
    assert snapshot.used_micros == posted
    assert max(0, posted - funding) <= bound
    assert snapshot.overage_micros == max(0, posted - funding) <= bound
    assert snapshot.available_micros == 0  # it ran until nothing was left
    assert budget.verify() == []
    assert_each_acknowledged_settle_is_in_the_ledger_once(budget, calls)


def test_a_settle_replayed_from_many_threads_at_once_is_charged_once(budget: Budget) -> None:
    open_practice(budget)
    budget.authorize(practice_id="p1", request_id="r1", operation="letter", model="gpt-4o-mini")

    events = in_threads(
        THREADS,
        lambda _: budget.settle(
            practice_id="p1", request_id="r1", model="gpt-4o-mini", input_tokens=1180, output_tokens=640
        ),
    )

    assert len({event.event_id for event in events}) == 1
    assert sorted(event.replayed for event in events) == [False] + [True] * (THREADS - 1)
    assert len(usage_events(budget)) == 1
    snapshot = budget.snapshot("p1")
    assert (snapshot.used_micros, snapshot.held_micros) == (561, 0)
    assert budget.verify() == []


def test_a_payment_credited_from_many_threads_at_once_credits_once(budget: Budget) -> None:
    open_practice(budget)
    grants = in_threads(
        THREADS,
        lambda _: budget.grant_credit("p1", amount_usd="10", source="purchase", reference="pi_1"),
    )
    assert len({grant.grant_id for grant in grants}) == 1
    with read_transaction(budget.engine) as connection:
        assert connection.execute(select(func.count()).select_from(tables.credit_grants)).scalar() == 1
    assert budget.snapshot("p1").extra_credit_remaining_micros == 10_000_000
    assert budget.verify() == []


def test_verify_and_snapshots_see_consistent_books_while_calls_are_posted(budget: Budget) -> None:
    """Reads run while other threads post: each read sees one committed state, never half of one."""
    funding = fund(budget, policy="allow_last_call")
    posting = threading.Event()
    posting.set()
    findings: list[object] = []

    def read_while_posting() -> None:
        while posting.is_set():
            findings.extend(budget.verify())
            snapshot = budget.snapshot("p1")
            spent = snapshot.used_micros - snapshot.overage_micros
            left = snapshot.included_remaining_micros + snapshot.extra_credit_remaining_micros
            if spent + left != funding:
                findings.append(f"snapshot: spent {spent} + left {left} != funding {funding}")

    reader = threading.Thread(target=read_while_posting)
    reader.start()
    try:
        in_threads(4, lambda n: letters_until_refused(budget, "p1", f"t{n}", seed=n)[:0])
    finally:
        posting.clear()
        reader.join()
    assert findings == []
