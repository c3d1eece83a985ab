"""`aibudget serve`, run as an operator runs it: the console script in its own process, a fresh data
directory and no `AIBUDGET_ADMIN_KEY`. The first start makes an admin key and prints it once; later
starts print only the address; two workers serve the same database and count metrics together."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from aibudget import Budget, Settings
from tests.api.conftest import free_port
from tests.conftest import EXECUTABLE, Aibudget
from tests.store.test_engine import in_database_file

KEY = re.compile(r"aib_[0-9a-f]{16}_[A-Za-z0-9_-]+")


@dataclass
class Served:
    url: str
    stdout: str


@contextmanager
def serving(data_dir: Path, *args: str, **env: str) -> Iterator[Served]:
    """`aibudget serve` on a free port until the block ends; waits until /healthz answers."""
    assert EXECUTABLE
    port = free_port()
    clean = {name: value for name, value in os.environ.items() if not name.startswith("AIBUDGET_")}
    clean |= {"AIBUDGET_DATA_DIR": str(data_dir), "COLUMNS": "200", **env}
    out, err = data_dir.parent / "serve.out", data_dir.parent / "serve.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [EXECUTABLE, "serve", "--port", str(port), *args], env=clean, cwd=data_dir.parent,
            stdout=stdout, stderr=stderr,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"serve exited with {process.returncode}:\n{err.read_text()}"
            assert time.monotonic() < deadline, f"serve did not answer within 60 s:\n{err.read_text()}"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield Served(url, out.read_text())
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def subscribed_practice(data_dir: Path) -> None:
    now = int(time.time())
    url = f"sqlite:///{data_dir / 'aibudget.sqlite3'}"
    with Budget.open(url, settings=Settings.load(data_dir=data_dir)) as budget:
        budget.put_practice("praxis-1")
        budget.put_subscription("sub_1", practice_id="praxis-1", status="active",
                                current_period_start=now - 60, current_period_end=now + 86_400)  # fmt: skip


def authorize(url: str, key: str, request_id: str) -> int:
    body = {
        "practice_id": "praxis-1",
        "request_id": request_id,
        "operation": "letter",
        "model": "gpt-4o-mini",
    }
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{url}/v1/authorizations", json=body, headers=headers, timeout=10).status_code


def test_the_first_start_prints_an_admin_key_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with serving(data_dir) as first:
        keys = KEY.findall(first.stdout)
        assert len(keys) == 1, first.stdout
        assert f"{first.url}/docs" in first.stdout
        assert f"{first.url}/admin" in first.stdout
        subscribed_practice(data_dir)
        assert authorize(first.url, keys[0], "r1") == 201
        assert authorize(first.url, keys[0] + "x", "r2") == 401
    with serving(data_dir) as again:
        assert KEY.search(again.stdout) is None, again.stdout
        assert f"{again.url}/docs" in again.stdout
        assert authorize(again.url, keys[0], "r3") == 201  # the first key still works


def test_no_key_is_made_when_the_admin_key_is_configured(tmp_path: Path) -> None:
    admin_key = "a" * 40
    with serving(tmp_path / "var", AIBUDGET_ADMIN_KEY=admin_key) as served:
        assert KEY.search(served.stdout) is None
        assert f"{served.url}/docs" in served.stdout
        assert httpx.get(f"{served.url}/readyz").status_code == 200


def test_two_workers_serve_one_database_and_count_metrics_together(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with serving(data_dir, "--workers", "2") as served:
        [key] = KEY.findall(served.stdout)
        subscribed_practice(data_dir)
        with httpx.Client(base_url=served.url, timeout=10) as client:
            # new connections, so the kernel spreads them over both workers
            assert all(httpx.get(f"{served.url}/healthz").status_code == 200 for _ in range(20))
            assert [authorize(served.url, key, f"r{n}") for n in range(10)] == [201] * 10
            metrics = client.get("/metrics").text
    healthz = re.search(
        r'aibudget_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)', metrics
    )
    assert healthz is not None
    assert float(healthz.group(1)) >= 20  # every worker's count, whichever worker answered /metrics
    assert re.search(r'aibudget_authorizations_total\{outcome="authorized",reason="none"\} 10\.0', metrics)


def test_the_server_copies_sqlites_log_into_the_database_file_itself(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with serving(data_dir) as served:
        [key] = KEY.findall(served.stdout)
        subscribed_practice(data_dir)
        assert authorize(served.url, key, "r1") == 201
        # a commit alone leaves it in the log until 1,000 pages are written; the server does not wait
        deadline = time.monotonic() + 10
        while in_database_file(data_dir / "aibudget.sqlite3", "authorizations") == 0:
            assert time.monotonic() < deadline, "the authorization stayed in the write-ahead log"
            time.sleep(0.05)


def test_a_port_in_use_exits_2_before_anything_is_made(aibudget: Aibudget, workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = aibudget("serve", "--port", str(taken.getsockname()[1]))
    assert (done.code, done.stdout) == (2, "")
    assert "--port" in done.message
    assert not (workdir / "var" / "aibudget.sqlite3").exists()
