"""calls admitted while the database was unavailable

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "fail_open_admissions",
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("estimate_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("admitted_at", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.Column("admission_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("practice_id", "request_id", name=op.f("pk_fail_open_admissions")),
    )
    with op.batch_alter_table("fail_open_admissions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fail_open_admissions_admitted_at"), ["admitted_at"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("fail_open_admissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fail_open_admissions_admitted_at"))

    op.drop_table("fail_open_admissions")
