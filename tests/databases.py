"""The engines under test: a test that asks for `database_url` (or `budget`, or a server) runs
twice, on a real SQLite file and on a real PostgreSQL database of its own; a test about SQLite alone
asks for `sqlite_url`.

`AIBUDGET_TEST_POSTGRES_URL` names a server to use (its user must be allowed to create databases).
Without it, the session starts a throwaway server from the PostgreSQL binaries on the machine
(`initdb`, `pg_ctl`; as the `postgres` user when the tests run as root, which `initdb` refuses) on a
free port in a temporary directory, and removes it afterwards. When neither is possible the
PostgreSQL half of the suite is skipped with the reason — or fails, when `AIBUDGET_REQUIRE_POSTGRES=1`
(set by CI, so CI always covers PostgreSQL).

Every test gets its own PostgreSQL database, copied from a template migrated once per session.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from aibudget.store.engine import open_engine

TEMPLATE = "aibudget_template"


def connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A plain psycopg connection (autocommit) to the database of a SQLAlchemy URL."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(plain, autocommit=True)


@dataclass
class PostgresServer:
    """A server the tests may create databases on; `url` connects to its maintenance database."""

    url: str

    def _admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        return connect(self.url)

    def url_of(self, database: str) -> str:
        url = make_url(self.url).set(drivername="postgresql+psycopg", database=database)
        return url.render_as_string(hide_password=False)

    def create_database(self, template: str | None = TEMPLATE) -> str:
        """A new, empty database (migrated when copied from the template); its URL."""
        name = f"aibudget_test_{secrets.token_hex(6)}"
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url_of(name)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _binaries() -> tuple[str, str] | None:
    for directory in [None, *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        initdb = shutil.which("initdb", path=directory)
        pg_ctl = shutil.which("pg_ctl", path=directory)
        if initdb and pg_ctl:
            return initdb, pg_ctl
    return None


class _Throwaway:
    """A PostgreSQL cluster in a temporary directory, tuned for tests (no fsync: it is thrown away)."""

    def __init__(self, initdb: str, pg_ctl: str) -> None:
        self.pg_ctl = pg_ctl
        self.root = Path(tempfile.mkdtemp(prefix="aibudget-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root and there is no 'postgres' user to own the cluster"
                ) from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self._run([initdb, "-D", str(self.root / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--locale=C", "--no-sync"])  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run([pg_ctl, "-D", str(self.root / "data"), "-l", str(self.root / "server.log"), "-w",
                   "-t", "60", "-o", options, "start"])  # fmt: skip
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, command: list[str]) -> None:
        done = subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(command[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}"
            )

    def stop(self) -> None:
        try:
            self._run([self.pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL tests cannot run: {reason}"
    if os.environ.get("AIBUDGET_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " (AIBUDGET_REQUIRE_POSTGRES=1)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, with the migrated template database in place."""
    throwaway = None
    url = os.environ.get("AIBUDGET_TEST_POSTGRES_URL")
    if not url:
        binaries = _binaries()
        if binaries is None:
            _unavailable("AIBUDGET_TEST_POSTGRES_URL is unset and no initdb/pg_ctl was found")
            return
        try:
            throwaway = _Throwaway(*binaries)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as failed:
            _unavailable(f"starting a throwaway server failed: {failed}")
            return
        url = throwaway.url
    server = PostgresServer(url)
    try:
        with server._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
        open_engine(server.url_of(TEMPLATE)).dispose()
    except psycopg.OperationalError as failed:
        if throwaway is not None:
            throwaway.stop()
        _unavailable(f"{make_url(url).render_as_string()} does not answer: {failed}")
    try:
        yield server
    finally:
        if throwaway is not None:
            throwaway.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database engine under test; session-scoped so the suite runs per engine in one block."""
    name: str = request.param
    return name


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'aibudget.sqlite3'}"


def _fresh_database(backend: str, request: pytest.FixtureRequest, *, migrated: bool) -> Iterator[str]:
    if backend == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    postgres: PostgresServer = request.getfixturevalue("postgres")
    url = postgres.create_database(template=TEMPLATE if migrated else None)
    yield url
    postgres.drop_database(url)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the engine under test: an empty SQLite file, or a migrated PostgreSQL database."""
    yield from _fresh_database(backend, request, migrated=True)


@pytest.fixture
def empty_database_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Like `database_url`, but a PostgreSQL database is left unmigrated too."""
    yield from _fresh_database(backend, request, migrated=False)


def server_databases(backend: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A database for a server a test starts: None (the server's own SQLite file in its data
    directory), or a fresh PostgreSQL database the server migrates itself."""
    if backend == "sqlite":
        yield None
        return
    postgres: PostgresServer = request.getfixturevalue("postgres")
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture(scope="module")
def server_database(backend: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The database of a module's server (see `server_databases`)."""
    yield from server_databases(backend, request)
