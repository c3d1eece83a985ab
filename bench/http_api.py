"""How much the HTTP API serves: `aibudget serve` over loopback, driven by a separate load process.

Targets (SPEC §13): ≥ 1,500 authorize + settle pairs per second per worker; authorize p99 ≤ 5 ms
at 500 requests per second.

For 1 worker, then 2 workers: a fresh SQLite file in a temporary directory gets one practice on a
plan with a huge included budget (nothing is ever refused) and a service key, through the library;
then `aibudget serve --workers N` starts on a free loopback port (request logs go to a file, as in
production). A separate load process (multiprocessing, spawn context) drives it:

1. throughput: THREADS client threads, each with its own keep-alive HTTP/1.1 connection (the
   standard library's `http.client`, the leanest client, so the load generator takes as little CPU
   from the server as it can), run `POST /v1/authorizations` then `POST /v1/usage` for the same
   request id, back to back, for PAIRS_S seconds after a warm-up; pairs/s = completed pairs /
   elapsed, and each request's time from send to answer (p50, p99, max: how evenly a saturated
   server serves its callers). Every answer must be 201.
2. latency: authorizations only, open loop at RATE requests/s for LATENCY_S seconds: request i is
   due at start + i / RATE whatever the answers before it did, LATENCY_THREADS threads send them.
   Latency is measured from the due time (so a stalled server or a late client thread counts
   against it: no coordinated omission) to the full response; p50, p99 and max.

Caveat, reported with the numbers: this machine's cores are shared by the load process and the
server's workers, so the load generator's CPU is taken from the server — with 2 workers on 2 cores,
the workers and the client compete for the same two cores. Loops are bounded in time and count;
everything runs on 127.0.0.1. Results go to bench/results/http_api.json. Runs in ~1.5 min:

    .venv/bin/python bench/http_api.py
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _load import Connection, authorization, free_port, open_budget, percentiles, serve, subscribe, usage
from _machine import machine, write_results

RESULTS = Path(__file__).parent / "results" / "http_api.json"

PAIRS_TARGET_PER_WORKER = 1_500.0
P99_TARGET_MS = 5.0
WORKER_COUNTS = (1, 2)
THREADS = 6
WARMUP_PAIRS = 100  # per thread, not counted
PAIRS_S = 10.0
MAX_PAIRS = 200_000  # per thread: a bound, never reached at these rates
RATE = 500.0
LATENCY_S = 10.0
LATENCY_THREADS = 8

PRACTICE = "bench-http"
PLAN = "bench-huge"


def _authorization(request_id: str) -> dict[str, Any]:
    return authorization(PRACTICE, request_id, input_tokens=1200, max_output_tokens=800)


def _usage(request_id: str) -> dict[str, Any]:
    return usage(PRACTICE, request_id, input_tokens=1180, output_tokens=640)


def _pairs(
    port: int,
    key: str,
    prefix: str,
    until: float,
    limit: int,
    counts: list[int],
    errors: list[int],
    seconds: list[float],
) -> None:
    connection = Connection(port, key)
    done = failed = 0
    try:
        for n in range(limit):
            if time.perf_counter() >= until:
                break
            request_id = f"{prefix}-{n}"
            for path, body in (("/v1/authorizations", _authorization), ("/v1/usage", _usage)):
                sent = time.perf_counter()
                if connection.post(path, body(request_id)) != 201:
                    failed += 1
                seconds.append(time.perf_counter() - sent)
            done += 1
    finally:
        connection.close()
    counts.append(done)
    errors.append(failed)


def _threads(
    port: int, key: str, prefix: str, seconds: float, limit: int
) -> tuple[int, int, float, list[float]]:
    """THREADS threads of pairs until `seconds` pass or each made `limit`: (pairs, errors, elapsed,
    each request's seconds)."""
    counts: list[int] = []
    errors: list[int] = []
    latencies: list[float] = []
    started = time.perf_counter()
    threads = [
        threading.Thread(
            target=_pairs,
            args=(port, key, f"{prefix}-{t}", started + seconds, limit, counts, errors, latencies),
        )
        for t in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), sum(errors), time.perf_counter() - started, latencies


def drive_pairs(port: int, key: str, run: str) -> dict[str, Any]:
    """In the load process: THREADS threads of authorize + settle pairs for PAIRS_S seconds."""
    _threads(port, key, f"{run}-warm", 60, WARMUP_PAIRS)
    pairs, errors, elapsed, latencies = _threads(port, key, f"{run}-pairs", PAIRS_S, MAX_PAIRS)
    return {
        "pairs": pairs,
        "errors": errors,
        "elapsed_s": round(elapsed, 2),
        "pairs_per_s": round(pairs / elapsed, 1),
        "threads": THREADS,
        "request_ms": percentiles(latencies),
    }


def drive_latency(port: int, key: str, run: str) -> dict[str, Any]:
    """In the load process: open-loop authorizations at RATE/s for LATENCY_S s."""
    total = int(RATE * LATENCY_S)
    due_index = itertools.count()  # next() is atomic under the GIL: each index is sent once
    latencies: list[float] = []
    service: list[float] = []
    failures: list[int] = []
    start = time.perf_counter() + 0.2
    give_up = start + 3 * LATENCY_S  # a server too slow for the rate is not waited for forever

    def sender(thread: int) -> None:
        connection = Connection(port, key)
        try:
            for i in due_index:
                if i >= total or time.perf_counter() > give_up:
                    break
                due = start + i / RATE
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent = time.perf_counter()
                status = connection.post("/v1/authorizations", _authorization(f"{run}-l{i}"))
                answered = time.perf_counter()
                latencies.append(answered - due)
                service.append(answered - sent)
                if status != 201:
                    failures.append(status)
        finally:
            connection.close()

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(LATENCY_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "not_sent": total - len(latencies),
        "errors": len(failures),
        "achieved_rate_per_s": round(len(latencies) / elapsed, 1),
        "from_due_time_ms": percentiles(latencies),
        "from_send_ms": percentiles(service),
    }


def _prepare(data_dir: Path) -> str:
    """A practice on a plan with a huge budget, and a service key for the load process."""
    with open_budget(data_dir) as budget:
        budget.put_plan(PLAN, included_usd="1000000")
        subscribe(budget, PRACTICE, plan=PLAN)
        return budget.create_key(role="service", label="bench/http_api.py")[1]


def measure(workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aibudget-bench-http-") as tmp:
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        key = _prepare(data_dir)
        port = free_port()
        server = serve(data_dir, port, workers)
        try:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as load:
                pairs = load.submit(drive_pairs, port, key, f"w{workers}").result(timeout=300)
                latency = load.submit(drive_latency, port, key, f"w{workers}").result(timeout=300)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {
        "workers": workers,
        "pairs": pairs,
        "authorize_latency": latency,
        "pairs_per_s_per_worker": round(pairs["pairs_per_s"] / workers, 1),
    }


def main() -> None:
    began = time.perf_counter()
    load_before = os.getloadavg()
    results = [measure(workers) for workers in WORKER_COUNTS]
    load_after = os.getloadavg()
    host = machine()
    print(f"# HTTP: `aibudget serve` over loopback, SQLite — {host['cores']} cores ({host['cpu']})\n")
    print(
        "| workers | pairs/s | per worker (target ≥ 1,500) | request at saturation: p50 / p99 / max "
        "| authorize at 500/s: p50 | p99 (target ≤ 5 ms) | max | p50 / p99 from send | achieved rate "
        "| errors |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in results:
        latency = row["authorize_latency"]
        due, sent = latency["from_due_time_ms"], latency["from_send_ms"]
        saturated = row["pairs"]["request_ms"]
        errors = row["pairs"]["errors"] + latency["errors"]
        pairs, rate = row["pairs"]["pairs_per_s"], latency["achieved_rate_per_s"]
        print(
            f"| {row['workers']} | {pairs:,.0f} | {row['pairs_per_s_per_worker']:,.0f} "
            f"| {saturated['p50']:.1f} / {saturated['p99']:.1f} / {saturated['max']:.0f} ms "
            f"| {due['p50']:.2f} ms | {due['p99']:.2f} ms | {due['max']:.1f} ms "
            f"| {sent['p50']:.2f} / {sent['p99']:.2f} ms | {rate:.0f}/s | {errors} |"
        )
    note = (
        f"The load generator ({THREADS} client threads for pairs, {LATENCY_THREADS} for the open-loop "
        f"latency run, one process) shares the machine's {host['cores']} cores with the server's workers: "
        "the numbers are lower bounds of what the server alone would do. At saturation each request is "
        "timed from send to answer, while every client thread sends its next one at once. At 500/s, "
        "latency counts from when each request was due, so a server slower than the rate shows its queue. "
        f"1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (other processes on "
        "the machine count too)."
    )
    print(f"\n{note}")
    elapsed = time.perf_counter() - began
    write_results(
        RESULTS,
        "http",
        elapsed_s=elapsed,
        targets={
            "pairs_per_s_per_worker_min": PAIRS_TARGET_PER_WORKER,
            "authorize_p99_ms_max": P99_TARGET_MS,
            "at_rate_per_s": RATE,
        },
        method={
            "client": "http.client keep-alive, threads in one spawned process",
            "pair_threads": THREADS,
            "pairs_s": PAIRS_S,
            "warmup_pairs_per_thread": WARMUP_PAIRS,
            "rate_per_s": RATE,
            "latency_s": LATENCY_S,
            "latency_threads": LATENCY_THREADS,
            "latency_measured_from": "due time (open loop)",
        },
        note=note,
        load_average_1m={"before": load_before[0], "after": load_after[0]},
        results=results,
    )


if __name__ == "__main__":
    main()
