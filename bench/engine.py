"""How fast the engine answers and books calls as a practice's history grows, in process on SQLite.

Targets (SPEC §13):

- `Budget.snapshot` median ≤ 100 µs at any history size from 0 to 1M usage events;
- ≥ 5,000 `authorize` + `settle` pairs per second, in one process on SQLite on 2 cores, flat in
  the history size.

For each history size (0, 10k, 100k, 1M usage events already in the practice's current period) a
fresh SQLite file in a temporary directory gets one practice on a plan with a huge included budget.
The history is written straight into the tables with the sqlite3 module in one transaction (the
events with executemany, each one's authorization and allocation derived from it in SQL; no journal
and `synchronous=OFF` during this setup only), books kept consistent: each event is a settled call
with its authorization and its allocation to the period's included pot, and the period row's
`used_micros`/`included_used_micros` are their sums. `Budget.verify()` proves it on the
10k file, once after the fill and once after all measurements (it scans everything, so not at 1M).
Then, on that file:

1. snapshot latency: `budget.snapshot(practice)`, each call timed alone, 5 rounds of 1,000 calls
   after a warm-up; median and p99 over all calls, min-max of the per-round values;
2. authorize + settle pairs/s: 5 runs of N pairs (N set for ~2 s a run, 2,000-5,000), unique
   request ids; median pairs/s and min-max over the runs. Each run adds its N events to the
   history: what aibudget reads on the hot path does not depend on it;
3. a naive reference gate on the same file and table, with the sqlite3 module only (no aibudget
   code) and the same PRAGMAs as aibudget's engine (WAL, synchronous=NORMAL): a check is
   `SELECT SUM(cost_micros) FROM usage_events WHERE practice_id = ? AND occurred_at >= period_start`
   subtracted from the included budget; recording a call is one INSERT and one COMMIT. Its check
   latency is measured like the snapshot and its check + record pairs/s like the pairs; a scan of
   1M rows takes long, so its rounds and runs also stop after a time budget (at least 3 calls
   each). Its rows are deleted after each run, so every run starts at the nominal history size.
4. paid from prepaid credit, at history 0 only: a second practice on a plan with no included budget
   and one large credit grant, so every settle takes its cost from the grant (the waterfall's
   second pot); its pairs/s timed like the pairs above;
5. the same SQL without aibudget: the statements one authorize + settle ran (recorded from
   `store.sql.Statement`), replayed through the bare sqlite3 module on a connection of aibudget's
   engine — its PRAGMAs, the same two transactions, fresh ids — and timed like the pairs. Its rows
   are real pairs: the books verified at 10k include them.

The first table shows aibudget and the naive gate side by side with the ratio aibudget / naive
(latency: below 1 is faster; pairs/s: above 1 is faster); the second aibudget's pairs against the
same SQL bare. All numbers also go to bench/results/engine.json,
with the machine they ran on. Runs in ~2-3 min:

    .venv/bin/python bench/engine.py
"""

from __future__ import annotations

import math
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from _machine import write_results
from aibudget import Budget, Settings
from aibudget.pricing.catalog import CATALOG_VERSION
from aibudget.store.sql import Statement

SIZES = (0, 10_000, 100_000, 1_000_000)
VERIFY_SIZE = 10_000
RESULTS = Path(__file__).parent / "results" / "engine.json"

SNAPSHOT_TARGET_US = 100.0
PAIRS_TARGET = 5_000.0

LATENCY_ROUNDS = 5
LATENCY_CALLS = 1_000  # per round: 5,000 timed calls in all
LATENCY_WARMUP = 200
PAIR_RUNS = 5
PAIR_RUN_S = 2.0
PAIRS_MIN, PAIRS_MAX = 2_000, 5_000
PAIR_WARMUP = 200
NAIVE_ROUND_S = 0.5  # the naive gate's latency rounds stop after this long (and at least 3 calls)
NAIVE_RUN_S = 1.5  # its pair runs after this long, or PAIRS_MAX pairs

