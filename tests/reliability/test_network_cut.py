"""A network cut between aibudget and PostgreSQL — packets dropped, nothing refused, as when a link or
a host fails — fails calls with `DatabaseUnavailable` in seconds instead of leaving them waiting for
the quarter of an hour TCP retries for, and the calls after it fail — or, under fail-open, are
admitted — at once; service resumes once the network is back. Meanwhile the server keeps answering
what needs no database: a call waiting on the network holds up no other.

The cut is a firewall rule dropping the packets to a relay in front of PostgreSQL, so it needs root
and iptables (`scripts/ensure-iptables`); without them the test is skipped with the reason — or
fails, when `AIBUDGET_REQUIRE_NETWORK_CUT=1` (set by CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from aibudget import DatabaseUnavailable
from aibudget.store.outage import QUIET_SECONDS, SLOW_SECONDS
from tests.api.test_accounts import key
from tests.api.test_database_unavailable import LETTER, authorize
from tests.conftest import wait_until
from tests.databases import PostgresServer
from tests.factories import open_practice
from tests.relay import relayed_budget, relayed_server

SECONDS_AT_MOST = 60  # the engine's settings give up after ~15 s; TCP alone would wait ~15 minutes


IPTABLES = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
# read at import: each test runs with the AIBUDGET_* variables cleared (tests/conftest.py)
REQUIRED = os.environ.get("AIBUDGET_REQUIRE_NETWORK_CUT") == "1"


def _rule(action: str, port: int) -> subprocess.CompletedProcess[str]:
    assert IPTABLES is not None
    command = [IPTABLES, action, "INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "DROP"]
    return subprocess.run(command, capture_output=True, text=True, check=False)


@contextmanager
def cut(port: int) -> Iterator[None]:
    """Drop every packet sent to `port` on the loopback interface while the block runs."""
    added = _rule("-A", port) if IPTABLES else None
    if added is None or added.returncode != 0:
        reason = "no iptables" if added is None else f"iptables refused: {added.stderr.strip()}"
        message = f"the network cannot be cut here ({reason}; needs root, see scripts/ensure-iptables)"
        if REQUIRED:
            pytest.fail(message + " (AIBUDGET_REQUIRE_NETWORK_CUT=1)", pytrace=False)
        pytest.skip(message)
    try:
        yield
    finally:
        _rule("-D", port)


def test_a_call_across_a_cut_network_fails_in_seconds_the_next_at_once_and_service_resumes(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """The first call waits out the connection's timeouts; the calls after it do not wait again
    (`store.outage`) until the server answers again."""
    with relayed_budget(postgres, tmp_path / "var") as (budget, relay):
        open_practice(budget, "p1")  # the pool now holds a connection through the relay
        calls = ThreadPoolExecutor(max_workers=1)
        with cut(relay.port):
            pending = calls.submit(budget.snapshot, "p1")
            with pytest.raises(DatabaseUnavailable):
                pending.result(timeout=SECONDS_AT_MOST)  # TimeoutError when it still waits
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable):
                budget.authorize(request_id="r1", practice_id="p1", operation="letter", model="gpt-4o-mini")
            assert time.monotonic() - started < SLOW_SECONDS
        calls.shutdown(wait=False)
        time.sleep(QUIET_SECONDS)  # then one call tries the server again
        assert budget.snapshot("p1").practice_id == "p1"  # the network is back: served again
        assert budget.authorize(request_id="r1", practice_id="p1", operation="letter", model="gpt-4o-mini")


def test_the_server_answers_its_health_check_while_a_call_waits_on_a_cut_network(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    with relayed_server(postgres, tmp_path / "var") as (server, relay):
        with server.budget() as books:
            open_practice(books, "p1")
        backend = server.client(key(server, "service"))
        backend.timeout = httpx.Timeout(SECONDS_AT_MOST)
        assert backend.get("/v1/practices/p1/budget").status_code == 200  # pooled connections, in use
        calls = ThreadPoolExecutor(max_workers=1)
        with cut(relay.port):
            waiting = calls.submit(
                backend.post, "/v1/authorizations", json={**LETTER, "request_id": "r1", "practice_id": "p1"}
            )
            time.sleep(1)  # the call's key check now waits on the cut network
            assert not waiting.done()
            health = httpx.get(f"{server.url}/healthz", timeout=3)  # httpx.ReadTimeout when held up
            assert health.status_code == 200
            refused = waiting.result(timeout=SECONDS_AT_MOST)
            assert (refused.status_code, refused.json()["error_code"]) == (503, "DATABASE_UNAVAILABLE")
        calls.shutdown(wait=False)


def test_with_fail_open_calls_across_a_cut_network_are_admitted_at_once_after_the_first(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """Fail-open is for availability: after the first call waited out the cut (and was admitted), the
    next known callers are admitted at once, not each after the same wait (`store.outage`)."""
    with relayed_server(postgres, tmp_path / "var", AIBUDGET_FAIL_OPEN="true") as (server, relay):
        with server.budget() as books:
            open_practice(books, "p1")
        desktop = server.client(key(server, "practice", "p1"))
        desktop.timeout = httpx.Timeout(SECONDS_AT_MOST)
        assert authorize(desktop, "before").status_code == 201  # the key is now known to this server
        with cut(relay.port):
            first = authorize(desktop, "first-across-the-cut")
            started = time.monotonic()
            second = authorize(desktop, "second-across-the-cut")
            waited = time.monotonic() - started
        assert (first.status_code, first.json()["status"]) == (201, "admitted_without_hold")
        assert (second.status_code, second.json()["status"]) == (201, "admitted_without_hold")
        assert waited < SLOW_SECONDS

        def recorded() -> bool:  # once the network is back
            with server.budget() as books:
                return len(books.fail_open_admissions("p1")) == 2

        wait_until(recorded, 30)
