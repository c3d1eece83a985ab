"""The notifications outbox: the SQL for enqueueing notifications, listing the delivery log and
recording delivery attempts. Callers own the transaction.

What can never happen:

- a notification without its cause: `enqueue` runs in the transaction of the settle, refusal or
  top-up that causes it, so both commit or neither does, and a process stopping before delivery
  loses nothing;
- the same notification twice in the outbox: its `dedupe_key` is unique and the insert is
  conflict-ignore, which is how "once per period per threshold" holds;
- an attempt counted twice: an outcome is recorded only while the row is still `pending` at the
  attempt count the sender read (`record_attempt`), so two processes delivering at once count one.

A row goes `pending` → `delivered` (a 2xx answer) or, after the last allowed attempt, `failed`; an
operator sends a failed one again (`resend`): `pending` once more, with a new round of attempts.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, Row, select, update

from aibudget.accounts import service as accounts
from aibudget.errors import Conflict, InvalidInput, NotFound
from aibudget.store import tables
from aibudget.store.dialect import insert_if_absent
from aibudget.store.sql import Statement

notifications = tables.notifications

EVENT_TYPES = frozenset({"budget.threshold_crossed", "budget.exhausted", "topup.succeeded", "topup.failed"})
Status = Literal["pending", "delivered", "failed"]
STATUSES: tuple[Status, ...] = ("pending", "delivered", "failed")
MAX_LIMIT = 1000
MAX_ERROR_CHARS = 200  # the width of `last_error`


@dataclass(frozen=True, slots=True)
class Notification:
    """One row of the outbox and its delivery log. `payload` is exactly the JSON body sent."""

    notification_id: str
    event_type: str
    practice_id: str
    dedupe_key: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        """The delivery log's view of the row (times ISO 8601), as the API and CLI show it."""

        def iso(instant: datetime | None) -> str | None:
            return None if instant is None else instant.isoformat()

        return {
            "notification_id": self.notification_id,
            "event_type": self.event_type,
            "practice_id": self.practice_id,
            "status": self.status,
            "attempts": self.attempts,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "last_attempt_at": iso(self.last_attempt_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "delivered_at": iso(self.delivered_at),
            "payload": self.payload,
        }


def _notification(row: Row[Any]) -> Notification:
    return Notification(**{field: getattr(row, field) for field in Notification.__slots__})


_ID = re.compile(r"ntf_[A-Za-z0-9_-]{32}")  # as `new_id` makes them


def new_id() -> str:
    return "ntf_" + secrets.token_urlsafe(24)


def enqueue(
    connection: Connection,
    *,
    practice_id: str,
    event_type: str,
    data: dict[str, Any],
    dedupe_key: str,
    now: datetime,
) -> bool:
    """Put a notification in the outbox unless one with `dedupe_key` is there; True if it is new.

    Call it in the transaction of the change that causes it. The stored payload, sent as is, is the
    envelope `{"id", "type", "created" (Unix seconds), "practice_id", "data"}`; `data` must be JSON.
    """
    if event_type not in EVENT_TYPES:  # a programming error, never user input
        raise ValueError(f"unknown notification type {event_type!r}; expected one of {sorted(EVENT_TYPES)}")
    if not 1 <= len(dedupe_key) <= 200:
        raise ValueError(f"a dedupe key has 1-200 characters, not {len(dedupe_key)}")
    notification_id = new_id()
    payload = {
        "id": notification_id,
        "type": event_type,
        "created": int(now.timestamp()),
        "practice_id": practice_id,
        "data": data,
    }
    values = {
        "notification_id": notification_id,
        "event_type": event_type,
        "practice_id": practice_id,
        "dedupe_key": dedupe_key,
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    return insert_if_absent(connection, notifications, ["dedupe_key"], values) is not None


_PRESENT = Statement("SELECT 1 FROM notifications WHERE dedupe_key = :dedupe_key")


def present(connection: Connection, dedupe_key: str) -> bool:
    """Whether a notification with `dedupe_key` is in the outbox. One index probe, hand-written (a
    settle asks it every time it leaves a period past a threshold): a caller looks before building a
    notification that `enqueue` would keep out anyway — `enqueue` alone keeps it to once."""
    return _PRESENT.one(connection, {"dedupe_key": dedupe_key}) is not None


def list_notifications(
    connection: Connection,
    *,
    practice_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Notification]:
    """The delivery log, newest first: every practice's, or one practice's (404 if unknown)."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status: expected one of {', '.join(STATUSES)}, not {status!r}", field="status")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: expected 1-{MAX_LIMIT}, not {limit}", field="limit")
    query = select(notifications)
    if practice_id is not None:
        accounts.get_practice(connection, practice_id)
        query = query.where(notifications.c.practice_id == practice_id)
    if status is not None:
        query = query.where(notifications.c.status == status)
    rows = connection.execute(
        query.order_by(notifications.c.created_at.desc(), notifications.c.notification_id.desc()).limit(limit)
    )
    return [_notification(row) for row in rows]


def get_notification(connection: Connection, notification_id: str) -> Notification | None:
    row = connection.execute(
        select(notifications).where(notifications.c.notification_id == notification_id)
    ).first()
    return None if row is None else _notification(row)


def resend(
    connection: Connection,
    *,
    now: datetime,
    notification_id: str | None = None,
    practice_id: str | None = None,
) -> int:
    """Make failed notifications due again now, with a new round of attempts (the log keeps the last
    answer until the next one): the one named, else every failed one (of `practice_id`, if given);
    how many. `NotFound` for an unknown id, `Conflict` for one that has not failed."""
    query = update(notifications).where(notifications.c.status == "failed")
    if notification_id is not None:
        # an id of another shape names none (and a lone surrogate is no SQL parameter)
        found = get_notification(connection, notification_id) if _ID.fullmatch(notification_id) else None
        if found is None:
            raise NotFound(f"no notification with id {notification_id!r}", field="notification_id")
        if found.status != "failed":
            raise Conflict(
                f"notification {notification_id!r} is {found.status}: only a failed one is sent again",
                field="notification_id",
            )
        query = query.where(notifications.c.notification_id == notification_id)
    if practice_id is not None:
        accounts.get_practice(connection, practice_id)
        query = query.where(notifications.c.practice_id == practice_id)
    updated = connection.execute(query.values(status="pending", attempts=0, next_attempt_at=now))
    return updated.rowcount


def due(connection: Connection, *, now: datetime, limit: int = 50) -> list[Notification]:
    """Pending notifications whose next attempt has come, oldest first."""
    rows = connection.execute(
        select(notifications)
        .where(notifications.c.status == "pending", notifications.c.next_attempt_at <= now)
        .order_by(notifications.c.created_at, notifications.c.notification_id)
        .limit(limit)
    )
    return [_notification(row) for row in rows]


def claim(connection: Connection, notification: Notification, *, until: datetime) -> bool:
    """Take `notification` (as read) for one attempt: its next attempt moves to `until`, so other
    processes pass it by while this one sends; False when another process took or booked it first.
    A sender that dies before booking its attempt leaves the notification due again at `until`."""
    return _update_as_read(
        connection, notification, notifications.c.next_attempt_at == notification.next_attempt_at,
        next_attempt_at=until,
    )  # fmt: skip


def record_attempt(
    connection: Connection,
    notification: Notification,
    *,
    status: Status,
    now: datetime,
    status_code: int | None,
    error: str | None,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Count one attempt at `notification` (as read before sending) and its outcome; False when
    another process recorded an attempt first, in which case nothing changes."""
    values: dict[str, Any] = {
        "status": status,
        "attempts": notification.attempts + 1,
        "last_attempt_at": now,
        "last_status_code": status_code,
        "last_error": None if error is None else error[:MAX_ERROR_CHARS],
    }
    if status == "delivered":
        values["delivered_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    return _update_as_read(connection, notification, **values)


def _update_as_read(
    connection: Connection, notification: Notification, *unchanged: ColumnElement[bool], **values: Any
) -> bool:
    """Set `values` on `notification`'s row if it is still pending with the attempts it was read with
    (and whatever `unchanged` adds); whether it was."""
    updated = connection.execute(
        update(notifications)
        .where(
            notifications.c.notification_id == notification.notification_id,
            notifications.c.status == "pending",
            notifications.c.attempts == notification.attempts,
            *unchanged,
        )
        .values(**values)
    )
    return updated.rowcount == 1
