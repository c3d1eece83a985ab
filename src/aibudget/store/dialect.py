"""The only code that knows SQLite from PostgreSQL: how a write transaction begins and locks.

Every write to a practice's money runs under one lock per practice, so two calls never read the same
balance and both spend it:

- SQLite allows one writer per file. A write transaction waits its turn in the file's
  `WriterQueue` (`store.writers`), then starts with `BEGIN IMMEDIATE`, which takes the file's write
  lock up front (waiting up to the busy timeout); reads start with a plain `BEGIN` and, under WAL,
  never wait for writers. A deferred `BEGIN` for writes would let two transactions read the same
  balance and fail only when the second one tries to write.
- PostgreSQL allows many writers. A write transaction locks the practice's `balances` row with
  `SELECT ... FOR UPDATE` before it reads anything it will change; other practices proceed in
  parallel. Several rows are always locked in one fixed order (sorted practice ids) so two
  transactions never wait on each other in a cycle.

A PostgreSQL transaction that fails for a passing reason — a serialization failure, a deadlock, a
lost connection — is run again from the start, a few times (`run_transaction`). That is safe because
every call that moves money carries its idempotency key: when the lost connection had in fact
committed, the second run finds the first one's row and replays it instead of charging again.

When the database itself still fails after that — it does not answer, refuses writes (read-only, a
standby after failover, disk full) or stays locked past the busy timeout — the transaction has
rolled back and `DatabaseUnavailable` (503) is raised: aibudget fails closed, never allowing a call
it could not record, and the same request sent again later is safe. The next call tries the
database afresh, so service resumes by itself once it is back — except that after waiting out the
timeouts of a PostgreSQL server that did not answer, calls fail at once for a moment instead of
each waiting as long (`store.outage`).
"""

from __future__ import annotations

import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from sqlalchemy import ColumnElement, Connection, Engine, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.sql.dml import Insert

from aibudget.errors import DatabaseUnavailable
from aibudget.store.outage import Outage
from aibudget.store.sql import Statement
from aibudget.store.waiting import WouldWait, may_wait
from aibudget.store.writers import WAIT_SECONDS, WriterQueue

_WRITE = "aibudget_write"
# A fixed key for pg_advisory_xact_lock, so concurrent start-ups migrate one at a time.
_MIGRATION_LOCK_KEY = 0x0A1B_0D6E
# serialization_failure, deadlock_detected; class 08 (connection exceptions) is matched by prefix
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})
# the server, not the request: connection (08), insufficient resources such as a full disk (53),
# shutting down or starting up (57P), read-only transaction (25006: a standby), a statement cancelled
# (57014: statement_timeout, an operator's cancel) or a lock not had in time (55P03: lock_timeout)
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "25006", "57014", "55P03")
# SQLite's result codes for the same: locked past the busy timeout, read-only, full, I/O, cannot open
_UNAVAILABLE_SQLITE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_FULL", "SQLITE_IOERR",
                       "SQLITE_CANTOPEN")  # fmt: skip
ATTEMPTS = 3
# an answer lost with a commit under way may hide a commit that took: the same request, sent again,
# gets the first result then (every write is idempotent on its request id or reference)
_UNAVAILABLE_DETAIL = (
    "the database is unavailable; the request was not recorded, or its answer was lost: send the same "
    "request again later"
)
_FIRST_BACKOFF_SECONDS = 0.02

T = TypeVar("T")


# SQLite's own: the commit that takes the write-ahead log past this many pages copies the log into
# the database file before it returns, with two fsyncs — milliseconds, paid by one request in a few
# hundred. A server copies it on a thread of its own instead (`checkpoint`); its commits still do it
# past `BACKSTOP_CHECKPOINT_PAGES` (~40 MiB of log), should that thread fall behind.
DEFAULT_CHECKPOINT_PAGES = 1_000
BACKSTOP_CHECKPOINT_PAGES = 10_000
_CHECKPOINT_PASSES = 10


