"""What the HTTP benchmarks share: a database of practices with a current period, starting
`aibudget serve`, lean keep-alive clients posting the authorize and settle bodies of a gpt-4o-mini
letter, and latency percentiles."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aibudget import Budget, Settings

SCRIPT = Path(sys.executable).parent / "aibudget"


class Connection:
    """One keep-alive connection that sends JSON and returns the status."""

    def __init__(self, port: int, key: str) -> None:
        self._http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict[str, Any]) -> int:
        return self.request("POST", path, body)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """`headers` are added to (or replace) the key's; the answer is read whole and dropped."""
        payload = None if body is None else json.dumps(body)
        self._http.request(method, path, payload, self._headers | (headers or {}))
        response = self._http.getresponse()
        response.read()
        return response.status

    def read(self, path: str) -> Any:
        """GET `path`: its JSON answer, which must be a 200."""
        self._http.request("GET", path, headers=self._headers)
        response = self._http.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return json.loads(body)

    def close(self) -> None:
        self._http.close()


def authorization(
    practice_id: str, request_id: str, *, input_tokens: int, max_output_tokens: int
) -> dict[str, Any]:
    return {
        "practice_id": practice_id,
        "request_id": request_id,
        "operation": "letter",
        "model": "gpt-4o-mini",
        "estimate": {"input_tokens": input_tokens, "max_output_tokens": max_output_tokens},
    }


def usage(practice_id: str, request_id: str, *, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "practice_id": practice_id,
        "request_id": request_id,
        "operation": "letter",
        "model": "gpt-4o-mini",
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def open_budget(data_dir: Path) -> Budget:
    """The SQLite database `aibudget serve` will use with AIBUDGET_DATA_DIR=`data_dir` (same secret)."""
    url = f"sqlite:///{data_dir / 'aibudget.sqlite3'}"
    return Budget.open(url, settings=Settings.load(data_dir=data_dir))


def subscribe(budget: Budget, practice_id: str, *, plan: str, policy: str | None = None) -> None:
    """A practice with an active subscription to `plan`, its period begun an hour ago for 30 days."""
    now = int(time.time())
    budget.put_practice(practice_id, name="Praxis Benchmark", policy=policy)
    budget.put_subscription(
        f"sub_{practice_id}",
        practice_id=practice_id,
        plan=plan,
        status="active",
        current_period_start=now - 3_600,
        current_period_end=now + 30 * 86_400,
    )


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50, p90, p99, max and mean of latencies in seconds, in milliseconds (nearest rank)."""
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(ordered[-1] * 1000, 3),
        "mean": round(statistics.fmean(ordered) * 1000, 3),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def environment(data_dir: Path, **env: str) -> dict[str, str]:
    """This process's environment without its AIBUDGET_* settings, for `aibudget` on `data_dir`."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("AIBUDGET_")}
    return clean | {"AIBUDGET_DATA_DIR": str(data_dir), **env}


def serve(data_dir: Path, port: int, workers: int, **env: str) -> subprocess.Popen[bytes]:
    """`aibudget serve` on `port` with the given AIBUDGET_* settings, once every worker is ready
    (each logs "Application startup complete." once; polled, as the log is a file)."""
    clean = environment(data_dir, AIBUDGET_ADMIN_KEY=secrets.token_urlsafe(32), **env)
    log_path = data_dir / "server.log"
    command = [str(SCRIPT), "serve", "--port", str(port), "--workers", str(workers)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=clean, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while log_path.read_text(errors="replace").count("Application startup complete.") < workers:
        if process.poll() is not None:
            raise RuntimeError(f"aibudget serve exited: {log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{workers} workers did not start within 60 s")
        time.sleep(0.2)
    return process
