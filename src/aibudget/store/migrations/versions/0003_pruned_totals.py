"""carried totals of pruned events

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERIOD_COLUMNS = ("pruned_included_used_micros", "pruned_used_micros", "pruned_overage_micros")


def upgrade() -> None:
    """Upgrade schema."""
    for name in PERIOD_COLUMNS:
        op.add_column("periods", sa.Column(name, sa.BigInteger(), server_default="0", nullable=False))
    op.add_column(
        "credit_grants", sa.Column("pruned_spent_micros", sa.BigInteger(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("credit_grants") as batch:
        batch.drop_column("pruned_spent_micros")
    with op.batch_alter_table("periods") as batch:
        for name in PERIOD_COLUMNS:
            batch.drop_column(name)
