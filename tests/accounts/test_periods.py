"""Billing periods: identified by their start, never reset by a moved end, never moved by the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aibudget import Budget, Settings
from aibudget.accounts.periods import calendar_month
from tests.conftest import FakeClock
from tests.factories import DECEMBER_2025, create_practice, create_subscription, spend_included


def _ts(year: int, month: int, day: int, *, tz: str) -> int:
    return int(datetime(year, month, day, tzinfo=ZoneInfo(tz)).timestamp())


def test_the_provider_period_is_the_period(budget: Budget) -> None:
    create_practice(budget)
    budget.put_plan("basic", included_usd="20")
    start, end = DECEMBER_2025
    create_subscription(budget, current_period_start=start, current_period_end=end)
    period = budget.current_period("p1")
    assert period is not None
    assert (period.start, period.end, period.included_micros) == (start, end, 20_000_000)


def test_moved_period_end_keeps_usage(budget: Budget) -> None:
    """Regression: the provider extending a trial used to reset the month's usage."""
    create_practice(budget)
    budget.put_plan("basic", included_usd="20")
    start, end = DECEMBER_2025
    create_subscription(
        budget, status="trialing", current_period_start=start, current_period_end=end, updated_at=1
    )
    period = budget.current_period("p1")
    assert period is not None
    spend_included(budget, period.period_id, 7_500_000)

    create_subscription(
        budget,
        status="trialing",
        current_period_start=start,
        current_period_end=end + 14 * 86400,
        updated_at=2,
    )
    extended = budget.current_period("p1")
    assert extended is not None
    assert extended.period_id == period.period_id
    assert extended.end == end + 14 * 86400
    assert extended.included_used_micros == 7_500_000
    assert extended.included_remaining_micros == 12_500_000


def test_a_new_period_begins_when_the_start_moves(budget: Budget) -> None:
    create_practice(budget)
    start, end = DECEMBER_2025
    create_subscription(budget, current_period_start=start, current_period_end=end, updated_at=1)
    december = budget.current_period("p1")
    assert december is not None
    spend_included(budget, december.period_id, 1_000_000)
    create_subscription(budget, current_period_start=end, current_period_end=end + 31 * 86400, updated_at=2)
    january = budget.current_period("p1")
    assert january is not None
    assert january.period_id != december.period_id
    assert january.included_used_micros == 0


def test_calendar_period_does_not_move_with_the_clock(budget: Budget, clock: FakeClock) -> None:
    """Regression: without provider periods, "the month" used to be the 30 days before now."""
    create_practice(budget, timezone="Europe/Zurich")
    create_subscription(budget)  # the provider gives no period
    clock.now = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    early = budget.current_period("p1")
    clock.now = datetime(2026, 11, 29, 22, 59, tzinfo=UTC)  # still November in Zurich (23:59 local)
    late = budget.current_period("p1")
    assert early is not None
    assert late is not None
    assert early.period_id == late.period_id
    assert (early.start, early.end) == (
        _ts(2026, 11, 1, tz="Europe/Zurich"),
        _ts(2026, 12, 1, tz="Europe/Zurich"),
    )
    clock.now = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # already December in Zurich
    december = budget.current_period("p1")
    assert december is not None
    assert december.period_id != early.period_id
    assert december.start == _ts(2026, 12, 1, tz="Europe/Zurich")


def test_calendar_months_follow_the_practice_timezone_across_summer_time() -> None:
    at = datetime(2026, 10, 15, tzinfo=UTC)
    assert calendar_month(at, "Europe/Zurich") == (
        _ts(2026, 10, 1, tz="Europe/Zurich"),  # UTC+2
        _ts(2026, 11, 1, tz="Europe/Zurich"),  # UTC+1
    )
    assert calendar_month(datetime(2026, 12, 31, 23, 30, tzinfo=UTC), "Europe/Zurich")[0] == _ts(
        2027, 1, 1, tz="Europe/Zurich"
    )


def test_a_plan_change_updates_the_current_period_budget(budget: Budget) -> None:
    create_practice(budget)
    budget.put_plan("basic", included_usd="20")
    budget.put_plan("pro", included_usd="50")
    start, end = DECEMBER_2025
    create_subscription(budget, current_period_start=start, current_period_end=end, updated_at=1)
    before = budget.current_period("p1")
    assert before is not None
    assert before.included_micros == 20_000_000
    create_subscription(budget, plan="pro", current_period_start=start, current_period_end=end, updated_at=2)
    period = budget.current_period("p1")
    assert period is not None
    assert (period.plan, period.included_micros) == ("pro", 50_000_000)


