"""The desktop's view: whole percent left, a warning below the threshold, renewal in the practice's zone."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from aibudget.views.client import ClientView, client_view
from aibudget.views.snapshot import Snapshot

USD = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def unix(instant: datetime) -> int:
    return (instant - EPOCH) // timedelta(seconds=1)


# Plan of 20 USD in a Zurich practice, period ending 2027-01-01T00:00 Zurich, 16 USD left: 80 %.
PRACTICE = Snapshot(
    practice_id="praxis-muster",
    locale="de-CH",
    timezone="Europe/Zurich",
    policy="allow_last_call",
    warning_percent=20,
    subscription_id="sub_1",
    plan="praxis-basic",
    period_start=unix(datetime(2026, 12, 1, tzinfo=ZoneInfo("Europe/Zurich"))),
    period_end=unix(datetime(2027, 1, 1, tzinfo=ZoneInfo("Europe/Zurich"))),
    included_micros=20 * USD,
    used_micros=4 * USD,
    held_micros=0,
    included_remaining_micros=16 * USD,
    extra_credit_remaining_micros=0,
    overage_micros=0,
)


def left(micros: int, **changes: Any) -> Snapshot:
    """The practice with `micros` of its included budget remaining."""
    return replace(PRACTICE, included_remaining_micros=micros, used_micros=20 * USD - micros, **changes)


@pytest.mark.parametrize(
    ("locale", "label"),
    [
        ("de-CH", "KI-Kontingent: 80 % verfügbar"),
        ("fr-CH", "Contingent IA : 80 % disponible"),
        ("it-CH", "Contingente IA: 80 % disponibile"),
        ("en", "AI allowance: 80% available"),
    ],
)
def test_eighty_percent_in_every_language(locale: str, label: str) -> None:
    view = client_view(PRACTICE, locale=locale)
    assert view.available_percent == 80
    assert view.user_label == label
    assert (view.show_warning, view.warning_level) == (False, "none")
    assert view.locale == locale


def test_warning_shows_under_one_percent() -> None:
    view = client_view(left(USD // 10), locale="de-CH")  # 0.1 USD of 20: 0.5 %
    assert view.available_percent == 1
    assert view.show_warning is True
    assert view.warning_level == "low"
    assert view.user_label == "KI-Kontingent: 1 % verfügbar"


def test_anything_left_shows_at_least_one_percent() -> None:
    assert client_view(left(1), locale="en").available_percent == 1


def test_exactly_at_the_threshold_there_is_no_warning() -> None:
    view = client_view(left(4 * USD), locale="de-CH")
    assert (view.available_percent, view.show_warning, view.warning_level) == (20, False, "none")


def test_just_under_the_threshold_warns() -> None:
    view = client_view(left(4 * USD - 1), locale="de-CH")
    assert (view.available_percent, view.show_warning, view.warning_level) == (19, True, "low")


def test_nineteen_percent_warns() -> None:
    assert client_view(left(3_800_000), locale="de-CH").show_warning is True


def test_the_threshold_is_the_practices() -> None:
    assert client_view(left(5 * USD, warning_percent=30), locale="de-CH").show_warning is True
    assert client_view(left(5 * USD, warning_percent=10), locale="de-CH").show_warning is False


@pytest.mark.parametrize(
    "snapshot",
    [left(0), left(USD, held_micros=USD), left(USD, held_micros=3 * USD)],
    ids=["nothing-left", "held-eats-everything", "held-exceeds-availability"],
)
def test_blocked_is_zero_percent_and_exhausted(snapshot: Snapshot) -> None:
    view = client_view(snapshot, locale="de-CH")
    assert (view.available_percent, view.show_warning, view.warning_level) == (0, True, "exhausted")
    assert view.user_label == "KI-Kontingent aufgebraucht"
    assert client_view(snapshot, locale="en").user_label == "AI allowance used up"


def test_holds_count_against_the_percent() -> None:
    assert client_view(left(16 * USD, held_micros=6 * USD), locale="en").available_percent == 50


@pytest.mark.parametrize(
    ("locale", "label"),
    [
        ("de-CH", "KI nicht enthalten: kein aktives Abonnement"),
        ("fr-CH", "IA non incluse : aucun abonnement actif"),
        ("it-CH", "IA non inclusa: nessun abbonamento attivo"),
        ("en", "AI not included: no active subscription"),
    ],
)
def test_without_a_subscription_nothing_is_available(locale: str, label: str) -> None:
    snapshot = replace(PRACTICE, subscription_id=None, plan=None, period_start=None, period_end=None)
    view = client_view(snapshot, locale=locale)
    assert (view.available_percent, view.show_warning, view.warning_level) == (0, True, "exhausted")
    assert view.user_label == label
    assert (view.period_end, view.renewal_date, view.renewal_date_display) == (None, None, None)


def test_extra_credit_counts_in_the_base_and_is_flagged() -> None:
    # Included used up, 5 USD of extra credit: 5 of 25 USD available this period.
    view = client_view(left(0, extra_credit_remaining_micros=5 * USD), locale="de-CH")
    assert (view.available_percent, view.extra_credit_active) == (20, True)
    assert view.warning_level == "none"
    assert client_view(PRACTICE, locale="de-CH").extra_credit_active is False


def test_renewal_date_is_the_end_of_the_period_where_the_practice_is() -> None:
    view = client_view(PRACTICE, locale="de-CH")
    assert view.period_end == PRACTICE.period_end
    assert view.renewal_date == "2027-01-01"
    assert view.renewal_date_display == "01.01.2027"


@pytest.mark.parametrize(
    ("timezone", "renewal"),
    [("Europe/Zurich", "2027-01-01"), ("America/New_York", "2026-12-31"), ("UTC", "2026-12-31")],
)
def test_renewal_date_near_midnight_follows_the_practices_timezone(timezone: str, renewal: str) -> None:
    end = unix(datetime(2026, 12, 31, 23, 30, tzinfo=UTC))
    view = client_view(replace(PRACTICE, timezone=timezone, period_end=end), locale="en")
    assert view.renewal_date == renewal


@pytest.mark.parametrize(
    ("locale", "shown"), [("de-CH", "31.12.2026"), ("fr-CH", "31 déc. 2026"), ("en", "Dec 31, 2026")]
)
def test_renewal_date_display_is_localized(locale: str, shown: str) -> None:
    end = unix(datetime(2026, 12, 31, 12, tzinfo=UTC))
    assert client_view(replace(PRACTICE, period_end=end), locale=locale).renewal_date_display == shown


def test_as_json_is_plain_json_without_floats() -> None:
    document = client_view(left(USD // 10, extra_credit_remaining_micros=1), locale="fr-CH").as_json()
    assert set(document) == set(ClientView.__slots__)
    assert all(value is None or type(value) in (str, int, bool) for value in document.values())
    assert json.loads(json.dumps(document)) == document
    assert document["available_percent"] == 1


def test_snapshot_client_view_uses_the_practice_locale_by_default() -> None:
    french = replace(PRACTICE, locale="fr-CH")
    assert french.client_view().user_label == "Contingent IA : 80 % disponible"
    assert french.client_view().locale == "fr-CH"
    assert french.client_view(locale="en").user_label == "AI allowance: 80% available"
