"""The data the operator dashboard shows, through `Budget` on real databases: the overview of all
practices (the same numbers as each practice's snapshot, without one snapshot per practice), the
burn-down of a period day by day, and a practice's devices."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from aibudget import Budget
from aibudget.dashboard.data import BurnDownDay, OverviewRow
from aibudget.errors import InvalidInput, NotFound
from aibudget.store import tables
from aibudget.store.dialect import write_transaction
from aibudget.views.snapshot import Snapshot
from tests.conftest import FakeClock
from tests.factories import USD, create_practice, open_practice, transcribe

PRACTICES = ("fresh", "low", "used-up", "with-credit", "holding", "unsubscribed")


def count_snapshots(budget: Budget, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The practices `budget.snapshot` is asked for from now on (it still answers as before)."""
    asked: list[str] = []
    snapshot: Callable[[str], Snapshot] = budget.snapshot

    def counted(practice_id: str) -> Snapshot:
        asked.append(practice_id)
        return snapshot(practice_id)

    monkeypatch.setattr(budget, "snapshot", counted)
    return asked


def as_snapshot_shows(budget: Budget, practice_id: str, name: str = "Praxis Muster") -> dict[str, Any]:
    """What the overview must show for a practice: its snapshot and client view, field by field."""
    snapshot = budget.snapshot(practice_id)
    view = snapshot.client_view()
    return {
        "practice_id": practice_id, "name": name, "plan": snapshot.plan,
        "subscribed": snapshot.subscription_id is not None,
        "available_percent": view.available_percent, "warning_level": view.warning_level,
        "spend_micros": snapshot.used_micros, "included_micros": snapshot.included_micros,
        "extra_credit_micros": snapshot.extra_credit_remaining_micros, "held_micros": snapshot.held_micros,
    }  # fmt: skip


def shown(row: OverviewRow) -> dict[str, Any]:
    fields = ("practice_id", "name", "plan", "subscribed", "available_percent", "warning_level",
              "spend_micros", "included_micros", "extra_credit_micros", "held_micros")  # fmt: skip
    return {field: getattr(row, field) for field in fields}


@pytest.fixture
def practices(budget: Budget) -> Budget:
    """Six practices on 1 USD a month: untouched, 85 % spent, all spent, all spent but 2 USD of
    credit, 0.40 USD held by an open call, and one without a subscription."""
    for practice_id in PRACTICES[:-1]:
        open_practice(budget, practice_id, included_usd="1")
    create_practice(budget, "unsubscribed")
    transcribe(budget, "r-low", usd="0.85", practice_id="low")
    transcribe(budget, "r-used-up", usd="1", practice_id="used-up")
    budget.grant_credit("with-credit", amount_usd="2", source="manual", reference="gift-1")
    transcribe(budget, "r-credit", usd="1", practice_id="with-credit")
    budget.authorize(practice_id="holding", request_id="r-hold", operation="transcribe", model="whisper-1",
                     audio_seconds=4000)  # fmt: skip
    return budget


def test_every_row_shows_what_the_practices_snapshot_shows(practices: Budget) -> None:
    page = practices.overview()

    assert [row.practice_id for row in page.rows] == sorted(PRACTICES)
    for row in page.rows:
        assert shown(row) == as_snapshot_shows(practices, row.practice_id)
    levels = {row.practice_id: (row.available_percent, row.warning_level) for row in page.rows}
    assert levels == {
        "fresh": (100, "none"), "low": (15, "low"), "used-up": (0, "exhausted"),
        "with-credit": (66, "none"), "holding": (60, "none"), "unsubscribed": (0, "exhausted"),
    }  # fmt: skip
    assert (page.total, page.page, page.pages, page.per_page) == (6, 1, 1, 25)


