"""Delivery of the outbox to the vendor's backend: signed POSTs, retries with backoff, the worker.

**Contract for the receiver.** Each notification is POSTed to `notify_url` as JSON (the envelope
`{"id", "type", "created", "practice_id", "data"}`) with the headers

- `AIBudget-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>` — Stripe's
  scheme, so `stripe.WebhookSignature.verify_header(body, header, secret, tolerance=300)` verifies
  it; `t` is the wall-clock time of the request;
- `AIBudget-Event: <type>` and `AIBudget-Delivery: <notification id>` (the same as the body's `id`).

Delivery is **at least once**: any 2xx answer is delivery; anything else — another status, a
timeout, a refused connection — is retried after `min(1 s * 2**(attempts-1), 1 h)`, less up to 10 %
jitter, until `notify_max_attempts` attempts, then the notification is `failed` (the log keeps why).
A receiver may see the same notification twice (a lost 2xx answer, a server that stopped before it
booked the answer) and must dedupe on `AIBudget-Delivery`.

**No transaction spans the network.** A pass reads the due rows in one short transaction; takes each
for the length of an attempt (`outbox.claim`: a conditional update moving its next attempt `LEASE`
ahead), so of several server processes only one sends it; POSTs it with no transaction open; and
records the outcome in a short transaction of its own with a conditional update (see
`outbox.record_attempt`), so two processes never count one attempt twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import httpx
from sqlalchemy import Connection

from aibudget.background import Periodic
from aibudget.config import Settings
from aibudget.errors import ConfigError
from aibudget.notify import outbox
from aibudget.notify.outbox import Notification
from aibudget.store.dialect import Transaction

SIGNATURE_HEADER = "AIBudget-Signature"
EVENT_HEADER = "AIBudget-Event"
DELIVERY_HEADER = "AIBudget-Delivery"
TIMEOUT_SECONDS = 5.0
LEASE = timedelta(seconds=60)  # how long an attempt keeps its notification from other processes
FIRST_BACKOFF = timedelta(seconds=1)
MAX_BACKOFF = timedelta(hours=1)
JITTER = 0.10
BATCH = 50

T = TypeVar("T")
log = logging.getLogger(__name__)


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The `AIBudget-Signature` header value for `body` sent at `timestamp` (Stripe's scheme)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def body_of(notification: Notification) -> bytes:
    """The bytes POSTed (and signed): the stored envelope as compact JSON."""
    return json.dumps(notification.payload, separators=(",", ":"), ensure_ascii=False).encode()


def backoff(attempts: int, *, jitter: float | None = None) -> timedelta:
    """How long to wait after the `attempts`-th failed attempt: 1 s, 2 s, 4 s, … at most 1 hour,
    shortened by up to 10 % (`jitter` in [0, 1), random by default) so retries spread out."""
    base = min(FIRST_BACKOFF * (1 << min(max(attempts - 1, 0), 32)), MAX_BACKOFF)
    share = random.random() if jitter is None else jitter  # spreads retries out; not a secret
    return base * (1 - JITTER * share)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one POST came to: the receiver's status code (None without an answer) and, unless it
    was a 2xx, why it failed."""

    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender:
    """POSTs notifications to one receiver over a shared `httpx.Client`; thread-safe."""

    def __init__(self, url: str, secret: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url
        self._secret = secret
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Sender:
        """The sender `notify_url` and `notify_secret` configure; `ConfigError` without either."""
        if settings.notify_url is None:
            raise ConfigError("notifications are off: AIBUDGET_NOTIFY_URL is unset")
        if settings.notify_secret is None:
            raise ConfigError(
                "AIBUDGET_NOTIFY_SECRET is required when AIBUDGET_NOTIFY_URL is set: notifications "
                "are signed with it (at least 32 characters)"
            )
        return cls(settings.notify_url, settings.notify_secret.get_secret_value())

    def send(self, notification: Notification) -> Outcome:
        """One signed POST; every failure is an `Outcome`, never an exception. No secret in it."""
        body = body_of(notification)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, self._secret, int(time.time())),
            EVENT_HEADER: notification.event_type,
            DELIVERY_HEADER: notification.notification_id,
        }
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return Outcome(None, f"no answer within {self._client.timeout.read} s")
        except httpx.HTTPError as failed:
            return Outcome(None, f"{type(failed).__name__}: {failed}")
        if 200 <= response.status_code < 300:
            return Outcome(response.status_code, None)
        return Outcome(response.status_code, f"the receiver answered {response.status_code}")

    def close(self) -> None:
        self._client.close()


