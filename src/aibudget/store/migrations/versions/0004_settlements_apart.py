"""settlement records apart from the events, so the events table can be partitioned

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SETTLED = "status IN ('success', 'error')"


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "settlements",
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.practice_id"], name=op.f("fk_settlements_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("practice_id", "request_id", name=op.f("pk_settlements")),
    )
    op.create_index(op.f("ix_settlements_event_id"), "settlements", ["event_id"], unique=False)
    op.execute(
        "INSERT INTO settlements (practice_id, request_id, event_id, occurred_at)"
        f" SELECT practice_id, request_id, event_id, occurred_at FROM usage_events WHERE {SETTLED}"
    )
    op.drop_index("uq_usage_events_settlement", table_name="usage_events")
    with op.batch_alter_table("allocations") as batch:
        batch.drop_constraint("fk_allocations_event_id_usage_events", type_="foreignkey")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("allocations") as batch:
        batch.create_foreign_key(
            "fk_allocations_event_id_usage_events", "usage_events", ["event_id"], ["event_id"]
        )
    op.create_index(
        "uq_usage_events_settlement",
        "usage_events",
        ["practice_id", "request_id"],
        unique=True,
        sqlite_where=sa.text(SETTLED),
        postgresql_where=sa.text(SETTLED),
    )
    op.drop_index(op.f("ix_settlements_event_id"), table_name="settlements")
    op.drop_table("settlements")
