"""Budget routes over real HTTP: the desktop's view, the operator's view, usage reports, grants."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.api.conftest import Server
from tests.api.test_accounts import assert_problem, key, new_id

MODEL = "gpt-4o-mini"


def subscribed_practice(server: Server, included_usd: str = "10", **fields: Any) -> str:
    """A practice with an active subscription whose period runs from yesterday for 30 days."""
    practice_id, plan, now = new_id(), new_id("plan"), int(time.time())
    with server.budget() as budget:
        budget.put_practice(practice_id, name="Praxis Muster", **fields)
        budget.put_plan(plan, included_usd=included_usd)
        budget.put_subscription(
            new_id("sub"), practice_id=practice_id, plan=plan, status="active",
            current_period_start=now - 86_400, current_period_end=now + 29 * 86_400,
        )  # fmt: skip
    return practice_id


def settle(client: httpx.Client, practice_id: str, **fields: Any) -> dict[str, Any]:
    body = {"practice_id": practice_id, "request_id": new_id("r"), "model": MODEL,
            "usage": {"input_tokens": 1200, "output_tokens": 600}} | fields  # fmt: skip
    answer = client.post("/v1/usage", json=body)
    assert answer.status_code == 201, answer.text
    settled: dict[str, Any] = answer.json()
    return settled


# the desktop's view


def test_the_desktop_reads_its_own_budget_in_the_practice_locale(server: Server) -> None:
    practice_id = subscribed_practice(server)
    with server.client(key(server, "practice", practice_id)) as desktop:
        view = desktop.get("/v1/budget")

    assert view.status_code == 200
    assert view.json()["available_percent"] == 100
    assert view.json()["user_label"] == "KI-Kontingent: 100 % verfügbar"
    assert view.json()["locale"] == "de-CH"
    assert (view.json()["show_warning"], view.json()["warning_level"]) == (False, "none")
    assert view.headers["content-language"] == "de-CH"


def test_accept_language_fr_ch_gives_french_texts(server: Server) -> None:
    practice_id = subscribed_practice(server)
    with server.client(key(server, "practice", practice_id), **{"Accept-Language": "fr-CH"}) as desktop:
        view = desktop.get("/v1/budget").json()

    renews = date.fromisoformat(view["renewal_date"])
    assert view["locale"] == "fr-CH"
    assert view["user_label"] == "Contingent IA : 100 % disponible"
    assert view["renewal_date_display"] == f"{renews.day} {_french_month(renews)} {renews.year}"


def _french_month(day: date) -> str:
    months = (
        "janv.",
        "févr.",
        "mars",
        "avr.",
        "mai",
        "juin",
        "juil.",
        "août",
        "sept.",
        "oct.",
        "nov.",
        "déc.",
    )
    return months[day.month - 1]


@pytest.mark.parametrize(
    ("header", "locale"),
    [
        ("it-CH,de;q=0.5", "it-CH"),
        ("es-ES,en;q=0.4,fr;q=0.9", "fr"),
        ("es-ES, ja", "de-CH"),
        ("de;q=0.1, en-GB;q=0.8", "en-GB"),
        ("fr-XY", "fr"),
    ],
)
def test_accept_language_picks_the_best_of_the_four_languages(
    server: Server, header: str, locale: str
) -> None:
    practice_id = subscribed_practice(server)
    with server.client(key(server, "practice", practice_id), **{"Accept-Language": header}) as desktop:
        assert desktop.get("/v1/budget").json()["locale"] == locale


def test_the_vendor_backend_reads_a_devices_budget_with_a_service_key(server: Server) -> None:
    practice_id, device_id = subscribed_practice(server), new_id("device")
    with server.budget() as budget:
        budget.bind_device(device_id, practice_id=practice_id)
    with server.client(key(server, "service")) as backend:
        settle(backend, practice_id, usage={"input_tokens": 1_000_000})
        for_device = backend.get("/v1/budget", headers={"X-Device-Id": device_id})
        without_device = backend.get("/v1/budget")
    with server.budget() as budget:
        expected = budget.snapshot(practice_id).client_view().as_json()

    assert for_device.status_code == 200
    assert for_device.json() == expected
    assert for_device.json()["available_percent"] == 98  # 0.15 of 10 USD used
    assert_problem(without_device, 422, "X-Device-Id")


def test_a_practice_key_cannot_read_through_another_practices_device(server: Server) -> None:
    mine, theirs, device_id = subscribed_practice(server), subscribed_practice(server), new_id("device")
    with server.budget() as budget:
        budget.bind_device(device_id, practice_id=theirs)
    with server.client(key(server, "practice", mine)) as desktop:
        refused = desktop.get("/v1/budget", headers={"X-Device-Id": device_id})
        unknown = desktop.get("/v1/budget", headers={"X-Device-Id": new_id("device")})

    assert assert_problem(refused, 403, "device_id")["error_code"] == "DEVICE_PRACTICE_MISMATCH"
    assert_problem(unknown, 403, "device_id")


def test_the_client_view_needs_a_valid_key(server: Server) -> None:
    for credentials in (None, "aib_0123456789abcdef_" + "y" * 43):
        with server.client(credentials) as client:
            assert_problem(client.get("/v1/budget"), 401)


# the operator's view


def test_the_operator_view_shows_the_money(server: Server) -> None:
    practice_id = subscribed_practice(server, included_usd="1")
    with server.client(key(server, "service")) as backend:
        settled = settle(backend, practice_id)
        view = backend.get(f"/v1/practices/{practice_id}/budget")

    cost = Decimal(settled["cost_usd"])
    assert view.status_code == 200
    assert view.json()["practice_id"] == practice_id
    assert Decimal(view.json()["used_usd"]) == cost
    assert Decimal(view.json()["included_remaining_usd"]) == 1 - cost
    assert Decimal(view.json()["available_usd"]) == 1 - cost
    assert view.json()["included_usd"] == "1.000000"
    assert view.json()["auto_topup"] == {"enabled": False, "paused_reason": None}


def test_operator_routes_refuse_practice_keys_and_unknown_practices(server: Server) -> None:
    practice_id = subscribed_practice(server)
    with server.client(key(server, "practice", practice_id)) as desktop:
        for path in ("budget", "usage", "credits"):
            assert_problem(desktop.get(f"/v1/practices/{practice_id}/{path}"), 403)
    with server.admin() as admin:
        for path in ("budget", "usage", "credits"):
            assert_problem(admin.get(f"/v1/practices/{new_id()}/{path}"), 404, "practice_id")
    with server.client() as anonymous:
        assert_problem(anonymous.get(f"/v1/practices/{practice_id}/budget"), 401)


# usage reports


@pytest.fixture(scope="module")
def traffic(server: Server) -> dict[str, Any]:
    """Four calls of a practice in Zurich: three letters (one failed), one transcription, and one refusal."""
    practice_id = subscribed_practice(server, included_usd="1", policy="strict")
    with server.client(key(server, "service")) as backend:
        letters = [
            settle(backend, practice_id, operation="letter"),
            settle(backend, practice_id, operation="letter",
                   usage={"input_tokens": 5000, "output_tokens": 1000}),
            settle(backend, practice_id, operation="letter", status="error", error_code="upstream_500",
                   usage={"input_tokens": 800}),
        ]  # fmt: skip
        transcription = settle(
            backend, practice_id, operation="transcribe", model="whisper-1", usage={"audio_seconds": "12.5"}
        )
        refused = backend.post(
            "/v1/authorizations",
            json={"practice_id": practice_id, "request_id": new_id("r"), "operation": "letter",
                  "model": MODEL, "estimate": {"input_tokens": 10**9, "max_output_tokens": 10**6}},
        )  # fmt: skip
    assert refused.status_code == 402
    return {"practice_id": practice_id, "letters": letters, "transcription": transcription}


def usd(values: list[str]) -> Decimal:
    return sum((Decimal(value) for value in values), Decimal(0))


def test_usage_lists_the_events_newest_first(server: Server, traffic: dict[str, Any]) -> None:
    practice_id = traffic["practice_id"]
    with server.client(key(server, "service")) as backend:
        report = backend.get(f"/v1/practices/{practice_id}/usage")
        newest = backend.get(f"/v1/practices/{practice_id}/usage", params={"limit": 1})

    assert report.status_code == 200
    assert report.headers["content-type"] == "application/json"
    body = report.json()
    assert (body["practice_id"], body["group_by"], body["since"], body["until"]) == (
        practice_id,
        None,
        None,
        None,
    )
    assert [row["status"] for row in body["rows"]] == ["blocked", "success", "error", "success", "success"]
    transcription = body["rows"][1]
    assert transcription["event_id"] == traffic["transcription"]["event_id"]
    assert transcription["cost_usd"] == traffic["transcription"]["cost_usd"]
    assert transcription["audio_seconds"] == "12.500"
    assert transcription["model"] == "whisper-1"
    assert body["rows"][2]["error_code"] == "upstream_500"
    assert newest.json()["rows"] == body["rows"][:1]


def test_usage_totals_per_operation_and_model_add_up(server: Server, traffic: dict[str, Any]) -> None:
    practice_id, letters = traffic["practice_id"], traffic["letters"]
    with server.client(key(server, "service")) as backend:
        by_operation = backend.get(
            f"/v1/practices/{practice_id}/usage", params={"group_by": "operation"}
        ).json()
        by_model = backend.get(f"/v1/practices/{practice_id}/usage", params={"group_by": "model"}).json()

    letter = next(row for row in by_operation["rows"] if row["operation"] == "letter")
    assert letter == {
        "operation": "letter", "calls": 4, "success": 2, "error": 1, "blocked": 1,
        "cost_usd": str(usd([call["cost_usd"] for call in letters]).quantize(Decimal("0.000001"))),
        "overage_usd": "0.000000", "input_tokens": 7000, "cached_input_tokens": 0, "output_tokens": 1600,
        "input_audio_tokens": 0, "audio_seconds": "0.000",
    }  # fmt: skip
    transcribe = next(row for row in by_operation["rows"] if row["operation"] == "transcribe")
    assert (transcribe["calls"], transcribe["audio_seconds"]) == (1, "12.500")
    assert transcribe["cost_usd"] == traffic["transcription"]["cost_usd"]
    assert {row["model"] for row in by_model["rows"]} == {MODEL, "whisper-1"}
    assert usd([row["cost_usd"] for row in by_model["rows"]]) == usd(
        [row["cost_usd"] for row in by_operation["rows"]]
    )
    costs = [Decimal(row["cost_usd"]) for row in by_model["rows"]]
    assert costs == sorted(costs, reverse=True)


def test_usage_per_day_is_counted_in_the_practices_timezone(server: Server, traffic: dict[str, Any]) -> None:
    practice_id = traffic["practice_id"]
    today = datetime.now(ZoneInfo("Europe/Zurich")).date()
    with server.client(key(server, "service")) as backend:
        by_day = backend.get(
            f"/v1/practices/{practice_id}/usage",
            params={
                "group_by": "day",
                "since": today.isoformat(),
                "until": (today + timedelta(days=1)).isoformat(),
            },
        ).json()

    assert by_day["timezone"] == "Europe/Zurich"
    assert datetime.fromisoformat(by_day["since"]) == datetime.combine(
        today, datetime.min.time(), ZoneInfo("Europe/Zurich")
    )
    assert [(row["day"], row["calls"], row["blocked"]) for row in by_day["rows"]] == [
        (today.isoformat(), 5, 1)
    ]


def test_usage_as_csv_has_a_header_and_the_same_numbers(server: Server, traffic: dict[str, Any]) -> None:
    practice_id = traffic["practice_id"]
    with server.client(key(server, "service")) as backend:
        as_json = backend.get(f"/v1/practices/{practice_id}/usage", params={"group_by": "operation"}).json()
        as_csv = backend.get(
            f"/v1/practices/{practice_id}/usage", params={"group_by": "operation", "format": "csv"}
        )
        events = backend.get(f"/v1/practices/{practice_id}/usage", params={"format": "csv"})

    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in as_csv.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert list(rows[0]) == ["operation", "calls", "success", "error", "blocked", "cost_usd", "overage_usd",
                             "input_tokens", "cached_input_tokens", "output_tokens", "input_audio_tokens",
                             "audio_seconds"]  # fmt: skip
    assert rows == [{name: str(value) for name, value in row.items()} for row in as_json["rows"]]
    event_rows = list(csv.DictReader(io.StringIO(events.text)))
    assert len(event_rows) == 5
    assert event_rows[0]["status"] == "blocked"
    assert event_rows[0]["cost_usd"] == "0.000000"


def test_usage_in_a_range_without_calls_is_empty(server: Server, traffic: dict[str, Any]) -> None:
    practice_id, tomorrow = traffic["practice_id"], datetime.now(UTC) + timedelta(days=1)
    with server.admin() as admin:
        later = admin.get(f"/v1/practices/{practice_id}/usage", params={"since": tomorrow.isoformat()})
        empty_csv = admin.get(
            f"/v1/practices/{practice_id}/usage",
            params={"since": "2020-01-01", "until": "2020-02-01", "group_by": "day", "format": "csv"},
        )

    assert later.status_code == 200
    assert later.json()["rows"] == []
    assert empty_csv.text.splitlines() == [
        "day,calls,success,error,blocked,cost_usd,overage_usd,input_tokens,cached_input_tokens,"
        "output_tokens,input_audio_tokens,audio_seconds"
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-12-01", "until": "2026-11-01"}, "until"),
        ({"since": "0001-01-01"}, "since"),
        ({"group_by": "week"}, "group_by"),
        ({"format": "xml"}, "format"),
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
    ],
)
def test_a_bad_usage_query_names_the_parameter(server: Server, params: dict[str, Any], field: str) -> None:
    practice_id = subscribed_practice(server)
    with server.admin() as admin:
        assert_problem(admin.get(f"/v1/practices/{practice_id}/usage", params=params), 422, field)


def test_usage_is_filtered_by_status_model_and_operation(server: Server, traffic: dict[str, Any]) -> None:
    path = f"/v1/practices/{traffic['practice_id']}/usage"
    with server.client(key(server, "service")) as backend:
        failed = backend.get(path, params={"status": "error"}).json()
        by_model = {"operation": "letter", "model": MODEL, "group_by": "model"}
        letters = backend.get(path, params=by_model).json()
        as_csv = backend.get(path, params={"model": "whisper-1", "format": "csv"})
        refused = backend.get(path, params={"status": "refused"})

    assert (failed["status"], [row["error_code"] for row in failed["rows"]]) == ("error", ["upstream_500"])
    assert [(row["model"], row["calls"], row["blocked"]) for row in letters["rows"]] == [(MODEL, 4, 1)]
    [transcription] = csv.DictReader(io.StringIO(as_csv.text))
    assert transcription["event_id"] == str(traffic["transcription"]["event_id"])
    assert_problem(refused, 422, "status")


# grants


def test_the_grants_of_a_practice_are_listed(server: Server) -> None:
    practice_id = subscribed_practice(server)
    with server.budget() as budget:
        budget.grant_credit(
            practice_id, amount_usd="25", source="purchase", reference=f"pi_{uuid.uuid4().hex}"
        )
        budget.grant_credit(
            practice_id, amount_usd="5", source="promo", reference=f"promo-{uuid.uuid4().hex}"
        )
    with server.client(key(server, "service")) as backend:
        listed = backend.get(f"/v1/practices/{practice_id}/credits")

    assert listed.status_code == 200
    assert listed.json()["practice_id"] == practice_id
    grants = listed.json()["grants"]
    assert [(g["amount_usd"], g["remaining_usd"], g["source"]) for g in grants] == [
        ("25.000000", "25.000000", "purchase"),
        ("5.000000", "5.000000", "promo"),
    ]
