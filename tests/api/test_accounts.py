"""Account routes over real HTTP: practices, plans, subscriptions, devices and API keys (SPEC §11)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from aibudget import NotFound
from tests.api.conftest import Server

PROBLEM = "application/problem+json"


def new_id(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def practice(server: Server, **fields: Any) -> str:
    practice_id = new_id()
    with server.admin() as admin:
        assert admin.put(f"/v1/practices/{practice_id}", json=fields).status_code == 200
    return practice_id


def key(server: Server, role: str, practice_id: str | None = None) -> str:
    with server.admin() as admin:
        created = admin.post("/v1/keys", json={"role": role, "practice_id": practice_id})
    assert created.status_code == 201, created.text
    text: str = created.json()["key"]
    return text


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail", "error_code"} <= body.keys()
    assert body["status"] == status
    if field is not None:
        assert body["field"] == field, body
    return body


def now_period() -> tuple[int, int]:
    now = int(time.time())
    return now - 86_400, now + 29 * 86_400


# practices


def test_a_practice_is_created_with_defaults_and_changed_field_by_field(server: Server) -> None:
    practice_id = new_id()
    with server.admin() as admin:
        created = admin.put(f"/v1/practices/{practice_id}", json={"name": "Praxis Muster"})
        changed = admin.put(f"/v1/practices/{practice_id}", json={"locale": "fr-CH", "warning_percent": 30})

    assert created.status_code == 200
    assert created.json() == {
        "practice_id": practice_id,
        "name": "Praxis Muster",
        "locale": "de-CH",
        "timezone": "Europe/Zurich",
        "policy": "allow_last_call",
        "warning_percent": 20,
    }
    assert changed.json() == created.json() | {"locale": "fr-CH", "warning_percent": 30}


def test_putting_the_same_practice_twice_answers_the_same(server: Server) -> None:
    practice_id, body = new_id(), {"name": "Praxis Dupont", "policy": "strict", "timezone": "Europe/Paris"}
    with server.admin() as admin:
        first = admin.put(f"/v1/practices/{practice_id}", json=body)
        second = admin.put(f"/v1/practices/{practice_id}", json=body)

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json() == second.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"locale": "xx-YY"}, "locale"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "Europe"}, "timezone"),  # a directory of the timezone database, not a zone
        ({"timezone": "x" * 300}, "timezone"),  # too long for a file name
        ({"policy": "generous"}, "policy"),
        ({"warning_percent": 101}, "warning_percent"),
        ({"warning_percent": "20"}, "warning_percent"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_bad_practice_is_refused_and_not_created(server: Server, body: dict[str, Any], field: str) -> None:
    practice_id = new_id()
    with server.admin() as admin:
        refused = admin.put(f"/v1/practices/{practice_id}", json=body)

    assert_problem(refused, 422, field)
    with server.budget() as budget, pytest.raises(NotFound):
        budget.get_practice(practice_id)


def test_a_practice_id_outside_the_alphabet_is_refused(server: Server) -> None:
    with server.admin() as admin:
        assert_problem(admin.put("/v1/practices/bad id!", json={}), 422, "practice_id")


def test_an_id_ending_in_an_encoded_slash_is_not_found_not_redirected(server: Server) -> None:
    # `0%2F` is decoded to `0/` before routing; a redirect would send the client to another id
    with server.admin() as admin:
        answer = admin.put("/v1/subscriptions/0%2F", json={"practice_id": new_id(), "status": "active"})

    assert answer.status_code == 404, answer.headers
    assert answer.headers["content-type"] == "application/problem+json"


# plans and subscriptions


def test_a_plan_sets_what_a_subscribed_practice_has_included(server: Server) -> None:
    practice_id, plan = practice(server), new_id("plan")
    start, end = now_period()
    with server.admin() as admin:
        as_string = admin.put(f"/v1/plans/{plan}", json={"included_usd": "12.50"})
        subscribed = admin.put(
            f"/v1/subscriptions/{new_id('sub')}",
            json={"practice_id": practice_id, "plan": plan, "status": "active",
                  "current_period_start": start, "current_period_end": end},
        )  # fmt: skip
        before = admin.get(f"/v1/practices/{practice_id}/budget").json()
        as_integer = admin.put(f"/v1/plans/{plan}", json={"included_usd": 30})
        after = admin.get(f"/v1/practices/{practice_id}/budget").json()

    assert as_string.status_code == 200
    assert as_string.json() == {"lookup_key": plan, "included_usd": "12.500000"}
    assert subscribed.status_code == 200
    assert before["included_usd"] == "12.500000"
    assert as_integer.json() == {"lookup_key": plan, "included_usd": "30.000000"}
    assert after["included_usd"] == "30.000000"


@pytest.mark.parametrize(
    "amount", [12.5, "12.5000001", "-1", "twelve", True, "1e30", None, "1e1", "1_000", "+5", ".5"]
)
def test_a_plan_amount_that_is_not_exact_money_is_refused_and_changes_nothing(
    server: Server, amount: object
) -> None:
    practice_id, plan = practice(server), new_id("plan")
    start, end = now_period()
    with server.admin() as admin:
        admin.put(f"/v1/plans/{plan}", json={"included_usd": "5"})
        admin.put(
            f"/v1/subscriptions/{new_id('sub')}",
            json={"practice_id": practice_id, "plan": plan, "status": "active",
                  "current_period_start": start, "current_period_end": end},
        )  # fmt: skip
        refused = admin.put(f"/v1/plans/{plan}", json={"included_usd": amount})

    assert_problem(refused, 422, "included_usd")
    with server.budget() as budget:
        assert budget.snapshot(practice_id).included_usd == 5


def test_a_subscription_is_mirrored_field_by_field(server: Server) -> None:
    practice_id, subscription_id = practice(server), new_id("sub")
    body = {
        "practice_id": practice_id, "customer_id": "cus_1", "customer_email": "praxis@example.ch",
        "plan": "basic", "status": "trialing", "current_period_start": 1764547200,
        "current_period_end": 1767225600, "updated_at": 1764547300,
    }  # fmt: skip
    with server.admin() as admin:
        first = admin.put(f"/v1/subscriptions/{subscription_id}", json=body)
        again = admin.put(f"/v1/subscriptions/{subscription_id}", json=body)

    assert first.status_code == 200
    assert first.json() == {"subscription_id": subscription_id, **body}
    assert again.json() == first.json()


def test_an_older_subscription_update_changes_nothing(server: Server) -> None:
    practice_id, subscription_id = practice(server), new_id("sub")
    newer = {"practice_id": practice_id, "status": "active", "updated_at": 2_000}
    with server.admin() as admin:
        admin.put(f"/v1/subscriptions/{subscription_id}", json=newer)
        late = admin.put(
            f"/v1/subscriptions/{subscription_id}",
            json={"practice_id": practice_id, "status": "canceled", "updated_at": 1_000},
        )

    assert late.status_code == 200
    assert (late.json()["status"], late.json()["updated_at"]) == ("active", 2_000)


def test_a_subscription_of_an_unknown_practice_is_404(server: Server) -> None:
    with server.admin() as admin:
        missing = admin.put(
            f"/v1/subscriptions/{new_id('sub')}", json={"practice_id": new_id(), "status": "active"}
        )

    assert_problem(missing, 404, "practice_id")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"current_period_start": 1764547200}, "current_period_end"),
        ({"current_period_start": 1767225600, "current_period_end": 1764547200}, "current_period_end"),
        ({"current_period_start": -1, "current_period_end": 5}, "current_period_start"),
        # 9999-12-31T23:59:59Z: a renewal date past the end of Python's dates in a timezone east of UTC
        ({"current_period_start": 1764547200, "current_period_end": 253_402_300_799}, "current_period_end"),
        ({"updated_at": 1.5}, "updated_at"),
        ({"status": ""}, "status"),
        ({"customer_id": " "}, "customer_id"),
    ],
)
def test_a_bad_subscription_is_refused_and_not_stored(
    server: Server, fields: dict[str, Any], field: str
) -> None:
    practice_id = practice(server)
    with server.admin() as admin:
        refused = admin.put(
            f"/v1/subscriptions/{new_id('sub')}",
            json={"practice_id": practice_id, "status": "active", "plan": "basic"} | fields,
        )

    assert_problem(refused, 422, field)
    with server.budget() as budget:
        assert budget.snapshot(practice_id).subscription_id is None


# devices


def test_a_device_is_bound_shown_by_its_hash_suffix_and_deactivated(server: Server) -> None:
    practice_id, device_id = practice(server), f"laptop/{uuid.uuid4()}"
    with server.admin() as admin:
        bound = admin.post("/v1/devices", json={"device_id": device_id, "practice_id": practice_id,
                                                 "user_key": "dr-muster"})  # fmt: skip
        deactivated = admin.post(f"/v1/devices/{device_id}/deactivate")
        rebound = admin.post("/v1/devices", json={"device_id": device_id, "practice_id": practice_id})

    assert bound.status_code == 201
    assert bound.json().keys() == {"practice_id", "device_suffix", "user_key", "active"}
    assert bound.json()["practice_id"] == practice_id
    assert len(bound.json()["device_suffix"]) == 8
    assert device_id not in bound.text
    assert deactivated.status_code == 200
    assert deactivated.json() == bound.json() | {"active": False}
    assert device_id not in deactivated.text
    assert rebound.json()["active"] is True


def test_a_device_of_another_practice_is_not_rebound(server: Server) -> None:
    first, second, device_id = practice(server), practice(server), new_id("device")
    with server.admin() as admin:
        admin.post("/v1/devices", json={"device_id": device_id, "practice_id": first})
        refused = admin.post("/v1/devices", json={"device_id": device_id, "practice_id": second})

    assert_problem(refused, 409, "device_id")
    with server.budget() as budget:
        assert budget.resolve_practice(device_id=device_id).practice_id == first


def test_device_errors_name_the_field(server: Server) -> None:
    with server.admin() as admin:
        unknown_practice = admin.post("/v1/devices", json={"device_id": new_id("d"), "practice_id": new_id()})
        no_device = admin.post("/v1/devices", json={"practice_id": practice(server)})
        unknown_device = admin.post(f"/v1/devices/{new_id('device')}/deactivate")

    assert_problem(unknown_practice, 404, "practice_id")
    assert_problem(no_device, 422, "device_id")
    assert_problem(unknown_device, 404, "device_id")


def test_a_blank_id_or_a_device_id_with_spaces_at_its_ends_is_refused_naming_the_field(
    server: Server,
) -> None:
    """A device bound as " pc-1" could never call: HTTP drops the spaces before `X-Device-Id`."""
    practice_id = practice(server)
    with server.admin() as admin:
        blank_plan = admin.put("/v1/plans/%20%20", json={"included_usd": "5"})
        blank_subscription = admin.put("/v1/subscriptions/%20", json={"practice_id": practice_id,
                                                                      "status": "active"})  # fmt: skip
        padded_device = admin.post("/v1/devices", json={"device_id": " pc-1", "practice_id": practice_id})

    assert_problem(blank_plan, 422, "lookup_key")
    assert_problem(blank_subscription, 422, "subscription_id")
    assert_problem(padded_device, 422, "device_id")
    with server.budget() as budget:
        assert budget.devices(practice_id) == []
        assert budget.snapshot(practice_id).subscription_id is None


# API keys


def test_a_key_is_shown_once_listed_without_secret_and_revoked(server: Server) -> None:
    practice_id = practice(server)
    with server.admin() as admin:
        created = admin.post(
            "/v1/keys", json={"role": "practice", "practice_id": practice_id, "label": "desk"}
        )
        text = created.json()["key"]
        with server.client(text) as desktop:
            works = desktop.get("/v1/budget")
        listed = admin.get("/v1/keys")
        revoked = admin.post(f"/v1/keys/{created.json()['key_id']}/revoke")
        revoked_again = admin.post(f"/v1/keys/{created.json()['key_id']}/revoke")
        with server.client(text) as desktop:
            refused = desktop.get("/v1/budget")

    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    assert created.json()["role"] == "practice"
    assert created.json()["practice_id"] == practice_id
    assert text.startswith(f"aib_{created.json()['key_id']}_")
    assert works.status_code == 200
    assert listed.status_code == 200
    entry = next(k for k in listed.json()["keys"] if k["key_id"] == created.json()["key_id"])
    assert entry == {"key_id": created.json()["key_id"], "role": "practice", "practice_id": practice_id,
                     "label": "desk", "created_at": entry["created_at"], "revoked_at": None}  # fmt: skip
    assert text not in listed.text
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert revoked_again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert_problem(refused, 401)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "root"}, "role"),
        ({"role": "practice"}, "practice_id"),
        ({"role": "service", "practice_id": "p1"}, "practice_id"),
        ({"role": "service", "label": ""}, "label"),
    ],
)
def test_a_bad_key_request_is_refused_and_makes_no_key(
    server: Server, body: dict[str, Any], field: str
) -> None:
    with server.admin() as admin:
        before = len(admin.get("/v1/keys").json()["keys"])
        refused = admin.post("/v1/keys", json=body)
        after = len(admin.get("/v1/keys").json()["keys"])

    assert_problem(refused, 422, field)
    assert after == before


def test_revoking_an_unknown_key_is_404(server: Server) -> None:
    with server.admin() as admin:
        assert_problem(admin.post("/v1/keys/0123456789abcdef/revoke"), 404, "key_id")


# who may call


ROUTES = [
    ("PUT", "/v1/practices/p-auth", {"name": "x"}),
    ("PUT", "/v1/plans/basic", {"included_usd": "1"}),
    ("PUT", "/v1/subscriptions/sub-auth", {"practice_id": "p-auth", "status": "active"}),
    ("POST", "/v1/devices", {"device_id": "d-auth", "practice_id": "p-auth"}),
    ("POST", "/v1/devices/d-auth/deactivate", None),
    ("POST", "/v1/keys", {"role": "service"}),
    ("GET", "/v1/keys", None),
    ("POST", "/v1/keys/0123456789abcdef/revoke", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_account_routes_need_an_admin_key(server: Server, method: str, path: str, body: Any) -> None:
    service, practice_key = key(server, "service"), key(server, "practice", practice(server))
    revoked = key(server, "admin")
    with server.admin() as admin:
        admin.post(f"/v1/keys/{revoked.split('_')[1]}/revoke")

    for credentials, status in [
        (None, 401), ("aib_0123456789abcdef_" + "x" * 43, 401), ("not-a-key", 401), (revoked, 401),
        (service, 403), (practice_key, 403),
    ]:  # fmt: skip
        with server.client(credentials) as client:
            answer = client.request(method, path, json=body)
        problem = assert_problem(answer, status)
        if status == 401:
            assert answer.headers["www-authenticate"] == "Bearer"
            assert problem["error_code"] == "UNAUTHORIZED"
    with server.budget() as budget, pytest.raises(NotFound):
        budget.get_practice("p-auth")
