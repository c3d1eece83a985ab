"""Budget notifications (SPEC §6): thresholds of the included budget once per period, exhaustion once
per period and credit grant, written with the settle or refusal that causes them, each telling the
practice what happened in its own language."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection

from aibudget import Budget, BudgetExceeded
from aibudget.ledger import alerts
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
    [crossed] = sent(budget, "budget.threshold_crossed")
    assert crossed == {
        "threshold_percent": 80, "subscription_id": "sub_1", "period_start": START, "period_end": END,
        "included_usd": "1.000000", "included_remaining_usd": "0.150000",
        "extra_credit_remaining_usd": "0.000000",
        "locale": "de-CH", "title": "KI-Kontingent: 80 % verbraucht",
        "message_user": "Ihre Praxis hat 80 % des KI-Kontingents dieser Periode verbraucht. "
                        "Das Kontingent wird am 01.12.2026 erneuert.",
    }  # fmt: skip
    assert sent(budget, "budget.exhausted") == []

    spend(budget, "d", 10)  # every micro-USD used: 100 %, and nothing else left
    spend(budget, "e", 1)  # overage; nothing new
    assert sorted(data["threshold_percent"] for data in sent(budget, "budget.threshold_crossed")) == [80, 100]
    [exhausted] = sent(budget, "budget.exhausted")
    assert exhausted == {
        "reason": "included_exhausted_no_credit", "subscription_id": "sub_1", "period_start": START,
        "period_end": END, "included_usd": "1.000000", "included_remaining_usd": "0.000000",
        "extra_credit_remaining_usd": "0.000000",
        "locale": "de-CH", "title": "KI-Kontingent aufgebraucht",
        "message_user": "Das KI-Kontingent für diese Periode ist aufgebraucht. Es wird am 01.12.2026 "
                        "erneuert. Wenn Sie KI-Funktionen schon vorher benötigen, können Sie in den "
                        "Abrechnungseinstellungen Zusatzguthaben kaufen.",
    }  # fmt: skip


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


def test_a_call_settled_after_the_month_ended_notifies_the_threshold_it_took_its_own_month_past(
    budget: Budget, clock: FakeClock
) -> None:
    """March is 75 % used. A call authorized at 23:50 on 31 March is settled at 00:05 on 1 April: it
    is charged to March, which it takes to 85 %, so March's 80 % is told — not April's, untouched."""
    march, april = 1803855600, 1806530400  # 1 March and 1 April 2027, midnight in Zurich
    budget.put_practice("p1", locale="de-CH", timezone="Europe/Zurich")
    budget.put_plan("basic", included_usd="1")
    budget.put_subscription("sub_1", practice_id="p1", plan="basic", status="active")  # calendar months
    clock.now = datetime(2027, 3, 31, 21, 50, tzinfo=UTC)  # 23:50 in Zurich
    earlier = budget.settle(request_id="a", practice_id="p1", model="gpt-4o", input_tokens=300_000)  # 75 %
    budget.authorize(request_id="late", practice_id="p1", operation="letter", model="gpt-4o",
                     input_tokens=40_000, max_output_tokens=0)  # fmt: skip
    clock.advance(minutes=15)  # 00:05 on 1 April

    late = budget.settle(request_id="late", practice_id="p1", model="gpt-4o", input_tokens=40_000)

    assert late.period_id == earlier.period_id  # March's
    assert (budget.snapshot("p1").period_start, budget.snapshot("p1").used_micros) == (april, 0)
    [crossed] = sent(budget, "budget.threshold_crossed")
    assert crossed == {
        "threshold_percent": 80, "subscription_id": "sub_1", "period_start": march, "period_end": april,
        "included_usd": "1.000000", "included_remaining_usd": "0.150000",
        "extra_credit_remaining_usd": "0.000000",
        "locale": "de-CH", "title": "KI-Kontingent: 80 % verbraucht",
        "message_user": "Ihre Praxis hat 80 % des KI-Kontingents dieser Periode verbraucht. "
                        "Das Kontingent wird am 01.04.2027 erneuert.",
    }  # fmt: skip


def test_a_plan_lowered_below_what_was_used_tells_its_thresholds_once_at_the_next_settle(
    budget: Budget, practice: str
) -> None:
    """60 % of 1 USD is used when the plan goes down to 0.50 USD: the period is past both lines
    without having crossed them. The next settle — paid by credit, the included budget being gone —
    tells 80 % and 100 %; the ones after tell nothing new."""
    budget.grant_credit("p1", amount_usd="5", source="manual", reference="gift-1")
    spend(budget, "a", 60)
    budget.put_plan("small", included_usd="0.50")
    budget.put_subscription("sub_1", practice_id="p1", plan="small", status="active",
                            current_period_start=START, current_period_end=END)  # fmt: skip
    assert sent(budget, "budget.threshold_crossed") == []

    spend(budget, "b", 10)
    spend(budget, "c", 10)
    spend(budget, "d", 10)

    crossed = sent(budget, "budget.threshold_crossed")
    assert Counter(data["threshold_percent"] for data in crossed) == {80: 1, 100: 1}
    for data in crossed:
        assert (data["period_start"], data["included_usd"], data["included_remaining_usd"]) == (
            START, "0.500000", "0.000000"
        )  # fmt: skip
    assert sent(budget, "budget.exhausted") == []  # the credit pays on


def test_a_replayed_settle_notifies_nothing_new(budget: Budget, practice: str) -> None:
    spend(budget, "a", 100)
    before = budget.notifications(practice_id="p1")
    spend(budget, "a", 100)
    assert budget.notifications(practice_id="p1") == before


@pytest.mark.parametrize(
    ("locale", "timezone", "title", "message"),
    [
        ("de-CH", "Europe/Zurich", "KI-Kontingent: 80 % verbraucht",
         "Ihre Praxis hat 80 % des KI-Kontingents dieser Periode verbraucht. "
         "Das Kontingent wird am 01.12.2026 erneuert."),
        ("fr-CH", "Europe/Zurich", "Contingent IA : 80 % utilisé",
         "Votre cabinet a utilisé 80 % de son contingent IA pour cette période. "
         "Le contingent sera renouvelé le 1 déc. 2026."),
        ("it-CH", "Europe/Zurich", "Contingente IA: 80 % utilizzato",
         "Utilizzo del contingente IA di questo periodo: 80 %. "
         "Il contingente verrà rinnovato il 1 dic 2026."),
        # the period ends at midnight UTC, which is still November 30 in New York
        ("en", "America/New_York", "80% of your AI allowance used",
         "Your practice has used 80% of its AI allowance for this period. "
         "The allowance renews on Nov 30, 2026."),
    ],
)  # fmt: skip
def test_a_threshold_is_told_in_the_practices_language_with_the_renewal_date_of_its_timezone(
    budget: Budget, practice: str, locale: str, timezone: str, title: str, message: str
) -> None:
    budget.put_practice("p1", locale=locale, timezone=timezone)
    spend(budget, "a", 85)

    [crossed] = sent(budget, "budget.threshold_crossed")

    assert (crossed["locale"], crossed["title"], crossed["message_user"]) == (locale, title, message)


def test_exhaustion_is_told_in_english_to_an_english_practice(budget: Budget, practice: str) -> None:
    budget.put_practice("p1", locale="en-GB", timezone="Europe/London")
    spend(budget, "a", 100)

    [exhausted] = sent(budget, "budget.exhausted")

    assert (exhausted["locale"], exhausted["title"], exhausted["message_user"]) == (
        "en-GB",
        "AI allowance used up",
        "The AI allowance for this period has been used up. It renews on 1 Dec 2026. If you need AI "
        "features before then, extra credit can be purchased in the billing settings.",
    )


def test_without_a_known_period_end_the_texts_name_no_date(budget: Budget, practice: str) -> None:
    # a settle that used the whole included budget, with the period's end unknown
    undated = replace(budget.snapshot("p1"), period_end=None, included_remaining_micros=0)

    def notify(connection: Connection) -> None:
        alerts.thresholds_reached(connection, undated, thresholds=[80], now=budget.clock())
        alerts.exhausted(connection, undated, reason="included_exhausted_no_credit", now=budget.clock())

    budget._write(notify)

    [crossed] = sent(budget, "budget.threshold_crossed")
    [exhausted] = sent(budget, "budget.exhausted")
    assert crossed["message_user"] == (
        "Ihre Praxis hat 80 % des KI-Kontingents dieser Periode verbraucht. "
        "Das Kontingent wird zu Beginn der nächsten Abrechnungsperiode erneuert."
    )
    assert exhausted["message_user"] == (
        "Das KI-Kontingent für diese Periode ist aufgebraucht. Es wird zu Beginn der nächsten "
        "Abrechnungsperiode erneuert. Wenn Sie KI-Funktionen schon vorher benötigen, können Sie in den "
        "Abrechnungseinstellungen Zusatzguthaben kaufen."
    )


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("auto_topup_paused",
         "Das KI-Kontingent ist aufgebraucht und die automatische Aufladung ist pausiert. Bitte prüfen Sie "
         "das Zahlungsmittel in den Abrechnungseinstellungen, kaufen Sie Zusatzguthaben oder warten Sie bis "
         "zur Erneuerung am 01.12.2026."),
        ("auto_topup_monthly_limit",
         "Das KI-Kontingent ist aufgebraucht und die automatische Aufladung hat ihr monatliches Limit "
         "erreicht. Sie können in den Abrechnungseinstellungen das Limit erhöhen oder Zusatzguthaben kaufen "
         "oder bis zur Erneuerung am 01.12.2026 warten."),
    ],
)  # fmt: skip
def test_exhaustion_when_top_up_cannot_help_says_why_as_the_refusal_does(
    budget: Budget, practice: str, reason: str, message: str
) -> None:
    snapshot = budget.snapshot("p1")

    budget._write(
        lambda connection: alerts.exhausted(connection, snapshot, reason=reason, now=budget.clock())
    )

    [exhausted] = sent(budget, "budget.exhausted")
    assert (exhausted["reason"], exhausted["title"], exhausted["message_user"]) == (
        reason, "KI-Kontingent aufgebraucht", message
    )  # fmt: skip
