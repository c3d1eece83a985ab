"""Opening the database: an engine for a URL (SQLite file or PostgreSQL), migrated to the newest schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import URL, Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from aibudget.errors import AibudgetError, ConfigError, DatabaseUnavailable
from aibudget.store.dialect import (
    BACKSTOP_CHECKPOINT_PAGES,
    DEFAULT_CHECKPOINT_PAGES,
    install_sqlite_transactions,
    is_unavailable,
    lock_migrations,
    write_transaction,
)

MIGRATIONS = Path(__file__).parent / "migrations"
CONNECT_TIMEOUT_SECONDS = 5
# A PostgreSQL that stops answering — a network cut, a host gone — fails the call in seconds, not in
# the quarter of an hour the system's TCP would otherwise retry for. Connecting gives up after
# CONNECT_TIMEOUT_SECONDS; a query whose bytes go unacknowledged for UNACKNOWLEDGED_SECONDS drops its
# connection (a slow query is not affected: its bytes were acknowledged); keepalive probes find a
# pooled connection that died while idle, before a call picks it.
UNACKNOWLEDGED_SECONDS = 10
# A row lock another transaction holds — a practice's balance, locked by a stuck session or an
# operator's `SELECT … FOR UPDATE` — is waited for this long, then the call fails as the database
# unavailable (503, to be sent again): it never waits for as long as the lock is held, holding a
# pooled connection meanwhile. Writers of one practice otherwise hold it for milliseconds.
LOCK_TIMEOUT_SECONDS = 5
POSTGRES_CONNECTION = {
    "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    "tcp_user_timeout": UNACKNOWLEDGED_SECONDS * 1000,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "options": f"-c lock_timeout={LOCK_TIMEOUT_SECONDS * 1000}",
}


def open_engine(
    url: str,
    *,
    migrate: bool = True,
    sqlite_synchronous: str = "normal",
    pool_size: int = 10,
    pool_max_overflow: int = 10,
    background_checkpoints: bool = False,
) -> Engine:
    """An engine for `url`; with `migrate`, the schema is brought to the newest version first.

    `background_checkpoints`: the caller runs `store.dialect.checkpoint` on a thread of its own, so
    SQLite's commits leave the write-ahead log to it up to a larger backstop.

    PostgreSQL connections are pooled: `pool_size` kept open, up to `pool_max_overflow` more under
    load. They are not pinged before use (a round trip on every call): a connection the server has
    dropped fails its first statement, which invalidates the pool, and `run_transaction` runs the
    call again on a fresh connection.

    `hide_parameters`: a database error's text never carries the values of its statement, which may
    be metadata a caller sent.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"AIBUDGET_DATABASE_URL={url!r} is not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise ConfigError(
                "AIBUDGET_DATABASE_URL: SQLite needs a file path, e.g. sqlite:///var/aibudget.sqlite3"
            )
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a file where a folder should be, no permission, a full disk
            raise ConfigError(
                f"AIBUDGET_DATABASE_URL: the folder of {database!r} cannot be made ({error.strerror}); "
                "by default it is AIBUDGET_DATA_DIR"
            ) from None
        engine = create_engine(
            parsed, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
        )
        pages = BACKSTOP_CHECKPOINT_PAGES if background_checkpoints else DEFAULT_CHECKPOINT_PAGES
        install_sqlite_transactions(engine, synchronous=sqlite_synchronous, checkpoint_pages=pages)
    elif parsed.get_backend_name() == "postgresql":
        engine = create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_max_overflow,
            hide_parameters=True,
            # the URL's own libpq options win over these defaults
            connect_args={
                name: value for name, value in POSTGRES_CONNECTION.items() if name not in parsed.query
            },
        )
    else:
        raise ConfigError(f"AIBUDGET_DATABASE_URL: unsupported database {parsed.get_backend_name()!r}")
    if migrate:
        try:
            upgrade(engine)
        except (DBAPIError, CommandError) as error:
            engine.dispose()
            raise _not_opened(parsed, error) from error
    return engine


def _not_opened(url: URL, error: DBAPIError | CommandError) -> AibudgetError:
    """Why the database at `url` could not be opened, for whoever set AIBUDGET_DATABASE_URL."""
    where = f"AIBUDGET_DATABASE_URL={url.render_as_string(hide_password=True)}"
    if isinstance(error, CommandError):  # a revision this version does not have
        return ConfigError(f"{where}: the database's schema is not one this aibudget knows ({error}); "
                           "is it from a newer version?")  # fmt: skip
    reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
    if is_unavailable(error):
        return DatabaseUnavailable(f"{where}: the database is unavailable ({reason})")
    return ConfigError(f"{where}: the database cannot be opened ({reason})")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to `revision`, inside one write transaction."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with write_transaction(engine) as connection:
        lock_migrations(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