# each SQLite engine's writers' line, for `write_transaction`
_WRITER_QUEUES: weakref.WeakKeyDictionary[Engine, WriterQueue] = weakref.WeakKeyDictionary()
# each PostgreSQL engine's `Outage`, for `run_transaction`
_OUTAGES: weakref.WeakKeyDictionary[Engine, Outage] = weakref.WeakKeyDictionary()


def install_sqlite_transactions(
    engine: Engine, *, synchronous: str = "normal", checkpoint_pages: int = DEFAULT_CHECKPOINT_PAGES
) -> None:
    """Take transaction control from the sqlite3 module so `BEGIN IMMEDIATE` is ours to emit, and
    line up the engine's writers (`store.writers`).

    `synchronous`: under WAL, `normal` survives any crash of the process but may lose the last
    commits on a power cut or OS crash; `full` syncs every commit to disk and costs a sync each.
    `checkpoint_pages`: the size of write-ahead log at which a commit copies it into the database.
    """
    if synchronous not in ("normal", "full"):
        raise ValueError(f"synchronous must be normal or full, not {synchronous!r}")

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGINs from the driver
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={synchronous.upper()}",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={WAIT_SECONDS * 1000}",
            # 64 MiB of page cache per connection (default 2 MiB): the indexes the hot path probes
            # stay in memory as history grows, which keeps authorize and settle flat in its size
            "PRAGMA cache_size=-65536",
            f"PRAGMA wal_autocheckpoint={int(checkpoint_pages)}",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        # straight to the driver: this runs for every transaction, and SQLAlchemy's own execution
        # path costs more than the BEGIN itself
        driver = connection.connection.driver_connection
        assert driver is not None
        if not write:
            driver.execute("BEGIN")
        elif may_wait():
            _begin_writing(driver)
        else:  # on an event loop: a writer that did not pass the queue (the sqlite3 shell) is not waited for
            driver.execute("PRAGMA busy_timeout=0")
            try:
                _begin_writing(driver)
            finally:
                driver.execute(f"PRAGMA busy_timeout={WAIT_SECONDS * 1000}")

    queue = WriterQueue(_sqlite_file(engine), unavailable=_UNAVAILABLE_DETAIL)
    _WRITER_QUEUES[engine] = queue
    event.listen(engine, "engine_disposed", lambda _engine: queue.close())
    # an engine never disposed closes it when collected; at exit the process's end closes it
    weakref.finalize(engine, queue.close).atexit = False


def _begin_writing(driver: sqlite3.Connection) -> None:
    """`BEGIN IMMEDIATE`: SQLite's write lock, waited for as long as the busy timeout allows.

    Raised straight from the driver, a lock held past the timeout would be no `DBAPIError`, and so
    no `DatabaseUnavailable`: it is sorted here (`WouldWait` where the caller may not wait)."""
    try:
        driver.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        if not error.sqlite_errorname.startswith(_UNAVAILABLE_SQLITE):
            raise
        if error.sqlite_errorname == "SQLITE_BUSY" and not may_wait():
            raise WouldWait from None
        raise DatabaseUnavailable(_UNAVAILABLE_DETAIL) from error


def is_embedded(engine: Engine) -> bool:
    """Whether the database runs inside this process (SQLite): a read never waits on a network, and
    someone must call `checkpoint` (PostgreSQL checkpoints by itself)."""
    return engine.dialect.name == "sqlite"


def _sqlite_file(engine: Engine) -> str:
    """The absolute path of the engine's SQLite file, given as a path or a `file:` URI."""
    database = engine.url.database or ""
    if engine.url.query.get("uri") == "true" and database.startswith("file:"):
        database = unquote(urlsplit(database).path)
    return os.path.abspath(database)


