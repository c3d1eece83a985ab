"""The store: migrations build exactly the declared schema on both engines; writers of a practice
serialize (SQLite: up front, for the whole file; PostgreSQL: on the practice's row)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url

from aibudget.errors import ConfigError
from aibudget.store import tables
from aibudget.store.dialect import (
    BACKSTOP_CHECKPOINT_PAGES,
    DEFAULT_CHECKPOINT_PAGES,
    checkpoint,
    is_embedded,
    lock_practices,
    read_transaction,
    write_transaction,
)
from aibudget.store.engine import open_engine
from tests.databases import PostgresServer


def test_migrations_build_exactly_the_declared_tables(empty_database_url: str) -> None:
    engine = open_engine(empty_database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, tables.metadata) == []
        assert context.get_current_revision() is not None
    assert set(inspect(engine).get_table_names()) == set(tables.metadata.tables) | {"alembic_version"}


def test_opening_twice_migrates_once(empty_database_url: str) -> None:
    open_engine(empty_database_url).dispose()
    engine = open_engine(empty_database_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1


def _open(url: str) -> None:
    open_engine(url).dispose()


def test_processes_starting_at_once_migrate_one_at_a_time(empty_database_url: str) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_open, [empty_database_url] * 4)
    with open_engine(empty_database_url, migrate=False).connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url: str) -> None:
    engine = open_engine(sqlite_url)
    with read_transaction(engine) as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_a_write_transaction_holds_the_write_lock_from_its_start(sqlite_url: str, tmp_path: Path) -> None:
    engine = open_engine(sqlite_url)
    path = tmp_path / "var" / "aibudget.sqlite3"
    with write_transaction(engine):
        other = sqlite3.connect(path, timeout=0.1, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN")  # readers are not blocked under WAL
        other.execute("SELECT count(*) FROM practices").fetchone()
        other.execute("ROLLBACK")
        other.close()


def test_concurrent_writers_never_lose_an_update(database_url: str) -> None:
    engine = open_engine(database_url)
    now = datetime.now(UTC)
    with write_transaction(engine) as connection:
        connection.execute(
            tables.practices.insert().values(
                practice_id="p",
                locale="de-CH",
                timezone="UTC",
                policy="strict",
                created_at=now,
                updated_at=now,
            )
        )
        connection.execute(tables.balances.insert().values(practice_id="p"))

    def add_one_hundred_times() -> None:
        for _ in range(100):  # read-modify-write: only safe under the practice's lock
            with write_transaction(engine) as connection:
                lock_practices(connection, ["p"])
                held = connection.execute(select(tables.balances.c.held_micros)).scalar_one()
                connection.execute(tables.balances.update().values(held_micros=held + 1))

    threads = [threading.Thread(target=add_one_hundred_times) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with read_transaction(engine) as connection:
        assert connection.execute(select(tables.balances.c.held_micros)).scalar_one() == 800


def test_instants_round_trip_to_the_microsecond(database_url: str) -> None:
    engine = open_engine(database_url)
    moment = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=1)))
    with write_transaction(engine) as connection:
        connection.execute(
            tables.webhook_events.insert().values(
                event_id="e", source="s", event_type="t", received_at=moment
            )
        )
    with read_transaction(engine) as connection:
        stored = connection.execute(select(tables.webhook_events.c.received_at)).scalar_one()
    assert stored == moment
    assert stored.tzinfo == UTC


def test_naive_instants_are_refused(database_url: str) -> None:
    engine = open_engine(database_url)
    with pytest.raises(Exception, match="naive datetime"), write_transaction(engine) as connection:
        connection.execute(
            tables.webhook_events.insert().values(
                event_id="e", source="s", event_type="t", received_at=datetime(2026, 1, 1)
            )
        )


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "nonsense", "mysql://localhost/x"])
def test_unusable_database_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="AIBUDGET_DATABASE_URL"):
        open_engine(url)


def test_sqlite_syncs_every_commit_when_configured_full(sqlite_url: str) -> None:
    engine = open_engine(sqlite_url, sqlite_synchronous="full")
    with read_transaction(engine) as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    with read_transaction(open_engine(sqlite_url)) as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL, the default


def in_database_file(path: Path, table: str) -> int:
    """Rows of `table` in the SQLite database file itself, leaving its write-ahead log aside."""
    with closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as reader:
        (count,) = reader.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(count)


def test_commits_leave_the_log_to_a_background_checkpoint_only_when_one_runs(sqlite_url: str) -> None:
    with read_transaction(open_engine(sqlite_url)) as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == DEFAULT_CHECKPOINT_PAGES
    with read_transaction(open_engine(sqlite_url, background_checkpoints=True)) as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == BACKSTOP_CHECKPOINT_PAGES


def test_a_checkpoint_copies_the_log_into_the_database_file(sqlite_url: str, tmp_path: Path) -> None:
    engine = open_engine(sqlite_url, background_checkpoints=True)
    path = tmp_path / "var" / "aibudget.sqlite3"
    assert checkpoint(engine) > 0  # the migrations' pages
    with write_transaction(engine) as connection:
        connection.execute(
            tables.practices.insert().values(
                practice_id="p", locale="de-CH", timezone="UTC", policy="strict",
                created_at=datetime.now(UTC), updated_at=datetime.now(UTC),
            )
        )  # fmt: skip
    assert in_database_file(path, "practices") == 0  # committed, in the log only
    assert checkpoint(engine) > 0
    assert in_database_file(path, "practices") == 1
    with read_transaction(engine) as connection:  # and the log is all copied
        busy, pages, copied = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        assert (busy, pages) == (0, copied)


def test_only_sqlite_needs_checkpoints(database_url: str, backend: str) -> None:
    engine = open_engine(database_url)
    assert is_embedded(engine) == (backend == "sqlite")
    copied = checkpoint(engine)
    assert copied > 0 if backend == "sqlite" else copied == 0  # PostgreSQL checkpoints by itself


def test_postgres_connections_give_up_in_seconds_unless_the_url_says_otherwise(
    postgres: PostgresServer,
) -> None:
    url = make_url(postgres.create_database())
    try:
        for query, timeout in (({}, "5"), ({"connect_timeout": "7"}, "7")):
            engine = open_engine(url.update_query_dict(query).render_as_string(hide_password=False))
            connection = engine.raw_connection()
            try:
                options = connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
            finally:
                connection.close()
                engine.dispose()
            assert options["connect_timeout"] == timeout
            assert options["tcp_user_timeout"] == "10000"
            assert options["keepalives"] == "1"
    finally:
        postgres.drop_database(url.render_as_string(hide_password=False))
