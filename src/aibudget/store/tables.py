"""Every table of aibudget, in one SQLAlchemy Core `MetaData`; Alembic migrations are made from it.

Money columns are integer micro-USD (`*_micros`), instants are integer Unix microseconds (`Instant`),
audio durations integer milliseconds: no column holds a float, on either engine. The database checks
what it can: non-negative balances, a grant never above its amount, one grant per payment reference,
one authorization and one settlement per `(practice, request_id)` — those rows are also the
idempotency records: a replay finds the row its first attempt wrote.

The hot path never scans history. What authorize, settle and snapshot need lives in a few rows,
updated in the same transaction as the ledger insert that changes them:

- `balances`: one row per practice: money held by open authorizations and prepaid credit left;
- `periods`: one row per billing period: included budget, how much of it is used, all posted cost
  and the overage of the period.

`usage_events` and `allocations` are the append-only ledger those rows can be recomputed from. Old
events may be pruned (`ledger.retention`): what they paid is first carried into `pruned_*` columns
of their period and grant, so the rows above never change and stay recomputable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.types import TypeDecorator

from aibudget.store.sql import instant, micros

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Instant(TypeDecorator[datetime]):
    """An aware `datetime` stored as integer Unix microseconds (UTC): exact, sortable, portable."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        return micros(value)

    def process_result_value(self, value: int | None, dialect: Dialect) -> datetime | None:
        return instant(value)


def _micros(name: str, **kwargs: Any) -> Column[int]:
    return Column(name, BigInteger, nullable=False, server_default="0", **kwargs)


PracticeId = String(64)
RequestId = String(128)

