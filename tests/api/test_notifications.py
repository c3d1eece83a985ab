"""Notifications through a real server: its worker delivers what is in the outbox, signed, and
`GET /v1/notifications` shows the operator the log (SPEC §6)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from tests.api.conftest import Server, free_port, start_server, stop_server
from tests.api.test_accounts import assert_problem, key, practice
from tests.databases import server_databases
from tests.notify.test_delivery import SECRET, Receiver, notify, running_receiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, server_database: str | None, receiver: Receiver
) -> Iterator[Server]:
    """A server that delivers to `receiver`, a pass every 0.2 s."""
    started = start_server(
        tmp_path_factory.mktemp("server") / "var", server_database,
        AIBUDGET_NOTIFY_URL=receiver.url, AIBUDGET_NOTIFY_SECRET=SECRET,
        AIBUDGET_NOTIFY_INTERVAL_SECONDS="0.2",
    )  # fmt: skip
    try:
        yield started
    finally:
        stop_server(started)


def enqueued(server: Server, practice_id: str, dedupe_key: str, **fields: Any) -> str:
    """Put a notification straight into the server's database, as the ledger does; its id."""
    with server.budget() as budget:
        assert notify(budget, dedupe_key, practice_id=practice_id, **fields)
        [queued] = [n for n in budget.notifications(practice_id=practice_id) if n.dedupe_key == dedupe_key]
    return queued.notification_id


def log_of(server: Server, practice_id: str, until_status: str, timeout: float = 10) -> list[Any]:
    """The practice's log once every row has `until_status` (the worker books after its POST)."""
    deadline = time.monotonic() + timeout
    with server.admin() as admin:
        while True:
            response = admin.get("/v1/notifications", params={"practice_id": practice_id})
            assert response.status_code == 200, response.text
            rows: list[Any] = response.json()
            if all(row["status"] == until_status for row in rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


def test_the_server_delivers_a_notification_from_its_outbox_and_logs_it(
    server: Server, receiver: Receiver
) -> None:
    practice_id = practice(server)
    notification_id = enqueued(server, practice_id, f"topup.failed:{practice_id}", event_type="topup.failed",
                               data={"failure_code": "card_declined"})  # fmt: skip

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not [
        r for r in receiver.received if r.headers.get("AIBudget-Delivery") == notification_id
    ]:
        time.sleep(0.05)
    [request] = [r for r in receiver.received if r.headers.get("AIBudget-Delivery") == notification_id]
    [row] = log_of(server, practice_id, "delivered")

    signature = request.headers["AIBudget-Signature"]
    assert stripe.WebhookSignature.verify_header(request.body.decode(), signature, SECRET, tolerance=300)
    assert request.headers["AIBudget-Event"] == "topup.failed"
    assert request.json()["data"] == {"failure_code": "card_declined"}
    assert row["notification_id"] == notification_id
    assert (row["event_type"], row["practice_id"], row["status"], row["attempts"]) == (
        "topup.failed", practice_id, "delivered", 1
    )  # fmt: skip
    assert (row["last_status_code"], row["last_error"]) == (204, None)
    assert row["payload"] == request.json()
    assert row["delivered_at"] is not None
    assert set(row) == {
        "notification_id", "event_type", "practice_id", "status", "attempts", "last_status_code",
        "last_error", "created_at", "last_attempt_at", "next_attempt_at", "delivered_at", "payload",
    }  # fmt: skip


def test_the_log_is_newest_first_and_filters_by_status(server: Server) -> None:
    practice_id = practice(server)
    first = enqueued(server, practice_id, f"a:{practice_id}")
    time.sleep(0.01)
    second = enqueued(server, practice_id, f"b:{practice_id}", event_type="budget.exhausted")
    log_of(server, practice_id, "delivered")

    with server.admin() as admin:
        newest = admin.get("/v1/notifications", params={"practice_id": practice_id, "limit": 1})
        delivered = admin.get("/v1/notifications", params={"practice_id": practice_id, "status": "delivered"})
        failed = admin.get("/v1/notifications", params={"practice_id": practice_id, "status": "failed"})

    assert [row["notification_id"] for row in newest.json()] == [second]
    assert [row["notification_id"] for row in delivered.json()] == [second, first]
    assert failed.json() == []


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"status": "sent"}, 422, "status"),
        ({"limit": 0}, 422, "limit"),
        ({"limit": 1001}, 422, "limit"),
        ({"practice_id": "bad id!"}, 422, "practice_id"),
        ({"practice_id": "nobody-at-all"}, 404, "practice_id"),
    ],
)
def test_a_bad_filter_is_a_problem_naming_it(
    server: Server, params: dict[str, Any], status: int, field: str
) -> None:
    with server.admin() as admin:
        assert_problem(admin.get("/v1/notifications", params=params), status, field)


