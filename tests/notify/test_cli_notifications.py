"""`aibudget notifications list` and `deliver`, run as the installed console script."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

from aibudget import Budget, Settings
from tests.conftest import Aibudget
from tests.factories import create_practice
from tests.notify.test_delivery import SECRET, Receiver, notify, running_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture
def queued(database_url: str, tmp_path: Path) -> str:
    """The database with practices p1 and p2 and one pending notification each; its URL."""
    with Budget.open(database_url, settings=Settings.load(data_dir=tmp_path / "setup")) as budget:
        create_practice(budget, "p1")
        create_practice(budget, "p2")
        notify(budget, "k1", practice_id="p1")
        notify(budget, "k2", practice_id="p2", event_type="budget.exhausted", data={"reason": "x"})
    return database_url


def test_the_log_lists_as_a_table_or_as_json_with_filters(aibudget: Aibudget, queued: str) -> None:
    table = aibudget("notifications", "list", AIBUDGET_DATABASE_URL=queued)
    of_p2 = aibudget("notifications", "list", "--practice", "p2", "--format", "json",
                     AIBUDGET_DATABASE_URL=queued)  # fmt: skip
    none = aibudget("notifications", "list", "--status", "failed", AIBUDGET_DATABASE_URL=queued)

    assert table.code == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split()[:5] == ["created_at", "notification_id", "event_type", "practice_id", "status"]
    assert len(lines) == 2
    assert of_p2.code == 0, of_p2.stderr
    [row] = json.loads(of_p2.stdout)
    assert (row["event_type"], row["practice_id"], row["status"], row["attempts"]) == (
        "budget.exhausted", "p2", "pending", 0
    )  # fmt: skip
    assert row["payload"]["data"] == {"reason": "x"}
    assert (none.code, none.stdout) == (0, "no notifications\n")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--status", "sent"], "--status"),
        (["--limit", "0"], "--limit"),
        (["--practice", "nobody"], "--practice"),
    ],
)
def test_a_bad_option_exits_2_naming_it(
    aibudget: Aibudget, queued: str, args: list[str], option: str
) -> None:
    done = aibudget("notifications", "list", *args, AIBUDGET_DATABASE_URL=queued)

    assert done.code == 2
    assert option in done.message


def test_deliver_sends_what_is_due_once(aibudget: Aibudget, queued: str, receiver: Receiver) -> None:
    env = {
        "AIBUDGET_DATABASE_URL": queued,
        "AIBUDGET_NOTIFY_URL": receiver.url,
        "AIBUDGET_NOTIFY_SECRET": SECRET,
    }

    done = aibudget("notifications", "deliver", **env)
    again = aibudget("notifications", "deliver", **env)

    assert (done.code, done.stdout) == (0, "2 notification(s) delivered; 0 pending\n"), done.stderr
    assert again.stdout == "0 notification(s) delivered; 0 pending\n"
    assert len(receiver.received) == 2
    for request in receiver.received:
        signature = request.headers["AIBudget-Signature"]
        assert stripe.WebhookSignature.verify_header(request.body.decode(), signature, SECRET, tolerance=300)
    listed = json.loads(aibudget("notifications", "list", "--format", "json", **env).stdout)
    assert {row["status"] for row in listed} == {"delivered"}


def test_deliver_without_a_notify_url_or_its_secret_exits_2(
    aibudget: Aibudget, queued: str, receiver: Receiver
) -> None:
    off = aibudget("notifications", "deliver", AIBUDGET_DATABASE_URL=queued)
    unsigned = aibudget(
        "notifications", "deliver", AIBUDGET_DATABASE_URL=queued, AIBUDGET_NOTIFY_URL=receiver.url
    )

    assert off.code == 2
    assert "AIBUDGET_NOTIFY_URL" in off.message
    assert unsigned.code == 2
    assert "AIBUDGET_NOTIFY_SECRET is required" in unsigned.message
    assert receiver.received == []


def test_resend_gives_failed_notifications_a_new_round_of_attempts(
    aibudget: Aibudget, queued: str, receiver: Receiver
) -> None:
    """A receiver away longer than the attempts last: the notifications fail; once it is back, the
    operator sends them again and each arrives once."""
    env = {"AIBUDGET_DATABASE_URL": queued, "AIBUDGET_NOTIFY_URL": receiver.url,
           "AIBUDGET_NOTIFY_SECRET": SECRET, "AIBUDGET_NOTIFY_MAX_ATTEMPTS": "1"}  # fmt: skip
    receiver.fail(2)
    assert aibudget("notifications", "deliver", **env).stdout == "0 notification(s) delivered; 0 pending\n"
    failed = json.loads(
        aibudget("notifications", "list", "--status", "failed", "--format", "json", **env).stdout
    )
    [of_p1] = [row["notification_id"] for row in failed if row["practice_id"] == "p1"]

    pending_one = aibudget("notifications", "resend", of_p1, **env)
    again_one = aibudget("notifications", "resend", of_p1, **env)
    unknown = aibudget("notifications", "resend", "ntf_nobody", **env)
    of_p2 = aibudget("notifications", "resend", "--practice", "p2", **env)
    delivered = aibudget("notifications", "deliver", **env)

    assert pending_one.stdout.startswith("1 notification(s) due again"), pending_one.stderr
    assert (again_one.code, unknown.code) == (2, 2)
    assert "is pending: only a failed one is sent again" in again_one.message
    assert "ntf_nobody" in unknown.message
    assert of_p2.stdout.startswith("1 notification(s) due again"), of_p2.stderr
    assert delivered.stdout == "2 notification(s) delivered; 0 pending\n", delivered.stderr
    assert sorted(request.json()["practice_id"] for request in receiver.received[2:]) == ["p1", "p2"]
    listed = json.loads(aibudget("notifications", "list", "--format", "json", **env).stdout)
    assert [(row["status"], row["attempts"]) for row in listed] == [("delivered", 1), ("delivered", 1)]
    assert aibudget("notifications", "resend", **env).stdout.startswith("0 notification(s) due again")


def test_every_command_has_help_with_an_example(aibudget: Aibudget) -> None:
    for command in ("list", "deliver", "resend"):
        done = aibudget("notifications", command, "--help")
        assert done.code == 0, done.stderr
        assert "Example:" in done.stdout
