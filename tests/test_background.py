"""`Periodic`: a frequent background worker waits longer after a failed pass, then keeps its pace."""

from __future__ import annotations

import logging
import time

import pytest

from aibudget.background import Periodic
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