def test_unknown_plan_gets_the_default_budget(database_url: str, tmp_path: Path, clock: FakeClock) -> None:
    settings = Settings.load(data_dir=tmp_path / "var", default_included_usd="12.5")
    with Budget.open(database_url, settings=settings, clock=clock) as budget:
        create_practice(budget)
        create_subscription(budget, plan="not-configured")
        period = budget.current_period("p1")
        assert period is not None
        assert period.included_micros == 12_500_000


def test_no_granting_subscription_means_no_period(budget: Budget) -> None:
    create_practice(budget)
    assert budget.current_period("p1") is None
    create_subscription(budget, status="canceled")
    assert budget.current_period("p1") is None


def test_the_most_recently_updated_granting_subscription_counts(budget: Budget) -> None:
    create_practice(budget)
    budget.put_plan("basic", included_usd="20")
    budget.put_plan("pro", included_usd="50")
    create_subscription(budget, "sub_old", plan="basic", updated_at=100)
    create_subscription(budget, "sub_new", plan="pro", updated_at=200)
    create_subscription(budget, "sub_gone", plan="basic", status="canceled", updated_at=300)
    period = budget.current_period("p1")
    assert period is not None
    assert period.subscription_id == "sub_new"


def test_a_new_timezone_moves_the_running_month_with_its_usage(budget: Budget, clock: FakeClock) -> None:
    """Regression: a practice that changed its timezone got a second month's budget at once, as the
    new zone's November began at another instant and found no period."""
    create_practice(budget, timezone="Europe/Zurich")
    create_subscription(budget)  # calendar months
    clock.now = datetime(2026, 11, 15, 9, 30, tzinfo=UTC)
    november = budget.current_period("p1")
    assert november is not None
    spend_included(budget, november.period_id, november.included_micros)

    budget.put_practice("p1", timezone="Europe/London")
    moved = budget.current_period("p1")

    assert moved is not None
    assert moved.period_id == november.period_id
    assert (moved.start, moved.end) == (
        _ts(2026, 11, 1, tz="Europe/London"),
        _ts(2026, 12, 1, tz="Europe/London"),
    )
    assert moved.included_used_micros == november.included_micros
    assert budget.snapshot("p1").available_micros == 0


def test_a_zone_still_in_last_month_finds_last_month_with_its_usage(budget: Budget, clock: FakeClock) -> None:
    create_practice(budget, timezone="Pacific/Kiritimati")  # UTC+14
    create_subscription(budget)
    clock.now = datetime(2026, 11, 15, tzinfo=UTC)
    november = budget.current_period("p1")
    assert november is not None
    spend_included(budget, november.period_id, november.included_micros)
    clock.now = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)  # 1 December, 03:00 in Kiritimati
    december = budget.current_period("p1")
    assert december is not None
    spend_included(budget, december.period_id, 1_000)

    budget.put_practice("p1", timezone="Pacific/Niue")  # UTC-11: 30 November, 02:00
    still_november = budget.current_period("p1")
    clock.now = datetime(2026, 12, 5, tzinfo=UTC)
    then_december = budget.current_period("p1")

    assert still_november is not None
    assert then_december is not None
    assert (still_november.period_id, still_november.included_used_micros) == (
        november.period_id,
        november.included_micros,
    )
    assert still_november.end == then_december.start == _ts(2026, 12, 1, tz="Pacific/Niue")
    assert (then_december.period_id, then_december.included_used_micros) == (december.period_id, 1_000)


def test_a_zone_already_in_next_month_finds_it_again_after_changing_back(
    budget: Budget, clock: FakeClock
) -> None:
    create_practice(budget, timezone="Europe/Zurich")
    create_subscription(budget)
    clock.now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # 13:00 in Zurich, 1 December 01:00 in Auckland
    november = budget.current_period("p1")
    assert november is not None
    budget.put_practice("p1", timezone="Pacific/Auckland")
    december = budget.current_period("p1")
    assert december is not None
    spend_included(budget, december.period_id, 1_000)
    budget.put_practice("p1", timezone="Europe/Zurich")
    back = budget.current_period("p1")
    budget.put_practice("p1", timezone="Pacific/Auckland")
    again = budget.current_period("p1")

    assert back is not None
    assert again is not None
    assert december.period_id != november.period_id
    assert back.period_id == november.period_id
    assert (again.period_id, again.included_used_micros) == (december.period_id, 1_000)
    assert (again.start, again.end) == (
        _ts(2026, 12, 1, tz="Pacific/Auckland"),
        _ts(2027, 1, 1, tz="Pacific/Auckland"),
    )
