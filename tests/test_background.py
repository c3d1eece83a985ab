"""`Periodic`: a frequent background worker waits longer after a failed pass, then keeps its pace;
the server starts the workers its database needs and stops them all."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest

from aibudget import Budget
from aibudget.api.app import create_app
from aibudget.background import _MALLOC_TRIM, Periodic, return_free_memory
from aibudget.errors import DatabaseUnavailable


def test_a_frequent_worker_pauses_after_a_failure_then_keeps_its_pace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started: list[float] = []

    def work() -> int:
        started.append(time.monotonic())
        if len(started) == 1:
            raise DatabaseUnavailable("away")
        return 0

    worker = Periodic(work, interval=0.01, name="frequent", done=None, pause_after_failure=0.5)
    with caplog.at_level(logging.WARNING, logger="aibudget.background"):
        worker.start()
        deadline = time.monotonic() + 10
        while len(started) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.stop()
    assert len(started) >= 4
    assert started[1] - started[0] >= 0.5  # paused after the failure
    assert started[3] - started[2] < 0.5  # back at its interval after a pass that worked
    assert worker.passes >= 3
    assert "frequent: the database is unavailable; retrying in 0.5 s" in caplog.text


def resident_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(_MALLOC_TRIM is None, reason="glibc only: other C libraries need no such call")
def test_memory_freed_between_live_objects_goes_back_to_the_system() -> None:
    blocks = [bytes(2000) + bytes([n % 256]) for n in range(60_000)]  # ~120 MiB from malloc
    kept = blocks[::20]  # live objects between the freed ones: glibc cannot shrink its heap
    del blocks
    before = resident_mib()
    assert return_free_memory() == 1
    assert before - resident_mib() >= 60
    assert len(kept) == 3_000


def test_the_server_copies_the_log_only_where_the_database_needs_it(budget: Budget, backend: str) -> None:
    app = create_app(budget=budget)

    async def threads_while_serving() -> set[str]:
        async with app.router.lifespan_context(app):
            return {thread.name for thread in threading.enumerate()}

    running = asyncio.run(threads_while_serving())
    assert {"aibudget-memory", "aibudget-sweeper"} <= running
    assert ("aibudget-checkpoint" in running) == (backend == "sqlite")
    after = {thread.name for thread in threading.enumerate()}
    assert not {"aibudget-memory", "aibudget-checkpoint", "aibudget-sweeper"} & after
