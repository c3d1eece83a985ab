"""The disk fills under a running SQLite server: writes fail closed with 503 `DATABASE_UNAVAILABLE`,
nothing is half-written, reads still answer, and once there is room again the same server — no
restart — records the refused settle exactly once.

The disk is filled for the server process alone with its file size limit (`RLIMIT_FSIZE`, set with
`prlimit` on the running process): a write past the limit fails as one past the end of a full disk
does, while the test's own process reads and checks the books. SQLite appends every transaction to
its write-ahead log, so the test first truncates the log and then sets the limit a little above the
largest file the server writes; the log reaches it after about ten settles.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from aibudget import Budget
from aibudget.ledger.reports import UsageLine
from aibudget.store import tables
from tests.api.conftest import Server, start_server, stop_server
from tests.api.test_accounts import key
from tests.factories import open_practice

ROOM_BYTES = 256 * 1024  # what is left on the "disk" past the largest file; a settle takes ~20 KB
MAX_CALLS = 2_000  # bound: the log is full long before


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = start_server(tmp_path / "var")
    try:
        yield started
    finally:
        stop_server(started)


def settle(request_id: str) -> dict[str, object]:
    return {"request_id": request_id, "practice_id": "p1", "model": "gpt-4o-mini",
            "usage": {"input_tokens": 1000, "output_tokens": 200}, "meta": {"feature": "letter"}}  # fmt: skip


def fill_the_disk(server: Server, books: Budget) -> None:
    """Empty the write-ahead log, then leave the server `ROOM_BYTES` past its largest file."""
    with books.engine.connect() as connection:
        busy, _, _ = connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)")).one()
    assert busy == 0, "the server held a read open; the log could not be emptied"
    largest = max(path.stat().st_size for path in server.data_dir.iterdir() if path.is_file())
    resource.prlimit(
        server.process.pid, resource.RLIMIT_FSIZE, (largest + ROOM_BYTES, resource.RLIM_INFINITY)
    )


def make_room(server: Server) -> None:
    resource.prlimit(
        server.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    )


def authorization(request_id: str) -> dict[str, object]:
    return {"request_id": request_id, "practice_id": "p1", "operation": "letter", "model": "gpt-4o-mini"}


def until_refused(service: httpx.Client, path: str, body: Callable[[str], dict[str, object]]) -> list[str]:
    """Send new requests until one is refused; the ids acknowledged, the refused one last."""
    sent = []
    for number in range(MAX_CALLS):
        sent.append(f"{path}-{number}")
        answer = service.post(path, json=body(sent[-1]))
        if answer.status_code != 201:
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["error_code"] == "DATABASE_UNAVAILABLE"
            assert answer.headers["Retry-After"] == "1"
            return sent
    raise AssertionError(f"{MAX_CALLS} calls to {path} fitted in {ROOM_BYTES} bytes")


def test_a_full_disk_refuses_writes_with_503_and_the_same_server_recovers(server: Server) -> None:
    with server.budget() as books:
        open_practice(books, "p1", included_usd="1000")
        fill_the_disk(server, books)
    service = server.client(key(server, "service"))
    *settled, refused_settle = until_refused(service, "/v1/usage", settle)
    # a smaller write may still fit into what the refused one left; sooner or later none does
    *held, refused_hold = until_refused(service, "/v1/authorizations", authorization)
    read = service.get("/v1/practices/p1/budget")  # reading needs no room
    assert read.status_code == 200, read.text

    def books_hold(events: list[str], holds: list[str]) -> None:
        with server.budget() as books:
            rows = books.usage_report("p1").rows
            assert sorted(row.request_id for row in rows if isinstance(row, UsageLine)) == sorted(events)
            with books.engine.connect() as connection:
                made = connection.execute(select(tables.authorizations.c.request_id)).scalars()
                assert sorted(made) == sorted(holds)
            assert books.verify() == []

    books_hold(settled, held)  # nothing of the refused calls, everything acknowledged, once
    assert len(settled) >= 3, "the disk must fill under load, not at the first write"

    make_room(server)
    assert service.post("/v1/usage", json=settle(refused_settle)).status_code == 201
    assert service.post("/v1/usage", json=settle(refused_settle)).status_code == 200
    assert service.post("/v1/authorizations", json=authorization(refused_hold)).status_code == 201
    books_hold([*settled, refused_settle], [*held, refused_hold])
    assert "Traceback" not in server.logs()
