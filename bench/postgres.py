"""How much `aibudget serve --workers 4` serves on PostgreSQL; that a hot strict practice never overspends.

Targets (SPEC §13): PostgreSQL, 4 workers, 100 practices: ≥ 3,000 authorize + settle pairs per
second; one hot practice: no overspend.

The server is the one at AIBUDGET_BENCH_POSTGRES_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres; its user must be allowed to create databases).
A fresh database is created for the run and dropped at the end. When the server does not answer, the
script says so and exits 0 without results, so `make bench` still runs elsewhere.

Through the library, the database gets 100 practices on a plan with a huge included budget (nothing
is ever refused), one hot practice in `strict` policy with a small budget (included + a credit grant)
and a service key; then `aibudget serve --workers 4` starts on a free loopback port (request logs go
to a file, as in production). A separate load process (multiprocessing, spawn context) drives it,
each client thread with its own keep-alive HTTP/1.1 connection (the standard library's `http.client`,
the leanest client, so the load generator takes as little CPU from the server as it can):

1. spread: SPREAD_THREADS threads run `POST /v1/authorizations` then `POST /v1/usage` for the same
   request id, back to back, each pair on a random one of the 100 practices; after WARMUP_S seconds,
   ROUNDS windows of ROUND_S seconds are counted: pairs/s = pairs completed in the window / its
   length. Every answer must be 201. Median and range over the windows.
2. hot: HOT_THREADS threads run pairs on the hot practice until each was refused (402) three times,
   or HOT_LIMIT_S passed: pairs/s over that time. Each call is a gpt-4o-mini letter estimated at
   1000 input and at most 500 output tokens (450 micro-USD held), settled with 0-500 real output
   tokens, so its real cost never exceeds its hold. Afterwards the overspend — cost posted for the
   practice in the ledger minus its funding, in micro-USD — must be ≤ 0; the script exits 1 if not.
   `verify()` must find the books balanced.

Caveats, reported with the numbers: this machine's cores are shared by the load process, the four
workers and PostgreSQL itself, so the load generator's CPU is taken from the server: the numbers are
lower bounds of what the server would do on its own. The PostgreSQL server's durability settings
(`fsync`, `synchronous_commit`) are recorded with the results; they decide what a commit costs.
Loops are bounded in time and count. Results go to bench/results/postgres.json. Runs in ~1 min:

    .venv/bin/python bench/postgres.py
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from _load import Connection, authorization, free_port, serve, subscribe, usage
from _machine import machine, write_results
from aibudget import Budget, Settings
from aibudget.money import parse_usd
from aibudget.store import tables
from aibudget.store.dialect import read_transaction

RESULTS = Path(__file__).parent / "results" / "postgres.json"
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

PAIRS_TARGET = 3_000.0
WORKERS = 4
PRACTICES = 100
SPREAD_THREADS = 16
WARMUP_S = 3.0
ROUNDS = 3
ROUND_S = 8.0
MAX_PAIRS = 500_000  # per thread: a bound, never reached at these rates
HOT_THREADS = 16
HOT_LIMIT_S = 30.0
REFUSALS_BEFORE_GIVING_UP = 3
ESTIMATE_MICROS = 450
HOT_INCLUDED_USD, HOT_GRANT_USD = "0.25", "0.05"
HOT_FUNDING_MICROS = parse_usd(HOT_INCLUDED_USD, field="included") + parse_usd(HOT_GRANT_USD, field="grant")

PLAN = "bench-huge"
HOT, HOT_PLAN = "bench-hot", "bench-hot-plan"


def _authorization(practice_id: str, request_id: str) -> dict[str, Any]:
    return authorization(practice_id, request_id, input_tokens=1000, max_output_tokens=500)


def _usage(practice_id: str, request_id: str, output_tokens: int) -> dict[str, Any]:
    return usage(practice_id, request_id, input_tokens=1000, output_tokens=output_tokens)


def _spread_thread(
    port: int, key: str, thread: int, marks: list[float], done_at: list[float], errors: list[int]
) -> None:
    """Pairs on random practices until the last mark; the finishing time of every pair."""
    connection, rng = Connection(port, key), random.Random(thread)
    try:
        for n in range(MAX_PAIRS):
            if time.perf_counter() >= marks[-1]:
                break
            practice_id, request_id = f"bench-{rng.randrange(PRACTICES):03}", f"s{thread}-{n}"
            statuses = (
                connection.post("/v1/authorizations", _authorization(practice_id, request_id)),
                connection.post("/v1/usage", _usage(practice_id, request_id, rng.randint(0, 500))),
            )
            done_at.append(time.perf_counter())
            errors.extend(status for status in statuses if status != 201)
    finally:
        connection.close()


def drive_spread(port: int, key: str) -> dict[str, Any]:
    """In the load process: SPREAD_THREADS threads of pairs; counted in ROUNDS windows after warm-up."""
    start = time.perf_counter() + WARMUP_S
    marks = [start + ROUND_S * r for r in range(ROUNDS + 1)]
    done_at: list[float] = []  # list.append is atomic under the GIL
    errors: list[int] = []
    threads = [
        threading.Thread(target=_spread_thread, args=(port, key, t, marks, done_at, errors))
        for t in range(SPREAD_THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rounds = [
        round(sum(1 for at in done_at if begin <= at < end) / ROUND_S, 1)
        for begin, end in itertools.pairwise(marks)
    ]
    return {
        "threads": SPREAD_THREADS,
        "pairs_per_s_rounds": rounds,
        "pairs_per_s_median": statistics.median(rounds),
        "pairs_per_s_min": min(rounds),
        "pairs_per_s_max": max(rounds),
        "pairs_total": len(done_at),
        "errors": len(errors),
        "error_statuses": sorted(set(errors)),
    }


def _hot_thread(
    port: int, key: str, thread: int, until: float, pairs: list[int], refused: list[int], errors: list[int]
) -> None:
    connection, rng, refusals = Connection(port, key), random.Random(1000 + thread), 0
    try:
        for n in range(MAX_PAIRS):
            if time.perf_counter() >= until:
                break
            request_id = f"h{thread}-{n}"
            status = connection.post("/v1/authorizations", _authorization(HOT, request_id))
            if status == 402:
                refusals += 1
                refused.append(1)
                if refusals == REFUSALS_BEFORE_GIVING_UP:
                    break
                continue
            settled = connection.post("/v1/usage", _usage(HOT, request_id, rng.randint(0, 500)))
            errors.extend(answer for answer in (status, settled) if answer != 201)
            pairs.append(1)
    finally:
        connection.close()


def drive_hot(port: int, key: str) -> dict[str, Any]:
    """In the load process: HOT_THREADS threads on the hot practice until refused or HOT_LIMIT_S."""
    pairs: list[int] = []
    refused: list[int] = []
    errors: list[int] = []
    started = time.perf_counter()
    threads = [
        threading.Thread(
            target=_hot_thread, args=(port, key, t, started + HOT_LIMIT_S, pairs, refused, errors)
        )
        for t in range(HOT_THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "threads": HOT_THREADS,
        "pairs": len(pairs),
        "refusals": len(refused),
        "elapsed_s": round(elapsed, 2),
        "pairs_per_s": round(len(pairs) / elapsed, 1),
        "stopped_by": "time limit" if elapsed >= HOT_LIMIT_S else "refusals",
        "errors": len(errors),
        "error_statuses": sorted(set(errors)),
    }


def _admin(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(plain, autocommit=True, connect_timeout=5)


def _prepare(budget: Budget) -> str:
    """PRACTICES practices with a huge budget, the hot strict practice, and a service key."""
    budget.put_plan(PLAN, included_usd="1000000")
    for n in range(PRACTICES):
        subscribe(budget, f"bench-{n:03}", plan=PLAN)
    budget.put_plan(HOT_PLAN, included_usd=HOT_INCLUDED_USD)
    subscribe(budget, HOT, plan=HOT_PLAN, policy="strict")
    budget.grant_credit(HOT, amount_usd=HOT_GRANT_USD, source="purchase", reference="bench-hot-grant")
    return budget.create_key(role="service", label="bench/postgres.py")[1]


def _books(budget: Budget) -> dict[str, Any]:
    """The hot practice's books: posted cost against funding, holds left, verify."""
    events = tables.usage_events
    with read_transaction(budget.engine) as connection:
        posted = connection.execute(
            select(func.coalesce(func.sum(events.c.cost_micros), 0)).where(
                events.c.practice_id == HOT, events.c.status == "success"
            )
        ).scalar_one()
    snapshot = budget.snapshot(HOT)
    return {
        "funding_micros": HOT_FUNDING_MICROS,
        "posted_micros": int(posted),
        "overspend_micros": max(0, int(posted) - HOT_FUNDING_MICROS),
        "left_micros": snapshot.available_micros,
        "held_micros": snapshot.held_micros,
        "exhausted": snapshot.available_micros < ESTIMATE_MICROS,
        "verify_discrepancies": len(budget.verify()),
    }


