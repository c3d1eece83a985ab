"""Delivery to a real local receiver: signed like Stripe, retried with backoff, given up on, logged.

Time is the injected clock: a retry is due when the test moves the clock past its backoff, so no
test sleeps through a backoff. The receiver is a real HTTP server on a free port.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import stripe
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from aibudget import Budget, Settings
from aibudget.errors import ConfigError
from aibudget.notify import delivery, outbox
from aibudget.notify.delivery import Notifier, Sender
from aibudget.notify.outbox import Notification
from tests.api.conftest import free_port
from tests.conftest import FakeClock
from tests.factories import create_practice

T = TypeVar("T")
SECRET = "notify-secret-0123456789abcdefghijklmnop"


@dataclass(frozen=True)
class Received:
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """The vendor's backend: a real HTTP server on a free port that records every POST and answers
    204, or `fail(n)` times 500 first, or only after `delay` seconds."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.failures = 0
        self.delay = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.received.append(Received(body, dict(self.headers.items())))
                    failing = receiver.failures > 0
                    receiver.failures -= failing
                time.sleep(receiver.delay)
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads `received`; no access log on stderr

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/aibudget"

    def fail(self, times: int) -> None:
        with self._lock:
            self.failures = times

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def running_receiver() -> Iterator[Receiver]:
    """A receiver for a test's lifetime; modules elsewhere make it their `receiver` fixture too."""
    started = Receiver()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


def notify_settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    return Settings.load(data_dir=tmp_path / "var", notify_url=url, notify_secret=SECRET, **overrides)


@pytest.fixture
def notifying(database_url: str, tmp_path: Path, clock: FakeClock, receiver: Receiver) -> Iterator[Budget]:
    """A budget whose notifications go to `receiver`, at most 4 attempts each, a pass every 50 ms."""
    settings = notify_settings(tmp_path, receiver.url, notify_max_attempts=4, notify_interval_seconds=0.05)
    with Budget.open(database_url, settings=settings, clock=clock) as opened:
        create_practice(opened, "p1")
        yield opened


def notify(
    budget: Budget,
    dedupe_key: str = "topup.succeeded:att_1",
    *,
    practice_id: str = "p1",
    event_type: str = "topup.succeeded",
    data: dict[str, Any] | None = None,
) -> bool:
    """Enqueue as the ledger and top-up code do: `outbox.enqueue` in a write transaction."""
    return budget._write(
        lambda connection: outbox.enqueue(
            connection, practice_id=practice_id, event_type=event_type,
            data={"credit_usd": "10.000000"} if data is None else data, dedupe_key=dedupe_key,
            now=budget.clock(),
        )
    )  # fmt: skip


def only(budget: Budget) -> Notification:
    [notification] = budget.notifications()
    return notification


# signing


def test_the_signature_is_stripes_scheme_and_stripe_verifies_it() -> None:
    body, now = b'{"id":"ntf_1","type":"topup.failed"}', int(time.time())

    header = delivery.sign(body, SECRET, now)

    assert header.startswith(f"t={now},v1=")
    assert stripe.WebhookSignature.verify_header(body.decode(), header, SECRET, tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body.decode() + " ", header, SECRET, tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body.decode(), header, "another-secret" * 3, tolerance=300)


def test_backoff_doubles_from_one_second_up_to_an_hour_less_at_most_ten_percent_jitter() -> None:
    assert [delivery.backoff(n, jitter=0).total_seconds() for n in (1, 2, 3, 4, 12)] == [1, 2, 4, 8, 2048]
    assert delivery.backoff(13, jitter=0) == timedelta(hours=1)
    assert delivery.backoff(100, jitter=0) == timedelta(hours=1)
    assert delivery.backoff(3, jitter=0.999) >= timedelta(seconds=4 * 0.9)
    assert all(timedelta(seconds=7.2) <= delivery.backoff(4) <= timedelta(seconds=8) for _ in range(100))


# delivery


