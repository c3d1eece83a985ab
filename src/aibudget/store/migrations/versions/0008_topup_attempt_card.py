"""the customer and card an automatic top-up attempt is charged to

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("customer_id", "payment_method_id")


def upgrade() -> None:
    """Upgrade schema."""
    # nullable: an attempt is claimed before its card is chosen, and attempts of older versions
    # never had one kept
    for name in COLUMNS:
        op.add_column("topup_attempts", sa.Column(name, sa.String(length=200), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("topup_attempts") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
