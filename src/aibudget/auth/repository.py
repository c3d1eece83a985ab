"""SQL for API keys. Callers own the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from aibudget.store import tables
from aibudget.store.sql import Statement

keys = tables.api_keys

_KEY = Statement("SELECT key_hash, role, practice_id, revoked_at FROM api_keys WHERE key_id = :key_id")


def key_for_check(connection: Connection, key_id: str) -> tuple[str, str, str | None, int | None] | None:
    """(hash, role, practice_id, revoked_at) of a key; read on every request, so hand-written."""
    row = _KEY.one(connection, {"key_id": key_id})
    return None if row is None else (row[0], row[1], row[2], row[3])


def insert_key(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(keys.insert().values(**values))


def list_keys(connection: Connection) -> list[Row[Any]]:
    return list(connection.execute(select(keys).order_by(keys.c.created_at, keys.c.key_id)))


def revoke_key(connection: Connection, key_id: str, now: datetime) -> bool:
    revoked = connection.execute(
        update(keys).where(keys.c.key_id == key_id, keys.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return revoked.rowcount == 1


def get_key(connection: Connection, key_id: str) -> Row[Any] | None:
    return connection.execute(select(keys).where(keys.c.key_id == key_id)).first()