def test_a_notification_reaches_the_receiver_signed_and_is_logged_delivered(
    notifying: Budget, receiver: Receiver, clock: FakeClock
) -> None:
    notify(notifying, data={"credit_usd": "10.000000", "grant_id": 7})

    assert notifying.deliver_notifications() == 1

    [request] = receiver.received
    sent = only(notifying)
    assert request.json() == sent.payload == {
        "id": sent.notification_id, "type": "topup.succeeded", "created": int(clock.now.timestamp()),
        "practice_id": "p1", "data": {"credit_usd": "10.000000", "grant_id": 7},
    }  # fmt: skip
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["AIBudget-Event"] == "topup.succeeded"
    assert request.headers["AIBudget-Delivery"] == sent.notification_id
    signature = request.headers["AIBudget-Signature"]
    assert stripe.WebhookSignature.verify_header(request.body.decode(), signature, SECRET, tolerance=300)
    assert SECRET not in json.dumps(request.headers)
    assert (sent.status, sent.attempts, sent.last_status_code, sent.last_error) == ("delivered", 1, 204, None)
    assert sent.delivered_at == sent.last_attempt_at == clock.now
    assert notifying.deliver_notifications() == 0  # delivered once; nothing is sent again
    assert len(receiver.received) == 1


@pytest.mark.parametrize(
    ("locale", "timezone", "title", "message"),
    [
        ("de-CH", "Europe/Zurich", "KI-Kontingent aufgebraucht",
         "Das KI-Kontingent für diese Periode ist aufgebraucht. Es wird am 01.12.2026 erneuert. Wenn Sie "
         "KI-Funktionen schon vorher benötigen, können Sie in den Abrechnungseinstellungen Zusatzguthaben "
         "kaufen."),
        ("en", "America/New_York", "AI allowance used up",
         "The AI allowance for this period has been used up. It renews on Nov 30, 2026. If you need AI "
         "features before then, extra credit can be purchased in the billing settings."),
    ],
)  # fmt: skip
def test_the_receiver_gets_the_customer_texts_in_the_practices_language_as_utf8(
    notifying: Budget, receiver: Receiver, locale: str, timezone: str, title: str, message: str
) -> None:
    notifying.put_practice("p1", locale=locale, timezone=timezone)
    notifying.put_plan("basic", included_usd="1")
    notifying.put_subscription("sub_1", practice_id="p1", plan="basic", status="active",
                               current_period_start=1793491200, current_period_end=1796083200)  # fmt: skip
    notifying.settle(request_id="a", practice_id="p1", model="gpt-4o", input_tokens=400_000)  # all 1 USD

    assert notifying.deliver_notifications() == 3  # 80 %, 100 %, exhausted

    [request] = [r for r in receiver.received if r.headers["AIBudget-Event"] == "budget.exhausted"]
    data = request.json()["data"]
    assert (data["locale"], data["title"], data["message_user"]) == (locale, title, message)
    assert message.encode() in request.body  # UTF-8 as is, not \u escapes
    signature = request.headers["AIBudget-Signature"]
    assert stripe.WebhookSignature.verify_header(request.body.decode(), signature, SECRET, tolerance=300)


def test_a_receiver_failing_twice_gets_the_third_attempt_after_the_backoff(
    notifying: Budget, receiver: Receiver, clock: FakeClock
) -> None:
    receiver.fail(2)
    notify(notifying)
    start = clock.now

    assert notifying.deliver_notifications() == 0
    first = only(notifying)
    assert (first.status, first.attempts, first.last_status_code) == ("pending", 1, 500)
    assert first.last_error == "the receiver answered 500"
    assert start + timedelta(seconds=0.9) <= first.next_attempt_at <= start + timedelta(seconds=1)

    assert notifying.deliver_notifications() == 0  # not due yet: nothing is sent
    assert len(receiver.received) == 1

    clock.advance(seconds=1)
    assert notifying.deliver_notifications() == 0
    second = only(notifying)
    assert (second.status, second.attempts, second.last_status_code) == ("pending", 2, 500)
    assert clock.now + timedelta(seconds=1.8) <= second.next_attempt_at <= clock.now + timedelta(seconds=2)

    clock.advance(seconds=2)
    assert notifying.deliver_notifications() == 1
    third = only(notifying)
    assert (third.status, third.attempts, third.last_status_code, third.last_error) == (
        "delivered", 3, 204, None
    )  # fmt: skip
    assert third.delivered_at == clock.now
    bodies = {request.body for request in receiver.received}
    deliveries = {request.headers["AIBudget-Delivery"] for request in receiver.received}
    assert (len(receiver.received), len(bodies), deliveries) == (3, 1, {third.notification_id})


