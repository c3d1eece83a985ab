"""auto top-up settings

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "auto_topup_settings",
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("threshold_micros", sa.BigInteger(), nullable=True),
        sa.Column("threshold_percent", sa.Integer(), nullable=True),
        sa.Column("package_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("monthly_max_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("monthly_max_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("paused_reason", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(threshold_micros IS NULL) <> (threshold_percent IS NULL)",
            name=op.f("ck_auto_topup_settings_one_threshold"),
        ),
        sa.CheckConstraint(
            "threshold_micros IS NULL OR threshold_micros >= 0",
            name=op.f("ck_auto_topup_settings_threshold_nonnegative"),
        ),
        sa.CheckConstraint(
            "threshold_percent IS NULL OR threshold_percent BETWEEN 0 AND 100",
            name=op.f("ck_auto_topup_settings_threshold_percent"),
        ),
        sa.CheckConstraint("package_micros > 0", name=op.f("ck_auto_topup_settings_package_positive")),
        sa.CheckConstraint(
            "monthly_max_count >= 0 AND monthly_max_micros >= 0",
            name=op.f("ck_auto_topup_settings_caps_nonnegative"),
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"],
            ["practices.practice_id"],
            name=op.f("fk_auto_topup_settings_practice_id_practices"),
        ),
        sa.PrimaryKeyConstraint("practice_id", name=op.f("pk_auto_topup_settings")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("auto_topup_settings")