def test_up_to_date_rows_cost_no_snapshot_and_only_stale_ones_take_the_long_way(
    practices: Budget, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = count_snapshots(practices, monkeypatch)
    practices.overview()
    assert asked == ["fresh"]  # nothing asked for its period since it subscribed: resolved now
    asked.clear()
    practices.overview()
    assert asked == []  # one query for all the rows; the practice without a subscription needs none

    clock.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # November ended in Zurich: a new period each
    page = practices.overview()

    assert sorted(asked) == sorted(PRACTICES[:-1])
    assert {row.practice_id: row.spend_micros for row in page.rows} == dict.fromkeys(PRACTICES, 0)
    for row in page.rows:
        assert shown(row) == as_snapshot_shows(practices, row.practice_id)
    asked.clear()
    practices.overview()
    assert asked == []  # the long way brought the rows up to date


def test_credit_about_to_expire_or_expired_is_shown_as_the_snapshot_shows_it(
    budget: Budget, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for practice_id in ("expiring", "expired"):
        open_practice(budget, practice_id, included_usd="1")
        transcribe(budget, f"r-{practice_id}", usd="1", practice_id=practice_id)
    in_two_hours = clock.now + timedelta(hours=2)
    budget.grant_credit("expiring", amount_usd="5", source="promo", reference="promo-1",
                        expires_at=in_two_hours + timedelta(minutes=5))  # fmt: skip
    budget.grant_credit("expired", amount_usd="5", source="promo", reference="promo-2",
                        expires_at=in_two_hours - timedelta(minutes=5))  # fmt: skip
    clock.now = in_two_hours  # one grant expires within a hold's TTL, the other has expired
    asked = count_snapshots(budget, monkeypatch)

    rows = {row.practice_id: row for row in budget.overview().rows}

    assert sorted(asked) == ["expired", "expiring"]
    assert (rows["expiring"].extra_credit_micros, rows["expiring"].available_percent) == (5 * USD, 0)
    assert rows["expired"].extra_credit_micros == 0
    for practice_id, row in rows.items():
        assert shown(row) == as_snapshot_shows(budget, practice_id)


def test_the_search_matches_id_or_name_ignoring_case_and_takes_wildcards_literally(budget: Budget) -> None:
    create_practice(budget, "zh-1", name="Praxis am See")
    create_practice(budget, "zh_2", name="Hausarztpraxis Zentrum")
    create_practice(budget, "be-1", name="100% Gesundheit")
    create_practice(budget, "be-2", name="Praxis Bern")
    create_practice(budget, "gr-1", name="PRAXIS DR. MÜLLER")

    def found(query: str) -> list[str]:
        page = budget.overview(query=query)
        assert (page.query, page.total) == (query, len(page.rows))
        return [row.practice_id for row in page.rows]

    assert found("PRAXIS") == ["be-2", "gr-1", "zh-1", "zh_2"]
    assert found("zh") == ["zh-1", "zh_2"]
    assert found("_") == ["zh_2"]
    assert found("%") == ["be-1"]
    assert found("!") == []
    assert found("müller") == found("Müller") == ["gr-1"]  # beyond ASCII, on both engines
    assert found("") == ["be-1", "be-2", "gr-1", "zh-1", "zh_2"]


def test_rows_are_sorted_then_paged_ties_by_practice_id(practices: Budget) -> None:
    by_spend = practices.overview(sort="spend", descending=True, per_page=4)
    assert [row.practice_id for row in by_spend.rows] == ["used-up", "with-credit", "low", "fresh"]
    assert (by_spend.total, by_spend.pages, by_spend.sort, by_spend.descending) == (6, 2, "spend", True)
    second = practices.overview(sort="spend", descending=True, per_page=4, page=2)
    assert [row.practice_id for row in second.rows] == ["holding", "unsubscribed"]

    assert [row.practice_id for row in practices.overview(sort="available_percent").rows] == [
        "unsubscribed", "used-up", "low", "holding", "with-credit", "fresh"
    ]  # fmt: skip
    by_plan = practices.overview(sort="plan", per_page=200)
    assert by_plan.rows[-1].practice_id == "unsubscribed"  # no plan: last
    by_name = practices.overview(sort="name", descending=True)
    assert [row.practice_id for row in by_name.rows] == sorted(PRACTICES)  # one name: all ties

    past_the_end = practices.overview(page=3, per_page=5)
    assert (past_the_end.rows, past_the_end.total, past_the_end.pages, past_the_end.page) == ((), 6, 2, 3)
    nothing = practices.overview(query="nobody is called this")
    assert (nothing.rows, nothing.total, nothing.pages) == ((), 0, 1)


@pytest.mark.parametrize(
    ("asked", "field"),
    [
        ({"sort": "cost"}, "sort"),
        ({"page": 0}, "page"),
        ({"per_page": 0}, "per_page"),
        ({"per_page": 201}, "per_page"),
        ({"query": "x" * 201}, "query"),
    ],
)
def test_a_bad_overview_request_names_the_field(budget: Budget, asked: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        budget.overview(**asked)
    assert refused.value.field == field


def test_automatic_top_up_shows_off_on_paused_or_charging(budget: Budget) -> None:
    for practice_id in ("off", "on", "paused", "charging"):
        open_practice(budget, practice_id)
    for practice_id in ("on", "paused", "charging"):
        budget.put_auto_topup(practice_id, enabled=True, threshold_usd="1", package_usd="25",
                              monthly_max_count=2, monthly_max_usd="50")  # fmt: skip
    budget.pause_auto_topup("paused")
    settings = tables.auto_topup_settings
    with write_transaction(budget.engine) as connection:  # as `credit.autotopup.claim` leaves it
        connection.execute(
            update(settings).where(settings.c.practice_id == "charging").values(attempt_in_flight="topup_x")
        )

    rows = {row.practice_id: (row.topup, row.topup_paused_reason) for row in budget.overview().rows}

    assert rows == {
        "off": ("off", None), "on": ("on", None), "paused": ("paused", "paused_by_operator"),
        "charging": ("charging", None),
    }  # fmt: skip


# the burn-down


def unix(instant: datetime) -> int:
    return int(instant.timestamp())


def test_a_month_burns_down_day_by_day_in_the_practices_timezone(budget: Budget, clock: FakeClock) -> None:
    clock.now = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    open_practice(budget, included_usd="1")  # calendar months in Zurich (UTC+1 in November)
    budget.grant_credit("p1", amount_usd="0.50", source="manual", reference="gift-1")
    budget.authorize(practice_id="p1", request_id="open", operation="letter", model="gpt-4o-mini",
                     input_tokens=10)  # held, never settled  # fmt: skip
    transcribe(budget, "monday", usd="0.30")
    clock.now = datetime(2026, 11, 2, 23, 30, tzinfo=UTC)  # already Tuesday in Zurich
    transcribe(budget, "tuesday-early", usd="0.60")
    clock.now = datetime(2026, 11, 4, 12, 0, tzinfo=UTC)
    transcribe(budget, "thursday", usd="0.70")  # 0.10 included, 0.50 credit, 0.10 nobody
    clock.now = datetime(2026, 11, 5, 8, 0, tzinfo=UTC)

    burn = budget.burn_down("p1")

    assert (burn.practice_id, burn.timezone) == ("p1", "Europe/Zurich")
    assert (burn.period_start, burn.period_end) == (date(2026, 11, 1), date(2026, 11, 30))
    assert (burn.included_micros, burn.extra_credit_micros) == (1 * USD, 0)
    assert burn.held_micros == budget.snapshot("p1").held_micros > 0
    assert burn.days == (
        BurnDownDay(date(2026, 11, 1), 0, 0, 0, 0, 1_000_000),
        BurnDownDay(date(2026, 11, 2), 300_000, 300_000, 0, 0, 700_000),
        BurnDownDay(date(2026, 11, 3), 600_000, 600_000, 0, 0, 100_000),
        BurnDownDay(date(2026, 11, 4), 700_000, 100_000, 500_000, 100_000, 0),
        BurnDownDay(date(2026, 11, 5), 0, 0, 0, 0, 0),
    )
    assert sum(day.spent_micros for day in burn.days) == budget.snapshot("p1").used_micros


def test_the_burn_down_stops_at_the_periods_last_day_and_counts_only_its_events(
    budget: Budget, clock: FakeClock
) -> None:
    october, start = unix(datetime(2026, 10, 1, tzinfo=UTC)), unix(datetime(2026, 11, 1, tzinfo=UTC))
    end = unix(datetime(2026, 11, 4, 12, 0, tzinfo=UTC))  # 13:00 in Zurich
    clock.now = datetime(2026, 10, 31, 22, 0, tzinfo=UTC)
    open_practice(budget, included_usd="1", current_period_start=october, current_period_end=start)
    transcribe(budget, "october", usd="0.25")  # the previous period
    budget.put_subscription("sub_p1", practice_id="p1", plan="included-1", status="active",
                            current_period_start=start, current_period_end=end)  # fmt: skip
    clock.now = datetime(2026, 11, 1, 0, 30, tzinfo=UTC)
    transcribe(budget, "november", usd="0.10")
    clock.now = datetime(2026, 11, 20, tzinfo=UTC)  # the provider has not renewed the period yet

    burn = budget.burn_down("p1")

    assert (burn.period_start, burn.period_end) == (date(2026, 11, 1), date(2026, 11, 4))
    assert [(day.day.day, day.spent_micros) for day in burn.days] == [(1, 100_000), (2, 0), (3, 0), (4, 0)]
    assert burn.days[-1].included_left_micros == 900_000


def test_days_pruned_from_the_ledger_still_count_as_used(budget: Budget, clock: FakeClock) -> None:
    """Regression: after `prune_usage` inside the period, the burn-down showed the pruned days'
    included budget as still left."""
    clock.now = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    open_practice(budget, included_usd="1")
    transcribe(budget, "early", usd="0.90")
    clock.now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    transcribe(budget, "late", usd="0.05")
    budget.prune_usage(date(2026, 11, 10))

    burn = budget.burn_down("p1")

    assert [(day.day.day, day.spent_micros) for day in burn.days if day.spent_micros] == [(20, 50_000)]
    assert burn.days[0].included_left_micros == 100_000
    assert burn.days[-1].included_left_micros == budget.snapshot("p1").included_remaining_micros == 50_000
    assert budget.verify() == []


def test_without_a_subscription_there_is_no_period_and_no_day(budget: Budget) -> None:
    create_practice(budget, "p1")
    budget.grant_credit("p1", amount_usd="3", source="manual", reference="gift-1")

    burn = budget.burn_down("p1")

    assert (burn.period_start, burn.period_end, burn.days) == (None, None, ())
    assert (burn.by_model, burn.by_operation) == ((), ())
    assert (burn.included_micros, burn.extra_credit_micros, burn.held_micros) == (0, 3 * USD, 0)
    with pytest.raises(NotFound):
        budget.burn_down("nobody")


def test_the_periods_calls_by_model_and_operation_are_the_calls_charged_to_it(
    budget: Budget, clock: FakeClock
) -> None:
    """A Stripe-style period begins at 13:00 UTC. A letter at 09:00, and one authorized at 12:55 but
    settled at 13:05, belong to the period before; the chat at 14:00 is this period's only call. The
    tables show it alone, and their cost is the snapshot's `used_micros` to the micro-USD."""
    begins = datetime(2026, 11, 16, 13, 0, tzinfo=UTC)
    before, ends = unix(begins - timedelta(days=30)), unix(begins + timedelta(days=30))
    clock.now = begins - timedelta(hours=4)
    open_practice(budget, current_period_start=before, current_period_end=unix(begins))
    letter = {"practice_id": "p1", "model": "gpt-4o", "input_tokens": 100_000}  # 0.25 USD
    budget.settle(request_id="morning", operation="letter", **letter)
    clock.now = begins - timedelta(minutes=5)
    budget.authorize(request_id="late", operation="letter", max_output_tokens=0, **letter)
    clock.now = begins + timedelta(minutes=5)
    budget.put_subscription("sub_p1", practice_id="p1", plan="included-20", status="active",
                            current_period_start=unix(begins), current_period_end=ends,
                            updated_at=unix(clock.now))  # fmt: skip
    budget.settle(request_id="late", **letter)
    clock.now = begins + timedelta(hours=1)
    budget.settle(practice_id="p1", request_id="afternoon", operation="chat", model="gpt-4o-mini",
                  input_tokens=100_000)  # 0.015 USD  # fmt: skip

    burn = budget.burn_down("p1")

    used = budget.snapshot("p1").used_micros
    assert used == 15_000
    assert [(row.key, row.calls, row.cost_micros) for row in burn.by_model] == [("gpt-4o-mini", 1, used)]
    assert [(row.key, row.calls, row.cost_micros) for row in burn.by_operation] == [("chat", 1, used)]
    assert sum(day.spent_micros for day in burn.days) == used


# devices


def test_devices_are_listed_newest_first(budget: Budget, clock: FakeClock) -> None:
    create_practice(budget, "p1")
    create_practice(budget, "p2")
    for device_id in ("desk-1", "desk-2", "laptop"):
        budget.bind_device(device_id, practice_id="p1", user_key=f"user-{device_id}")
        clock.advance(minutes=1)
    budget.bind_device("elsewhere", practice_id="p2")
    budget.deactivate_device("desk-2")

    devices = budget.devices("p1")

    assert [(d.user_key, d.active) for d in devices] == [
        ("user-laptop", True), ("user-desk-2", False), ("user-desk-1", True)
    ]  # fmt: skip
    assert {d.practice_id for d in devices} == {"p1"}
    assert [d.practice_id for d in budget.devices("p2")] == ["p2"]
    with pytest.raises(NotFound):
        budget.devices("nobody")
