"""Credit routes over real HTTP: a payment credits exactly once; automatic top-up settings (SPEC §6)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.conftest import Server
from tests.api.test_accounts import assert_problem, key, new_id, practice
from tests.api.test_budgets import subscribed_practice


def grant_body(**fields: Any) -> dict[str, Any]:
    return {"amount_usd": "25.00", "source": "purchase", "reference": f"pi_{uuid.uuid4().hex}"} | fields


def grants_of(server: Server, practice_id: str) -> list[Any]:
    with server.budget() as budget:
        return budget.grants(practice_id)


# grants


def test_a_grant_is_made_once_and_a_replay_answers_200_with_the_same_grant(server: Server) -> None:
    practice_id, body = subscribed_practice(server), grant_body(priority=5)
    expires = (datetime.now(UTC) + timedelta(days=365)).replace(microsecond=0)
    body["expires_at"] = expires.isoformat()
    with server.admin() as admin:
        first = admin.post(f"/v1/practices/{practice_id}/credits", json=body)
        replay = admin.post(f"/v1/practices/{practice_id}/credits", json=body)
        view = admin.get(f"/v1/practices/{practice_id}/budget").json()

    assert first.status_code == 201
    assert replay.status_code == 200
    assert replay.json() == first.json()
    grant = first.json()
    assert (grant["practice_id"], grant["amount_usd"], grant["remaining_usd"]) == (
        practice_id, "25.000000", "25.000000"
    )  # fmt: skip
    assert (grant["source"], grant["reference"], grant["priority"]) == ("purchase", body["reference"], 5)
    assert datetime.fromisoformat(grant["expires_at"]) == expires
    assert view["extra_credit_remaining_usd"] == "25.000000"
    assert len(grants_of(server, practice_id)) == 1


def test_an_integer_amount_and_the_defaults_are_accepted(server: Server) -> None:
    practice_id = practice(server)
    with server.admin() as admin:
        made = admin.post(
            f"/v1/practices/{practice_id}/credits", json=grant_body(amount_usd=10, source="manual")
        )

    assert made.status_code == 201
    assert (made.json()["amount_usd"], made.json()["priority"], made.json()["expires_at"]) == (
        "10.000000", 100, None
    )  # fmt: skip


def test_the_same_reference_with_another_amount_is_409_and_credits_nothing(server: Server) -> None:
    practice_id, body = practice(server), grant_body()
    other_practice = practice(server)
    with server.admin() as admin:
        admin.post(f"/v1/practices/{practice_id}/credits", json=body)
        more = admin.post(f"/v1/practices/{practice_id}/credits", json=body | {"amount_usd": "30"})
        elsewhere = admin.post(f"/v1/practices/{other_practice}/credits", json=body)

    assert assert_problem(more, 409, "reference")["error_code"] == "CONFLICT"
    assert_problem(elsewhere, 409, "reference")
    assert [grant.amount_usd for grant in grants_of(server, practice_id)] == [25]
    assert grants_of(server, other_practice) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"amount_usd": 25.0}, "amount_usd"),
        ({"amount_usd": "0"}, "amount_usd"),
        ({"amount_usd": "-5"}, "amount_usd"),
        ({"amount_usd": "0.0000001"}, "amount_usd"),
        ({"amount_usd": "1e3"}, "amount_usd"),  # Decimal reads 1000; no one types that meaning 1000 USD
        ({"amount_usd": "\uff12\uff15"}, "amount_usd"),  # full-width digits
        ({"source": "gift"}, "source"),
        ({"reference": ""}, "reference"),
        ({"reference": " "}, "reference"),
        ({"priority": -1}, "priority"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "9999-12-31T23:59:59-14:00"}, "expires_at"),  # the year 10000 in UTC
        ({"note": "hi"}, "note"),
    ],
)
def test_a_bad_grant_is_422_naming_the_field_and_credits_nothing(
    server: Server, fields: dict[str, Any], field: str
) -> None:
    practice_id = practice(server)
    with server.admin() as admin:
        refused = admin.post(f"/v1/practices/{practice_id}/credits", json=grant_body(**fields))

    assert_problem(refused, 422, field)
    assert grants_of(server, practice_id) == []


def test_granting_needs_an_admin_and_a_known_practice(server: Server) -> None:
    practice_id = practice(server)
    with server.admin() as admin:
        assert_problem(admin.post(f"/v1/practices/{new_id()}/credits", json=grant_body()), 404, "practice_id")
    for credentials, status in [
        (None, 401), ("wrong", 401),
        (key(server, "service"), 403), (key(server, "practice", practice_id), 403),
    ]:  # fmt: skip
        with server.client(credentials) as client:
            assert_problem(client.post(f"/v1/practices/{practice_id}/credits", json=grant_body()), status)
    assert grants_of(server, practice_id) == []


# automatic top-up

SETTINGS = {"enabled": True, "threshold_usd": "2.00", "package_usd": "20", "monthly_max_count": 3,
            "monthly_max_usd": "60"}  # fmt: skip


def test_nothing_is_for_sale_while_payments_are_off(server: Server) -> None:
    practice_id = practice(server)
    with server.client(key(server, "practice", practice_id)) as desktop:
        offered = desktop.get(f"/v1/practices/{practice_id}/credits/packages")
        missing = desktop.get(f"/v1/practices/{new_id()}/credits/packages")

    assert (offered.status_code, offered.json()) == (200, [])  # a buy button would only fail
    assert missing.status_code == 403  # another practice's, whether it exists or not


def test_auto_topup_is_off_until_configured(server: Server) -> None:
    practice_id = practice(server)
    with server.client(key(server, "service")) as backend:
        settings = backend.get(f"/v1/practices/{practice_id}/auto-topup")

    assert settings.status_code == 200
    assert settings.json() == {
        "practice_id": practice_id, "enabled": False, "threshold_usd": None, "threshold_percent": None,
        "package_usd": "0.000000", "monthly_max_count": 0, "monthly_max_usd": "0.000000",
        "paused_reason": None, "paused_at": None, "updated_at": None,
    }  # fmt: skip


def test_an_admin_sets_auto_topup_and_setting_it_again_changes_nothing(server: Server) -> None:
    practice_id = practice(server)
    with server.admin() as admin:
        first = admin.put(f"/v1/practices/{practice_id}/auto-topup", json=SETTINGS)
        again = admin.put(f"/v1/practices/{practice_id}/auto-topup", json=SETTINGS)
        read = admin.get(f"/v1/practices/{practice_id}/auto-topup")

    assert first.status_code == 200
    expected = {"practice_id": practice_id, "enabled": True, "threshold_usd": "2.000000",
                "threshold_percent": None, "package_usd": "20.000000", "monthly_max_count": 3,
                "monthly_max_usd": "60.000000", "paused_reason": None, "paused_at": None}  # fmt: skip
    assert {name: value for name, value in first.json().items() if name != "updated_at"} == expected
    assert first.json()["updated_at"] is not None
    assert {name: value for name, value in again.json().items() if name != "updated_at"} == expected
    assert read.json() == again.json()


def test_a_practice_sets_its_own_auto_topup_by_percentage_but_no_other(server: Server) -> None:
    mine, theirs = practice(server), practice(server)
    by_percent = {name: value for name, value in SETTINGS.items() if name != "threshold_usd"}
    by_percent["threshold_percent"] = 10
    with server.client(key(server, "practice", mine)) as desktop:
        own = desktop.put(f"/v1/practices/{mine}/auto-topup", json=by_percent)
        read = desktop.get(f"/v1/practices/{mine}/auto-topup")
        other = desktop.put(f"/v1/practices/{theirs}/auto-topup", json=by_percent)
        other_read = desktop.get(f"/v1/practices/{theirs}/auto-topup")
    with server.client(key(server, "service")) as backend:
        by_service = backend.put(f"/v1/practices/{mine}/auto-topup", json=SETTINGS)

    assert own.status_code == 200
    assert (own.json()["threshold_percent"], own.json()["threshold_usd"]) == (10, None)
    assert read.json() == own.json()
    assert_problem(other, 403, "practice_id")
    assert_problem(other_read, 403, "practice_id")
    assert_problem(by_service, 403)
    with server.admin() as admin:
        assert admin.get(f"/v1/practices/{theirs}/auto-topup").json()["updated_at"] is None
        assert admin.get(f"/v1/practices/{mine}/auto-topup").json()["threshold_percent"] == 10


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"threshold_percent": 10}, "threshold_usd"),
        ({"threshold_usd": None}, "threshold_usd"),
        ({"threshold_usd": 2.5}, "threshold_usd"),
        ({"threshold_usd": None, "threshold_percent": 101}, "threshold_percent"),
        ({"package_usd": "0"}, "package_usd"),
        ({"package_usd": "20.0000001"}, "package_usd"),
        ({"monthly_max_count": -1}, "monthly_max_count"),
        ({"monthly_max_count": "3"}, "monthly_max_count"),
        ({"monthly_max_usd": "-1"}, "monthly_max_usd"),
        ({"enabled": "yes"}, "enabled"),
        ({"paused_reason": None}, "paused_reason"),
    ],
)
def test_bad_auto_topup_settings_are_422_naming_the_field_and_keep_the_old_ones(
    server: Server, change: dict[str, Any], field: str
) -> None:
    practice_id = practice(server)
    with server.admin() as admin:
        stored = admin.put(f"/v1/practices/{practice_id}/auto-topup", json=SETTINGS).json()
        refused = admin.put(f"/v1/practices/{practice_id}/auto-topup", json=SETTINGS | change)
        after = admin.get(f"/v1/practices/{practice_id}/auto-topup").json()

    assert_problem(refused, 422, field)
    assert after == stored


def test_auto_topup_of_an_unknown_practice_is_404(server: Server) -> None:
    with server.admin() as admin:
        assert_problem(admin.put(f"/v1/practices/{new_id()}/auto-topup", json=SETTINGS), 404, "practice_id")
        assert_problem(admin.get(f"/v1/practices/{new_id()}/auto-topup"), 404, "practice_id")


def test_the_operator_view_shows_auto_topup_as_configured(server: Server) -> None:
    practice_id = subscribed_practice(server)
    with server.admin() as admin:
        admin.put(f"/v1/practices/{practice_id}/auto-topup", json=SETTINGS)
        view = admin.get(f"/v1/practices/{practice_id}/budget").json()

    assert view["auto_topup"] == {"enabled": True, "paused_reason": None}
