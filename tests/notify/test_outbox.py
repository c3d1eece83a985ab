"""The outbox: a notification is written with its cause, once per dedupe key, and listed in the log."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection

from aibudget import Budget
from aibudget.errors import InvalidInput, NotFound
from aibudget.notify import outbox
from tests.conftest import FakeClock
from tests.factories import create_practice
from tests.notify.test_delivery import notify, only


def test_enqueueing_the_same_dedupe_key_again_keeps_the_first_notification(
    budget: Budget, clock: FakeClock
) -> None:
    create_practice(budget, "p1")

    first = notify(budget, "budget.threshold_crossed:p1:sub_1:0:80", event_type="budget.threshold_crossed",
                   data={"threshold_percent": 80})  # fmt: skip
    clock.advance(minutes=5)
    again = notify(budget, "budget.threshold_crossed:p1:sub_1:0:80", event_type="budget.threshold_crossed",
                   data={"threshold_percent": 81})  # fmt: skip

    assert (first, again) == (True, False)
    stored = only(budget)
    assert stored.notification_id.startswith("ntf_")
    assert stored.payload == {
        "id": stored.notification_id, "type": "budget.threshold_crossed",
        "created": int(clock.now.timestamp()) - 300, "practice_id": "p1",
        "data": {"threshold_percent": 80},
    }  # fmt: skip
    assert (stored.status, stored.attempts, stored.last_attempt_at, stored.delivered_at) == (
        "pending", 0, None, None
    )  # fmt: skip
    assert stored.next_attempt_at == stored.created_at


def test_a_notification_is_written_only_if_its_transaction_commits(budget: Budget) -> None:
    create_practice(budget, "p1")

    def cause_then_fail(connection: Connection) -> None:
        outbox.enqueue(
            connection, practice_id="p1", event_type="topup.failed", data={}, dedupe_key="k1",
            now=budget.clock(),
        )  # fmt: skip
        raise RuntimeError("the change that caused it failed")

    with pytest.raises(RuntimeError):
        budget._write(cause_then_fail)

    assert budget.notifications() == []


def test_an_unknown_event_type_is_a_programming_error(budget: Budget) -> None:
    create_practice(budget, "p1")

    with pytest.raises(ValueError, match=r"unknown notification type 'budget\.nearly_gone'"):
        notify(budget, event_type="budget.nearly_gone")

    assert budget.notifications() == []


def test_the_log_is_newest_first_and_filters_by_practice_and_status(budget: Budget, clock: FakeClock) -> None:
    create_practice(budget, "p1")
    create_practice(budget, "p2")
    for key, practice_id in [("a", "p1"), ("b", "p2"), ("c", "p1")]:
        notify(budget, key, practice_id=practice_id)
        clock.advance(seconds=1)

    newest_first = [notification.dedupe_key for notification in budget.notifications()]
    of_p1 = [notification.dedupe_key for notification in budget.notifications(practice_id="p1")]

    assert newest_first == ["c", "b", "a"]
    assert of_p1 == ["c", "a"]
    assert [n.dedupe_key for n in budget.notifications(limit=1)] == ["c"]
    assert len(budget.notifications(status="pending")) == 3
    assert budget.notifications(status="delivered") == []


@pytest.mark.parametrize(
    ("filters", "field"),
    [({"status": "sent"}, "status"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit")],
)
def test_a_bad_filter_is_invalid_input_naming_it(budget: Budget, filters: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        budget.notifications(**filters)

    assert refused.value.field == field


def test_the_log_of_an_unknown_practice_is_not_found(budget: Budget) -> None:
    with pytest.raises(NotFound) as missing:
        budget.notifications(practice_id="nobody")

    assert missing.value.field == "practice_id"
