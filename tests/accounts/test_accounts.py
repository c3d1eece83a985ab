"""Practices, plans, subscription mirrors and devices through the library."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aibudget import Budget, Conflict, DeviceNotInPractice, Forbidden, InvalidInput, NotFound
from aibudget.store import tables
from aibudget.store.dialect import read_transaction
from aibudget.store.sql import LATEST_UNIX_SECONDS
from tests.conftest import FakeClock
from tests.factories import DECEMBER_2025, USD, create_practice, create_subscription


def test_a_new_practice_gets_swiss_defaults_and_an_empty_balance(budget: Budget) -> None:
    practice = budget.put_practice("p1")
    assert (practice.locale, practice.timezone, practice.policy) == (
        "de-CH",
        "Europe/Zurich",
        "allow_last_call",
    )
    with read_transaction(budget.engine) as connection:
        balance = connection.execute(
            select(tables.balances).where(tables.balances.c.practice_id == "p1")
        ).one()
    assert (balance.held_micros, balance.credit_micros) == (0, 0)


def test_updating_a_practice_keeps_fields_not_given(budget: Budget) -> None:
    budget.put_practice("p1", name="Praxis Muster", locale="fr-CH", policy="strict")
    practice = budget.put_practice("p1", timezone="Europe/Rome")
    assert (practice.name, practice.locale, practice.timezone, practice.policy) == (
        "Praxis Muster",
        "fr-CH",
        "Europe/Rome",
        "strict",
    )


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"practice_id": "has space"}, "practice_id"),
        ({"practice_id": "x" * 65}, "practice_id"),
        ({"practice_id": ""}, "practice_id"),
        ({"locale": "es-ES"}, "locale"),
        ({"locale": "klingon"}, "locale"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "America/Indiana"}, "timezone"),  # a directory of the timezone database
        ({"timezone": "x" * 300}, "timezone"),  # too long for a file name
        ({"timezone": "__init__.py"}, "timezone"),  # a file of the timezone package, not a zone
        ({"policy": "lenient"}, "policy"),
        ({"warning_percent": 120}, "warning_percent"),
        ({"name": "bad\nname"}, "name"),
    ],
)
def test_bad_practice_fields_are_refused_and_nothing_is_written(
    budget: Budget, arguments: dict[str, object], field: str
) -> None:
    fields = dict(arguments)  # the parameters are shared by both engines' runs
    practice_id = str(fields.pop("practice_id", "p1"))
    with pytest.raises(InvalidInput) as caught:
        budget.put_practice(practice_id, **fields)  # type: ignore[arg-type]
    assert caught.value.field == field
    with read_transaction(budget.engine) as connection:
        assert connection.execute(select(tables.practices)).first() is None


def test_practice_ids_allow_the_documented_characters(budget: Budget) -> None:
    assert budget.put_practice("Praxis-1.zh:A_b").practice_id == "Praxis-1.zh:A_b"


def test_unknown_practice_is_not_found(budget: Budget) -> None:
    with pytest.raises(NotFound):
        budget.get_practice("nobody")


@pytest.mark.parametrize("amount", ["20 USD", "nan", "-1", "0.0000001", 20.0])
def test_bad_plan_budgets_are_refused_at_once(budget: Budget, amount: object) -> None:
    """Regression: a bad budget used to be stored and crash the first call that read it."""
    with pytest.raises(InvalidInput) as caught:
        budget.put_plan("basic", included_usd=amount)  # type: ignore[arg-type]
    assert caught.value.field == "included_usd"


def test_an_older_subscription_update_never_rolls_the_mirror_back(budget: Budget) -> None:
    create_practice(budget)
    start, end = DECEMBER_2025
    create_subscription(
        budget, status="active", current_period_start=start, current_period_end=end, updated_at=200
    )
    stale = create_subscription(budget, status="canceled", updated_at=100)
    assert (stale.status, stale.updated_at, stale.current_period_start) == ("active", 200, start)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"current_period_start": 10}, "current_period_end"),
        ({"current_period_start": 10, "current_period_end": 5}, "current_period_end"),
        ({"current_period_start": -1, "current_period_end": 5}, "current_period_start"),
        ({"current_period_start": 10, "current_period_end": 2**63}, "current_period_end"),  # no 64-bit int
        ({"updated_at": "yesterday"}, "updated_at"),
    ],
)
def test_bad_subscription_fields_are_refused(budget: Budget, fields: dict[str, object], field: str) -> None:
    create_practice(budget)
    with pytest.raises(InvalidInput) as caught:
        create_subscription(budget, **fields)
    assert caught.value.field == field


@pytest.mark.parametrize("given", [pytest.param(" ", id="a space"), pytest.param(" \u00a0 ", id="spaces")])
def test_a_blank_id_is_refused_naming_it(budget: Budget, given: str) -> None:
    create_practice(budget)
    attempts = {
        "lookup_key": lambda: budget.put_plan(given, included_usd="20"),
        "subscription_id": lambda: create_subscription(budget, given),
        "plan": lambda: create_subscription(budget, plan=given),
        "customer_id": lambda: create_subscription(budget, customer_id=given),
        "device_id": lambda: budget.bind_device(given, practice_id="p1"),
        "user_key": lambda: budget.bind_device("dev-a", practice_id="p1", user_key=given),
    }
    for field, attempt in attempts.items():
        with pytest.raises(InvalidInput) as caught:
            attempt()
        assert caught.value.field == field
    with read_transaction(budget.engine) as connection:
        for table in (tables.plans, tables.subscriptions, tables.devices):
            assert connection.execute(select(table)).first() is None


def test_ids_mirrored_from_elsewhere_are_kept_as_they_come(budget: Budget) -> None:
    """A lookup key, subscription or customer id is matched exactly with what Stripe holds, spaces
    at its ends included; so is a user key."""
    create_practice(budget)
    budget.put_plan("basic ", included_usd="20")
    subscription = create_subscription(budget, " sub_1", plan="basic ", customer_id="cus 1 ")
    assert (subscription.subscription_id, subscription.plan) == (" sub_1", "basic ")
    assert budget.snapshot("p1").included_micros == 20 * USD
    assert budget.bind_device("dev-a", practice_id="p1", user_key=" dr. muster").user_key == " dr. muster"


@pytest.mark.parametrize("given", [" pc-1", "pc-1 ", "pc\u00a01", "pc\u200b1", "Müller-PC"])
def test_a_device_id_the_desktop_app_could_not_send_is_not_bound(budget: Budget, given: str) -> None:
    """`X-Device-Id` carries printable ASCII, and HTTP drops the spaces before a header's value."""
    create_practice(budget)
    with pytest.raises(InvalidInput) as caught:
        budget.bind_device(given, practice_id="p1")
    assert caught.value.field == "device_id"
    assert budget.devices("p1") == []


