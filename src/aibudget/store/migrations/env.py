"""Alembic environment: migrations run on the connection `store.engine.upgrade` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from aibudget.store.tables import metadata

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `aibudget db upgrade`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table instead
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
