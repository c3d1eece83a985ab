"""Calls from an event loop run on it while they need not wait, and go on on a worker thread from
the step that would: the line of writers held by another thread or process, or a step that waits for
an outside service. The loop keeps serving meanwhile, and the call's answer is the same."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from aibudget import Budget, Settings
from aibudget.errors import DatabaseUnavailable
from aibudget.store import tables
from aibudget.store.dialect import write_transaction
from aibudget.store.waiting import off_or_on_the_loop, then
from aibudget.store.writers import SUFFIX
from tests.api.conftest import Server, start_server, stop_server
from tests.api.test_gate import authorize, open_practice


@pytest.fixture
def budget(tmp_path: Path) -> Iterator[Budget]:
    opened = Budget.open(
        f"sqlite:///{tmp_path / 'aibudget.sqlite3'}", settings=Settings.load(data_dir=tmp_path)
    )
    with opened:
        yield opened


def plans(budget: Budget) -> set[str]:
    with budget.engine.connect() as connection:
        return set(connection.execute(select(tables.plans.c.lookup_key)).scalars())


def plan_written_on(budget: Budget, plan_id: str) -> int:
    """Writes a plan; the thread it was written on."""
    budget.put_plan(plan_id, included_usd="5")
    return threading.get_ident()


async def on_loop_and_thread(call: object) -> tuple[int, int]:
    assert callable(call)
    return threading.get_ident(), await off_or_on_the_loop(call, quick_commits=True)


def test_a_write_nobody_else_holds_up_runs_on_the_event_loop(budget: Budget) -> None:
    loop_thread, written_on = asyncio.run(on_loop_and_thread(lambda: plan_written_on(budget, "basic")))
    assert written_on == loop_thread
    assert plans(budget) == {"basic"}


def test_a_write_behind_another_thread_s_goes_on_on_a_worker_thread_and_the_loop_keeps_serving(
    budget: Budget,
) -> None:
    inside, leave = threading.Event(), threading.Event()

    def other_writer() -> None:
        with write_transaction(budget.engine):
            inside.set()
            leave.wait(10)

    holder = threading.Thread(target=other_writer)
    holder.start()
    assert inside.wait(10)

    async def main() -> tuple[int, int, int]:
        call = asyncio.ensure_future(on_loop_and_thread(lambda: plan_written_on(budget, "waited")))
        ticks = 0
        for _ in range(5):  # the loop goes on while the write waits in line
            await asyncio.sleep(0.02)
            ticks += 1
        assert not call.done()
        leave.set()
        loop_thread, written_on = await call
        return ticks, loop_thread, written_on

    try:
        ticks, loop_thread, written_on = asyncio.run(main())
    finally:
        leave.set()
        holder.join()
    assert ticks == 5
    assert written_on != loop_thread
    assert plans(budget) == {"waited"}


def test_a_step_that_waits_for_an_outside_service_goes_on_on_a_thread_without_doing_the_first_again(
    budget: Budget,
) -> None:
    steps: list[tuple[str, int]] = []

    def call() -> str:
        steps.append(("first", threading.get_ident()))
        return then(lambda: steps.append(("rest", threading.get_ident())) or "done")

    async def main() -> tuple[int, str]:
        return threading.get_ident(), await off_or_on_the_loop(call, quick_commits=True)

    loop_thread, answer = asyncio.run(main())
    assert answer == "done"
    [(first, first_on), (rest, rest_on)] = steps
    assert (first, rest) == ("first", "rest")
    assert first_on == loop_thread != rest_on
    assert then(lambda: "outside a loop, at once") == "outside a loop, at once"


def test_where_commits_wait_for_the_disk_or_a_network_calls_are_made_from_a_worker_thread(
    budget: Budget, tmp_path: Path, database_url: str
) -> None:
    loop_thread, written_on = asyncio.run(
        _slow_commits(lambda: plan_written_on(budget, "slow"))  # the same call, taken as slow
    )
    assert written_on != loop_thread
    assert plans(budget) == {"slow"}
    assert budget.quick_commits
    full = Settings.load(data_dir=tmp_path / "full", sqlite_synchronous="full")
    with Budget.open(f"sqlite:///{tmp_path / 'full.sqlite3'}", settings=full) as synced:
        assert not synced.quick_commits
    with Budget.open(database_url, settings=Settings.load(data_dir=tmp_path / "any")) as any_engine:
        assert any_engine.quick_commits == database_url.startswith("sqlite")


async def _slow_commits(call: object) -> tuple[int, int]:
    assert callable(call)
    return threading.get_ident(), await off_or_on_the_loop(call, quick_commits=False)


@contextmanager
def writers_line_held(database: Path) -> Iterator[Callable[[], None]]:
    """The writers' line taken, as another aibudget process's write transaction takes it; yields
    the release."""
    queue_file = os.open(f"{database}{SUFFIX}", os.O_RDONLY | os.O_CREAT)
    fcntl.flock(queue_file, fcntl.LOCK_EX)
    try:
        yield lambda: fcntl.flock(queue_file, fcntl.LOCK_UN)
    finally:
        os.close(queue_file)


@contextmanager
def sqlite_lock_held(database: Path) -> Iterator[Callable[[], None]]:
    """SQLite's write lock taken by a program that does not queue (the sqlite3 shell, a script)."""
    with closing(sqlite3.connect(database, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        yield lambda: other.execute("ROLLBACK")


@pytest.mark.parametrize(
    "held", [writers_line_held, sqlite_lock_held], ids=["writers' line", "SQLite's lock"]
)
def test_the_server_answers_while_a_call_waits_for_another_process_s_write(
    tmp_path: Path, held: Callable[[Path], AbstractContextManager[Callable[[], None]]]
) -> None:
    server = start_server(tmp_path / "var")
    try:
        _answers_while_the_line_is_held(server, held)
    finally:
        stop_server(server)


def _answers_while_the_line_is_held(
    server: Server, held: Callable[[Path], AbstractContextManager[Callable[[], None]]]
) -> None:
    with server.budget() as books:
        practice_id = open_practice(books)
        _, service_key = books.create_key(role="service")
    database = server.data_dir / "aibudget.sqlite3"
    with held(database) as release, server.client(service_key) as service, server.client() as probe:
        waiting: dict[str, httpx.Response] = {}
        caller = threading.Thread(
            target=lambda: waiting.setdefault("answer", authorize(service, practice_id, "behind"))
        )
        caller.start()
        time.sleep(0.3)
        started = time.monotonic()
        health = probe.get("/healthz")
        answered_in = time.monotonic() - started
        assert caller.is_alive(), "the authorization waits for the line"
        release()
        caller.join(10)
    assert health.status_code == 200
    assert answered_in < 1.0
    assert waiting["answer"].status_code == 201, waiting["answer"].text
    with server.budget() as books:
        assert books.snapshot(practice_id).held_micros > 0
        assert books.verify() == []


def test_sqlite_s_lock_held_past_the_busy_timeout_is_database_unavailable(
    budget: Budget, tmp_path: Path
) -> None:
    """Regression: the lock's error came straight from the driver, unsorted: a 500, not a 503."""
    with sqlite_lock_held(tmp_path / "aibudget.sqlite3"), pytest.raises(DatabaseUnavailable):
        budget.put_plan("never", included_usd="5")  # waits out the busy timeout: 30 s
    assert plans(budget) == set()