def test_the_latest_period_end_taken_shows_in_a_timezone_far_east_of_utc(
    budget: Budget, clock: FakeClock
) -> None:
    """The last second a period may end, 14 hours ahead of UTC, is still a date Python can show."""
    create_practice(budget, timezone="Pacific/Kiritimati")
    budget.put_plan("basic", included_usd="20")
    start = int(clock.now.timestamp())
    create_subscription(budget, current_period_start=start, current_period_end=LATEST_UNIX_SECONDS)

    view = budget.snapshot("p1").client_view(locale="de")
    assert (view.renewal_date, view.renewal_date_display) == ("9999-01-01", "01.01.9999")


def test_a_subscription_needs_an_existing_practice(budget: Budget) -> None:
    with pytest.raises(NotFound):
        create_subscription(budget, practice_id="nobody")


def test_devices_are_stored_only_as_keyed_hashes(budget: Budget) -> None:
    create_practice(budget)
    device = budget.bind_device("laptop-7f3a-serial", practice_id="p1", user_key="dr-muster")
    with read_transaction(budget.engine) as connection:
        stored = connection.execute(select(tables.devices)).one()
    assert "laptop-7f3a-serial" not in str(tuple(stored))
    assert stored.device_hash == device.device_hash
    assert len(device.device_hash) == 64
    assert device.suffix == device.device_hash[-8:]


def test_a_device_spends_from_its_own_practice(budget: Budget) -> None:
    create_practice(budget, "p1")
    budget.bind_device("dev-a", practice_id="p1")
    assert budget.resolve_practice(device_id="dev-a").practice_id == "p1"
    assert budget.resolve_practice(practice_id="p1", device_id="dev-a").practice_id == "p1"


def test_device_of_another_practice_is_refused_not_rerouted(budget: Budget) -> None:
    """Regression: a device of practice A naming practice B used to be billed to B's budget."""
    create_practice(budget, "p1")
    create_practice(budget, "p2")
    budget.bind_device("dev-a", practice_id="p1")
    with pytest.raises(DeviceNotInPractice) as caught:
        budget.resolve_practice(practice_id="p2", device_id="dev-a")
    assert caught.value.http_status == 403


def test_a_device_cannot_be_bound_to_a_second_practice(budget: Budget) -> None:
    create_practice(budget, "p1")
    create_practice(budget, "p2")
    budget.bind_device("dev-a", practice_id="p1")
    with pytest.raises(Conflict):
        budget.bind_device("dev-a", practice_id="p2")
    assert budget.resolve_practice(device_id="dev-a").practice_id == "p1"


def test_deactivated_and_unknown_devices_spend_nothing(budget: Budget) -> None:
    create_practice(budget)
    budget.bind_device("dev-a", practice_id="p1")
    budget.deactivate_device("dev-a")
    with pytest.raises(Forbidden):
        budget.resolve_practice(device_id="dev-a")
    with pytest.raises(Forbidden):
        budget.resolve_practice(device_id="never-bound")
    assert budget.bind_device("dev-a", practice_id="p1").active  # binding again reactivates it


def test_a_request_must_name_a_practice_or_a_device(budget: Budget) -> None:
    with pytest.raises(InvalidInput) as caught:
        budget.resolve_practice()
    assert caught.value.field == "practice_id"
