"""Practices, plans, subscription mirrors, billing periods and devices: validation and rules.

Functions take the connection first and never commit: the caller (library call, HTTP request, CLI
command) owns the transaction. Devices are stored only as HMAC-SHA256 of their id keyed with the
server secret; a device belongs to exactly one practice, and a request naming a practice and a device
of another practice is refused, never re-routed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import available_timezones

from babel import Locale, UnknownLocaleError
from sqlalchemy import Connection, Row

from aibudget.accounts import repository
from aibudget.accounts.periods import calendar_month, period_for, same_month_in
from aibudget.errors import Conflict, DeviceNotInPractice, Forbidden, InvalidInput, NotFound
from aibudget.money import parse_usd, to_decimal
from aibudget.store.sql import LATEST_UNIX_SECONDS

Policy = Literal["allow_last_call", "strict"]
POLICIES: tuple[Policy, ...] = ("allow_last_call", "strict")
LANGUAGES = ("de", "fr", "it", "en")
DEFAULT_LOCALE, DEFAULT_TIMEZONE = "de-CH", "Europe/Zurich"
_PRACTICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


@dataclass(frozen=True, slots=True)
class Practice:
    practice_id: str
    name: str
    locale: str
    timezone: str
    policy: Policy
    warning_percent: int


@dataclass(frozen=True, slots=True)
class Plan:
    lookup_key: str
    included_micros: int

    @property
    def included_usd(self) -> Decimal:
        return to_decimal(self.included_micros)


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: str
    practice_id: str
    customer_id: str | None
    customer_email: str | None
    plan: str | None
    status: str
    current_period_start: int | None
    current_period_end: int | None
    updated_at: int


@dataclass(frozen=True, slots=True)
class Period:
    period_id: int
    practice_id: str
    subscription_id: str
    start: int
    end: int
    plan: str | None
    included_micros: int
    included_used_micros: int
    used_micros: int
    overage_micros: int

    @property
    def included_remaining_micros(self) -> int:
        return max(0, self.included_micros - self.included_used_micros)

    def charged(self, *, included_micros: int, cost_micros: int, overage_micros: int) -> Period:
        """This period after a call charged it, as `ledger.repository.charge_period` writes it."""
        return replace(
            self,
            included_used_micros=self.included_used_micros + included_micros,
            used_micros=self.used_micros + cost_micros,
            overage_micros=self.overage_micros + overage_micros,
        )


@dataclass(frozen=True, slots=True)
class Device:
    device_hash: str
    practice_id: str
    user_key: str | None
    active: bool

    @property
    def suffix(self) -> str:
        """The last 8 hex digits: enough to tell devices apart in a report, useless to an attacker."""
        return self.device_hash[-8:]


@dataclass(frozen=True, slots=True)
class Rules:
    """Settings the account rules depend on."""

    granting_statuses: tuple[str, ...] = ("active", "trialing")
    default_included_micros: int = 20_000_000


def _practice(row: Row[Any]) -> Practice:
    return Practice(row.practice_id, row.name, row.locale, row.timezone, row.policy, row.warning_percent)


def _text(value: object, field: str, pattern: re.Pattern[str] = _NAME) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInput(f"{field}: {value!r} is not valid", field=field)
    return value


def check_id(value: object, field: str) -> str:
    """An id or reference named from outside — a plan's lookup key, a subscription or customer id, a
    user key, a payment reference — as given, or `InvalidInput` naming `field`: 1-200 characters, no
    control characters, not blank.

    Such ids are matched exactly and mirror what another system (Stripe, the vendor's own) holds, so
    they are taken as they come otherwise: a lookup key Stripe keeps as `"basic "` is `"basic "` here
    too, and a webhook carrying it is applied, not refused. Practice ids and request ids have
    stricter patterns of their own (`check_practice_id`, `ledger.service.check_request_id`).
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(f"{field} must be 1-200 characters without control characters", field=field)
    if value.isspace():
        raise InvalidInput(f"{field} must not be blank", field=field)
    return value


def check_practice_id(practice_id: object) -> str:
    if not isinstance(practice_id, str) or not _PRACTICE_ID.fullmatch(practice_id):
        raise InvalidInput(
            f"practice_id: {practice_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ : -",
            field="practice_id",
        )
    return practice_id


def check_locale(locale: object) -> str:
    try:
        parsed = Locale.parse(str(locale), sep="-") if isinstance(locale, str) else None
    except (UnknownLocaleError, ValueError):
        parsed = None
    if parsed is None or parsed.language not in LANGUAGES:
        raise InvalidInput(
            f"locale: {locale!r} is not one of the languages {', '.join(LANGUAGES)}", field="locale"
        )
    return str(locale)


def check_timezone(timezone: object) -> str:
    """An IANA timezone name; looked up in the list of them, as `ZoneInfo` takes any name for a file
    path and fails on some with errors of the file system ("Europe" is a directory)."""
    if not isinstance(timezone, str) or timezone not in _timezones():
        raise InvalidInput(f"timezone: {timezone!r} is not an IANA timezone", field="timezone")
    return timezone


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def put_practice(
    connection: Connection,
    practice_id: str,
    *,
    name: str | None = None,
    locale: str | None = None,
    timezone: str | None = None,
    policy: str | None = None,
    warning_percent: int | None = None,
    now: datetime,
) -> Practice:
    """Create the practice, or change the fields given; fields not given keep their value."""
    check_practice_id(practice_id)
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = _text(name, "name")
    if locale is not None:
        changes["locale"] = check_locale(locale)
    if timezone is not None:
        changes["timezone"] = check_timezone(timezone)
    if policy is not None:
        if policy not in POLICIES:
            raise InvalidInput(f"policy: {policy!r} is not one of {', '.join(POLICIES)}", field="policy")
        changes["policy"] = policy
    if warning_percent is not None:
        if (
            isinstance(warning_percent, bool)
            or not isinstance(warning_percent, int)
            or not 0 <= warning_percent <= 100
        ):
            raise InvalidInput(f"warning_percent: {warning_percent!r} is not 0-100", field="warning_percent")
        changes["warning_percent"] = warning_percent
    defaults = {
        "name": "",
        "locale": DEFAULT_LOCALE,
        "timezone": DEFAULT_TIMEZONE,
        "policy": "allow_last_call",
    }
    created = repository.insert_practice(
        connection, {**defaults, **changes, "practice_id": practice_id, "created_at": now, "updated_at": now}
    )
    if not created and changes:
        before = get_practice(connection, practice_id)
        repository.update_practice(connection, practice_id, {**changes, "updated_at": now})
        if changes.get("timezone", before.timezone) != before.timezone:
            _move_calendar_months(connection, practice_id, before.timezone, changes["timezone"], now)
    return get_practice(connection, practice_id)


def _move_calendar_months(
    connection: Connection, practice_id: str, old: str, new: str, now: datetime
) -> None:
    """Calendar months are the practice's months: the running one and those either side (the new
    zone may be in either, and the next may exist from an earlier change) take the new zone's bounds
    and keep their usage, so the new zone's reading of the date finds them instead of opening a
    month with a fresh budget."""
    running, after = calendar_month(now, old)
    before, _ = calendar_month(datetime.fromtimestamp(running - 1, UTC), old)
    for start in (before, running, after):
        repository.move_calendar_period(connection, practice_id, start, same_month_in(start, old, new))
    repository.forget_period(connection, practice_id)


def get_practice(connection: Connection, practice_id: str) -> Practice:
    row = repository.get_practice(connection, check_practice_id(practice_id))
    if row is None:
        raise NotFound(f"practice {practice_id!r} does not exist", field="practice_id")
    return _practice(row)


def put_plan(connection: Connection, lookup_key: str, *, included_usd: object, now: datetime) -> Plan:
    included = parse_usd(included_usd, field="included_usd")
    repository.upsert_plan(connection, check_id(lookup_key, "lookup_key"), included, now)
    repository.forget_periods_of_plan(connection, lookup_key)
    return Plan(lookup_key, included)


def put_subscription(
    connection: Connection,
    subscription_id: str,
    *,
    practice_id: str,
    status: str,
    plan: str | None = None,
    current_period_start: int | None = None,
    current_period_end: int | None = None,
    customer_id: str | None = None,
    customer_email: str | None = None,
    updated_at: int | None = None,
    now: datetime,
) -> Subscription:
    """Mirror the provider's subscription; an update older than the stored one is ignored.

    `updated_at` is the provider's clock (Unix seconds); it defaults to now.
    """
    get_practice(connection, practice_id)
    for field, value in (
        ("current_period_start", current_period_start),
        ("current_period_end", current_period_end),
        ("updated_at", updated_at),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LATEST_UNIX_SECONDS
        ):
            raise InvalidInput(
                f"{field}: {value!r} is not a Unix time in seconds up to {LATEST_UNIX_SECONDS} (9998-12-31)",
                field=field,
            )
    if (current_period_start is None) != (current_period_end is None):
        raise InvalidInput(
            "current_period_start and current_period_end go together", field="current_period_end"
        )
    if (
        current_period_start is not None
        and current_period_end is not None
        and current_period_end <= current_period_start
    ):
        raise InvalidInput(
            "current_period_end must be after current_period_start", field="current_period_end"
        )
    values = {
        "subscription_id": check_id(subscription_id, "subscription_id"),
        "practice_id": practice_id,
        "status": _text(status, "status"),
        "plan": None if plan is None else check_id(plan, "plan"),
        "current_period_start": current_period_start,
        "current_period_end": current_period_end,
        "customer_id": None if customer_id is None else check_id(customer_id, "customer_id"),
        "customer_email": None if customer_email is None else _text(customer_email, "customer_email"),
        "updated_at": int(now.timestamp()) if updated_at is None else updated_at,
        "mirrored_at": now,
    }
    before = repository.get_subscription(connection, subscription_id)
    if repository.upsert_subscription(connection, values):
        repository.forget_period(connection, practice_id)
        if before is not None and before.practice_id != practice_id:  # moved: it funds the old one no more
            repository.forget_period(connection, before.practice_id)
    row = repository.get_subscription(connection, subscription_id)
    assert row is not None
    return Subscription(**{field: getattr(row, field) for field in Subscription.__slots__})


def customer_of(connection: Connection, practice_id: str, *, rules: Rules) -> str | None:
    """The payment provider's customer of the subscription that grants the practice access now."""
    subscription = repository.governing_subscription(connection, practice_id, rules.granting_statuses)
    return None if subscription is None else subscription.customer_id


def current_period(connection: Connection, practice_id: str, *, at: datetime, rules: Rules) -> Period | None:
    """The period the practice is billed in at `at`; None without a subscription granting access.

    Creates the period's row on first use and caches it on the practice's balance row: calendar
    months until their end, provider periods until the subscription, plan or practice changes.
    """
    practice = get_practice(connection, practice_id)
    subscription = repository.governing_subscription(connection, practice_id, rules.granting_statuses)
    if subscription is None:
        repository.forget_period(connection, practice_id)
        return None
    plan = repository.get_plan(connection, subscription.plan) if subscription.plan else None
    key = period_for(
        subscription.subscription_id,
        subscription.current_period_start,
        subscription.current_period_end,
        at=at,
        timezone=practice.timezone,
    )
    row = repository.get_or_create_period(
        connection,
        practice_id,
        key,
        plan=subscription.plan,
        included_micros=rules.default_included_micros if plan is None else plan.included_micros,
    )
    provider_period = subscription.current_period_start is not None
    valid_until = None if provider_period else datetime.fromtimestamp(key.end, UTC)
    repository.cache_period(connection, practice_id, row.period_id, valid_until)
    return period_from_row(row)


def get_period(connection: Connection, period_id: int) -> Period:
    return period_from_row(repository.get_period(connection, period_id))


def period_from_row(row: Any) -> Period:
    """A Period from any row with the `periods` columns (the state query selects them too)."""
    return Period(
        row.period_id,
        row.practice_id,
        row.subscription_id,
        row.period_start,
        row.period_end,
        row.plan,
        row.included_micros,
        row.included_used_micros,
        row.used_micros,
        row.overage_micros,
    )


def device_hash(secret: bytes, device_id: str) -> str:
    """The keyed hash a device is known by; `device_id` is never echoed (a secret of the installation)."""
    if not isinstance(device_id, str) or not 1 <= len(device_id) <= 200 or not device_id.isprintable():
        raise InvalidInput("device_id must be 1-200 printable characters", field="device_id")
    return hmac.new(secret, device_id.encode(), hashlib.sha256).hexdigest()


def _new_device_id(device_id: str) -> str:
    """A device id to bind: one the desktop app can send in `X-Device-Id`, printable ASCII without a
    space at either end (HTTP drops the spaces before a header's value, so a device bound as
    `" pc-1"` could never call). One bound before these rules is still found and can be deactivated."""
    if isinstance(device_id, str) and (
        not device_id.isascii() or device_id.isspace() or device_id != device_id.strip()
    ):
        raise InvalidInput(
            "device_id must be printable ASCII, not blank, without a space at either end", field="device_id"
        )
    return device_id  # device_hash checks the rest


def _device(row: Row[Any]) -> Device:
    return Device(row.device_hash, row.practice_id, row.user_key, bool(row.active))


def bind_device(
    connection: Connection,
    secret: bytes,
    device_id: str,
    *,
    practice_id: str,
    user_key: str | None = None,
    now: datetime,
) -> Device:
    """Bind a device to a practice (again: reactivates it). A device of another practice is refused."""
    hashed = device_hash(secret, _new_device_id(device_id))
    get_practice(connection, practice_id)
    values = {
        "practice_id": practice_id,
        "user_key": None if user_key is None else check_id(user_key, "user_key"),
        "active": True,
        "updated_at": now,
    }
    if not repository.insert_device(connection, {**values, "device_hash": hashed, "created_at": now}):
        existing = repository.get_device(connection, hashed)
        assert existing is not None
        if existing.practice_id != practice_id:
            raise Conflict(
                "device_id is bound to another practice; deactivating it does not free it", field="device_id"
            )
        repository.update_device(connection, hashed, values)
    row = repository.get_device(connection, hashed)
    assert row is not None
    return _device(row)


def deactivate_device(connection: Connection, secret: bytes, device_id: str, *, now: datetime) -> Device:
    hashed = device_hash(secret, device_id)
    if repository.get_device(connection, hashed) is None:
        raise NotFound("device_id is not bound to any practice", field="device_id")
    repository.update_device(connection, hashed, {"active": False, "updated_at": now})
    row = repository.get_device(connection, hashed)
    assert row is not None
    return _device(row)


def resolve(
    connection: Connection,
    secret: bytes,
    *,
    practice_id: str | None = None,
    device_id: str | None = None,
    recording: bool = False,
) -> tuple[str, Device | None]:
    """The id of the practice a request spends from: named, implied by its device, or both — if they
    agree. Whether a named practice exists is left to the caller, which reads it anyway.

    A deactivated device can make no new call, but with `recording` (a settle) the call it already
    made is still recorded against its practice: a call that happened is never lost.
    """
    if device_id is None:
        if practice_id is None:
            raise InvalidInput("practice_id or a device id is required", field="practice_id")
        return check_practice_id(practice_id), None
    hashed = device_hash(secret, device_id)
    found = repository.device_binding(connection, hashed)
    if found is None or not (found[2] or recording):
        raise Forbidden("this device is not bound to a practice or was deactivated", field="device_id")
    owner, user_key, active = found
    if practice_id is not None and check_practice_id(practice_id) != owner:
        raise DeviceNotInPractice("this device belongs to another practice", field="device_id")
    return owner, Device(hashed, owner, user_key, active)