def _server_settings(url: str) -> dict[str, str]:
    settings = {}
    with _admin(url) as admin:
        for name in ("server_version", "fsync", "synchronous_commit", "max_connections"):
            row = admin.execute(f"SHOW {name}").fetchone()
            assert row is not None
            settings[name] = str(row[0])
    return settings


def measure(url: str) -> dict[str, Any]:
    name = f"aibudget_bench_{secrets.token_hex(6)}"
    with _admin(url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database_url = make_url(url).set(drivername="postgresql+psycopg", database=name)
    database = database_url.render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory(prefix="aibudget-bench-pg-") as tmp:
            data_dir = Path(tmp) / "var"
            data_dir.mkdir()
            with Budget.open(database, settings=Settings.load(data_dir=data_dir)) as budget:
                key = _prepare(budget)
                port = free_port()
                server = serve(data_dir, port, WORKERS, AIBUDGET_DATABASE_URL=database)
                try:
                    context = multiprocessing.get_context("spawn")
                    with ProcessPoolExecutor(max_workers=1, mp_context=context) as load:
                        spread = load.submit(drive_spread, port, key).result(timeout=300)
                        hot = load.submit(drive_hot, port, key).result(timeout=300)
                finally:
                    server.terminate()
                    server.wait(timeout=30)
                hot["books"] = _books(budget)
    finally:
        with _admin(url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {"workers": WORKERS, "practices": PRACTICES, "spread": spread, "hot": hot}


def main() -> int:
    url = os.environ.get("AIBUDGET_BENCH_POSTGRES_URL", DEFAULT_URL)
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        settings = _server_settings(url)
    except psycopg.OperationalError as failed:
        reason = " ".join(str(failed).split())
        print(f"PostgreSQL at {shown} does not answer ({reason}); benchmark skipped.")
        print("Set AIBUDGET_BENCH_POSTGRES_URL to a server whose user may create databases.")
        return 0
    began = time.perf_counter()
    load_before = os.getloadavg()
    result = measure(url)
    load_after = os.getloadavg()
    host = machine() | {"postgresql": settings}
    spread, hot, books = result["spread"], result["hot"], result["hot"]["books"]
    print(
        f"# PostgreSQL {settings['server_version']}: `aibudget serve --workers {WORKERS}` over loopback "
        f"— {host['cores']} cores ({host['cpu']}), fsync={settings['fsync']}, "
        f"synchronous_commit={settings['synchronous_commit']}\n"
    )
    print("| load | pairs/s | target | errors | outcome |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| {PRACTICES} practices, {SPREAD_THREADS} clients | {spread['pairs_per_s_median']:,.0f} "
        f"({spread['pairs_per_s_min']:,.0f}-{spread['pairs_per_s_max']:,.0f}) | ≥ {PAIRS_TARGET:,.0f} "
        f"{'✓' if spread['pairs_per_s_median'] >= PAIRS_TARGET else '✗'} | {spread['errors']} "
        f"| {spread['pairs_total']:,} pairs, nothing refused |"
    )
    print(
        f"| 1 hot strict practice, {HOT_THREADS} clients | {hot['pairs_per_s']:,.0f} | no overspend "
        f"{'✓' if books['overspend_micros'] == 0 else '✗'} | {hot['errors']} "
        f"| {hot['pairs']:,} pairs in {hot['elapsed_s']} s ({hot['stopped_by']}); posted "
        f"{books['posted_micros']:,} of {books['funding_micros']:,} micro-USD, overspend "
        f"{books['overspend_micros']}, verify {'ok' if books['verify_discrepancies'] == 0 else 'FAILED'} |"
    )
    note = (
        f"The load generator ({SPREAD_THREADS} client threads, one process) shares the "
        f"machine's {host['cores']} cores with the {WORKERS} workers and PostgreSQL: the numbers are "
        f"lower bounds of what the server alone would do. Spread: median (min-max) of {ROUNDS} windows of "
        f"{ROUND_S:.0f} s after {WARMUP_S:.0f} s of warm-up. 1-minute load average {load_before[0]:.1f} "
        f"before, {load_after[0]:.1f} after (other processes on the machine count too)."
    )
    print(f"\n{note}")
    elapsed = time.perf_counter() - began
    write_results(
        RESULTS,
        "postgres",
        elapsed_s=elapsed,
        targets={"pairs_per_s_min": PAIRS_TARGET, "workers": WORKERS, "hot_overspend_micros": 0},
        method={
            "client": "http.client keep-alive, threads in one spawned process",
            "spread_threads": SPREAD_THREADS,
            "warmup_s": WARMUP_S,
            "rounds": ROUNDS,
            "round_s": ROUND_S,
            "hot_threads": HOT_THREADS,
            "hot_limit_s": HOT_LIMIT_S,
            "hot_refusals_per_thread": REFUSALS_BEFORE_GIVING_UP,
            "estimate_micros": ESTIMATE_MICROS,
        },
        note=note,
        load_average_1m={"before": load_before[0], "after": load_after[0]},
        results=result,
    )
    if books["overspend_micros"] > 0 or books["verify_discrepancies"] or books["held_micros"]:
        print("The hot practice's books are wrong: see 'books' in the results.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