def record(
    connection: Connection,
    notification: Notification,
    outcome: Outcome,
    *,
    now: datetime,
    max_attempts: int,
) -> bool:
    """Book one attempt's outcome: delivered, retried after `backoff`, or failed for good after
    `max_attempts`; False when another process booked this attempt first."""
    attempts = notification.attempts + 1
    if outcome.delivered:
        return outbox.record_attempt(
            connection, notification, status="delivered", now=now,
            status_code=outcome.status_code, error=None,
        )  # fmt: skip
    if attempts >= max_attempts:
        return outbox.record_attempt(
            connection, notification, status="failed", now=now,
            status_code=outcome.status_code, error=outcome.error,
        )  # fmt: skip
    return outbox.record_attempt(
        connection, notification, status="pending", now=now, status_code=outcome.status_code,
        error=outcome.error, next_attempt_at=now + backoff(attempts),
    )  # fmt: skip


def deliver_due(
    *,
    read: Transaction,
    write: Transaction,
    sender: Sender,
    clock: Callable[[], datetime],
    max_attempts: int,
    batch: int = BATCH,
) -> int:
    """One pass: send every notification due now, oldest first, and book each outcome; returns how
    many were delivered. No transaction is open while a POST is in flight (see the module doc)."""
    delivered = 0
    tried: set[str] = set()
    while True:
        due = read(_due(clock(), batch))
        fresh = [notification for notification in due if notification.notification_id not in tried]
        arrived = 0
        for notification in fresh:
            tried.add(notification.notification_id)
            if not write(_claim(notification, clock() + LEASE)):
                continue  # another process is sending it, or has booked it
            outcome = sender.send(notification)
            booked = write(_booking(notification, outcome, clock, max_attempts))
            if booked and outcome.delivered:
                arrived += 1
            elif booked:
                log.warning(
                    "notification %s (%s) not delivered, attempt %d: %s",
                    notification.notification_id, notification.event_type,
                    notification.attempts + 1, outcome.error,
                )  # fmt: skip
        delivered += arrived
        # Another full batch only while the receiver takes them: one that is down (or slow to time
        # out) costs one batch per pass, not the whole backlog. Rows seen already are skipped: another
        # process may be sending them, and they are its to book.
        if len(due) < batch or not fresh or not arrived:
            return delivered


def _claim(notification: Notification, until: datetime) -> Callable[[Connection], bool]:
    def work(connection: Connection) -> bool:
        return outbox.claim(connection, notification, until=until)

    return work


def _due(now: datetime, batch: int) -> Callable[[Connection], list[Notification]]:
    def work(connection: Connection) -> list[Notification]:
        return outbox.due(connection, now=now, limit=batch)

    return work


def _booking(
    notification: Notification, outcome: Outcome, clock: Callable[[], datetime], max_attempts: int
) -> Callable[[Connection], bool]:
    def work(connection: Connection) -> bool:
        return record(connection, notification, outcome, now=clock(), max_attempts=max_attempts)

    return work


class Notifier(Periodic):
    """Calls `deliver` every `interval` seconds on a daemon thread until `stop()`. While the database
    is away the notifications stay in the outbox and the next pass tries again."""

    def __init__(self, deliver: Callable[[], int], *, interval: float) -> None:
        super().__init__(
            deliver, interval=interval, name="aibudget-notifier", done="delivered %d notification(s)"
        )