PRACTICE = "bench-practice"
SUBSCRIPTION = "sub_bench"
PLAN = "bench-huge"
INCLUDED_USD = "1000000"  # 1M USD a period: no run comes near it
INCLUDED_MICROS = 1_000_000 * 1_000_000
CREDIT_PRACTICE, CREDIT_SUBSCRIPTION, CREDIT_PLAN = "bench-credit", "sub_bench_credit", "bench-none"
CREDIT_USD = "1000000"  # one grant no run comes near spending

# One call as aibudget books it: a gpt-4o-mini letter (the rows a real authorize + settle writes).
OPERATION, MODEL = "letter", "gpt-4o-mini"
INPUT_TOKENS, CACHED_TOKENS, OUTPUT_TOKENS, MAX_OUTPUT_TOKENS = 1800, 1024, 650, 800
COST_MICROS, ESTIMATE_MICROS = 584, 750
PRICE_SOURCE, PRICE_VERSION = "catalog", CATALOG_VERSION
ESTIMATE_JSON = '{"audio_seconds":null,"input_tokens":1800,"max_output_tokens":800,"prompt_chars":null}'
BODY_HASH = "75824cb4d45eb184bfb23fddd6c4831ea2e51fa84a6e28bc342d52efb317b1bd"
AUTHORIZE_HASH = "002f4a76a58c431c4f7dd54272f51d66172a1d88c535c5f32a0257d5705f8728"
HOLD_TTL_US = 600 * 1_000_000

NAIVE_CHECK = """
    SELECT SUM(cost_micros) FROM usage_events WHERE practice_id = ? AND occurred_at >= ?
"""
NAIVE_RECORD = """
    INSERT INTO usage_events (occurred_at, practice_id, request_id, operation, model, input_tokens,
        cached_input_tokens, output_tokens, cost_micros, status)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'success')
"""


# setup


def open_budget(directory: Path) -> Budget:
    return Budget.open(
        f"sqlite:///{directory / 'aibudget.sqlite3'}", settings=Settings.load(data_dir=directory / "var")
    )


def subscribe(
    budget: Budget, practice_id: str, name: str, plan: str, included_usd: str, subscription: str
) -> None:
    """The practice on `plan`, in a provider period around now (ten days in, twenty to go)."""
    now = int(time.time())
    budget.put_practice(practice_id, name=name)
    budget.put_plan(plan, included_usd=included_usd)
    budget.put_subscription(
        subscription,
        practice_id=practice_id,
        plan=plan,
        status="active",
        current_period_start=now - 10 * 86_400,
        current_period_end=now + 20 * 86_400,
    )


def create_credit_practice(budget: Budget) -> None:
    """A practice with no included budget and one large grant: every call is paid from credit."""
    subscribe(
        budget, CREDIT_PRACTICE, "Bench practice paying from credit", CREDIT_PLAN, "0", CREDIT_SUBSCRIPTION
    )
    budget.grant_credit(CREDIT_PRACTICE, amount_usd=CREDIT_USD, source="manual", reference="bench-credit")


def create_practice(directory: Path) -> tuple[int, int]:
    """The practice on a huge plan; its period's id and start."""
    with open_budget(directory) as budget:
        subscribe(budget, PRACTICE, "Bench practice", PLAN, INCLUDED_USD, SUBSCRIPTION)
        period = budget.current_period(PRACTICE)
        assert period is not None
        return period.period_id, period.start