def checkpoint(engine: Engine) -> int:
    """Copy SQLite's write-ahead log into the database file, never waiting for a reader or writer:
    pass after pass until all of it is copied (the next writer then starts the log over) or another
    checkpoint runs, at most a few passes; how many of the log's pages are in the file now.
    0 where the database needs no checkpoints."""
    if not is_embedded(engine):
        return 0
    copied = 0
    with engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        for _ in range(_CHECKPOINT_PASSES):
            try:
                busy, pages, done = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.OperationalError as error:  # the file cannot be written: disk full, read-only
                raise DatabaseUnavailable(_UNAVAILABLE_DETAIL) from error
            copied = max(copied, done)
            if busy or pages <= done:
                break
    return copied


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that may change money; committed on success, rolled back on any error."""
    queue = _WRITER_QUEUES.get(engine)
    with queue if queue is not None else nullcontext(), engine.connect() as connection:
        connection = connection.execution_options(**{_WRITE: True})
        with connection.begin():
            yield connection


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A consistent read — every statement sees the same committed state — that never blocks writers.

    SQLite under WAL reads one snapshot from the first read on; PostgreSQL needs `REPEATABLE READ`
    for that (its default gives each statement a newer one), which never fails a transaction that
    only reads.
    """
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            yield connection


def is_transient(error: DBAPIError) -> bool:
    """Whether running the whole transaction again may succeed: the database, not the request, failed."""
    if error.connection_invalidated:
        return True
    sqlstate = getattr(error.orig, "sqlstate", None) or ""
    return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")


def is_unavailable(error: DBAPIError) -> bool:
    """Whether the database failed, not the request: down, unreachable, read-only, full, locked."""
    if is_transient(error) or _connection_failed(error):
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate is None and isinstance(error, OperationalError):  # SQLite's, named
        return str(getattr(error.orig, "sqlite_errorname", "")).startswith(_UNAVAILABLE_SQLITE)
    return isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES)


def _connection_failed(error: DBAPIError) -> bool:
    """Whether the connection to the server failed — lost, or never made — rather than the server
    answering with an error (see also `store.outage`)."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    if error.connection_invalidated or (sqlstate or "").startswith("08"):
        return True
    # a PostgreSQL driver error without a state is a connection that failed; SQLite's name theirs
    return (
        sqlstate is None
        and isinstance(error, OperationalError)
        and getattr(error.orig, "sqlite_errorname", None) is None
    )


class Transaction(Protocol):
    """Runs `work` in one transaction and returns its result (`Budget._read` / `Budget._write`)."""

    def __call__(self, work: Callable[[Connection], T], /) -> T: ...


# the read transaction `shared_reads` opened in this context, and its engine
_SHARED_READ: ContextVar[tuple[Engine, Connection] | None] = ContextVar("aibudget_shared_read", default=None)


@contextmanager
def shared_reads(engine: Engine) -> Iterator[None]:
    """Inside the block, every read `run_transaction` runs on `engine` shares one read transaction, so
    all of them see one committed state: a page of numbers that belong together. Writes inside the
    block run in transactions of their own, and its reads do not see them. Nested blocks share the
    outer one's."""
    if _SHARED_READ.get() is not None:
        yield
        return
    try:
        with read_transaction(engine) as connection:
            token = _SHARED_READ.set((engine, connection))
            try:
                yield
            finally:
                _SHARED_READ.reset(token)
                connection.rollback()  # it only read; and a connection lost meanwhile cannot commit
    except DBAPIError as error:  # the block's own reads raise theirs already sorted
        raise _sorted(error) from error
    except PoolTimeout as error:
        raise DatabaseUnavailable(_UNAVAILABLE_DETAIL) from error


def _sorted(error: DBAPIError) -> Exception:
    """What a database error that is not run again becomes: `DatabaseUnavailable`, or itself."""
    return DatabaseUnavailable(_UNAVAILABLE_DETAIL) if is_unavailable(error) else error


