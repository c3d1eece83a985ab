"""Settles of served calls that the database could not take: kept on disk, posted once it is back,
never charged twice, not lost with the process that kept them (`ledger.kept_settles`). On PostgreSQL
behind a relay the test cuts; the proxy's side is in tests/proxy/test_proxy_database_unavailable.py."""

from __future__ import annotations

import json
import logging
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from aibudget import Budget, Settings
from aibudget.ledger.kept_settles import KEPT_DIRECTORY
from tests.databases import PostgresServer
from tests.factories import open_practice
from tests.relay import relayed_budget, relayed_database

LETTER = {"model": "gpt-4o-mini", "input_tokens": 1000, "output_tokens": 300}


def authorize(budget: Budget, request_id: str) -> None:
    budget.authorize(request_id=request_id, practice_id="p1", operation="letter", model="gpt-4o-mini",
                     input_tokens=1000, max_output_tokens=500)  # fmt: skip


def test_a_settle_the_database_cannot_take_is_kept_and_posted_once_it_is_back(
    postgres: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aibudget")
    with relayed_budget(postgres, tmp_path / "var") as (budget, relay):
        open_practice(budget, "p1")
        authorize(budget, "letter-1")
        relay.stop()
        assert budget.settle_or_keep(request_id="letter-1", practice_id="p1", **LETTER) is None
        assert [path.suffix for path in (tmp_path / "var" / KEPT_DIRECTORY).iterdir()] == [".jsonl"]
        relay.start()
        assert budget.snapshot("p1").held_micros > 0  # the hold stays until the settle is posted

        assert budget.post_kept_settles() == 1
        assert "settle of request 'letter-1' kept to post later" in caplog.text
        assert "posted 1 settles kept while the database was unavailable" in caplog.text
        [event] = [row for row in budget.usage_report("p1").rows if row.request_id == "letter-1"]
        assert (event.status, event.cost_micros) == ("success", budget.price(**LETTER).cost_micros)
        assert budget.snapshot("p1").held_micros == 0  # released as settled
        assert budget.post_kept_settles() == 0
        assert budget.verify() == []
        # with the database there, it is an ordinary settle
        posted = budget.settle_or_keep(request_id="letter-2", practice_id="p1", **LETTER)
        assert posted is not None
        assert posted.cost_micros == event.cost_micros
    assert list((tmp_path / "var" / KEPT_DIRECTORY).iterdir()) == []  # nothing left waiting


def test_a_kept_settle_is_charged_once_whatever_reached_the_database_first(
    postgres: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same settle posted meanwhile is replayed, not charged again; another body under the same
    request id cannot ever be posted: logged as an error and let go, not retried for ever."""
    with relayed_budget(postgres, tmp_path / "var") as (budget, relay):
        open_practice(budget, "p1")
        relay.stop()
        budget.settle_or_keep(request_id="same", practice_id="p1", **LETTER)
        budget.settle_or_keep(request_id="other", practice_id="p1", **LETTER)
        relay.start()
        budget.settle(request_id="same", practice_id="p1", **LETTER)
        budget.settle(request_id="other", practice_id="p1", **LETTER | {"output_tokens": 1})

        assert budget.post_kept_settles() == 2
        assert budget.post_kept_settles() == 0
        rows = budget.usage_report("p1").rows
        assert sorted(row.request_id for row in rows) == ["other", "same"]
        assert "kept settle of request 'other' (practice 'p1', model 'gpt-4o-mini'" in caplog.text
        assert "settled with another body" in caplog.text
        assert budget.verify() == []


# opens a Budget on the database given, says so, keeps one settle once told to (the test cuts the
# database first), says so, and waits to be killed
KEEPING_PROCESS = """
import sys, time
from pathlib import Path
from aibudget import Budget, Settings
budget = Budget.open(sys.argv[1], settings=Settings.load(data_dir=Path(sys.argv[2])))
print("open", flush=True)
sys.stdin.readline()
kept = budget.settle_or_keep(request_id="letter-1", practice_id="p1", model="gpt-4o-mini",
                             input_tokens=1000, output_tokens=300)
print("kept" if kept is None else "posted", flush=True)
time.sleep(600)
"""


def test_kept_settles_outlive_a_killed_process(postgres: PostgresServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with relayed_database(postgres) as (url, relay):
        with Budget.open(url, settings=Settings.load(data_dir=data_dir)) as budget:
            open_practice(budget, "p1")
            authorize(budget, "letter-1")
        process = subprocess.Popen(
            [sys.executable, "-c", KEEPING_PROCESS, url, str(data_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert process.stdin is not None
            assert process.stdout is not None
            assert process.stdout.readline() == "open\n"
            relay.stop()
            process.stdin.write("go\n")
            process.stdin.flush()
            assert process.stdout.readline() == "kept\n"
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            process.kill()
        relay.start()
        [left] = (data_dir / KEPT_DIRECTORY).glob("*.jsonl")
        assert json.loads(left.read_text())["request_id"] == "letter-1"
        assert stat.S_IMODE(left.stat().st_mode) == 0o600  # it may name a device: its owner's only

        with Budget.open(url, settings=Settings.load(data_dir=data_dir)) as next_process:
            assert next_process.sweep() == 0  # a sweep posts it: no hold left to expire
            [event] = next_process.usage_report("p1").rows
            price = next_process.price(**LETTER).cost_micros
            assert (event.request_id, event.cost_micros) == ("letter-1", price)
            assert next_process.snapshot("p1").held_micros == 0
            assert next_process.verify() == []
    assert list((data_dir / KEPT_DIRECTORY).iterdir()) == []