practices = Table(
    "practices",
    metadata,
    Column("practice_id", PracticeId, primary_key=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("locale", String(35), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("policy", String(20), nullable=False),
    Column("warning_percent", Integer, nullable=False, server_default="20"),
    Column("created_at", Instant, nullable=False),
    Column("updated_at", Instant, nullable=False),
    CheckConstraint("policy IN ('allow_last_call', 'strict')", name="policy"),
    CheckConstraint("warning_percent BETWEEN 0 AND 100", name="warning_percent"),
)

plans = Table(
    "plans",
    metadata,
    Column("lookup_key", String(200), primary_key=True),
    _micros("included_micros"),
    Column("updated_at", Instant, nullable=False),
    CheckConstraint("included_micros >= 0", name="included_nonnegative"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("subscription_id", String(200), primary_key=True),
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id"), nullable=False, index=True),
    Column("customer_id", String(200)),
    Column("customer_email", String(320)),
    Column("plan", String(200)),
    Column("status", String(40), nullable=False),
    Column("current_period_start", BigInteger),  # Unix seconds, as the provider sends them
    Column("current_period_end", BigInteger),
    Column("updated_at", BigInteger, nullable=False),  # the provider's own clock, orders updates
    Column("mirrored_at", Instant, nullable=False),
    CheckConstraint(
        "current_period_end IS NULL OR current_period_start IS NULL"
        " OR current_period_end > current_period_start",
        name="period_order",
    ),
)

periods = Table(
    "periods",
    metadata,
    Column("period_id", Integer, primary_key=True, autoincrement=True),
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id"), nullable=False),
    Column("subscription_id", String(200), nullable=False),
    Column("period_start", BigInteger, nullable=False),  # Unix seconds
    Column("period_end", BigInteger, nullable=False),
    Column("plan", String(200)),
    _micros("included_micros"),
    _micros("included_used_micros"),
    _micros("used_micros"),
    _micros("overage_micros"),
    # what pruned events had added to the three columns above (see `ledger.retention`)
    _micros("pruned_included_used_micros"),
    _micros("pruned_used_micros"),
    _micros("pruned_overage_micros"),
    UniqueConstraint("practice_id", "subscription_id", "period_start"),
    # a plan lowered mid-period may leave more used than included: remaining is then 0, not negative
    CheckConstraint("included_used_micros >= 0", name="included_used_nonnegative"),
    CheckConstraint("used_micros >= included_used_micros", name="used_covers_included"),
    CheckConstraint("overage_micros >= 0", name="overage_nonnegative"),
    CheckConstraint("period_end > period_start", name="period_order"),
    sqlite_autoincrement=True,
)

balances = Table(
    "balances",
    metadata,
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id"), primary_key=True),
    _micros("held_micros"),  # sum of active holds
    _micros("credit_micros"),  # sum of unexpired grants' remaining
    # The current period, cached: valid until `period_valid_until` (calendar months) or, when that
    # is NULL, until a subscription, plan or practice change clears it.
    Column("period_id", Integer, ForeignKey("periods.period_id")),
    Column("period_valid_until", Instant),
    Column("next_grant_expiry", Instant),  # earliest expiry among grants with money left
    CheckConstraint("held_micros >= 0", name="held_nonnegative"),
    CheckConstraint("credit_micros >= 0", name="credit_nonnegative"),
)

devices = Table(
    "devices",
    metadata,
    Column("device_hash", String(64), primary_key=True),  # HMAC-SHA256(secret, device id), hex
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id"), nullable=False, index=True),
    Column("user_key", String(200)),
    Column("active", Boolean, nullable=False, server_default=true()),
    Column("created_at", Instant, nullable=False),
    Column("updated_at", Instant, nullable=False),
)

credit_grants = Table(
    "credit_grants",
    metadata,
    Column("grant_id", Integer, primary_key=True, autoincrement=True),
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id"), nullable=False),
    _micros("amount_micros"),
    _micros("remaining_micros"),
    Column("source", String(20), nullable=False),
    Column("priority", Integer, nullable=False, server_default="100"),
    Column("reference", String(200), nullable=False, unique=True),
    Column("created_at", Instant, nullable=False),
    Column("expires_at", Instant),
    Column("expired_at", Instant),  # set when what was left of it expired
    _micros("expired_micros"),  # what was left when it expired
    _micros("pruned_spent_micros"),  # what pruned events had spent of it (see `ledger.retention`)
    CheckConstraint("amount_micros > 0", name="amount_positive"),
    CheckConstraint("remaining_micros >= 0 AND remaining_micros <= amount_micros", name="remaining_within"),
    CheckConstraint(
        "expired_micros >= 0 AND expired_micros + remaining_micros <= amount_micros", name="expired_within"
    ),
    CheckConstraint("source IN ('purchase', 'auto_topup', 'promo', 'manual', 'refund')", name="source"),
    Index(None, "practice_id", "priority", "expires_at", "grant_id"),
    sqlite_autoincrement=True,
)

authorizations = Table(
    "authorizations",
    metadata,
    Column("authorization_id", String(40), primary_key=True),
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id"), nullable=False),
    Column("request_id", RequestId, nullable=False),
    Column("period_id", Integer, ForeignKey("periods.period_id")),
    Column("device_suffix", String(8)),
    Column("operation", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("estimate", JSON, nullable=False),
    Column("body_hash", String(64), nullable=False),  # a replay with another body is a conflict
    _micros("estimate_micros"),
    _micros("held_micros"),
    Column("status", String(10), nullable=False),
    Column("refusal", JSON),  # the 402 payload of a refused authorization, returned on replay
    Column("created_at", Instant, nullable=False),
    Column("expires_at", Instant, nullable=False),
    Column("closed_at", Instant),
    # one authorization per request: this row is also the idempotency record of `authorize`
    UniqueConstraint("practice_id", "request_id"),
    CheckConstraint("status IN ('active', 'settled', 'voided', 'expired', 'refused')", name="status"),
    CheckConstraint("held_micros >= 0 AND estimate_micros >= 0", name="amounts_nonnegative"),
    Index(None, "status", "expires_at"),
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("occurred_at", Instant, nullable=False),
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id"), nullable=False),
    Column("subscription_id", String(200)),
    Column("period_id", Integer, ForeignKey("periods.period_id")),
    Column("authorization_id", String(40)),
    Column("request_id", RequestId, nullable=False),
    Column("device_suffix", String(8)),
    Column("operation", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("priced_as", String(200)),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cached_input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("input_audio_tokens", BigInteger, nullable=False, server_default="0"),
    Column("audio_ms", BigInteger, nullable=False, server_default="0"),
    _micros("cost_micros"),
    _micros("overage_micros"),
    Column("price_source", String(10)),
    Column("price_version", String(120)),
    Column("status", String(10), nullable=False),
    Column("error_code", String(64)),
    Column("estimated", Boolean, nullable=False, server_default=false()),
    Column("body_hash", String(64)),  # of the settle request; a replay with another body is a conflict
    Column("meta", JSON),
    CheckConstraint("status IN ('success', 'error', 'blocked', 'voided', 'expired')", name="status"),
    CheckConstraint(
        "cost_micros >= 0 AND overage_micros >= 0 AND overage_micros <= cost_micros", name="amounts"
    ),
    Index(None, "practice_id", "occurred_at"),
    sqlite_autoincrement=True,  # ids are never reused, even after old events are pruned
)

# One row per settled request: the idempotency record of `settle`, pointing at its event. It lives
# apart from `usage_events` so that table carries no unique key but its own id and no other table
# refers to it: nothing stands in the way of partitioning it by `occurred_at` (a partitioned
# table's unique keys must contain the partition key). Pruned with its event.
settlements = Table(
    "settlements",
    metadata,
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id"), primary_key=True),
    Column("request_id", RequestId, primary_key=True),
    Column("event_id", Integer, nullable=False, index=True),
    Column("occurred_at", Instant, nullable=False),  # the event's, so a lookup can name its partition
)

allocations = Table(
    "allocations",
    metadata,
    # no foreign key to usage_events (see `settlements`): written and pruned with its event
    Column("event_id", Integer, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("pot", String(10), nullable=False),  # included | credit | overage
    Column("period_id", Integer, ForeignKey("periods.period_id")),
    Column("grant_id", Integer, ForeignKey("credit_grants.grant_id")),
    _micros("amount_micros"),
    CheckConstraint("pot IN ('included', 'credit', 'overage')", name="pot"),
    CheckConstraint("amount_micros > 0", name="amount_positive"),
    CheckConstraint("(pot = 'credit') = (grant_id IS NOT NULL)", name="credit_names_grant"),
    Index(None, "grant_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(24), primary_key=True),  # the public prefix of the key
    Column("key_hash", String(64), nullable=False),  # SHA-256 of the whole key, hex
    Column("role", String(10), nullable=False),
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id")),
    Column("label", String(200)),
    Column("created_at", Instant, nullable=False),
    Column("revoked_at", Instant),
    CheckConstraint("role IN ('admin', 'service', 'practice')", name="role"),
    CheckConstraint("(role = 'practice') = (practice_id IS NOT NULL)", name="practice_role_names_practice"),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("source", String(20), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("received_at", Instant, nullable=False),
)

# Automatic top-up settings of a practice (SPEC §6): one row per practice that configured it; no row
# means disabled. The trigger is either an amount or a percentage of the included budget, never both.
auto_topup_settings = Table(
    "auto_topup_settings",
    metadata,
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id"), primary_key=True),
    Column("enabled", Boolean, nullable=False, server_default=false()),
    Column("threshold_micros", BigInteger),
    Column("threshold_percent", Integer),
    _micros("package_micros"),
    Column("monthly_max_count", Integer, nullable=False, server_default="0"),
    _micros("monthly_max_micros"),
    Column("paused_reason", String(64)),  # set by a declined charge; kept until an explicit resume
    Column("paused_at", Instant),
    # the attempt being charged now: set by one conditional update (single flight), cleared by its outcome
    Column("attempt_in_flight", String(40)),
    Column("updated_at", Instant, nullable=False),
    CheckConstraint("(threshold_micros IS NULL) <> (threshold_percent IS NULL)", name="one_threshold"),
    CheckConstraint("threshold_micros IS NULL OR threshold_micros >= 0", name="threshold_nonnegative"),
    CheckConstraint(
        "threshold_percent IS NULL OR threshold_percent BETWEEN 0 AND 100", name="threshold_percent"
    ),
    CheckConstraint("package_micros > 0", name="package_positive"),
    CheckConstraint("monthly_max_count >= 0 AND monthly_max_micros >= 0", name="caps_nonnegative"),
)

# One row per automatic top-up: claimed (`pending`) under the practice's lock, then charged outside any
# transaction with the attempt id as the payment provider's idempotency key, and closed by the first
# confirmation or failure (synchronous answer or webhook, whichever comes first). `month` is the
# calendar month in the practice's timezone the monthly caps count in; pending attempts count too.
topup_attempts = Table(
    "topup_attempts",
    metadata,
    Column("attempt_id", String(40), primary_key=True),
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id"), nullable=False),
    Column("month", String(7), nullable=False),  # YYYY-MM in the practice's timezone
    _micros("credit_micros"),  # USD credit bought
    Column("charge_amount", BigInteger, nullable=False),  # in the currency's smallest unit
    Column("currency", String(3), nullable=False),
    Column("trigger", String(20), nullable=False),  # settle | authorize
    Column("status", String(10), nullable=False),
    Column("payment_intent_id", String(200), unique=True),
    Column("failure_code", String(64)),
    Column("grant_id", Integer, ForeignKey("credit_grants.grant_id")),
    # what every try of the charge sends, kept (committed) before the first is sent: a retry under
    # the same idempotency key must repeat the first request exactly, whatever card the customer has
    # since saved; None until the card is chosen (and on attempts of versions before 0008)
    Column("customer_id", String(200)),
    Column("payment_method_id", String(200)),
    Column("created_at", Instant, nullable=False),
    Column("closed_at", Instant),
    CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
    CheckConstraint("credit_micros > 0 AND charge_amount > 0", name="amounts_positive"),
    Index(None, "practice_id", "month"),
    Index(None, "status", "created_at"),
)

# Outgoing notifications to the vendor's backend, written in the same transaction as what caused
# them (an outbox: nothing is lost when the process stops before delivering) and delivered by a
# background worker with exponential backoff. `dedupe_key` makes "once per period per threshold"
# a unique constraint rather than a hope.
notifications = Table(
    "notifications",
    metadata,
    Column("notification_id", String(40), primary_key=True),
    Column("event_type", String(40), nullable=False),
    Column("practice_id", PracticeId, ForeignKey("practices.practice_id"), nullable=False),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("payload", JSON, nullable=False),
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Instant, nullable=False),
    Column("last_attempt_at", Instant),
    Column("last_status_code", Integer),
    Column("last_error", String(200)),
    Column("created_at", Instant, nullable=False),
    Column("delivered_at", Instant),
    CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
    Index(None, "status", "next_attempt_at"),
    Index(None, "practice_id", "created_at"),
)

# Signed-in dashboard sessions. The cookie holds a random token; only its SHA-256 is stored, so the
# table leaks nothing that signs anyone in. A session lives until it expires or is signed out, and
# only while the admin key it was opened with is still valid.
admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("key_id", String(24), nullable=False),
    # HMAC-SHA256(secret, AIBUDGET_ADMIN_KEY), hex: which env key opened an `env-admin` session; else NULL
    Column("env_key_hmac", String(64)),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Instant, nullable=False),
    Column("expires_at", Instant, nullable=False),
    Index(None, "expires_at"),
)

# calls let through without a hold while the database was unavailable (`ledger.fail_open`); written
# once the database is back. Not tied to `practices`: the practice could not be checked at the time.
fail_open_admissions = Table(
    "fail_open_admissions",
    metadata,
    Column("practice_id", PracticeId, primary_key=True),
    Column("request_id", RequestId, primary_key=True),
    Column("operation", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    _micros("estimate_micros"),
    Column("admitted_at", Instant, nullable=False),
    Column("recorded_at", Instant, nullable=False),
    Column("admission_id", String(40), nullable=False),  # the authorization id the caller got
    Index(None, "admitted_at"),
)
