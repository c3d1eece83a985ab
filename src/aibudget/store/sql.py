"""Hot-path statements: SQL written once, run on the driver's cursor inside the caller's transaction.

Building and compiling a SQLAlchemy statement costs 30-100 µs per execution; the driver runs the same
SQL in about 6 µs. Authorize, settle and snapshot run a handful of statements each, so on their path
aibudget writes the SQL by hand — portable SQL only, with `:name` parameters translated once to the
driver's style — and converts values itself: instants to integer Unix microseconds (as
`tables.Instant` stores them), JSON to text. Everything else uses SQLAlchemy Core.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The last instant aibudget takes in: the end of the year 9998 in UTC. Python's datetime ends with the
# year 9999, and an instant is shown in its practice's timezone, up to 14 hours later than UTC; one
# past this could be stored, but not always read back or shown (an error on every later read).
LATEST_UNIX_SECONDS = 253_370_764_799  # 9998-12-31T23:59:59Z
LATEST_INSTANT = datetime.fromtimestamp(LATEST_UNIX_SECONDS, UTC)


class Statement:
    """One statement for both engines: `:name` parameters, run with a mapping of values."""

    __slots__ = ("_pyformat", "_sql")

    def __init__(self, sql: str) -> None:
        self._sql = " ".join(sql.split())
        self._pyformat = _PARAMETER.sub(r"%(\1)s", self._sql.replace("%", "%%"))

    @property
    def sql(self) -> str:
        """The statement as SQLite runs it (PostgreSQL's driver gets the same with `%(name)s`)."""
        return self._sql

    def run(self, connection: Connection, params: Mapping[str, Any]) -> Any:
        """Execute on the connection's own transaction; returns the driver's cursor. A driver error is
        raised as SQLAlchemy raises it (`DBAPIError` and its kinds, no parameters in its text), so
        `store.dialect` sorts it as any other: a lock or statement timeout is the database
        unavailable, not an unexpected error."""
        driver = connection.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        dialect = connection.dialect
        try:
            if dialect.name == "postgresql":
                cursor.execute(self._pyformat, params)
            else:
                cursor.execute(self._sql, params)
        except dialect.loaded_dbapi.Error as error:
            lost = dialect.is_disconnect(error, connection.connection.dbapi_connection, cursor)
            raise DBAPIError.instance(
                self._sql, None, error, dialect.loaded_dbapi.Error, hide_parameters=True,
                connection_invalidated=lost, dialect=dialect,
            ) from error  # fmt: skip
        return cursor

    def one(self, connection: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.run(connection, params).fetchone()
        return row


def micros(instant: datetime | None) -> int | None:
    """An aware datetime as integer Unix microseconds, exactly as `tables.Instant` stores it."""
    if instant is None:
        return None
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant!r}: instants must carry a timezone")
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def instant(value: int | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


def as_json(value: object) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def from_json(value: object) -> Any:
    """JSON as the driver returns it: text from SQLite, already decoded from PostgreSQL."""
    return json.loads(value) if isinstance(value, str | bytes) else value
