"""Soak: does `aibudget serve` hold steady — flat memory, stable latency — under long mixed load?

Not a throughput test and not part of `make bench` (run.py skips it) nor of CI: `make soak`, or

    .venv/bin/python bench/soak.py [--seconds 60]     # or SOAK_SECONDS=60; default 600

A fresh SQLite file in a temporary directory gets PRACTICES practices through the library, each with
a bound device: TIGHT of them `strict` on a plan of one US cent (refused with 402 until a credit grant
comes), the others on a large plan. `aibudget serve` (1 worker, so the server is one process) runs
with a short hold TTL so the sweeper expires holds all along. A separate load process (spawned) runs
THREADS threads, each with one keep-alive connection, paced to RATE calls/s in total (a seventh of
the ~400 one worker serves at saturation here, see http_api.py: a steady state, not an overload),
each step a random practice and one of MIX: letters authorized then settled, transcriptions
settled without an authorization, authorizations voided or left to expire, replays of an earlier
authorize, settle or grant (which must answer the first result again), client views by device,
operator views, usage reports, and credit grants.

Every SAMPLE_S seconds the main process reads the server's RSS, open file descriptors and threads
from /proc (psutil is not a dependency) and the database's size; each call's latency (send to whole
answer) is binned into the window it ended in, for p50/p99. Any 5xx, dropped connection or status
other than the ones the call may answer is an error: it is reported and the soak exits 1.

After the load: a wait of TTL + sweep interval, after which no practice may hold anything (G4),
then the server stops and `aibudget verify` must find the books balanced (G3). The verdict on memory
compares the RSS at the end of the warm-up (minute 2; a fifth of shorter runs) with the last sample
and fits a least-squares slope over the samples after the warm-up: "flat" means growth below
FLAT_PCT % and below FLAT_MIB MiB — not flat also exits 1. Results: bench/results/soak.json (the
full series of the default 10 minutes; another length writes soak-<seconds>s.json); a markdown
table of one row a minute on stdout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import astuple, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _load import (
    SCRIPT,
    Connection,
    authorization,
    environment,
    free_port,
    open_budget,
    percentiles,
    serve,
    subscribe,
    usage,
)
from _machine import machine

RESULTS_DIR = Path(__file__).parent / "results"

DEFAULT_SECONDS = 600
SAMPLE_S = 10
THREADS = 4
RATE = 60.0  # calls per second, all threads together
PRACTICES = 50
TIGHT = 5  # the first TIGHT practices: strict, one cent included
HOLD_TTL_S = 15
SWEEP_S = 5
WARMUP_S = 120
FLAT_PCT = 5.0
FLAT_MIB = 10.0
REPLAYABLE = 64  # per thread: the recent first answers a replay is drawn from

# step -> weight; a step makes one or two calls
MIX = {
    "letter": 30,  # authorize + settle
    "transcription": 15,  # settle without authorization
    "void": 6,  # authorize + void
    "expire": 4,  # authorize, never settled: the sweeper expires it
    "replay": 8,  # an earlier authorize, settle or grant again
    "client_view": 10,
    "operator_view": 8,
    "usage_report": 4,
    "grant": 1,
}
REPORTS = ("?group_by=day", "?group_by=model", "?group_by=operation", "?limit=50", "?format=csv&limit=50")


@dataclass(frozen=True)
class Target:
    """What the load process needs to know about the server."""

    port: int
    service_key: str
    admin_key: str
    practices: tuple[str, ...]
    devices: tuple[str, ...]  # devices[i] is bound to practices[i]


@dataclass(frozen=True)
class Call:
    ended: float  # time.monotonic(), the same clock in every process on Linux
    seconds: float
    kind: str
    status: int  # 0: no answer (connection dropped, timeout)
    expected: bool


def _prepare(data_dir: Path) -> Target:
    with open_budget(data_dir) as budget:
        budget.put_plan("soak-tight", included_usd="0.01")
        budget.put_plan("soak-large", included_usd="100000")
        practices = tuple(f"soak-{n:02d}" for n in range(PRACTICES))
        devices = tuple(f"device-{practice}" for practice in practices)
        for n, (practice, device) in enumerate(zip(practices, devices, strict=True)):
            tight = n < TIGHT
            subscribe(
                budget,
                practice,
                plan="soak-tight" if tight else "soak-large",
                policy="strict" if tight else None,
            )
            budget.bind_device(device, practice_id=practice)
        service_key = budget.create_key(role="service", label="bench/soak.py")[1]
        admin_key = budget.create_key(role="admin", label="bench/soak.py")[1]
    return Target(0, service_key, admin_key, practices, devices)


class _Client:
    """One load thread: paced steps over one keep-alive connection, every call recorded."""

    def __init__(self, target: Target, thread: int, start: float) -> None:
        self.target = target
        self.prefix = f"t{thread}"
        self.random = random.Random(thread)
        self.connection = Connection(target.port, target.service_key)
        self.admin = {"Authorization": f"Bearer {target.admin_key}"}
        self.calls: list[Call] = []
        self.replayable: deque[tuple[str, dict[str, Any], dict[str, str] | None, int]] = deque(
            maxlen=REPLAYABLE
        )
        self.due = start
        self.count = 0
        self.late = 0  # steps whose due time had passed by over a second: not caught up in a burst

    def call(
        self,
        kind: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        expected: frozenset[int],
        headers: dict[str, str] | None = None,
    ) -> int:
        pause = self.due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        elif pause < -1:
            self.due, self.late = time.monotonic(), self.late + 1
        self.due += THREADS / RATE
        sent = time.monotonic()
        try:
            status = self.connection.request(method, path, body, headers)
        except OSError:  # refused, reset, timed out: reported as status 0
            status = 0
            self.connection.close()
            self.connection = Connection(self.target.port, self.target.service_key)
        ended = time.monotonic()
        self.calls.append(Call(ended, ended - sent, kind, status, status in expected))
        if method == "POST" and status in (201, 402) and body is not None:
            self.replayable.append((path, body, headers, status))
        return status

    def step(self) -> None:
        self.count += 1
        request_id = f"{self.prefix}-{self.count}"
        practice = self.random.choice(self.target.practices)
        letter = authorization(practice, request_id, input_tokens=1200, max_output_tokens=800)
        held = frozenset({201, 402})
        match self.random.choices(list(MIX), weights=list(MIX.values()))[0]:
            case "letter":
                if self.call("authorize", "POST", "/v1/authorizations", letter, expected=held) == 201:
                    settled = usage(practice, request_id, input_tokens=1180, output_tokens=640)
                    self.call("settle", "POST", "/v1/usage", settled, expected=frozenset({201}))
            case "transcription":
                body = {
                    "practice_id": practice,
                    "request_id": request_id,
                    "operation": "transcribe",
                    "model": "whisper-1",
                    "usage": {"audio_seconds": str(self.random.randint(5, 300))},
                }
                self.call("settle", "POST", "/v1/usage", body, expected=frozenset({201}))
            case "void":
                if self.call("authorize", "POST", "/v1/authorizations", letter, expected=held) == 201:
                    path = f"/v1/authorizations/{request_id}/void"
                    self.call("void", "POST", path, {"practice_id": practice}, expected=frozenset({200}))
            case "expire":
                self.call("authorize", "POST", "/v1/authorizations", letter, expected=held)
            case "replay" if self.replayable:
                path, body, headers, first = self.random.choice(self.replayable)
                again = frozenset({200 if first == 201 else first})
                self.call("replay", "POST", path, body, expected=again, headers=headers)
            case "client_view" | "replay":  # a replay before anything is replayable reads instead
                device = self.target.devices[self.target.practices.index(practice)]
                headers = {"X-Device-Id": device, "Accept-Language": "fr-CH"}
                self.call("client_view", "GET", "/v1/budget", expected=frozenset({200}), headers=headers)
            case "operator_view":
                path = f"/v1/practices/{practice}/budget"
                self.call("operator_view", "GET", path, expected=frozenset({200}))
            case "usage_report":
                path = f"/v1/practices/{practice}/usage{self.random.choice(REPORTS)}"
                self.call("usage_report", "GET", path, expected=frozenset({200}))
            case "grant":
                body = {"amount_usd": "0.05", "source": "promo", "reference": f"soak-{request_id}"}
                path = f"/v1/practices/{practice}/credits"
                self.call("grant", "POST", path, body, expected=frozenset({201}), headers=self.admin)


def drive(target: Target, start: float, seconds: float) -> tuple[list[tuple[Any, ...]], int]:
    """In the load process: THREADS paced clients from `start` for `seconds`; every call (as a tuple,
    to cross the process boundary), and how many steps came over a second late."""
    clients = [_Client(target, thread, start) for thread in range(THREADS)]

    def run(client: _Client) -> None:
        try:
            while client.due < start + seconds:
                client.step()
        finally:
            client.connection.close()

    threads = [threading.Thread(target=run, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    calls = sorted((call for client in clients for call in client.calls), key=lambda call: call.ended)
    return [astuple(call) for call in calls], sum(client.late for client in clients)


def _process_sample(pid: int, data_dir: Path) -> dict[str, float]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    if Path(f"/proc/{pid}/task/{pid}/children").read_text().strip():
        raise RuntimeError("the server has child processes: its RSS alone would not be the server's")
    database = sum(path.stat().st_size for path in data_dir.glob("aibudget.sqlite3*"))
    return {
        "rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 2),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
        "db_mib": round(database / 2**20, 2),
    }


def _slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB), in MiB per hour."""
    mean_t = sum(t for t, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / spread * 3600 if spread else 0.0


def _verdict(samples: list[dict[str, Any]], seconds: int) -> dict[str, Any]:
    warmup = max(SAMPLE_S, min(WARMUP_S, seconds // 5 // SAMPLE_S * SAMPLE_S))
    steady = [sample for sample in samples if sample["t"] >= warmup]
    first, last = steady[0], steady[-1]
    growth = last["rss_mib"] - first["rss_mib"]
    percent = 100 * growth / first["rss_mib"]
    p50s = [sample["p50_ms"] for sample in steady if sample["calls"]]
    p99s = [sample["p99_ms"] for sample in steady if sample["calls"]]
    return {
        "warmup_s": warmup,
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_after_warmup_mib": first["rss_mib"],
        "rss_end_mib": last["rss_mib"],
        "rss_max_mib": max(sample["rss_mib"] for sample in samples),
        "rss_growth_mib": round(growth, 2),
        "rss_growth_pct": round(percent, 2),
        "rss_slope_mib_per_hour": round(_slope_per_hour([(s["t"], s["rss_mib"]) for s in steady]), 2),
        "db_after_warmup_mib": first["db_mib"],
        "db_end_mib": last["db_mib"],
        "fds_after_warmup": first["fds"],
        "fds_end": last["fds"],
        "fds_max": max(sample["fds"] for sample in samples),
        "threads_after_warmup": first["threads"],
        "threads_end": last["threads"],
        "p50_ms_range": [min(p50s), max(p50s)],
        "p99_ms_range": [min(p99s), max(p99s)],
        "flat": growth < FLAT_MIB and percent < FLAT_PCT,
    }


def _after(target: Target) -> tuple[list[str], dict[str, int]]:
    """Through the API once the load is over: the practices still holding money (operator view
    `held_usd` not zero), and the ledger's events by status over all practices."""
    connection = Connection(target.port, target.service_key)
    try:
        views = [connection.read(f"/v1/practices/{practice}/budget") for practice in target.practices]
        events = {
            status: sum(  # a few hundred events a practice: far below the limit
                len(connection.read(f"/v1/practices/{practice}/usage?status={status}&limit=10000")["rows"])
                for practice in target.practices
            )
            for status in ("success", "blocked", "voided", "expired")
        }
    finally:
        connection.close()
    return [view["practice_id"] for view in views if view["held_usd"] != "0.000000"], events


def _summary(calls: list[Call]) -> dict[str, Any]:
    """Count, latency and failures of some calls: a 5xx or no answer is an error; any status the call
    may not answer (a 404, a 409 to a replay) is unexpected."""
    latency = percentiles([call.seconds for call in calls]) if calls else {"p50": 0.0, "p99": 0.0}
    return {
        "calls": len(calls),
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "errors": sum(1 for call in calls if call.status == 0 or call.status >= 500),
        "unexpected": sum(1 for call in calls if not call.expected),
    }


def _between(calls: list[Call], begin: float, end: float) -> list[Call]:
    return [call for call in calls if begin < call.ended <= end]


def _log_findings(log: Path) -> dict[str, int]:
    """The server's log lines above INFO (and tracebacks outside JSON), counted by level and message."""
    found: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # `aibudget serve` prints its address as plain text
            if "Traceback" in line or "Error" in line:
                found[f"not JSON: {line[:80]}"] += 1
            continue
        if entry.get("level") not in ("INFO", "DEBUG"):
            found[f"{entry.get('level')}: {str(entry.get('message'))[:80]}"] += 1
    return dict(found)


def soak(seconds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aibudget-soak-") as tmp:
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        target = replace(_prepare(data_dir), port=free_port())
        settings = {
            "AIBUDGET_HOLD_TTL_SECONDS": str(HOLD_TTL_S),
            "AIBUDGET_SWEEP_INTERVAL_SECONDS": str(SWEEP_S),
        }
        server = serve(data_dir, target.port, 1, **settings)
        try:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as load:
                load.submit(int).result(timeout=60)  # the load process is up before the clock starts
                start = time.monotonic() + 0.5
                running = load.submit(drive, target, start, seconds)
                samples: list[dict[str, Any]] = []
                for t in range(0, seconds + 1, SAMPLE_S):
                    time.sleep(max(0.0, start + t - time.monotonic()))
                    samples.append({"t": t, **_process_sample(server.pid, data_dir)})
                    print(
                        f"  {t:>4} s  RSS {samples[-1]['rss_mib']:6.1f} MiB  fds {samples[-1]['fds']}"
                        f"  threads {samples[-1]['threads']}  db {samples[-1]['db_mib']:.1f} MiB",
                        flush=True,
                    )
                    if running.done():  # the load process failed: no use sampling on
                        break
                rows, late = running.result(timeout=120)
            calls = [Call(*row) for row in rows]
            time.sleep(HOLD_TTL_S + SWEEP_S + 2)
            holding, events = _after(target)
        finally:
            server.terminate()
            server.wait(timeout=30)
        verify = subprocess.run(
            [str(SCRIPT), "verify"], env=environment(data_dir), cwd=data_dir, capture_output=True, text=True
        )
        log = _log_findings(data_dir / "server.log")
    for sample in samples:
        sample |= _summary(_between(calls, start + sample["t"] - SAMPLE_S, start + sample["t"]))
    kinds = sorted({call.kind for call in calls})
    return {
        "samples": samples,
        "per_minute": [
            {"t": sample["t"], **{k: sample[k] for k in ("rss_mib", "fds", "threads", "db_mib")}}
            | _summary(_between(calls, start + sample["t"] - 60, start + sample["t"]))
            for sample in samples
            if sample["t"] and sample["t"] % 60 == 0
        ],
        "per_kind": {
            kind: _summary(mine := [call for call in calls if call.kind == kind])
            | {"statuses": dict(Counter(str(call.status) for call in mine))}
            for kind in kinds
        },
        "total": _summary(calls) | {"calls_per_s": round(len(calls) / seconds, 1), "late_steps": late},
        "holding_after_ttl": holding,
        "ledger_events": events,
        "verify": {"exit_code": verify.returncode, "output": (verify.stdout + verify.stderr).strip()},
        "server_log_above_info": log,
        "verdict": _verdict(samples, seconds),
    }


def _table(rows: list[dict[str, Any]], step: int) -> list[str]:
    lines = [
        f"| t (s) | RSS MiB | fds | threads | calls in the last {step} s | p50 ms | p99 ms | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['t']} | {row['rss_mib']:.1f} | {row['fds']} | {row['threads']} | {row['calls']:,} "
            f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors'] + row['unexpected']} |"
        )
    return lines


def _seconds() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--seconds",
        type=int,
        default=int(os.environ.get("SOAK_SECONDS", DEFAULT_SECONDS)),
        help=f"how long the load runs (default: $SOAK_SECONDS or {DEFAULT_SECONDS}); whole {SAMPLE_S} s",
    )
    seconds = parser.parse_args().seconds // SAMPLE_S * SAMPLE_S
    if seconds < 3 * SAMPLE_S:
        parser.error(f"--seconds: at least {3 * SAMPLE_S}")
    return int(seconds)


def main() -> int:
    seconds = _seconds()
    host = machine()
    load_before = os.getloadavg()
    print(f"soak: {seconds} s of mixed load at ~{RATE:.0f} calls/s, a sample every {SAMPLE_S} s", flush=True)
    result = soak(seconds)
    load_after = os.getloadavg()
    verdict, total = result["verdict"], result["total"]
    step = 60 if seconds >= 300 else SAMPLE_S
    rows = result["per_minute"] if step == 60 else result["samples"][1:]
    print(
        f"\n# Soak: `aibudget serve`, 1 worker, SQLite, {seconds} s — {host['cores']} cores ({host['cpu']})\n"
    )
    print("\n".join(_table(rows, step)))
    print("\n| call | count | statuses | p50 ms | p99 ms |\n|---|---:|---|---:|---:|")
    for kind, row in result["per_kind"].items():
        statuses = ", ".join(f"{status}: {count:,}" for status, count in sorted(row["statuses"].items()))
        print(f"| {kind} | {row['calls']:,} | {statuses} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    flat = "flat" if verdict["flat"] else "NOT flat"
    errors = total["errors"] + total["unexpected"]
    print(
        f"\n{total['calls']:,} calls ({total['calls_per_s']}/s), {errors} errors"
        f" ({total['errors']} 5xx or no answer, {total['unexpected']} other unexpected statuses)."
        f" RSS {verdict['rss_start_mib']:.1f} MiB at start, {verdict['rss_after_warmup_mib']:.1f} after the"
        f" {verdict['warmup_s']} s warm-up, {verdict['rss_end_mib']:.1f} at the end:"
        f" {verdict['rss_growth_mib']:+.1f} MiB ({verdict['rss_growth_pct']:+.1f} %),"
        f" slope {verdict['rss_slope_mib_per_hour']:+.1f} MiB/hour — {flat}"
        f" (flat: growth < {FLAT_PCT:g} % and < {FLAT_MIB:g} MiB), while the database grew from"
        f" {verdict['db_after_warmup_mib']:.1f} to {verdict['db_end_mib']:.1f} MiB."
        f" fds {verdict['fds_after_warmup']} → {verdict['fds_end']} (max {verdict['fds_max']}),"
        f" threads {verdict['threads_after_warmup']} → {verdict['threads_end']}."
        f" p50 {verdict['p50_ms_range'][0]:.2f}-{verdict['p50_ms_range'][1]:.2f} ms,"
        f" p99 {verdict['p99_ms_range'][0]:.2f}-{verdict['p99_ms_range'][1]:.2f} ms over the {SAMPLE_S} s"
        f" windows after the warm-up. Holds left {HOLD_TTL_S + SWEEP_S + 2} s after the load:"
        f" {len(result['holding_after_ttl'])} practices. Ledger events by status: {result['ledger_events']}."
        f" `aibudget verify`: exit"
        f" {result['verify']['exit_code']} ({result['verify']['output'] or 'no output'})."
        f" 1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after."
    )
    if result["server_log_above_info"]:
        print(f"server log above INFO: {result['server_log_above_info']}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    # the 10-minute run is the one the README reports; a shorter try or a longer run keeps its own file
    results = RESULTS_DIR / ("soak.json" if seconds == DEFAULT_SECONDS else f"soak-{seconds}s.json")
    report = {
        "benchmark": "soak",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": host,
        "method": {
            "seconds": seconds,
            "sample_s": SAMPLE_S,
            "threads": THREADS,
            "rate_per_s": RATE,
            "practices": PRACTICES,
            "tight_practices": TIGHT,
            "hold_ttl_s": HOLD_TTL_S,
            "sweep_interval_s": SWEEP_S,
            "mix": MIX,
            "flat": {"growth_pct_below": FLAT_PCT, "growth_mib_below": FLAT_MIB},
            "latency": "send to whole answer, per call, binned by the window it ended in",
        },
        "load_average_1m": {"before": load_before[0], "after": load_after[0]},
        **result,
    }
    results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {results}")
    failed = errors or result["holding_after_ttl"] or result["verify"]["exit_code"] or not verdict["flat"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
