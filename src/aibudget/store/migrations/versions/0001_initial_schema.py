"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "plans",
        sa.Column("lookup_key", sa.String(length=200), nullable=False),
        sa.Column("included_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("included_micros >= 0", name=op.f("ck_plans_included_nonnegative")),
        sa.PrimaryKeyConstraint("lookup_key", name=op.f("pk_plans")),
    )
    op.create_table(
        "practices",
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("locale", sa.String(length=35), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.String(length=20), nullable=False),
        sa.Column("warning_percent", sa.Integer(), server_default="20", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("policy IN ('allow_last_call', 'strict')", name=op.f("ck_practices_policy")),
        sa.CheckConstraint("warning_percent BETWEEN 0 AND 100", name=op.f("ck_practices_warning_percent")),
        sa.PrimaryKeyConstraint("practice_id", name=op.f("pk_practices")),
    )
    op.create_table(
        "webhook_events",
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_webhook_events")),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=24), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("practice_id", sa.String(length=64), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(role = 'practice') = (practice_id IS NOT NULL)",
            name=op.f("ck_api_keys_practice_role_names_practice"),
        ),
        sa.CheckConstraint("role IN ('admin', 'service', 'practice')", name=op.f("ck_api_keys_role")),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.practice_id"], name=op.f("fk_api_keys_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
    )
    op.create_table(
        "credit_grants",
        sa.Column("grant_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("remaining_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="100", nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("expired_at", sa.BigInteger(), nullable=True),
        sa.Column("expired_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "source IN ('purchase', 'auto_topup', 'promo', 'manual', 'refund')",
            name=op.f("ck_credit_grants_source"),
        ),
        sa.CheckConstraint("amount_micros > 0", name=op.f("ck_credit_grants_amount_positive")),
        sa.CheckConstraint(
            "expired_micros >= 0 AND expired_micros + remaining_micros <= amount_micros",
            name=op.f("ck_credit_grants_expired_within"),
        ),
        sa.CheckConstraint(
            "remaining_micros >= 0 AND remaining_micros <= amount_micros",
            name=op.f("ck_credit_grants_remaining_within"),
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.practice_id"], name=op.f("fk_credit_grants_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("grant_id", name=op.f("pk_credit_grants")),
        sa.UniqueConstraint("reference", name=op.f("uq_credit_grants_reference")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_grants_practice_id_priority_expires_at_grant_id"),
            ["practice_id", "priority", "expires_at", "grant_id"],
            unique=False,
        )

    op.create_table(
        "devices",
        sa.Column("device_hash", sa.String(length=64), nullable=False),
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("user_key", sa.String(length=200), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.practice_id"], name=op.f("fk_devices_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("device_hash", name=op.f("pk_devices")),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_practice_id"), ["practice_id"], unique=False)

    op.create_table(
        "periods",
        sa.Column("period_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("subscription_id", sa.String(length=200), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("plan", sa.String(length=200), nullable=True),
        sa.Column("included_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("included_used_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("used_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("overage_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("included_used_micros >= 0", name=op.f("ck_periods_included_used_nonnegative")),
        sa.CheckConstraint("overage_micros >= 0", name=op.f("ck_periods_overage_nonnegative")),
        sa.CheckConstraint("period_end > period_start", name=op.f("ck_periods_period_order")),
        sa.CheckConstraint(
            "used_micros >= included_used_micros", name=op.f("ck_periods_used_covers_included")
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.practice_id"], name=op.f("fk_periods_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("period_id", name=op.f("pk_periods")),
        sa.UniqueConstraint(
            "practice_id",
            "subscription_id",
            "period_start",
            name=op.f("uq_periods_practice_id_subscription_id_period_start"),
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "subscriptions",
        sa.Column("subscription_id", sa.String(length=200), nullable=False),
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=True),
        sa.Column("customer_email", sa.String(length=320), nullable=True),
        sa.Column("plan", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("current_period_start", sa.BigInteger(), nullable=True),
        sa.Column("current_period_end", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("mirrored_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "current_period_end IS NULL OR current_period_start IS NULL OR current_period_end > current_period_start",
            name=op.f("ck_subscriptions_period_order"),
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.practice_id"], name=op.f("fk_subscriptions_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("subscription_id", name=op.f("pk_subscriptions")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subscriptions_practice_id"), ["practice_id"], unique=False)

    op.create_table(
        "authorizations",
        sa.Column("authorization_id", sa.String(length=40), nullable=False),
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("period_id", sa.Integer(), nullable=True),
        sa.Column("device_suffix", sa.String(length=8), nullable=True),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("estimate", sa.JSON(), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("estimate_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("held_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("refusal", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("closed_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'settled', 'voided', 'expired', 'refused')",
            name=op.f("ck_authorizations_status"),
        ),
        sa.CheckConstraint(
            "held_micros >= 0 AND estimate_micros >= 0", name=op.f("ck_authorizations_amounts_nonnegative")
        ),
        sa.ForeignKeyConstraint(
            ["period_id"], ["periods.period_id"], name=op.f("fk_authorizations_period_id_periods")
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.practice_id"], name=op.f("fk_authorizations_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("authorization_id", name=op.f("pk_authorizations")),
        sa.UniqueConstraint(
            "practice_id", "request_id", name=op.f("uq_authorizations_practice_id_request_id")
        ),
    )
    with op.batch_alter_table("authorizations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_authorizations_status_expires_at"), ["status", "expires_at"], unique=False
        )

    op.create_table(
        "balances",
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("held_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("credit_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("period_id", sa.Integer(), nullable=True),
        sa.Column("period_valid_until", sa.BigInteger(), nullable=True),
        sa.Column("next_grant_expiry", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("credit_micros >= 0", name=op.f("ck_balances_credit_nonnegative")),
        sa.CheckConstraint("held_micros >= 0", name=op.f("ck_balances_held_nonnegative")),
        sa.ForeignKeyConstraint(
            ["period_id"], ["periods.period_id"], name=op.f("fk_balances_period_id_periods")
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.practice_id"], name=op.f("fk_balances_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("practice_id", name=op.f("pk_balances")),
    )
    op.create_table(
        "usage_events",
        sa.Column("event_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.Column("practice_id", sa.String(length=64), nullable=False),
        sa.Column("subscription_id", sa.String(length=200), nullable=True),
        sa.Column("period_id", sa.Integer(), nullable=True),
        sa.Column("authorization_id", sa.String(length=40), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("device_suffix", sa.String(length=8), nullable=True),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("priced_as", sa.String(length=200), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("input_audio_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("audio_ms", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("overage_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("price_source", sa.String(length=10), nullable=True),
        sa.Column("price_version", sa.String(length=120), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("estimated", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "status IN ('success', 'error', 'blocked', 'voided', 'expired')",
            name=op.f("ck_usage_events_status"),
        ),
        sa.CheckConstraint(
            "cost_micros >= 0 AND overage_micros >= 0 AND overage_micros <= cost_micros",
            name=op.f("ck_usage_events_amounts"),
        ),
        sa.ForeignKeyConstraint(
            ["period_id"], ["periods.period_id"], name=op.f("fk_usage_events_period_id_periods")
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.practice_id"], name=op.f("fk_usage_events_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_usage_events")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_events_practice_id_occurred_at"),
            ["practice_id", "occurred_at"],
            unique=False,
        )
        batch_op.create_index(
            "uq_usage_events_settlement",
            ["practice_id", "request_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('success', 'error')"),
            postgresql_where=sa.text("status IN ('success', 'error')"),
        )

    op.create_table(
        "allocations",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("pot", sa.String(length=10), nullable=False),
        sa.Column("period_id", sa.Integer(), nullable=True),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("amount_micros", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "(pot = 'credit') = (grant_id IS NOT NULL)", name=op.f("ck_allocations_credit_names_grant")
        ),
        sa.CheckConstraint("pot IN ('included', 'credit', 'overage')", name=op.f("ck_allocations_pot")),
        sa.CheckConstraint("amount_micros > 0", name=op.f("ck_allocations_amount_positive")),
        sa.ForeignKeyConstraint(
            ["event_id"], ["usage_events.event_id"], name=op.f("fk_allocations_event_id_usage_events")
        ),
        sa.ForeignKeyConstraint(
            ["grant_id"], ["credit_grants.grant_id"], name=op.f("fk_allocations_grant_id_credit_grants")
        ),
        sa.ForeignKeyConstraint(
            ["period_id"], ["periods.period_id"], name=op.f("fk_allocations_period_id_periods")
        ),
        sa.PrimaryKeyConstraint("event_id", "seq", name=op.f("pk_allocations")),
    )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_allocations_grant_id"), ["grant_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_allocations_grant_id"))

    op.drop_table("allocations")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_usage_events_settlement",
            sqlite_where=sa.text("status IN ('success', 'error')"),
            postgresql_where=sa.text("status IN ('success', 'error')"),
        )
        batch_op.drop_index(batch_op.f("ix_usage_events_practice_id_occurred_at"))

    op.drop_table("usage_events")
    op.drop_table("balances")
    with op.batch_alter_table("authorizations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_authorizations_status_expires_at"))

    op.drop_table("authorizations")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriptions_practice_id"))

    op.drop_table("subscriptions")
    op.drop_table("periods")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_practice_id"))

    op.drop_table("devices")
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_grants_practice_id_priority_expires_at_grant_id"))

    op.drop_table("credit_grants")
    op.drop_table("api_keys")
    op.drop_table("webhook_events")
    op.drop_table("practices")
    op.drop_table("plans")