def run_transaction(
    engine: Engine, work: Callable[[Connection], T], *, write: bool, attempts: int = ATTEMPTS
) -> T:
    """`work` in one transaction, run again from the start after a transient failure (see module doc).

    After `attempts` runs the last error is raised; an error of the request itself is raised at once.
    A read inside `shared_reads` runs on that block's transaction, once.
    """
    shared = _SHARED_READ.get()
    if not write and shared is not None and shared[0] is engine:
        try:
            return work(shared[1])
        except DBAPIError as error:
            raise _sorted(error) from error
    if is_embedded(engine):
        return _attempts(engine, work, write=write, attempts=attempts)
    outage = _OUTAGES.get(engine) or _OUTAGES.setdefault(engine, Outage())
    if not outage.admit():
        raise DatabaseUnavailable(_UNAVAILABLE_DETAIL)
    started = time.monotonic()
    unreached = False
    try:
        return _attempts(engine, work, write=write, attempts=attempts)
    except DatabaseUnavailable as unavailable:
        # not a pool with no connection free in time: a busy server, or connections stuck on a cut
        # network, which give up by themselves as failed connections
        cause = unavailable.__cause__
        unreached = isinstance(cause, DBAPIError) and _connection_failed(cause)
        raise
    finally:
        if unreached:
            outage.unreached(time.monotonic() - started)
        else:
            outage.reached()


def _attempts(engine: Engine, work: Callable[[Connection], T], *, write: bool, attempts: int) -> T:
    for attempt in range(1, attempts + 1):
        try:
            with (write_transaction if write else read_transaction)(engine) as connection:
                return work(connection)
        except DBAPIError as error:
            if attempt < attempts and is_transient(error):
                time.sleep(_FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1))
                continue
            raise _sorted(error) from error
        except PoolTimeout as error:  # every pooled connection busy for the pool's whole timeout
            raise DatabaseUnavailable(_UNAVAILABLE_DETAIL) from error
    raise AssertionError("unreachable: the last attempt returns or raises")


# PostgreSQL only (SQLite's write lock covers the file): hand-written, as it runs in every write
_LOCK_PRACTICES = Statement(
    "SELECT practice_id FROM balances WHERE practice_id = ANY(:ids) ORDER BY practice_id FOR UPDATE"
)


def lock_practices(connection: Connection, practice_ids: Sequence[str]) -> None:
    """Serialize writers of these practices' money until the transaction ends (see module doc)."""
    if connection.dialect.name != "postgresql":
        return  # BEGIN IMMEDIATE already holds the whole file
    _LOCK_PRACTICES.run(connection, {"ids": sorted(set(practice_ids))}).fetchall()


def lock_migrations(connection: Connection) -> None:
    """Let one process at a time migrate (SQLite: the write transaction already does)."""
    if connection.dialect.name == "postgresql":
        # another process's migration, and a table's lock for a schema change, may take longer than
        # the lock timeout of calls
        connection.execute(text("SET LOCAL lock_timeout = 0"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})


def insert_ignore(
    connection: Connection,
    table: Table,
    index_elements: Sequence[str],
    where: ColumnElement[bool] | None = None,
) -> Insert:
    """`INSERT ... ON CONFLICT (index_elements) [WHERE partial] DO NOTHING` for this connection's engine."""
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing(index_elements=list(index_elements), index_where=where)


def insert_if_absent(
    connection: Connection,
    table: Table,
    index_elements: Sequence[str],
    values: dict[str, Any],
    *,
    where: ColumnElement[bool] | None = None,
) -> Any | None:
    """Insert the row unless one with the same `index_elements` exists; its primary key if inserted.

    Told by RETURNING, not by rowcount, which drivers report as -1 for such inserts.
    """
    statement = insert_ignore(connection, table, index_elements, where).values(**values)
    inserted = connection.execute(statement.returning(*table.primary_key.columns)).first()
    return None if inserted is None else inserted[0]
