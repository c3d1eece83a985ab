"""Settle: post a call's real cost through the waterfall, release its hold, once per request (SPEC §4).

Prices: gpt-4o-mini 0.15 / 0.60 USD per 1M input / output tokens; whisper-1 0.0001 USD per second.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal

import pytest

from aibudget import Budget, BudgetExceeded, IdempotencyConflict, InvalidInput, UsageEvent
from aibudget.ledger.waterfall import Allocation
from aibudget.store import tables
from tests.conftest import FakeClock
from tests.factories import (
    DECEMBER_2025,
    create_subscription,
    money_tables,
    open_practice,
    rows,
    transcribe,
    usage_events,
)

JANUARY_2026 = (1767225600, 1769904000)


def letter(budget: Budget, request_id: str, **usage: int) -> UsageEvent:
    return budget.settle(practice_id="p1", request_id=request_id, model="gpt-4o-mini", **usage)


def test_a_one_token_call_costs_one_micro_usd_never_zero(budget: Budget) -> None:
    """Regression "tiny calls costing 0": 1 x 0.15/1M USD is rounded up, not down."""
    open_practice(budget)
    event = budget.settle(practice_id="p1", request_id="r1", model="gpt-4o-mini", input_tokens=1)
    assert event.cost_usd == Decimal("0.000001")
    assert event.allocations == (Allocation("included", 1),)
    assert budget.snapshot("p1").used_usd == Decimal("0.000001")


def test_settle_posts_the_catalog_price_and_releases_exactly_its_own_hold(budget: Budget) -> None:
    open_practice(budget)
    budget.authorize(
        practice_id="p1", request_id="other", operation="transcribe", model="whisper-1", audio_seconds=30
    )
    budget.authorize(
        practice_id="p1",
        request_id="r1",
        operation="letter",
        model="gpt-4o-mini",
        input_tokens=1200,
        max_output_tokens=800,
    )
    assert budget.snapshot("p1").held_micros == 3_000 + 660

    event = budget.settle(
        practice_id="p1", request_id="r1", model="gpt-4o-mini", input_tokens=1180, output_tokens=640
    )
    assert (event.cost_micros, event.operation, event.status) == (561, "letter", "success")
    assert (event.priced_as, event.price_source, event.price_version) == (
        "gpt-4o-mini",
        "catalog",
        "genai-prices 0.2.3",
    )
    snapshot = budget.snapshot("p1")
    assert (snapshot.held_micros, snapshot.used_micros) == (3_000, 561)
    assert {a.request_id: a.status for a in rows(budget, tables.authorizations)} == {
        "other": "active",
        "r1": "settled",
    }
    assert budget.verify() == []


def test_cost_above_the_hold_is_funded_by_the_waterfall(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    grant = budget.grant_credit("p1", amount_usd="0.005", source="purchase", reference="pi_1")
    held = budget.authorize(
        practice_id="p1", request_id="r1", operation="transcribe", model="whisper-1", audio_seconds=10
    )
    assert held.held_micros == 1_000

    event = budget.settle(practice_id="p1", request_id="r1", model="whisper-1", audio_seconds=130)
    assert event.allocations == (Allocation("included", 10_000), Allocation("credit", 3_000, grant.grant_id))
    snapshot = budget.snapshot("p1")
    assert (snapshot.held_micros, snapshot.used_micros, snapshot.extra_credit_remaining_micros) == (
        0,
        13_000,
        2_000,
    )
    assert budget.verify() == []


def test_settling_without_an_authorization_records_the_call(budget: Budget) -> None:
    open_practice(budget)
    event = letter(budget, "after-the-call", input_tokens=1000, output_tokens=1000)
    assert (event.cost_micros, event.operation) == (750, "unspecified")
    (row,) = usage_events(budget)
    assert (row.request_id, row.authorization_id, row.status) == ("after-the-call", None, "success")
    assert budget.snapshot("p1").used_micros == 750


def test_a_replayed_settle_is_charged_once(budget: Budget) -> None:
    """Regression "the same request charged twice": a retry returns the first event."""
    open_practice(budget)
    budget.authorize(practice_id="p1", request_id="r1", operation="letter", model="gpt-4o-mini")
    first = letter(budget, "r1", input_tokens=1180, output_tokens=640)
    again = letter(budget, "r1", input_tokens=1180, output_tokens=640)

    assert (first.replayed, again.replayed) == (False, True)
    assert again.event_id == first.event_id
    assert again.cost_micros == first.cost_micros == 561
    assert again.allocations == first.allocations
    assert len(usage_events(budget, tables.usage_events.c.request_id == "r1")) == 1
    snapshot = budget.snapshot("p1")
    assert (snapshot.used_micros, snapshot.held_micros) == (561, 0)
    assert budget.verify() == []


def test_a_settle_replayed_with_another_body_is_a_conflict_and_writes_nothing(budget: Budget) -> None:
    open_practice(budget)
    letter(budget, "r1", input_tokens=1180, output_tokens=640)
    before = money_tables(budget)
    with pytest.raises(IdempotencyConflict) as conflict:
        letter(budget, "r1", input_tokens=1180, output_tokens=641)
    assert conflict.value.field == "request_id"
    assert money_tables(budget) == before


def test_a_call_settled_after_its_hold_expired_is_still_charged(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget)
    budget.authorize(
        practice_id="p1", request_id="r1", operation="transcribe", model="whisper-1", audio_seconds=60
    )
    clock.advance(minutes=11)
    assert budget.sweep() == 1
    event = budget.settle(practice_id="p1", request_id="r1", model="whisper-1", audio_seconds=58)
    assert (event.cost_micros, event.operation) == (5_800, "transcribe")
    snapshot = budget.snapshot("p1")
    assert (snapshot.used_micros, snapshot.held_micros) == (5_800, 0)
    assert [e.status for e in usage_events(budget)] == ["expired", "success"]
    assert budget.verify() == []


def test_a_call_settled_after_its_hold_was_voided_is_still_charged(budget: Budget) -> None:
    open_practice(budget)
    budget.authorize(
        practice_id="p1", request_id="r1", operation="transcribe", model="whisper-1", audio_seconds=60
    )
    budget.void(practice_id="p1", request_id="r1")
    transcribe(budget, "r1", usd="0.006")
    snapshot = budget.snapshot("p1")
    assert (snapshot.used_micros, snapshot.held_micros) == (6_000, 0)
    assert [e.status for e in usage_events(budget)] == ["voided", "success"]
    assert budget.void(practice_id="p1", request_id="r1").status == "voided"  # a replay: the first result
    assert budget.verify() == []


def test_a_call_authorized_before_midnight_is_charged_to_the_month_it_began_in(
    budget: Budget, clock: FakeClock
) -> None:
    clock.now = datetime(2026, 11, 30, 22, 55, tzinfo=UTC)  # 23:55 in Zurich, the last day of November
    open_practice(budget)
    november = budget.current_period("p1")
    assert november is not None
    budget.authorize(
        practice_id="p1", request_id="r1", operation="transcribe", model="whisper-1", audio_seconds=600
    )
    clock.advance(minutes=8)  # 00:03 on 1 December: a new period
    event = budget.settle(practice_id="p1", request_id="r1", model="whisper-1", audio_seconds=420)

    assert event.period_id == november.period_id
    december = budget.snapshot("p1")
    assert december.period_start == november.end
    assert (december.used_micros, december.held_micros) == (0, 0)
    (november_row,) = rows(budget, tables.periods, tables.periods.c.period_id == november.period_id)
    assert (november_row.used_micros, november_row.included_used_micros) == (42_000, 42_000)
    assert budget.verify() == []


def test_a_call_authorized_before_the_provider_renewed_is_charged_to_the_old_period(budget: Budget) -> None:
    open_practice(budget, current_period_start=DECEMBER_2025[0], current_period_end=DECEMBER_2025[1])
    december = budget.current_period("p1")
    assert december is not None
    budget.authorize(practice_id="p1", request_id="r1", operation="letter", model="gpt-4o-mini")
    create_subscription(
        budget,
        "sub_p1",
        "p1",
        plan="included-20",
        current_period_start=JANUARY_2026[0],
        current_period_end=JANUARY_2026[1],
    )
    event = letter(budget, "r1", input_tokens=1000, output_tokens=1000)

    assert event.period_id == december.period_id
    january = budget.snapshot("p1")
    assert (january.period_start, january.used_micros, january.held_micros) == (JANUARY_2026[0], 0, 0)
    assert budget.verify() == []


def test_money_stays_exact_over_thousands_of_tiny_calls(budget: Budget, backend: str) -> None:
    """Regression "float drift": every cost is whole micro-USD and the sums agree to the micro.

    10,000 calls on SQLite; 1,000 on PostgreSQL, where each call is a few round trips to the server."""
    calls = 10_000 if backend == "sqlite" else 1_000
    open_practice(budget)
    expected = Decimal(0)
    for i in range(calls):
        input_tokens, output_tokens = 1 + i % 7, i % 3
        letter(budget, f"tiny-{i}", input_tokens=input_tokens, output_tokens=output_tokens)
        exact = (input_tokens * Decimal("0.15") + output_tokens * Decimal("0.60")) / 1_000_000
        expected += exact.quantize(Decimal("0.000001"), rounding=ROUND_CEILING)

    events = usage_events(budget)
    assert len(events) == calls
    posted = sum(e.cost_micros for e in events)
    (period,) = rows(budget, tables.periods)
    assert posted == period.used_micros == period.included_used_micros
    assert budget.snapshot("p1").used_usd == expected
    assert budget.verify() == []


def test_metadata_is_scrubbed_before_it_is_stored(budget: Budget) -> None:
    open_practice(budget)
    meta = {
        "keyboard": "de-CH",
        "api_key": "x",
        "note": "sk-abcdefghijklmnopqrstuvwx",
        "comment": "sk-abcdefghijklmnopqrstuvwx",
        "template_id": 17,
    }
    letter(budget, "r1", input_tokens=10, meta=meta)  # type: ignore[arg-type]
    (event,) = usage_events(budget)
    assert event.meta == {
        "keyboard": "de-CH",
        "api_key": "[redacted]",
        "note": "[redacted]",
        "comment": "[redacted]",
        "template_id": 17,
    }


def test_a_failed_call_is_settled_with_its_error_code_and_still_costs_what_it_used(budget: Budget) -> None:
    open_practice(budget)
    event = budget.settle(
        practice_id="p1",
        request_id="r1",
        model="gpt-4o-mini",
        input_tokens=2000,
        status="error",
        error_code="upstream_timeout",
    )
    assert (event.status, event.cost_micros) == ("error", 300)
    (row,) = usage_events(budget)
    assert (row.status, row.error_code) == ("error", "upstream_timeout")
    assert budget.snapshot("p1").used_micros == 300


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        pytest.param({"input_tokens": -1}, "input_tokens", id="negative input tokens"),
        pytest.param({"output_tokens": -5}, "output_tokens", id="negative output tokens"),
        pytest.param({"input_tokens": True}, "input_tokens", id="boolean tokens"),
        pytest.param(
            {"input_tokens": 10, "cached_input_tokens": 11},
            "cached_input_tokens",
            id="more cached than input",
        ),
        pytest.param({"status": "maybe"}, "status", id="unknown status"),
        pytest.param({"status": "blocked"}, "status", id="status only the ledger writes"),
        pytest.param({"audio_seconds": 12.5}, "audio_seconds", id="float audio seconds"),
        pytest.param({"audio_seconds": -1}, "audio_seconds", id="negative audio seconds"),
        # costs beyond a 64-bit micro-USD column: a clear 422, not an OverflowError
        pytest.param({"input_tokens": 10**19}, "input_tokens", id="tokens whose cost overflows"),
        pytest.param({"audio_seconds": Decimal("1e30")}, "audio_seconds", id="audio whose cost overflows"),
        pytest.param({"error_code": "x" * 65}, "error_code", id="long error code"),
        pytest.param({"request_id": "has space"}, "request_id", id="request id with a space"),
        pytest.param({"request_id": ""}, "request_id", id="empty request id"),
        pytest.param({"operation": "not/allowed"}, "operation", id="operation with a slash"),
        pytest.param({"model": "x" * 201}, "model", id="long model name"),
        # PostgreSQL refuses NUL in text columns: a 500 there if it gets that far
        pytest.param({"model": "gpt-4o\x00mini"}, "model", id="model name with NUL"),
        pytest.param({"meta": {"nested": {"a": 1}}}, "meta.nested", id="nested metadata"),
        pytest.param({"meta": {"ratio": 0.5}}, "meta.ratio", id="float metadata"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    budget: Budget, arguments: dict[str, object], field: str
) -> None:
    open_practice(budget)
    budget.authorize(practice_id="p1", request_id="r1", operation="letter", model="gpt-4o-mini")
    before = money_tables(budget)
    settle = {"practice_id": "p1", "request_id": "r1", "model": "gpt-4o-mini", **arguments}
    with pytest.raises(InvalidInput) as invalid:
        budget.settle(**settle)  # type: ignore[arg-type]
    assert invalid.value.field == field
    assert money_tables(budget) == before


def test_a_settle_replayed_after_the_hold_expired_is_still_charged_once(
    budget: Budget, clock: FakeClock
) -> None:
    open_practice(budget)
    budget.authorize(practice_id="p1", request_id="r1", operation="letter", model="gpt-4o-mini")
    first = letter(budget, "r1", input_tokens=1000)
    clock.advance(hours=1)
    budget.sweep()
    assert letter(budget, "r1", input_tokens=1000).event_id == first.event_id
    assert [e.status for e in usage_events(budget)] == ["success"]
    assert budget.snapshot("p1").used_micros == 150
    assert budget.verify() == []


def test_the_event_is_dated_when_the_call_is_settled(budget: Budget, clock: FakeClock) -> None:
    open_practice(budget)
    authorized = budget.authorize(practice_id="p1", request_id="r1", operation="letter", model="gpt-4o-mini")
    clock.advance(seconds=90)
    event = letter(budget, "r1", input_tokens=1)
    assert event.occurred_at == authorized.created_at + timedelta(seconds=90)
    assert [row.occurred_at for row in usage_events(budget)] == [event.occurred_at]


def test_a_call_made_despite_a_refusal_is_still_recorded(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    transcribe(budget, "used-up", usd="0.01")
    with pytest.raises(BudgetExceeded):
        budget.authorize(practice_id="p1", request_id="r1", operation="letter", model="gpt-4o-mini")
    event = letter(budget, "r1", input_tokens=1000)
    assert event.allocations == (Allocation("overage", 150),)
    assert [e.status for e in usage_events(budget, tables.usage_events.c.request_id == "r1")] == [
        "blocked",
        "success",
    ]
    assert budget.verify() == []


def test_the_event_keeps_the_device_that_authorized_the_call(budget: Budget) -> None:
    open_practice(budget)
    device = budget.bind_device("laptop-7f3a", practice_id="p1")
    budget.authorize(device_id="laptop-7f3a", request_id="r1", operation="letter", model="gpt-4o-mini")
    letter(budget, "r1", input_tokens=1000)  # settled by the vendor's backend, without the device
    (event,) = usage_events(budget)
    assert (event.practice_id, event.device_suffix) == ("p1", device.suffix)


def test_a_replay_stating_the_same_duration_differently_is_the_same_body(budget: Budget) -> None:
    open_practice(budget)
    first = budget.settle(practice_id="p1", request_id="r1", model="whisper-1", audio_seconds=90)
    again = budget.settle(practice_id="p1", request_id="r1", model="whisper-1", audio_seconds=Decimal("90.0"))
    assert (again.replayed, again.event_id) == (True, first.event_id)
    assert budget.snapshot("p1").used_micros == 9_000
