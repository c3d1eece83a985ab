"""Benchmark: the latency the OpenAI-compatible proxy adds over calling the upstream directly.

A local fake OpenAI upstream (the tests' `FakeOpenAI`, real HTTP) answers at once. One keep-alive
client sends the same chat completion N times straight to it and N times through `aibudget serve`
(1 worker, SQLite, budgets enforced: every call authorized and settled), alternating in rounds so
drift hits both alike. Reported: p50 / p99 of each and the differences; for streams, the time to the
first `data:` event. Target: added p50 ≤ 1.5 ms.
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' fake upstream

from tests.fake_openai import FakeOpenAI

from _load import free_port, open_budget, serve, subscribe
from _machine import machine, write_results

RESULTS = Path(__file__).parent / "results" / "proxy.json"
ROUNDS, PER_ROUND, WARMUP = 10, 50, 50
TARGET_P50_MS = 1.5
PRACTICE, PLAN = "bench-proxy", "bench-proxy-plan"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Bitte einen kurzen Brief."}],
        "max_completion_tokens": 64}  # fmt: skip


class Client:
    def __init__(self, port: int, key: str, prefix: str) -> None:
        self._http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._prefix = prefix

    def call(self, *, stream: bool) -> float:
        """Seconds to the whole answer (plain) or to the first `data:` event (stream)."""
        body = json.dumps(BODY | ({"stream": True} if stream else {}))
        start = time.perf_counter()
        self._http.request("POST", f"{self._prefix}/chat/completions", body, self._headers)
        response = self._http.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{self._prefix}: {response.status} {response.read()[:200]!r}")
        if not stream:
            response.read()
            return time.perf_counter() - start
        first = None
        while line := response.readline():
            if first is None and line.startswith(b"data:"):
                first = time.perf_counter() - start
        assert first is not None
        return first


def _prepare(data_dir: Path) -> str:
    with open_budget(data_dir) as budget:
        budget.put_plan(PLAN, included_usd="1000000")
        subscribe(budget, PRACTICE, plan=PLAN)
        return budget.create_key(role="practice", practice_id=PRACTICE, label="bench/proxy.py")[1]


def _ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50": round(statistics.median(ordered) * 1000, 3),
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 3),
        "n": len(ordered),
    }


def measure() -> dict[str, Any]:
    with FakeOpenAI() as upstream, tempfile.TemporaryDirectory(prefix="aibudget-bench-proxy-") as tmp:
        upstream.reply_words = 20
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        key = _prepare(data_dir)
        port = free_port()
        server = serve(data_dir, port, 1, AIBUDGET_UPSTREAM_BASE_URL=f"{upstream.url}/v1",
                       AIBUDGET_UPSTREAM_API_KEY=upstream.api_key)  # fmt: skip
        try:
            upstream_port = int(upstream.url.rsplit(":", 1)[1])
            direct = Client(upstream_port, upstream.api_key, "/v1")
            proxied = Client(port, key, "/openai/v1")
            results: dict[str, Any] = {}
            for stream in (False, True):
                for _ in range(WARMUP):
                    direct.call(stream=stream)
                    proxied.call(stream=stream)
                times: dict[str, list[float]] = {"direct": [], "proxy": []}
                for _ in range(ROUNDS):
                    times["direct"] += [direct.call(stream=stream) for _ in range(PER_ROUND)]
                    times["proxy"] += [proxied.call(stream=stream) for _ in range(PER_ROUND)]
                direct_ms, proxy_ms = _ms(times["direct"]), _ms(times["proxy"])
                results["stream_first_event" if stream else "plain"] = {
                    "direct_ms": direct_ms,
                    "proxy_ms": proxy_ms,
                    "added_p50_ms": round(proxy_ms["p50"] - direct_ms["p50"], 3),
                    "added_p99_ms": round(proxy_ms["p99"] - direct_ms["p99"], 3),
                }
        finally:
            server.terminate()
            server.wait(timeout=30)
    return results


def main() -> None:
    began = time.perf_counter()
    results = measure()
    host = machine()
    print(f"# Proxy: added latency over the upstream, `aibudget serve` 1 worker, SQLite — {host['cpu']}\n")
    columns = (
        "call",
        "upstream direct p50 / p99",
        "through the proxy p50 / p99",
        "added p50 (target ≤ 1.5 ms)",
    )
    print("| " + " | ".join((*columns, "added p99")) + " |")
    print("|---|---:|---:|---:|---:|")
    for name, label in (("plain", "chat completion"), ("stream_first_event", "stream, first event")):
        row = results[name]
        direct, proxy = row["direct_ms"], row["proxy_ms"]
        print(
            f"| {label} | {direct['p50']:.2f} / {direct['p99']:.2f} ms "
            f"| {proxy['p50']:.2f} / {proxy['p99']:.2f} ms "
            f"| {row['added_p50_ms']:.2f} ms | {row['added_p99_ms']:.2f} ms |"
        )
    elapsed = time.perf_counter() - began
    write_results(
        RESULTS,
        "proxy",
        elapsed_s=elapsed,
        targets={"added_p50_ms_max": TARGET_P50_MS},
        method={
            "rounds": ROUNDS,
            "calls_per_round": PER_ROUND,
            "warmup": WARMUP,
            "client": "http.client keep-alive",
        },
        results=results,
    )


if __name__ == "__main__":
    main()
