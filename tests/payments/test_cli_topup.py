"""`aibudget topup`, run as the installed console script against the database a paying library uses:
set and show the settings, see a declined attempt, resume after it; mistakes exit 2 naming the option."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from aibudget import Budget, BudgetExceeded, Settings
from tests.conftest import Aibudget, FakeClock
from tests.fake_stripe import DECLINED, FakeStripe
from tests.payments.conftest import CUSTOMER, PERIOD_END, PERIOD_START, PRACTICE, spend, stripe_settings


@pytest.fixture
def declined(workdir: Path, fake_stripe: FakeStripe, clock: FakeClock) -> Iterator[Budget]:
    """The CLI's database (`var/` in its working directory) with a practice whose card was declined."""
    data_dir = workdir / "var"
    budget = Budget.open(
        f"sqlite:///{data_dir / 'aibudget.sqlite3'}",
        settings=stripe_settings(fake_stripe, data_dir),
        clock=clock,
    )
    fake_stripe.add_customer(CUSTOMER, payment_method=DECLINED)
    budget.put_practice(PRACTICE, locale="de-CH")
    budget.put_plan("basic", included_usd="1")
    budget.put_subscription("sub_1", practice_id=PRACTICE, plan="basic", status="active",
                            customer_id=CUSTOMER, current_period_start=PERIOD_START,
                            current_period_end=PERIOD_END)  # fmt: skip
    budget.put_auto_topup(PRACTICE, enabled=True, threshold_usd="0", package_usd="25",
                          monthly_max_count=2, monthly_max_usd="50")  # fmt: skip
    spend(budget, "all-of-it", 100)
    with pytest.raises(BudgetExceeded):
        budget.authorize(request_id="declined", practice_id=PRACTICE, operation="letter", model="gpt-4o")
    yield budget
    budget.close()


def test_topup_set_show_attempts_and_resume(aibudget: Aibudget, declined: Budget) -> None:
    shown = aibudget("topup", "show", PRACTICE, "--json")
    assert shown.code == 0, shown.stderr
    assert json.loads(shown.stdout)["paused_reason"] == "card_declined"

    attempts = aibudget("topup", "attempts", PRACTICE, "--json")
    [attempt] = json.loads(attempts.stdout)
    assert (attempt["status"], attempt["failure_code"], attempt["currency"]) == (
        "failed",
        "card_declined",
        "chf",
    )
    assert "card_declined" in aibudget("topup", "attempts", PRACTICE).stdout  # the table

    changed = aibudget("topup", "set", PRACTICE, "--threshold-percent", "10", "--package-usd", "25",
                       "--monthly-max-count", "1", "--monthly-max-usd", "25", "--json")  # fmt: skip
    assert changed.code == 0, changed.stderr
    settings = json.loads(changed.stdout)
    assert (settings["threshold_percent"], settings["threshold_usd"], settings["monthly_max_usd"]) == (
        10, None, "25.000000"
    )  # fmt: skip
    assert settings["paused_reason"] == "card_declined"  # editing the settings does not resume

    resumed = aibudget("topup", "resume", PRACTICE, "--json")
    assert resumed.code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["paused_reason"] is None
    assert declined.auto_topup(PRACTICE).paused_reason is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--package-usd", "20.001", "--monthly-max-count", "1", "--monthly-max-usd", "25",
          "--threshold-usd", "1"], "--package-usd"),
        (["--package-usd", "20", "--monthly-max-count", "1", "--monthly-max-usd", "25"], "--threshold-usd"),
    ],
)  # fmt: skip
def test_a_bad_setting_exits_2_naming_the_option_and_changes_nothing(
    aibudget: Aibudget, declined: Budget, args: list[str], named: str
) -> None:
    before = declined.auto_topup(PRACTICE)
    run = aibudget("topup", "set", PRACTICE, *args)
    assert run.code == 2
    assert named in run.message
    assert declined.auto_topup(PRACTICE) == before


def test_an_unknown_practice_exits_2(aibudget: Aibudget, declined: Budget) -> None:
    run = aibudget("topup", "resume", "nobody")
    assert run.code == 2
    assert "PRACTICE" in run.message


def test_topup_pause_stops_charging_until_resume(aibudget: Aibudget, workdir: Path) -> None:
    data_dir = workdir / "var"
    url = f"sqlite:///{data_dir / 'aibudget.sqlite3'}"
    with Budget.open(url, settings=Settings.load(data_dir=data_dir)) as budget:
        budget.put_practice(PRACTICE)
        budget.put_auto_topup(PRACTICE, enabled=True, threshold_usd="2", package_usd="25",
                              monthly_max_count=2, monthly_max_usd="50")  # fmt: skip
    assert "Example: aibudget topup pause" in aibudget("topup", "pause", "--help").stdout

    paused = aibudget("topup", "pause", PRACTICE, "--json")
    assert paused.code == 0, paused.stderr
    settings = json.loads(paused.stdout)
    assert (settings["enabled"], settings["paused_reason"]) == (True, "paused_by_operator")
    assert settings["paused_at"] is not None
    assert "paused_by_operator" in aibudget("topup", "show", PRACTICE).stdout

    resumed = aibudget("topup", "resume", PRACTICE, "--json")
    assert json.loads(resumed.stdout)["paused_reason"] is None
    unknown = aibudget("topup", "pause", "nobody")
    assert unknown.code == 2
    assert "PRACTICE" in unknown.message
