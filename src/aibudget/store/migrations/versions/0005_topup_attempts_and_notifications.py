"""automatic top-up attempts and outgoing notifications

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "notifications",
        sa.Column("notification_id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("last_attempt_at", sa.BigInteger(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')", name=op.f("ck_notifications_status")
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.practice_id"], name=op.f("fk_notifications_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("notification_id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_notifications_dedupe_key")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notifications_practice_id_created_at"), ["practice_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_notifications_status_next_attempt_at"), ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "topup_attempts",
        sa.Column("attempt_id", sa.String(length=40), nullable=False),
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("credit_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("charge_amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=200), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("closed_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name=op.f("ck_topup_attempts_status")
        ),
        sa.CheckConstraint(
            "credit_micros > 0 AND charge_amount > 0", name=op.f("ck_topup_attempts_amounts_positive")
        ),
        sa.ForeignKeyConstraint(
            ["grant_id"], ["credit_grants.grant_id"], name=op.f("fk_topup_attempts_grant_id_credit_grants")
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.practice_id"], name=op.f("fk_topup_attempts_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("attempt_id", name=op.f("pk_topup_attempts")),
        sa.UniqueConstraint("payment_intent_id", name=op.f("uq_topup_attempts_payment_intent_id")),
    )
    with op.batch_alter_table("topup_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_topup_attempts_practice_id_month"), ["practice_id", "month"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_topup_attempts_status_created_at"), ["status", "created_at"], unique=False
        )

    with op.batch_alter_table("auto_topup_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paused_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("attempt_in_flight", sa.String(length=40), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("auto_topup_settings", schema=None) as batch_op:
        batch_op.drop_column("attempt_in_flight")
        batch_op.drop_column("paused_at")

    with op.batch_alter_table("topup_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_topup_attempts_status_created_at"))
        batch_op.drop_index(batch_op.f("ix_topup_attempts_practice_id_month"))

    op.drop_table("topup_attempts")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_status_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_notifications_practice_id_created_at"))

    op.drop_table("notifications")
