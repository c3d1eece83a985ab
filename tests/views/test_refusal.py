"""A refused call answers 402 with a polite, localized message saying what the user can do."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aibudget.views.refusal import REASONS, refusal_payload
from aibudget.views.snapshot import Snapshot

USD = 1_000_000
LOCALES = ("de-CH", "fr-CH", "it-CH", "en")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PERIOD_END = (datetime(2027, 1, 1, tzinfo=ZoneInfo("Europe/Zurich")) - EPOCH) // timedelta(seconds=1)

# A Zurich practice whose 20 USD are used up; the allowance renews on 2027-01-01.
USED_UP = Snapshot(
    practice_id="praxis-muster",
    locale="de-CH",
    timezone="Europe/Zurich",
    policy="allow_last_call",
    warning_percent=20,
    subscription_id="sub_1",
    plan="praxis-basic",
    period_start=PERIOD_END - 31 * 24 * 3600,
    period_end=PERIOD_END,
    included_micros=20 * USD,
    used_micros=20 * USD,
    held_micros=0,
    included_remaining_micros=0,
    extra_credit_remaining_micros=0,
    overage_micros=0,
)
NO_SUBSCRIPTION = replace(USED_UP, subscription_id=None, plan=None, period_start=None, period_end=None)


def test_the_payload_of_spec_section_4() -> None:
    assert refusal_payload(USED_UP, reason="included_exhausted_no_credit", request_id="req-1") == {
        "error_code": "AI_BUDGET_EXCEEDED",
        "reason": "included_exhausted_no_credit",
        "message_user": (
            "Das KI-Kontingent für diese Periode ist aufgebraucht. Es wird am 01.01.2027 erneuert. "
            "Wenn Sie KI-Funktionen schon vorher benötigen, können Sie in den Abrechnungseinstellungen "
            "Zusatzguthaben kaufen."
        ),
        "available_percent": 0,
        "period_end": PERIOD_END,
        "renewal_date": "2027-01-01",
        "request_id": "req-1",
    }


@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_has_a_different_message_in_every_language(reason: str) -> None:
    snapshot = NO_SUBSCRIPTION if reason == "no_active_subscription" else USED_UP
    messages = {
        locale: refusal_payload(snapshot, reason=reason, request_id="req-1", locale=locale)["message_user"]
        for locale in LOCALES
    }
    assert all(isinstance(message, str) and message.strip() for message in messages.values())
    assert len(set(messages.values())) == len(LOCALES)


@pytest.mark.parametrize("locale", LOCALES)
def test_every_reason_says_something_different(locale: str) -> None:
    messages = {
        refusal_payload(USED_UP, reason=reason, request_id="r", locale=locale)["message_user"]
        for reason in REASONS
    }
    assert len(messages) == len(REASONS)


@pytest.mark.parametrize(
    ("locale", "shown"),
    [("de-CH", "01.01.2027"), ("fr-CH", "1 janv. 2027"), ("it-CH", "1 gen 2027"), ("en", "Jan 1, 2027")],
)
@pytest.mark.parametrize(
    "reason",
    [
        "included_exhausted_no_credit",
        "insufficient_for_estimate",
        "auto_topup_paused",
        "auto_topup_monthly_limit",
    ],
)
def test_the_message_names_the_localized_renewal_date(reason: str, locale: str, shown: str) -> None:
    payload = refusal_payload(USED_UP, reason=reason, request_id="r", locale=locale)
    assert shown in str(payload["message_user"])


@pytest.mark.parametrize("reason", REASONS)
def test_without_a_known_period_the_message_names_no_date(reason: str) -> None:
    payload = refusal_payload(NO_SUBSCRIPTION, reason=reason, request_id="r", locale="en")
    assert (payload["period_end"], payload["renewal_date"], payload["available_percent"]) == (None, None, 0)
    assert payload["message_user"]
    assert "{" not in str(payload["message_user"])


def test_no_subscription_asks_to_renew_it() -> None:
    payload = refusal_payload(NO_SUBSCRIPTION, reason="no_active_subscription", request_id="r", locale="en")
    assert "no active subscription" in str(payload["message_user"])


def test_the_renewal_date_is_in_the_practices_timezone() -> None:
    new_york = replace(USED_UP, timezone="America/New_York")
    payload = refusal_payload(new_york, reason="included_exhausted_no_credit", request_id="r", locale="en")
    assert payload["renewal_date"] == "2026-12-31"
    assert "Dec 31, 2026" in str(payload["message_user"])


def test_the_practice_locale_is_the_default() -> None:
    french = replace(USED_UP, locale="fr-CH")
    default = refusal_payload(french, reason="auto_topup_paused", request_id="r")
    explicit = refusal_payload(french, reason="auto_topup_paused", request_id="r", locale="fr-CH")
    assert default == explicit
    assert str(default["message_user"]).startswith("Le contingent IA est épuisé")


def test_an_unsupported_language_gets_english() -> None:
    payload = refusal_payload(USED_UP, reason="auto_topup_monthly_limit", request_id="r", locale="ja-JP")
    assert str(payload["message_user"]).startswith("The AI allowance has been used up")


def test_an_unknown_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="out_of_luck"):
        refusal_payload(USED_UP, reason="out_of_luck", request_id="r")


@pytest.mark.parametrize("reason", REASONS)
def test_the_payload_is_plain_json_without_floats(reason: str) -> None:
    payload = refusal_payload(USED_UP, reason=reason, request_id="req-9", locale="it-CH")
    assert all(value is None or type(value) in (str, int) for value in payload.values())
    assert json.loads(json.dumps(payload)) == payload
