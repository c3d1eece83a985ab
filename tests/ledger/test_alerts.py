"""Budget notifications (SPEC §6): thresholds of the included budget once per period, exhaustion once
per period and credit grant, written with the settle or refusal that causes them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aibudget import Budget, BudgetExceeded
from tests.conftest import FakeClock

START, END, NEXT_END = 1793491200, 1796083200, 1798761600  # November and December 2026, UTC


@pytest.fixture
def practice(budget: Budget) -> str:
    budget.put_practice("p1", locale="de-CH")
    budget.put_plan("basic", included_usd="1")
    budget.put_subscription("sub_1", practice_id="p1", plan="basic", status="active",
                            current_period_start=START, current_period_end=END)  # fmt: skip
    return "p1"


def spend(budget: Budget, request_id: str, cents: int) -> None:
    budget.settle(request_id=request_id, practice_id="p1", model="gpt-4o", input_tokens=cents * 4_000)


def sent(budget: Budget, event_type: str) -> list[dict[str, object]]:
    return [n.payload["data"] for n in budget.notifications(practice_id="p1") if n.event_type == event_type]


def test_each_threshold_notifies_once_when_crossed(budget: Budget, practice: str) -> None:
    spend(budget, "a", 50)
    assert sent(budget, "budget.threshold_crossed") == []
    spend(budget, "b", 35)  # 85 % consumed
    spend(budget, "c", 5)  # 90 %: 80 % was crossed already
    crossed = sent(budget, "budget.threshold_crossed")
    assert [data["threshold_percent"] for data in crossed] == [80]
    assert (crossed[0]["included_remaining_usd"], crossed[0]["period_start"]) == ("0.150000", START)
    assert sent(budget, "budget.exhausted") == []

    spend(budget, "d", 10)  # every micro-USD used: 100 %, and nothing else left
    spend(budget, "e", 1)  # overage; nothing new
    assert sorted(data["threshold_percent"] for data in sent(budget, "budget.threshold_crossed")) == [80, 100]
    [exhausted] = sent(budget, "budget.exhausted")
    assert exhausted["reason"] == "included_exhausted_no_credit"


def test_exhaustion_notifies_again_after_new_credit_runs_out(budget: Budget, practice: str) -> None:
    spend(budget, "a", 100)
    with pytest.raises(BudgetExceeded):
        budget.authorize(request_id="refused", practice_id="p1", operation="letter", model="gpt-4o")
    assert len(sent(budget, "budget.exhausted")) == 1  # the refusal did not notify a second time

    budget.grant_credit("p1", amount_usd="0.50", source="manual", reference="gift-1")
    spend(budget, "b", 50)
    assert len(sent(budget, "budget.exhausted")) == 2


def test_a_new_period_notifies_its_thresholds_again(budget: Budget, practice: str, clock: FakeClock) -> None:
    spend(budget, "a", 90)
    budget.put_subscription("sub_1", practice_id="p1", plan="basic", status="active",
                            current_period_start=END, current_period_end=NEXT_END,
                            updated_at=END)  # fmt: skip
    clock.now = datetime.fromtimestamp(END + 3600, tz=UTC)
    spend(budget, "b", 90)
    periods = [data["period_start"] for data in sent(budget, "budget.threshold_crossed")]
    assert sorted(periods) == [START, END]


def test_a_replayed_settle_notifies_nothing_new(budget: Budget, practice: str) -> None:
    spend(budget, "a", 100)
    before = budget.notifications(practice_id="p1")
    spend(budget, "a", 100)
    assert budget.notifications(practice_id="p1") == before
