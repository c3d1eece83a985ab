"""How long pricing one AI call takes, in process.

Measures, for a few typical calls (a gpt-4o-mini letter, a whisper-1 transcription, a
gpt-4o-transcribe transcription by audio tokens, a tiered gpt-5.6-sol call past its 272k threshold):

(a) raw  - `genai_prices.calc_price` per call: model lookup plus the catalog's generic arithmetic;
(b) warm - `PriceCatalog.price` per call once the model name is resolved and cached;
(c) cold - `PriceCatalog.price` on a new catalog: resolution, coefficient probe and the price.
    genai-prices' own lookup cache is process-wide, so "cold" is cold for aibudget's caches only.

Target: pricing a call costs microseconds, not the ~100 µs of a raw catalog call. Tiered prices
depend on the call's size, so they always take the catalog's path and cost about a raw call.

Each measurement times a batch of calls, 7 rounds; the table shows the median per call and the
min-max over rounds, in µs. Results also go to bench/results/pricing.json. Runs in ~10 s:

    .venv/bin/python bench/pricing.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import genai_prices

from _machine import write_results
from aibudget.pricing.catalog import CATALOG_VERSION, PriceCatalog, Usage

ROUNDS = 7
ROUND_NS = 100_000_000  # 0.1 s of calls per round
RESULTS = Path(__file__).parent / "results" / "pricing.json"

# name, model, usage as aibudget takes it, the same usage as genai-prices takes it
CALLS: list[tuple[str, str, Usage, dict[str, int | Decimal]]] = [
    (
        "gpt-4o-mini letter",
        "gpt-4o-mini",
        Usage(input_tokens=1800, cached_input_tokens=1024, output_tokens=650),
        {"input_tokens": 1800, "cache_read_tokens": 1024, "output_tokens": 650},
    ),
    (
        "whisper-1 transcription",
        "whisper-1",
        Usage(audio_seconds=Decimal("42.7")),
        {"audio_seconds": Decimal("42.7")},
    ),
    (
        "gpt-4o-transcribe (audio tokens)",
        "gpt-4o-transcribe",
        Usage(input_tokens=720, input_audio_tokens=700, output_tokens=180),
        {"input_tokens": 720, "input_audio_tokens": 700, "output_tokens": 180},
    ),
    (
        "gpt-5.6-sol tiered, 300k input",
        "gpt-5.6-sol",
        Usage(input_tokens=300_000, cached_input_tokens=200_000, output_tokens=4000),
        {"input_tokens": 300_000, "cache_read_tokens": 200_000, "output_tokens": 4000},
    ),
]


def per_call_us(call: Callable[[], object]) -> list[float]:
    """µs per call for each round; a round makes as many calls as fit in about ROUND_NS."""
    start = time.perf_counter_ns()
    for _ in range(20):  # warm up (imports, lookups, caches) and calibrate
        call()
    calls = max(20, ROUND_NS * 20 // (time.perf_counter_ns() - start))
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(calls):
            call()
        rounds.append((time.perf_counter_ns() - start) / calls / 1000)
    return rounds


def measure_raw(model: str, units: dict[str, int | Decimal]) -> list[float]:
    usage = genai_prices.Usage(**units)
    return per_call_us(lambda: genai_prices.calc_price(usage, model, provider_id="openai"))


def measure_warm(model: str, usage: Usage) -> list[float]:
    catalog = PriceCatalog(fallback=None)
    at = datetime.now(UTC)
    return per_call_us(lambda: catalog.price(model, usage, at=at))


def measure_cold(model: str, usage: Usage, calls: int = 200) -> list[float]:
    at = datetime.now(UTC)
    rounds = []
    PriceCatalog(fallback=None).price(model, usage, at=at)  # warm up genai-prices itself
    for _ in range(ROUNDS):
        catalogs = [PriceCatalog(fallback=None) for _ in range(calls)]  # built outside the timing
        start = time.perf_counter_ns()
        for catalog in catalogs:
            catalog.price(model, usage, at=at)
        rounds.append((time.perf_counter_ns() - start) / calls / 1000)
    return rounds


def summary(rounds: list[float]) -> dict[str, float]:
    return {
        "median_us": round(statistics.median(rounds), 2),
        "min_us": round(min(rounds), 2),
        "max_us": round(max(rounds), 2),
    }


def cell(stats: dict[str, float]) -> str:
    return f"{stats['median_us']:.2f} ({stats['min_us']:.2f}-{stats['max_us']:.2f})"


def main() -> None:
    began = time.perf_counter()
    rows = []
    for name, model, usage, units in CALLS:
        rows.append(
            {
                "call": name,
                "model": model,
                "raw_calc_price": summary(measure_raw(model, units)),
                "catalog_warm": summary(measure_warm(model, usage)),
                "catalog_cold": summary(measure_cold(model, usage)),
            }
        )
    print(f"# Pricing one call, µs: median (min-max over {ROUNDS} rounds) — {CATALOG_VERSION}\n")
    print("| call | raw `calc_price` | `PriceCatalog.price`, warm | cold (first call) | raw / warm |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        ratio = row["raw_calc_price"]["median_us"] / row["catalog_warm"]["median_us"]
        print(
            f"| {row['call']} | {cell(row['raw_calc_price'])} | {cell(row['catalog_warm'])} "
            f"| {cell(row['catalog_cold'])} | {ratio:.0f}x |"
        )
    elapsed = time.perf_counter() - began
    write_results(
        RESULTS,
        "pricing",
        elapsed_s=elapsed,
        catalog=CATALOG_VERSION,
        rounds=ROUNDS,
        unit="microseconds per call",
        results=rows,
    )


if __name__ == "__main__":
    main()
