"""SQLite's writers wait in line: the queue's file is locked exactly while a write transaction runs,
a process's line gives up with `DatabaseUnavailable` after its wait, a forked child queues on its own,
and the file is closed with the engine."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from aibudget import Budget, Settings
from aibudget.errors import DatabaseUnavailable
from aibudget.store.dialect import read_transaction, write_transaction
from aibudget.store.engine import open_engine
from aibudget.store.writers import SUFFIX, WriterQueue

DETAIL = "the database is unavailable"


def locked_by_someone(path: Path) -> bool:
    """Whether another open file holds `path`'s advisory lock (flock conflicts across open files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's own lock, if it got one
    return False


def test_the_queue_is_held_exactly_while_a_write_transaction_runs(tmp_path: Path) -> None:
    database = tmp_path / "aibudget.sqlite3"
    engine = open_engine(f"sqlite:///{database}")
    queue_file = Path(f"{database}{SUFFIX}")
    with write_transaction(engine):
        assert locked_by_someone(queue_file)
    assert not locked_by_someone(queue_file)
    with read_transaction(engine):  # readers never queue
        assert not locked_by_someone(queue_file)
    with pytest.raises(RuntimeError), write_transaction(engine):  # a transaction that fails lets go too
        raise RuntimeError("the work failed")
    assert not locked_by_someone(queue_file)


def test_a_writer_that_waits_past_its_line_s_wait_gets_database_unavailable(tmp_path: Path) -> None:
    queue = WriterQueue(str(tmp_path / "db.sqlite3"), unavailable=DETAIL, wait_seconds=0.2)
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with queue:
            inside.set()
            leave.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    with pytest.raises(DatabaseUnavailable, match=DETAIL), queue:
        pass
    leave.set()
    holder.join()
    with queue:  # served again once the line moves
        pass


def _take_a_turn_in_a_child(queue: WriterQueue, released: str, answer: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    with queue:
        answer.put(os.path.exists(released))


def test_a_forked_child_queues_behind_its_parent_not_beside_it(tmp_path: Path) -> None:
    queue = WriterQueue(str(tmp_path / "db.sqlite3"), unavailable=DETAIL)
    released = tmp_path / "released"
    context = multiprocessing.get_context("fork")
    answer = context.SimpleQueue()
    with queue:  # the parent's open file is locked when the child is forked
        child = context.Process(target=_take_a_turn_in_a_child, args=(queue, str(released), answer))
        child.start()
        child.join(0.5)
        assert child.is_alive(), "the child took its turn while the parent held the queue"
        released.touch()
    child.join(10)
    assert child.exitcode == 0
    assert answer.get() is True  # its turn came after the parent's ended


def open_queue_files(database: Path) -> int:
    target = f"{database}{SUFFIX}"
    return sum(os.path.realpath(f"/proc/self/fd/{fd}") == target for fd in os.listdir("/proc/self/fd"))


def test_closing_the_budget_closes_the_queue_s_file(tmp_path: Path) -> None:
    database = tmp_path / "aibudget.sqlite3"
    budget = Budget.open(f"sqlite:///{database}", settings=Settings.load(data_dir=tmp_path / "var"))
    budget.put_practice("p1", name="Praxis")  # a write: the queue's file is open
    assert open_queue_files(database) == 1
    budget.close()
    assert open_queue_files(database) == 0


def test_a_queue_whose_file_cannot_be_made_answers_database_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = WriterQueue(str(tmp_path / "gone" / "db.sqlite3"), unavailable=DETAIL)  # no such directory
    with pytest.raises(DatabaseUnavailable, match=f"^{DETAIL}$"), queue:
        pass
    assert "db.sqlite3-writers cannot be used: No such file or directory" in caplog.text
    (tmp_path / "gone").mkdir()
    with queue:  # its line was let go: the next writer is served
        pass