def test_delivery_gives_up_after_the_configured_attempts(
    notifying: Budget, receiver: Receiver, clock: FakeClock
) -> None:
    receiver.fail(100)
    notify(notifying)

    for _ in range(6):
        notifying.deliver_notifications()
        clock.advance(hours=1)

    given_up = only(notifying)
    assert (given_up.status, given_up.attempts, given_up.last_status_code) == ("failed", 4, 500)
    assert given_up.delivered_at is None
    assert len(receiver.received) == 4
    assert notifying.notifications(status="failed") == [given_up]
    assert notifying.notifications(status="pending") == []


def test_an_unreachable_receiver_counts_an_attempt_with_its_reason(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/hooks"  # nothing listens there
    with Budget.open(database_url, settings=notify_settings(tmp_path, closed), clock=clock) as budget:
        create_practice(budget, "p1")
        notify(budget)

        assert budget.deliver_notifications() == 0
        failed = only(budget)

    assert (failed.status, failed.attempts, failed.last_status_code) == ("pending", 1, None)
    assert failed.last_error is not None
    assert failed.last_error.startswith("ConnectError")
    assert SECRET not in failed.last_error


def test_a_receiver_that_does_not_answer_in_time_is_a_failed_attempt(receiver: Receiver) -> None:
    receiver.delay = 1
    sender = Sender(receiver.url, SECRET, timeout=0.2)
    at = datetime(2026, 11, 15, tzinfo=UTC)
    notification = Notification(
        notification_id="ntf_slow", event_type="topup.failed", practice_id="p1", dedupe_key="k",
        payload={"id": "ntf_slow"}, status="pending", attempts=0, next_attempt_at=at,
        last_attempt_at=None, last_status_code=None, last_error=None, created_at=at, delivered_at=None,
    )  # fmt: skip
    try:
        outcome = sender.send(notification)
    finally:
        sender.close()

    assert not outcome.delivered
    assert outcome == delivery.Outcome(None, "no answer within 0.2 s")


def test_two_processes_recording_the_same_attempt_count_it_once(notifying: Budget, clock: FakeClock) -> None:
    notify(notifying)
    seen = only(notifying)  # both processes read the row before sending
    failed = delivery.Outcome(500, "the receiver answered 500")

    def book(outcome: delivery.Outcome) -> bool:
        return notifying._write(
            lambda connection: delivery.record(connection, seen, outcome, now=clock.now, max_attempts=4)
        )

    assert book(failed) is True
    assert book(delivery.Outcome(204, None)) is False  # the other process booked this attempt first

    booked = only(notifying)
    assert (booked.status, booked.attempts, booked.last_status_code) == ("pending", 1, 500)


def test_two_processes_passing_at_once_send_each_notification_once(
    notifying: Budget, receiver: Receiver, clock: FakeClock
) -> None:
    """Regression: every server process sent every due notification (two workers: each twice)."""
    for key in ("a", "b", "c"):
        notify(notifying, key)
    receiver.delay = 0.2  # both passes read the due rows before either has booked one
    senders = [Sender(receiver.url, SECRET) for _ in range(2)]
    read_together = threading.Barrier(2)

    def read(work: Callable[[Connection], T]) -> T:
        rows = notifying._read(work)
        read_together.wait(5)
        return rows

    def one_pass(sender: Sender) -> int:
        return delivery.deliver_due(
            read=read, write=notifying._write, sender=sender, clock=clock, max_attempts=4, batch=10
        )

    try:
        with ThreadPoolExecutor(2) as processes:
            delivered = sum(processes.map(one_pass, senders))
    finally:
        for sender in senders:
            sender.close()

    assert delivered == 3
    assert (
        sorted(received.json()["data"]["credit_usd"] for received in receiver.received) == ["10.000000"] * 3
    )
    assert len({received.headers["AIBudget-Delivery"] for received in receiver.received}) == 3
    assert {(n.status, n.attempts) for n in notifying.notifications()} == {("delivered", 1)}


def test_a_pass_takes_batch_after_batch_while_the_receiver_takes_them(
    notifying: Budget, receiver: Receiver, clock: FakeClock
) -> None:
    for key in ("a", "b", "c", "d", "e"):
        notify(notifying, key)
        clock.advance(milliseconds=1)
    sender = Sender(receiver.url, SECRET)

    def one_pass() -> int:
        return delivery.deliver_due(
            read=notifying._read, write=notifying._write, sender=sender, clock=clock, max_attempts=4, batch=2
        )

    try:
        receiver.fail(100)
        assert one_pass() == 0  # the receiver is down: one batch, the oldest, not the whole backlog
        tried = [n.dedupe_key for n in notifying.notifications() if n.attempts]
        receiver.fail(0)
        clock.advance(seconds=1)
        assert one_pass() == 5
    finally:
        sender.close()

    assert sorted(tried) == ["a", "b"]
    assert {n.status for n in notifying.notifications()} == {"delivered"}


def test_a_notification_enqueued_before_a_restart_is_delivered_after_it(
    database_url: str, tmp_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    settings = notify_settings(tmp_path, receiver.url)
    with Budget.open(database_url, settings=settings, clock=clock) as before:
        create_practice(before, "p1")
        notify(before, event_type="budget.exhausted", dedupe_key="budget.exhausted:p1:sub_1:0:0")

    with Budget.open(database_url, settings=settings, clock=clock) as after:
        assert after.deliver_notifications() == 1
        delivered = only(after)

    assert delivered.status == "delivered"
    assert [request.headers["AIBudget-Event"] for request in receiver.received] == ["budget.exhausted"]


# the worker


def test_the_notifier_delivers_on_its_own(notifying: Budget, receiver: Receiver) -> None:
    notify(notifying)
    notifier = notifying.notifier()
    assert notifier is not None
    notifier.start()
    try:
        [request] = receiver.wait_for(1)
    finally:
        notifier.stop()

    assert request.headers["AIBudget-Delivery"] == only(notifying).notification_id
    assert notifier.passes >= 1


def test_a_database_error_in_a_pass_is_logged_and_the_next_pass_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def deliver() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, Exception("the database is away"))
        return 0

    notifier = Notifier(deliver, interval=0.02)
    with caplog.at_level(logging.ERROR, logger="aibudget.notify.delivery"):
        notifier.start()
        deadline = time.monotonic() + 10
        while notifier.passes < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        notifier.stop()

    assert notifier.passes >= 1
    assert "aibudget-notifier: pass failed; retrying" in caplog.text
    assert "the database is away" in caplog.text


def test_without_a_notify_url_nothing_is_delivered_and_no_worker_runs(budget: Budget) -> None:
    create_practice(budget, "p1")
    notify(budget)

    assert budget.deliver_notifications() == 0
    assert budget.notifier() is None
    assert only(budget).status == "pending"


def test_a_notify_url_without_its_secret_refuses_to_start_delivery(database_url: str, tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path / "var", notify_url="http://127.0.0.1:9/hooks")
    with Budget.open(database_url, settings=settings) as budget:
        with pytest.raises(ConfigError, match="AIBUDGET_NOTIFY_SECRET is required"):
            budget.notifier()
        with pytest.raises(ConfigError, match="AIBUDGET_NOTIFY_SECRET is required"):
            budget.deliver_notifications()
