"""Authorize: hold a call's estimated cost before it is made, or refuse it with a 402 (SPEC §4).

Most stories here use a plan including 0.01 USD and whisper-1 estimates, whose price is 100 micro-USD
per second of audio: a 100-second dictation is exactly the whole plan.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from aibudget import (
    Authorization,
    Budget,
    BudgetExceeded,
    Conflict,
    DeviceNotInPractice,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
)
from aibudget.store import tables
from tests.factories import money_tables, open_practice, rows, transcribe, usage_events

NOVEMBER_2026_END = 1796079600  # 2026-12-01 00:00 Europe/Zurich: the clock starts on 2026-11-15


def dictation(budget: Budget, request_id: str, seconds: int | Decimal, **where: str) -> Authorization:
    """Authorize a whisper-1 transcription of `seconds` of audio: 100 micro-USD a second."""
    where = where or {"practice_id": "p1"}
    return budget.authorize(
        request_id=request_id, operation="transcribe", model="whisper-1", audio_seconds=seconds, **where
    )


def refusal(budget: Budget, request_id: str, seconds: int = 10) -> BudgetExceeded:
    with pytest.raises(BudgetExceeded) as refused:
        dictation(budget, request_id, seconds)
    return refused.value


# allow_last_call, the default policy


def test_a_call_that_fits_holds_its_whole_estimate(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    held = dictation(budget, "r1", 30)
    assert (held.status, held.estimate_micros, held.held_micros) == ("active", 3_000, 3_000)
    assert budget.snapshot("p1").available_micros == 7_000


def test_allow_last_call_holds_what_is_left_when_the_estimate_is_more(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    dictation(budget, "r1", 70)
    last = dictation(budget, "r2", 50)  # 5000 estimated, 3000 left after the first hold
    assert (last.estimate_micros, last.held_micros) == (5_000, 3_000)
    assert budget.snapshot("p1").available_micros == 0


def test_allow_last_call_refuses_only_when_nothing_is_available(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    assert dictation(budget, "r1", 99).held_micros == 9_900
    assert dictation(budget, "r2", 60).held_micros == 100  # one micro-USD left is enough to try
    assert refusal(budget, "r3", 1).reason == "included_exhausted_no_credit"


def test_credit_counts_toward_availability(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    transcribe(budget, "used-up", usd="0.01")
    budget.grant_credit("p1", amount_usd="0.002", source="purchase", reference="pi_1")
    assert dictation(budget, "r1", 50).held_micros == 2_000


# strict


def test_strict_holds_an_estimate_that_fits_exactly(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01", policy="strict")
    assert dictation(budget, "r1", 100).held_micros == 10_000


def test_strict_refuses_an_estimate_above_availability(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01", policy="strict")
    dictation(budget, "r1", 60)
    refused = refusal(budget, "r2", 41)  # 4100 estimated, 4000 available: zero overspend
    assert refused.reason == "insufficient_for_estimate"
    assert dictation(budget, "r3", 40).held_micros == 4_000


def test_strict_refuses_when_nothing_is_left(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01", policy="strict")
    transcribe(budget, "used-up", usd="0.01")
    assert refusal(budget, "r1").reason == "included_exhausted_no_credit"


@pytest.mark.parametrize("status", ["canceled", "past_due", "incomplete"])
def test_without_a_granting_subscription_nothing_is_authorized(budget: Budget, status: str) -> None:
    open_practice(budget, status=status)
    budget.grant_credit("p1", amount_usd="5", source="purchase", reference="pi_1")  # credit waits
    refused = refusal(budget, "r1")
    assert refused.reason == "no_active_subscription"
    assert (refused.payload["period_end"], refused.payload["renewal_date"]) == (None, None)


def test_a_practice_that_never_subscribed_is_refused_too(budget: Budget) -> None:
    budget.put_practice("p1", name="Praxis Muster")
    assert refusal(budget, "r1").reason == "no_active_subscription"


# the refusal


def test_the_refusal_carries_the_402_payload(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    transcribe(budget, "used-up", usd="0.01")
    refused = refusal(budget, "req-7")
    assert (refused.code, refused.http_status) == ("AI_BUDGET_EXCEEDED", 402)
    payload = refused.payload
    message = payload.pop("message_user")
    assert payload == {
        "error_code": "AI_BUDGET_EXCEEDED",
        "reason": "included_exhausted_no_credit",
        "available_percent": 0,
        "period_end": NOVEMBER_2026_END,
        "renewal_date": "2026-12-01",
        "request_id": "req-7",
    }
    assert "01.12.2026" in message  # German (de-CH, the default locale), with the renewal date


def test_a_refusal_is_recorded_as_a_blocked_event_and_holds_nothing(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    transcribe(budget, "used-up", usd="0.01")
    refusal(budget, "r1")
    blocked = usage_events(budget, tables.usage_events.c.status == "blocked")
    assert [(e.request_id, e.error_code, e.cost_micros, e.operation, e.model) for e in blocked] == [
        ("r1", "included_exhausted_no_credit", 0, "transcribe", "whisper-1")
    ]
    assert blocked[0].period_id is not None
    assert budget.snapshot("p1").held_micros == 0
    assert budget.verify() == []


# idempotency


def test_a_replayed_authorize_returns_the_same_authorization_and_holds_nothing_more(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    first = dictation(budget, "r1", 30)
    again = dictation(budget, "r1", 30)
    assert (first.replayed, again.replayed) == (False, True)
    assert replace(again, replayed=False) == first
    assert budget.snapshot("p1").held_micros == 3_000
    assert len(rows(budget, tables.authorizations)) == 1


def test_a_replayed_refusal_raises_the_same_payload_again_even_after_credit_arrived(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    transcribe(budget, "used-up", usd="0.01")
    first = refusal(budget, "r1")
    budget.grant_credit("p1", amount_usd="5", source="purchase", reference="pi_1")
    again = refusal(budget, "r1")
    assert again.payload == first.payload
    assert len(usage_events(budget, tables.usage_events.c.status == "blocked")) == 1
    assert dictation(budget, "r2", 10).held_micros == 1_000  # a new request id is authorized


def test_the_same_request_id_with_another_estimate_is_a_conflict_and_writes_nothing(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    dictation(budget, "r1", 30)
    before = money_tables(budget)
    with pytest.raises(IdempotencyConflict) as conflict:
        dictation(budget, "r1", 31)
    assert conflict.value.field == "request_id"
    assert money_tables(budget) == before


def test_authorizing_a_request_already_settled_is_a_conflict_and_holds_nothing(budget: Budget) -> None:
    """A hold for a call that was recorded already would wait for a settle that never comes."""
    open_practice(budget)
    transcribe(budget, "r1", usd="0.01")  # settled without an authorization
    before = money_tables(budget)
    with pytest.raises(Conflict) as conflict:
        dictation(budget, "r1", 30)
    assert type(conflict.value) is Conflict
    assert conflict.value.field == "request_id"
    assert money_tables(budget) == before
    assert budget.snapshot("p1").held_micros == 0


# the estimate


def test_without_input_tokens_the_prompt_size_bounds_them(budget: Budget) -> None:
    open_practice(budget)
    held = budget.authorize(
        practice_id="p1",
        request_id="r1",
        operation="letter",
        model="gpt-4o-mini",
        prompt_chars=3_001,
        max_output_tokens=500,
    )
    # at most one token per 2 characters: 1501 x 0.15/1M + 500 x 0.60/1M = 0.00052515 -> 0.000526
    assert held.estimate_usd == Decimal("0.000526")


def test_given_input_tokens_win_over_the_prompt_size(budget: Budget) -> None:
    open_practice(budget)
    held = budget.authorize(
        practice_id="p1",
        request_id="r1",
        operation="letter",
        model="gpt-4o-mini",
        input_tokens=1_000,
        prompt_chars=1_000_000,
        max_output_tokens=0,
    )
    assert held.estimate_usd == Decimal("0.000150")


def test_output_is_capped_at_the_configured_default_when_not_given(budget: Budget) -> None:
    open_practice(budget)
    held = budget.authorize(
        practice_id="p1", request_id="r1", operation="letter", model="gpt-4o-mini", input_tokens=1_000
    )
    # 1000 x 0.15/1M + 4096 x 0.60/1M = 0.000150 + 0.0024576 -> 0.002608
    assert held.estimate_usd == Decimal("0.002608")


@pytest.mark.parametrize(("seconds", "micros"), [(45, 4_500), (Decimal("12.5"), 1_250), (0, 0)])
def test_a_dictation_is_estimated_from_its_audio_seconds(
    budget: Budget, seconds: int | Decimal, micros: int
) -> None:
    open_practice(budget)
    assert dictation(budget, "r1", seconds).estimate_micros == micros


@pytest.mark.parametrize(
    ("estimate", "field"),
    [
        pytest.param({"input_tokens": -1}, "estimate.input_tokens", id="negative input tokens"),
        # an estimate beyond a 64-bit micro-USD column: a clear 422, not an OverflowError
        pytest.param({"input_tokens": 10**20}, "estimate.input_tokens", id="tokens whose cost overflows"),
        pytest.param({"prompt_chars": 2.5}, "estimate.prompt_chars", id="float prompt size"),
        pytest.param({"max_output_tokens": True}, "estimate.max_output_tokens", id="boolean output cap"),
        pytest.param({"audio_seconds": 12.5}, "estimate.audio_seconds", id="float audio seconds"),
        pytest.param({"audio_seconds": Decimal("NaN")}, "estimate.audio_seconds", id="NaN audio seconds"),
        pytest.param({"request_id": "has space"}, "request_id", id="request id with a space"),
        pytest.param({"operation": "x" * 33}, "operation", id="long operation"),
        pytest.param({"model": ""}, "model", id="empty model"),
    ],
)
def test_a_bad_estimate_is_refused_naming_the_field_and_writes_nothing(
    budget: Budget, estimate: dict[str, object], field: str
) -> None:
    open_practice(budget)
    before = money_tables(budget)
    arguments = {"request_id": "r1", "operation": "letter", "model": "gpt-4o-mini", **estimate}
    with pytest.raises(InvalidInput) as invalid:
        budget.authorize(practice_id="p1", **arguments)  # type: ignore[arg-type]
    assert invalid.value.field == field
    assert money_tables(budget) == before


def test_an_unknown_practice_is_not_found(budget: Budget) -> None:
    with pytest.raises(NotFound):
        dictation(budget, "r1", 10, practice_id="nobody")


# devices


def test_a_device_authorizes_for_its_practice(budget: Budget) -> None:
    open_practice(budget, "praxis-a", included_usd="0.01")
    device = budget.bind_device("laptop-7f3a", practice_id="praxis-a")
    held = dictation(budget, "r1", 20, device_id="laptop-7f3a")
    assert (held.practice_id, held.held_micros) == ("praxis-a", 2_000)
    assert rows(budget, tables.authorizations)[0].device_suffix == device.suffix
    assert budget.snapshot("praxis-a").held_micros == 2_000


def test_a_device_of_one_practice_never_spends_another_practices_money(budget: Budget) -> None:
    open_practice(budget, "praxis-a")
    open_practice(budget, "praxis-b")
    budget.bind_device("laptop-7f3a", practice_id="praxis-a")
    before = money_tables(budget)
    with pytest.raises(DeviceNotInPractice):
        dictation(budget, "r1", 20, practice_id="praxis-b", device_id="laptop-7f3a")
    assert money_tables(budget) == before


def test_a_deactivated_device_is_refused(budget: Budget) -> None:
    open_practice(budget)
    budget.bind_device("laptop-7f3a", practice_id="p1")
    budget.deactivate_device("laptop-7f3a")
    before = money_tables(budget)
    with pytest.raises(Forbidden):
        dictation(budget, "r1", 20, device_id="laptop-7f3a")
    assert money_tables(budget) == before


def test_the_refusal_speaks_the_language_of_the_practice(budget: Budget) -> None:
    open_practice(budget, included_usd="0.01")
    budget.put_practice("p1", locale="fr-CH")
    transcribe(budget, "used-up", usd="0.01")
    message = refusal(budget, "r1").payload["message_user"]
    assert message.startswith("Le contingent IA de cette période est épuisé.")
    assert "1 déc. 2026" in message