def fill(database: Path, size: int, period_id: int, period_start: int) -> None:
    """`size` settled calls in the current period, spread over its past: the rows `settle` writes.

    The events go in with executemany; each one's authorization, settlement record and allocation
    are derived from it in SQL, in the same transaction.
    """
    first_us = period_start * 1_000_000
    step_us = (time.time_ns() // 1000 - 60_000_000 - first_us) // max(size, 1)
    events = (
        (
            i + 1, first_us + i * step_us, PRACTICE, SUBSCRIPTION, period_id, f"auth_{i:024d}",
            f"hist-{i:09d}", None, OPERATION, MODEL, MODEL, INPUT_TOKENS, CACHED_TOKENS, OUTPUT_TOKENS,
            0, 0, COST_MICROS, 0, PRICE_SOURCE, PRICE_VERSION, "success", None, 0, BODY_HASH, None,
        )
        for i in range(size)
    )  # fmt: skip
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        # bench setup only, with no other connection open: no journal, no syncs, the file in memory
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-2000000"):
            connection.execute(f"PRAGMA {pragma}")
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT INTO usage_events (event_id, occurred_at, practice_id, subscription_id, period_id,"
            " authorization_id, request_id, device_suffix, operation, model, priced_as, input_tokens,"
            " cached_input_tokens, output_tokens, input_audio_tokens, audio_ms, cost_micros,"
            " overage_micros, price_source, price_version, status, error_code, estimated, body_hash,"
            " meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            events,
        )
        connection.execute(
            "INSERT INTO authorizations (authorization_id, practice_id, request_id, period_id,"
            " device_suffix, operation, model, estimate, body_hash, estimate_micros, held_micros,"
            " status, created_at, expires_at, closed_at)"
            " SELECT authorization_id, practice_id, request_id, period_id, device_suffix, operation,"
            " model, ?, ?, ?, ?, 'settled', occurred_at - 1000, occurred_at - 1000 + ?, occurred_at"
            " FROM usage_events ORDER BY event_id",
            (ESTIMATE_JSON, AUTHORIZE_HASH, ESTIMATE_MICROS, ESTIMATE_MICROS, HOLD_TTL_US),
        )
        connection.execute(
            "INSERT INTO settlements (practice_id, request_id, event_id, occurred_at)"
            " SELECT practice_id, request_id, event_id, occurred_at FROM usage_events ORDER BY event_id"
        )
        connection.execute(
            "INSERT INTO allocations (event_id, seq, pot, period_id, grant_id, amount_micros)"
            " SELECT event_id, 0, 'included', period_id, NULL, cost_micros FROM usage_events"
            " ORDER BY event_id"
        )
        connection.execute(
            "UPDATE periods SET used_micros = ?, included_used_micros = ? WHERE period_id = ?",
            (size * COST_MICROS, size * COST_MICROS, period_id),
        )
        connection.execute("COMMIT")
        connection.execute("ANALYZE")
        connection.execute("PRAGMA journal_mode=WAL")  # as aibudget's engine keeps it
    finally:
        connection.close()


def check_books(budget: Budget, when: str) -> None:
    found = budget.verify()
    if found:
        raise SystemExit(f"books do not balance {when}: " + "; ".join(map(str, found[:5])))


# measurements


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def latency(call: Callable[[], object], *, warmup: int, round_s: float | None = None) -> dict[str, Any]:
    """Each call timed alone, in rounds; a `round_s` ends a round early once that much time passed."""
    for _ in range(warmup):
        call()
    rounds: list[list[float]] = []
    for _ in range(LATENCY_ROUNDS):
        times: list[float] = []
        deadline = None if round_s is None else time.perf_counter_ns() + int(round_s * 1e9)
        for i in range(LATENCY_CALLS):
            start = time.perf_counter_ns()
            call()
            end = time.perf_counter_ns()
            times.append((end - start) / 1000)
            if deadline is not None and i >= 2 and end > deadline:
                break
        rounds.append(times)
    every = [value for times in rounds for value in times]
    medians = [statistics.median(times) for times in rounds]
    p99s = [percentile(times, 0.99) for times in rounds]
    return {
        "calls": len(every),
        "median_us": round(statistics.median(every), 2),
        "median_min_us": round(min(medians), 2),
        "median_max_us": round(max(medians), 2),
        "p99_us": round(percentile(every, 0.99), 2),
        "p99_min_us": round(min(p99s), 2),
        "p99_max_us": round(max(p99s), 2),
    }


def throughput(runs: list[tuple[int, int]]) -> dict[str, Any]:
    """Pairs/s of runs given as (pairs, elapsed ns)."""
    rates = [pairs / (elapsed / 1e9) for pairs, elapsed in runs]
    return {
        "runs": len(runs),
        "pairs_per_run": [pairs for pairs, _ in runs],
        "pairs_per_s": round(statistics.median(rates), 1),
        "min_pairs_per_s": round(min(rates), 1),
        "max_pairs_per_s": round(max(rates), 1),
    }


def authorize(budget: Budget, request_id: str, practice_id: str = PRACTICE) -> None:
    budget.authorize(
        request_id=request_id,
        operation=OPERATION,
        model=MODEL,
        practice_id=practice_id,
        input_tokens=INPUT_TOKENS,
        max_output_tokens=MAX_OUTPUT_TOKENS,
    )


def settle(budget: Budget, request_id: str, practice_id: str = PRACTICE) -> None:
    budget.settle(
        request_id=request_id,
        model=MODEL,
        practice_id=practice_id,
        input_tokens=INPUT_TOKENS,
        cached_input_tokens=CACHED_TOKENS,
        output_tokens=OUTPUT_TOKENS,
    )


def timed_pairs(pair: Callable[[str], None], tag: str) -> dict[str, Any]:
    """A warm-up, then PAIR_RUNS runs of as many pairs as take about PAIR_RUN_S each."""
    start = time.perf_counter_ns()
    for i in range(PAIR_WARMUP):
        pair(f"warm-{tag}-{i}")
    rate = PAIR_WARMUP / ((time.perf_counter_ns() - start) / 1e9)
    count = min(PAIRS_MAX, max(PAIRS_MIN, int(rate * PAIR_RUN_S)))
    runs = []
    for run in range(PAIR_RUNS):
        ids = [f"run-{tag}-{run}-{i}" for i in range(count)]
        start = time.perf_counter_ns()
        for request_id in ids:
            pair(request_id)
        runs.append((count, time.perf_counter_ns() - start))
    return throughput(runs)


def aibudget_pairs(budget: Budget, tag: str, practice_id: str = PRACTICE) -> dict[str, Any]:
    def pair(request_id: str) -> None:
        authorize(budget, request_id, practice_id)
        settle(budget, request_id, practice_id)

    return timed_pairs(pair, tag)


class BareSql:
    """aibudget's own statements for one authorize + settle, replayed through the sqlite3 module
    alone: the same SQL and values, the same two transactions, on a connection of aibudget's engine
    (its PRAGMAs), with fresh request, authorization and event ids. What the database costs a pair
    with none of aibudget's Python around it: the most the engine could do on this machine."""

    RECORDED = "bare-sql-recorded"

    def __init__(self, budget: Budget) -> None:
        self.transactions = self._record(budget)
        self._pooled = budget.engine.raw_connection()
        self.connection = self._pooled.driver_connection

    def _record(self, budget: Budget) -> list[list[tuple[str, dict[str, Any]]]]:
        transactions: list[list[tuple[str, dict[str, Any]]]] = []
        run = Statement.run

        def recording(statement: Statement, connection: Connection, params: Mapping[str, Any]) -> Any:
            transactions[-1].append((statement.sql, dict(params)))
            return run(statement, connection, params)

        Statement.run = recording  # type: ignore[method-assign]
        try:
            for call in (authorize, settle):
                transactions.append([])
                call(budget, self.RECORDED)
        finally:
            Statement.run = run  # type: ignore[method-assign]
        [held] = {params["authorization_id"] for _, params in transactions[0] if "authorization_id" in params}
        self.authorization_id = held
        return transactions

    def pair(self, request_id: str) -> None:
        fresh = {self.RECORDED: request_id, self.authorization_id: f"auth_{request_id}"}
        event_id = None
        for statements in self.transactions:
            self.connection.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                values = {name: fresh.get(value, value) for name, value in params.items()}
                if event_id is not None and "event_id" in values:
                    values["event_id"] = event_id
                cursor = self.connection.execute(sql, values)
                cursor.fetchall()
                if sql.startswith("INSERT INTO usage_events"):
                    event_id = cursor.lastrowid
            self.connection.execute("COMMIT")

    def close(self) -> None:
        self._pooled.close()


class NaiveGate:
    """What a simple gate does, with the sqlite3 module alone: sum the period's usage on every check,
    one INSERT and one COMMIT per recorded call."""

    def __init__(self, database: Path, period_start: int) -> None:
        self.connection = sqlite3.connect(database)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
            self.connection.execute(f"PRAGMA {pragma}")
        self.since_us = period_start * 1_000_000

    def check(self) -> int:
        """What is left of the included budget."""
        (used,) = self.connection.execute(NAIVE_CHECK, (PRACTICE, self.since_us)).fetchone()
        return INCLUDED_MICROS - (used or 0)

    def record(self, request_id: str) -> None:
        self.connection.execute(
            NAIVE_RECORD,
            (
                time.time_ns() // 1000,
                PRACTICE,
                request_id,
                OPERATION,
                MODEL,
                INPUT_TOKENS,
                CACHED_TOKENS,
                OUTPUT_TOKENS,
                COST_MICROS,
            ),
        )
        self.connection.commit()

    def pair(self, request_id: str) -> None:
        if self.check() >= ESTIMATE_MICROS:
            self.record(request_id)

    def pairs(self, size: int) -> dict[str, Any]:
        (mark,) = self.connection.execute("SELECT COALESCE(MAX(event_id), 0) FROM usage_events").fetchone()
        runs = []
        for run in range(-1, PAIR_RUNS):  # run -1 warms up
            start = time.perf_counter_ns()
            deadline = start + int(NAIVE_RUN_S * 1e9)
            count, now = 0, start
            while count < PAIRS_MAX and (count < 3 or now < deadline):
                self.pair(f"naive-{size}-{run}-{count}")
                count += 1
                now = time.perf_counter_ns()
            if run >= 0:
                runs.append((count, now - start))
            self.connection.execute("DELETE FROM usage_events WHERE event_id > ?", (mark,))
            self.connection.commit()
        return throughput(runs)

    def close(self) -> None:
        self.connection.close()


def measure(size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aibudget-bench-") as name:
        directory = Path(name)
        database = directory / "aibudget.sqlite3"
        period_id, period_start = create_practice(directory)
        began = time.perf_counter()
        fill(database, size, period_id, period_start)
        fill_s = time.perf_counter() - began
        result: dict[str, Any] = {"history_events": size, "fill_s": round(fill_s, 1)}
        with open_budget(directory) as budget:
            snapshot = budget.snapshot(PRACTICE)
            assert snapshot.used_micros == size * COST_MICROS, snapshot
            if size == VERIFY_SIZE:
                check_books(budget, "after the bulk fill")
            naive = NaiveGate(database, period_start)
            try:
                assert naive.check() == INCLUDED_MICROS - size * COST_MICROS
                result["snapshot"] = latency(lambda: budget.snapshot(PRACTICE), warmup=LATENCY_WARMUP)
                result["naive_check"] = latency(naive.check, warmup=3, round_s=NAIVE_ROUND_S)
                result["naive_pairs"] = naive.pairs(size)
            finally:
                naive.close()
            result["pairs"] = aibudget_pairs(budget, str(size))
            if size == 0:
                create_credit_practice(budget)
                result["credit_pairs"] = aibudget_pairs(budget, "credit", CREDIT_PRACTICE)
            bare = BareSql(budget)
            try:
                result["bare_sql_pairs"] = timed_pairs(bare.pair, f"bare-{size}")
            finally:
                bare.close()
            if size == VERIFY_SIZE:
                check_books(budget, "after the measurements")
                result["verified"] = True
            with closing(sqlite3.connect(database)) as connection:
                (events,) = connection.execute("SELECT COUNT(*) FROM usage_events").fetchone()
            result["history_events_at_end"] = events
        return result


# report


def size_label(size: int) -> str:
    if size >= 1_000_000:
        return f"{size // 1_000_000}M"
    return f"{size // 1000}k" if size >= 1000 else str(size)


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def spread(stats: dict[str, Any], field: str) -> tuple[float, float, float]:
    """(median, min, max) of a measurement: `median`/`p99` latency in µs, or `pairs` per second."""
    if field == "pairs":
        return stats["pairs_per_s"], stats["min_pairs_per_s"], stats["max_pairs_per_s"]
    return stats[f"{field}_us"], stats[f"{field}_min_us"], stats[f"{field}_max_us"]


MEASURES: tuple[tuple[str, str, str, str, str, Callable[[float], bool] | None], ...] = (
    # aibudget key, naive key, field, title, target, whether aibudget's median meets it
    (
        "snapshot",
        "naive_check",
        "median",
        "snapshot / check: median µs",
        "≤ 100",
        lambda us: us <= SNAPSHOT_TARGET_US,
    ),
    ("snapshot", "naive_check", "p99", "snapshot / check: p99 µs", "—", None),
    (
        "pairs",
        "naive_pairs",
        "pairs",
        "authorize+settle / check+record: pairs/s",
        "≥ 5,000",
        lambda n: n >= PAIRS_TARGET,
    ),
)


def rows(results: list[dict[str, Any]]) -> Iterator[list[str]]:
    """measure, history, aibudget, naive, ratio, target: one table row per measure and size."""
    for key, naive_key, field, title, target, met in MEASURES:
        for result in results:
            ours, naive = spread(result[key], field), spread(result[naive_key], field)
            mark = "" if met is None else (" ✓" if met(ours[0]) else " ✗")
            yield [
                title,
                size_label(result["history_events"]),
                *(f"{number(value)} ({number(low)}-{number(high)})" for value, low, high in (ours, naive)),
                f"{ours[0] / naive[0]:.3g}",
                target + mark,
            ]


def main() -> None:
    began = time.perf_counter()
    results = []
    for size in SIZES:
        print(f"history {size_label(size)} ...", file=sys.stderr, flush=True)
        results.append(measure(size))
    elapsed = time.perf_counter() - began

    print("# Engine: snapshot latency and authorize+settle throughput vs. history, SQLite in process\n")
    print(
        "median (min-max over rounds or runs); ratio = aibudget / naive gate"
        " (latency: < 1 is faster; pairs/s: > 1 is faster)\n"
    )
    print("| measure | history | aibudget | naive gate | ratio | target |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows(results):
        print("| " + " | ".join(row) + " |")
    print(
        "\nThe database's share of a pair: aibudget's statements for one authorize + settle, replayed"
        " through the sqlite3 module alone (same SQL, values, transactions and PRAGMAs)\n"
    )
    print("| history | aibudget pairs/s | same SQL, bare sqlite3 | aibudget / bare |")
    print("|---:|---:|---:|---:|")
    for result in results:
        ours, bare = spread(result["pairs"], "pairs"), spread(result["bare_sql_pairs"], "pairs")
        cells = (f"{number(value)} ({number(low)}-{number(high)})" for value, low, high in (ours, bare))
        print(f"| {size_label(result['history_events'])} | {' | '.join(cells)} | {ours[0] / bare[0]:.3g} |")
    first, last = results[0], results[-1]
    credit = spread(first["credit_pairs"], "pairs")
    print(
        f"\nPaid from prepaid credit (a plan with no included budget, one grant), history 0:"
        f" {number(credit[0])} ({number(credit[1])}-{number(credit[2])}) pairs/s."
    )
    flat = {
        "snapshot_median_last_over_first": round(
            last["snapshot"]["median_us"] / first["snapshot"]["median_us"], 2
        ),
        "pairs_per_s_last_over_first": round(last["pairs"]["pairs_per_s"] / first["pairs"]["pairs_per_s"], 2),
    }
    print(
        f"\nflatness, {size_label(last['history_events'])} / {size_label(first['history_events'])}:"
        f" snapshot median x{flat['snapshot_median_last_over_first']},"
        f" pairs/s x{flat['pairs_per_s_last_over_first']}."
        f" Bulk fills: "
        + ", ".join(f"{size_label(r['history_events'])} in {r['fill_s']} s" for r in results)
        + f"; books verified at {size_label(VERIFY_SIZE)}."
    )

    write_results(
        RESULTS,
        "engine",
        elapsed_s=elapsed,
        targets={
            "snapshot_median_us_max": SNAPSHOT_TARGET_US,
            "authorize_settle_pairs_per_s_min": PAIRS_TARGET,
            "flat_in_history": True,
        },
        method={
            "latency_rounds": LATENCY_ROUNDS,
            "latency_calls_per_round": LATENCY_CALLS,
            "naive_round_s": NAIVE_ROUND_S,
            "pair_runs": PAIR_RUNS,
            "pair_run_s": PAIR_RUN_S,
            "naive_run_s": NAIVE_RUN_S,
            "pairs_per_run_min_max": [PAIRS_MIN, PAIRS_MAX],
        },
        flatness=flat,
        results=results,
    )


if __name__ == "__main__":
    main()
