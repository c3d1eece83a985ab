"""PostgreSQL: a transaction that loses its connection or hits a deadlock is run again, and a call that
moves money is still charged exactly once.

The failures are real: the server terminates the backend of a call waiting for a practice's lock
(`pg_terminate_backend`), or two connections lock two rows in opposite orders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from aibudget import Budget, Settings
from aibudget.errors import DatabaseUnavailable
from aibudget.store import tables
from aibudget.store.dialect import ATTEMPTS, is_transient, read_transaction, write_transaction
from tests.databases import PostgresServer, connect
from tests.factories import DECEMBER_2025, open_practice, transcribe

START, END = DECEMBER_2025


@pytest.fixture
def url(postgres: PostgresServer) -> Iterator[str]:
    created = postgres.create_database()
    yield created
    postgres.drop_database(created)


@pytest.fixture
def budget(url: str, tmp_path: Path) -> Iterator[Budget]:
    with Budget.open(url, settings=Settings.load(data_dir=tmp_path / "var")) as opened:
        open_practice(opened, "p1", included_usd="5", current_period_start=START, current_period_end=END)
        yield opened


class PracticeLock:
    """Holds p1's balances row from another connection, so a call of p1 waits for it."""

    def __init__(self, url: str) -> None:
        self.connection = connect(url)
        self.connection.autocommit = False
        self.connection.execute("SELECT 1 FROM balances WHERE practice_id = 'p1' FOR UPDATE")

    def release(self) -> None:
        self.connection.commit()
        self.connection.close()


def kill_waiters(url: str, times: int) -> None:
    """Terminate the backend waiting on p1's lock, `times` times (each retry waits again)."""
    with connect(url) as admin:
        for _ in range(times):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                waiting = admin.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchall()
                if waiting:
                    admin.execute("SELECT pg_terminate_backend(%s)", (waiting[0][0],))
                    break
                time.sleep(0.01)
            else:
                raise AssertionError("no call waited for the practice's lock")


def while_connections_are_killed(url: str, call: Callable[[], Any], kills: int) -> Future[Any]:
    """Run `call` while it waits for p1's lock: its connection is killed `kills` times, then the lock is
    released."""
    lock = PracticeLock(url)
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(call)
        try:
            kill_waiters(url, kills)
        finally:
            lock.release()
        result.exception(timeout=30)
    return result


def count(budget: Budget, table: Any) -> int:
    with read_transaction(budget.engine) as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_an_authorization_whose_connection_dies_is_run_again_and_holds_once(budget: Budget, url: str) -> None:
    call = lambda: budget.authorize(  # noqa: E731
        practice_id="p1", request_id="r1", operation="transcribe", model="whisper-1", audio_seconds=600
    )
    done = while_connections_are_killed(url, call, kills=1)
    assert done.result().held_micros == 60_000  # ten minutes of whisper-1 at 0.006 USD per minute
    assert count(budget, tables.authorizations) == 1
    assert budget.snapshot("p1").held_micros == 60_000
    assert budget.verify() == []


def test_a_settlement_whose_connection_dies_is_charged_once(budget: Budget, url: str) -> None:
    done = while_connections_are_killed(url, lambda: transcribe(budget, "r1", usd="0.25"), kills=ATTEMPTS - 1)
    assert done.result().cost_micros == 250_000
    assert count(budget, tables.usage_events) == 1
    assert budget.snapshot("p1").included_remaining_micros == 5_000_000 - 250_000
    assert budget.verify() == []


def test_a_call_that_keeps_losing_its_connection_fails_after_the_last_attempt_and_writes_nothing(
    budget: Budget, url: str
) -> None:
    done = while_connections_are_killed(url, lambda: transcribe(budget, "r1", usd="0.25"), kills=ATTEMPTS)
    failed = done.exception()
    assert isinstance(failed, DatabaseUnavailable)  # a 503 on the API: nothing recorded, try again
    assert isinstance(failed.__cause__, OperationalError)
    assert count(budget, tables.usage_events) == 0
    assert budget.verify() == []
    assert transcribe(budget, "r1", usd="0.25").replayed is False  # the id is still free


def test_a_deadlock_is_transient_and_a_duplicate_key_is_not(budget: Budget, url: str) -> None:
    open_practice(budget, "p2", included_usd="5", current_period_start=START, current_period_end=END)
    barrier = threading.Barrier(2)

    def lock_both(first: str, second: str) -> BaseException | None:
        try:
            with write_transaction(budget.engine) as connection:
                lock = "SELECT 1 FROM balances WHERE practice_id = '{}' FOR UPDATE"
                connection.exec_driver_sql(lock.format(first))
                barrier.wait(timeout=10)
                connection.exec_driver_sql(lock.format(second))
        except DBAPIError as error:
            return error
        return None

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lock_both, ["p1", "p2"], ["p2", "p1"]))
    errors = [error for error in outcomes if error is not None]
    assert len(errors) == 1, outcomes  # the server broke the cycle by failing one of the two
    assert isinstance(errors[0], DBAPIError)
    assert is_transient(errors[0])

    with pytest.raises(IntegrityError) as duplicate, write_transaction(budget.engine) as connection:
        connection.execute(tables.balances.insert().values(practice_id="p1"))
    assert not is_transient(duplicate.value)


def test_pooled_connections_the_server_dropped_are_replaced_without_failing_a_call(
    budget: Budget, url: str
) -> None:
    budget.snapshot("p1")  # the pool now holds an idle connection
    with connect(url) as admin:
        dropped = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert dropped is not None
    assert dropped[0] >= 1
    assert transcribe(budget, "r1", usd="0.25").cost_micros == 250_000
    assert count(budget, tables.usage_events) == 1


@pytest.mark.parametrize(
    ("options", "sqlstate"),
    [("-c lock_timeout=300", "55P03"), ("-c lock_timeout=0 -c statement_timeout=300", "57014")],
)
def test_a_call_that_waits_too_long_for_its_practice_fails_as_unavailable_and_writes_nothing(
    url: str, tmp_path: Path, options: str, sqlstate: str
) -> None:
    """A practice's row held by a stuck session: its calls fail with 503 when the lock timeout (or a
    statement timeout) runs out, instead of waiting as long as the lock is held."""
    timed = make_url(url).update_query_dict({"options": options}).render_as_string(hide_password=False)
    with Budget.open(timed, settings=Settings.load(data_dir=tmp_path / "var")) as budget:
        open_practice(budget, "p1", included_usd="5", current_period_start=START, current_period_end=END)
        lock = PracticeLock(url)
        try:
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as unavailable:
                transcribe(budget, "r1", usd="0.25")
            waited = time.monotonic() - started
        finally:
            lock.release()
        assert waited < 3
        assert getattr(unavailable.value.__cause__, "orig", None).sqlstate == sqlstate  # type: ignore[union-attr]
        assert count(budget, tables.usage_events) == 0
        assert transcribe(budget, "r1", usd="0.25").cost_micros == 250_000  # the same call, once free


def test_calls_wait_at_most_five_seconds_for_a_lock_unless_the_url_says_otherwise(budget: Budget) -> None:
    with read_transaction(budget.engine) as connection:
        assert connection.exec_driver_sql("SHOW lock_timeout").scalar_one() == "5s"