def test_only_an_admin_reads_the_log(server: Server) -> None:
    practice_id = practice(server)
    with server.client() as anonymous:
        assert_problem(anonymous.get("/v1/notifications"), 401)
    with server.client(key(server, "practice", practice_id)) as own_practice:
        assert_problem(own_practice.get("/v1/notifications", params={"practice_id": practice_id}), 403)
    with server.client(key(server, "service")) as service:
        assert_problem(service.get("/v1/notifications"), 403)


def test_a_server_with_a_notify_url_but_no_secret_refuses_to_start(
    tmp_path: Path, server_database: str | None, receiver: Receiver
) -> None:
    with pytest.raises(RuntimeError, match="AIBUDGET_NOTIFY_SECRET is required"):
        start_server(tmp_path / "var", server_database, AIBUDGET_NOTIFY_URL=receiver.url)


def test_what_a_killed_server_could_not_deliver_is_delivered_after_the_restart(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, receiver: Receiver
) -> None:
    """A practice spends its whole allowance over HTTP while the receiver is down; the server is
    killed (-9); a new server over the same database delivers everything the settle caused."""
    data_dir, day, now = tmp_path / "var", 86_400, int(time.time())
    env = {"AIBUDGET_NOTIFY_SECRET": SECRET, "AIBUDGET_NOTIFY_INTERVAL_SECONDS": "0.2"}
    down = f"http://127.0.0.1:{free_port()}/down"  # nothing listens there
    for database in server_databases(backend, request):
        first = start_server(data_dir, database, AIBUDGET_NOTIFY_URL=down, **env)
        try:
            practice_id = practice(first)
            with first.budget() as budget:
                budget.put_plan("one-usd", included_usd="1")
                budget.put_subscription("sub-restart", practice_id=practice_id, plan="one-usd",
                                        status="active", current_period_start=now - day,
                                        current_period_end=now + day)  # fmt: skip
            with first.client(key(first, "service")) as service:
                settled = service.post("/v1/usage", json={
                    "practice_id": practice_id, "request_id": "all-of-it", "model": "gpt-4o",
                    "usage": {"input_tokens": 400_000},
                })  # fmt: skip
            assert settled.status_code == 201, settled.text
            tried = log_of(first, practice_id, "pending")
            assert len(tried) == 3
            deadline = time.monotonic() + 10  # each has been tried against the dead receiver
            while any(row["attempts"] == 0 for row in tried) and time.monotonic() < deadline:
                tried = log_of(first, practice_id, "pending")
            assert all(row["attempts"] >= 1 for row in tried)
        finally:
            first.process.kill()
            first.process.wait()

        second = start_server(data_dir, database, AIBUDGET_NOTIFY_URL=receiver.url, **env)
        try:
            delivered = log_of(second, practice_id, "delivered")
        finally:
            stop_server(second)

    assert [row["status"] for row in delivered] == ["delivered"] * 3
    ids = {row["notification_id"] for row in delivered}
    requests = [r for r in receiver.received if r.headers.get("AIBudget-Delivery") in ids]
    for received in requests:
        signature = received.headers["AIBudget-Signature"]
        assert stripe.WebhookSignature.verify_header(received.body.decode(), signature, SECRET, tolerance=300)
    kinds = sorted(
        (r.json()["type"], r.json()["data"].get("threshold_percent"))
        for r in {r.headers["AIBudget-Delivery"]: r for r in requests}.values()
    )
    assert kinds == [
        ("budget.exhausted", None),
        ("budget.threshold_crossed", 80),
        ("budget.threshold_crossed", 100),
    ]
