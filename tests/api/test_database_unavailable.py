"""PostgreSQL goes away under a running server: calls fail closed with 503 `DATABASE_UNAVAILABLE` and
record nothing, `/readyz` says so, and once the database is back the same server serves again — no
restart — and a settle sent again is charged exactly once.

The server reaches PostgreSQL through a TCP relay the test owns; stopping the relay cuts every open
connection and refuses new ones, as a failed network or a stopped database server would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from aibudget import DatabaseUnavailable
from aibudget.client import BudgetClient
from tests.api.conftest import Server, free_port, start_server, stop_server
from tests.api.test_accounts import key
from tests.databases import PostgresServer
from tests.factories import open_practice

LETTER = {"operation": "letter", "model": "gpt-4o-mini", "estimate": {"input_tokens": 1000}}
HOLD_TTL_S = 3


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


class Relay:
    """Forwards TCP connections from a local port to `target` until stopped; can start again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed: stopped
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # the other direction or `stop` closed the pair
        finally:
            for end in (source, sink):
                end.close()

    def stop(self) -> None:
        assert self._listener is not None
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone would not
        self._listener.close()
        with self._lock:
            cut, self._sockets = self._sockets, set()
        for end in cut:
            with contextlib.suppress(OSError):  # already closed by its pump
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@pytest.fixture
def relayed(postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[Server, Relay, str]]:
    """A server whose database connections all pass through a relay; the direct URL for the books."""
    direct = postgres.create_database()
    url = make_url(direct)
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    relay.start()
    server = start_server(
        tmp_path / "var",
        url.set(host="127.0.0.1", port=relay.port).render_as_string(False),
        AIBUDGET_HOLD_TTL_SECONDS=str(HOLD_TTL_S),
        AIBUDGET_SWEEP_INTERVAL_SECONDS="1",
    )
    try:
        yield server, relay, direct
    finally:
        stop_server(server)
        relay.stop()
        postgres.drop_database(direct)


def test_calls_fail_closed_while_the_database_is_gone_and_resume_without_restart(
    relayed: tuple[Server, Relay, str],
) -> None:
    server, relay, _direct = relayed
    with server.budget() as books:
        open_practice(books, "p1", included_usd="5")
    service_key = key(server, "service")
    service = server.client(service_key)
    assert (
        service.post(
            "/v1/authorizations", json={**LETTER, "request_id": "before", "practice_id": "p1"}
        ).status_code
        == 201
    )

    relay.stop()
    down = service.post(
        "/v1/authorizations", json={**LETTER, "request_id": "while-down", "practice_id": "p1"}
    )
    settle = {"request_id": "settled", "practice_id": "p1", "model": "gpt-4o-mini",
              "usage": {"input_tokens": 1000, "output_tokens": 100}}  # fmt: skip
    lost = service.post("/v1/usage", json=settle)
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    with BudgetClient(server.url, service_key) as sdk, pytest.raises(DatabaseUnavailable):
        sdk.authorize(request_id="sdk-while-down", practice_id="p1", operation="letter", model="gpt-4o-mini")

    assert down.status_code == 503, down.text
    assert down.headers["content-type"] == "application/problem+json"
    assert down.json()["error_code"] == "DATABASE_UNAVAILABLE"
    assert down.headers["Retry-After"] == "1"
    assert (lost.status_code, lost.json()["error_code"]) == (503, "DATABASE_UNAVAILABLE")
    assert ready.status_code == 503
    time.sleep(HOLD_TTL_S)  # the sweeper's passes meet the outage and the hold of "before" runs out

    relay.start()
    again = service.post("/v1/usage", json=settle)
    replayed = service.post("/v1/usage", json=settle)
    assert again.status_code == 201, again.text
    assert replayed.status_code == 200
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    with server.budget() as books:
        lines = books.usage_report("p1").rows
        assert [line.request_id for line in lines if line.status == "success"] == ["settled"]
        assert "while-down" not in {line.request_id for line in lines}
        assert books.verify() == []

    def released() -> bool:  # by the same sweeper, which outlived the outage
        with server.budget() as books:
            return books.snapshot("p1").held_micros == 0

    assert wait_for(released, 10), server.logs()
    assert "Traceback" not in server.logs()
