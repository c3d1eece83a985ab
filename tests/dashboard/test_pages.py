"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against a server the test
started over SQLite and PostgreSQL. Every page is also saved as a screenshot in `tests/artifacts/`."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from aibudget import Budget, Settings
from tests.api.conftest import Server
from tests.conftest import FakeClock
from tests.dashboard.conftest import screenshot

PRACTICE = "praxis-sonne"
ZURICH = ZoneInfo("Europe/Zurich")


def _days_this_month() -> list[datetime]:
    """Up to three distinct days of the current month in Zurich, none in the future: when the events
    happened."""
    now = datetime.now(ZURICH)
    first = now.replace(day=1, hour=8, minute=0, second=0, microsecond=0)
    days = [first + timedelta(days=offset) for offset in (0, now.day // 2, now.day - 1)]
    return sorted({day for day in days if day <= now})


@pytest.fixture(scope="module")
def practice(server: Server) -> dict[str, object]:
    """Practice `praxis-sonne`: 20 USD included a month, and real calls on up to three days of this
    month, recorded through the library with the clock set to those days."""
    calls: list[tuple[datetime, str, int, int]] = []
    for number, day in enumerate(_days_this_month()):
        calls.append((day.astimezone(UTC), "gpt-4o", 10_000 * (number + 1), 2_000))
        calls.append((day.astimezone(UTC) + timedelta(hours=2), "gpt-4o-mini", 50_000, 5_000))
    clock = FakeClock(calls[0][0])
    settings = Settings.load(data_dir=server.data_dir)
    with Budget.open(server.database_url, settings=settings, clock=clock) as budget:
        budget.put_practice(PRACTICE, name="Praxis Sonne", locale="de-CH")
        budget.put_plan("standard", included_usd="20")
        budget.put_subscription("sub_sonne", practice_id=PRACTICE, plan="standard", status="active")
        for number, (instant, model, input_tokens, output_tokens) in enumerate(calls):
            clock.now = instant
            budget.settle(
                practice_id=PRACTICE, request_id=f"call-{number}", model=model, operation="letter",
                input_tokens=input_tokens, output_tokens=output_tokens,
            )  # fmt: skip
        for extra in range(3):
            budget.put_practice(f"praxis-{extra}", name=f"Praxis Nummer {extra}")
    with server.budget() as budget:
        snapshot = budget.snapshot(PRACTICE)
    return {"calls": calls, "spent_micros": snapshot.used_micros}


def sign_in(page: Page, server: Server, key: str) -> None:
    page.goto(f"{server.url}/admin")
    expect(page).to_have_url(re.compile(r"/admin/sign-in\?next=%2Fadmin$"))
    page.get_by_label("Admin key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_see_the_chart_grant_credit_and_sign_out(
    page: Page, server: Server, practice: dict[str, object], backend: str
) -> None:
    sign_in(page, server, server.admin_key)
    expect(page.get_by_role("heading", name="Practices")).to_be_visible()
    row = page.locator("#practices tbody tr", has_text=PRACTICE)
    expect(row).to_contain_text("standard")
    expect(row).to_contain_text("Praxis Sonne")
    screenshot(page, "overview", backend)

    row.get_by_role("link", name=PRACTICE).click()
    expect(page.get_by_role("heading", name=re.compile("Praxis Sonne"))).to_be_visible()
    chart = page.locator("#burn-down")
    days = len({instant.astimezone(ZURICH).date() for instant, *_ in practice["calls"]})  # type: ignore[attr-defined]
    today = datetime.now(ZURICH).day
    expect(chart).to_have_attribute("data-drawn", str(today))  # one point per day so far
    assert chart.locator("canvas").count() == 1
    expect(chart.locator(".u-legend")).to_contain_text("Spent that day")
    spent_days = [
        cell
        for cell in page.locator("#burn-down-table tbody tr td:nth-child(2)").all_text_contents()
        if cell != "$0.000000"
    ]
    assert len(spent_days) == days
    total = sum(Decimal(cell.removeprefix("$")) for cell in spent_days)
    assert total * 1_000_000 == practice["spent_micros"]
    expect(page.locator("#by-model")).to_contain_text("gpt-4o-mini")
    expect(page.locator("#events tbody tr")).to_have_count(len(practice["calls"]))  # type: ignore[arg-type]
    screenshot(page, "practice", backend)

    expect(page.locator("#credit-left")).to_have_text("$0.00")
    page.get_by_label("Amount in USD").fill("25.50")
    page.get_by_role("button", name="Grant credit").click()
    expect(page.locator(".notice")).to_have_text("Credit granted.")
    expect(page.locator("#credit-left")).to_have_text("$25.50")
    expect(page.locator("#grants tbody tr").first).to_contain_text("manual")
    with server.budget() as budget:
        assert budget.snapshot(PRACTICE).extra_credit_remaining_micros == 25_500_000
    screenshot(page, "practice-after-grant", backend)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/admin/sign-in$"))
    page.goto(f"{server.url}/admin/practices/{PRACTICE}")
    expect(page).to_have_url(re.compile(r"/admin/sign-in\?next="))


def test_a_wrong_key_is_refused_and_signs_nobody_in(
    page: Page, context: BrowserContext, server: Server, backend: str
) -> None:
    sign_in(page, server, "aib_0123456789abcdef_" + "x" * 43)
    expect(page.get_by_role("alert")).to_have_text("This is not a valid admin key.")
    screenshot(page, "sign-in-refused", backend)
    assert "aibudget_session" not in {cookie["name"] for cookie in context.cookies()}
    page.goto(f"{server.url}/admin")
    expect(page).to_have_url(re.compile(r"/admin/sign-in"))


def test_a_service_key_cannot_sign_in(page: Page, server: Server) -> None:
    with server.budget() as budget:
        _key, text = budget.create_key(role="service", label="backend")
    sign_in(page, server, text)
    expect(page.get_by_role("alert")).to_have_text("This is not a valid admin key.")


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    page: Page, context: BrowserContext, server: Server, practice: dict[str, object]
) -> None:
    sign_in(page, server, server.admin_key)
    with server.budget() as budget:
        before = budget.grants(PRACTICE)
    for token in (None, "forged"):
        form = {"amount_usd": "1000", "reference": f"forged-{token}"} | (
            {"csrf_token": token} if token else {}
        )
        answer = context.request.post(f"{server.url}/admin/practices/{PRACTICE}/grants", form=form)
        assert answer.status == 403
        assert "Form refused" in answer.text()
    with server.budget() as budget:
        assert budget.grants(PRACTICE) == before


def test_the_sign_in_form_needs_its_own_token(server: Server) -> None:
    """A sign-in posted from elsewhere (no token cookie) is refused before the key is even looked at."""
    answer = httpx.post(
        f"{server.url}/admin/sign-in", data={"admin_key": server.admin_key, "csrf_token": "x"}
    )
    assert answer.status_code == 403
    assert "aibudget_session" not in answer.cookies


def test_without_a_session_nothing_is_shown_or_written(server: Server, practice: dict[str, object]) -> None:
    with server.budget() as budget:
        before = budget.grants(PRACTICE)
    with httpx.Client(base_url=server.url) as anonymous:
        for path in (f"/admin/practices/{PRACTICE}", f"/admin/practices/{PRACTICE}/events.csv"):
            answer = anonymous.get(path)
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/admin/sign-in?next=%2Fadmin%2Fpractices")
        form = {"amount_usd": "1000", "reference": "anonymous", "csrf_token": "x"}
        answer = anonymous.post(f"/admin/practices/{PRACTICE}/grants", data=form)
        assert (answer.status_code, answer.headers["location"]) == (303, "/admin/sign-in?next=%2Fadmin")
    with server.budget() as budget:
        assert budget.grants(PRACTICE) == before


def test_revoking_the_key_ends_its_sessions(page: Page, server: Server) -> None:
    with server.budget() as budget:
        key, text = budget.create_key(role="admin", label="temporary")
    sign_in(page, server, text)
    expect(page.get_by_role("heading", name="Practices")).to_be_visible()
    with server.budget() as budget:
        budget.revoke_key(key.key_id)
    page.reload()
    expect(page).to_have_url(re.compile(r"/admin/sign-in"))


def test_the_session_cookie_is_http_only_and_strict(
    page: Page, context: BrowserContext, server: Server
) -> None:
    sign_in(page, server, server.admin_key)
    expect(page.get_by_role("heading", name="Practices")).to_be_visible()
    (cookie,) = [cookie for cookie in context.cookies() if cookie["name"] == "aibudget_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/admin"
    assert server.admin_key not in cookie["value"]


def test_overview_search_sort_and_pages(page: Page, server: Server, practice: dict[str, object]) -> None:
    sign_in(page, server, server.admin_key)
    page.get_by_label("Search by id or name").fill("nummer")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#practices tbody tr")).to_have_count(3)
    expect(page.locator("#practices caption")).to_contain_text("3 practices matching")
    expect(page.locator("#practices tbody .level")).to_have_text(["No subscription"] * 3)  # not "Exhausted"
    header = page.locator("#practices thead th").first
    expect(header).to_have_attribute("aria-sort", "ascending")  # by id, the default
    header.get_by_role("link").click()
    expect(header).to_have_attribute("aria-sort", "descending")
    expect(page.locator("#practices tbody tr td:first-child")).to_have_text(
        ["praxis-2", "praxis-1", "praxis-0"]
    )
    page.locator("#practices thead th", has_text="Spend").get_by_role("link").click()
    expect(page.locator("#practices thead th", has_text="Spend")).to_have_attribute("aria-sort", "ascending")
    page.goto(f"{server.url}/admin?sort=bogus")
    expect(page.get_by_role("alert")).to_contain_text("sort")


def test_events_filter_and_csv_export(page: Page, server: Server, practice: dict[str, object]) -> None:
    sign_in(page, server, server.admin_key)
    page.goto(f"{server.url}/admin/practices/{PRACTICE}")
    page.get_by_label("Model").fill("gpt-4o-mini")
    page.get_by_role("button", name="Filter").click()
    minis = [call for call in practice["calls"] if call[1] == "gpt-4o-mini"]  # type: ignore[attr-defined]
    expect(page.locator("#events tbody tr")).to_have_count(len(minis))
    with page.expect_download() as download:
        page.get_by_role("link", name="Export these events as CSV").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert len(rows) == len(minis)
    assert {row["model"] for row in rows} == {"gpt-4o-mini"}
    with server.budget() as budget:
        expected = budget.usage_report(PRACTICE, model="gpt-4o-mini").rows
    assert sorted(row["cost_usd"] for row in rows) == sorted(
        str(Decimal(line.cost_micros).scaleb(-6).quantize(Decimal("0.000001")))
        for line in expected  # type: ignore[union-attr]
    )


def test_pause_and_resume_top_up_and_devices(page: Page, server: Server, practice: dict[str, object]) -> None:
    with server.budget() as budget:
        budget.put_auto_topup(
            PRACTICE,
            enabled=True,
            package_usd="25",
            monthly_max_count=2,
            monthly_max_usd="50",
            threshold_percent=10,
        )
    sign_in(page, server, server.admin_key)
    page.goto(f"{server.url}/admin/practices/{PRACTICE}")
    page.get_by_role("button", name="Pause automatic top-up").click()
    expect(page.locator(".notice")).to_have_text("Automatic top-up paused.")
    expect(page.locator("#topup-state")).to_contain_text("Paused (paused_by_operator)")
    with server.budget() as budget:
        assert budget.auto_topup(PRACTICE).paused_reason == "paused_by_operator"
    page.get_by_role("button", name="Resume automatic top-up").click()
    expect(page.locator("#topup-state")).to_contain_text("On:")

    page.locator("#bind_device_id").fill("desk-42")
    page.get_by_label("User (optional)").fill("dr-muster")
    page.get_by_role("button", name="Bind device").click()
    expect(page.locator(".notice")).to_have_text("Device bound.")
    expect(page.locator("#devices tbody tr", has_text="dr-muster")).to_contain_text("active")
    with server.budget() as budget:
        assert budget.resolve_practice(device_id="desk-42").practice_id == PRACTICE
    page.locator("#deactivate_device_id").fill("desk-42")
    page.get_by_role("button", name="Deactivate device").click()
    expect(page.locator("#devices tbody tr", has_text="dr-muster")).to_contain_text("deactivated")

    page.locator("#deactivate_device_id").fill("never-bound")
    page.get_by_role("button", name="Deactivate device").click()
    expect(page.get_by_role("alert")).to_contain_text("not bound")


def test_spend_this_period_shows_only_the_calls_charged_to_the_period(page: Page, server: Server) -> None:
    """The period began an hour ago. A letter of the period before, and one authorized before the
    period began but settled after, are not this period's calls, though both happened on its first
    day: "Spend this period" shows its one chat alone, at the cost the budget shows as spent."""
    practice_id, month = "praxis-zenit", 30 * 24 * 3600
    begins = int(datetime.now(UTC).timestamp()) - 3600  # Unix seconds, as the provider gives periods
    clock = FakeClock(datetime.fromtimestamp(begins - 2 * 3600, UTC))
    settings = Settings.load(data_dir=server.data_dir)
    with Budget.open(server.database_url, settings=settings, clock=clock) as budget:

        def period_from(start: int) -> None:
            budget.put_subscription("sub_zenit", practice_id=practice_id, plan="standard", status="active",
                                    current_period_start=start, current_period_end=start + month,
                                    updated_at=int(clock.now.timestamp()))  # fmt: skip

        budget.put_practice(practice_id, name="Praxis Zenit")
        budget.put_plan("standard", included_usd="20")
        period_from(begins - month)
        letter = {"practice_id": practice_id, "model": "gpt-4o", "input_tokens": 100_000}
        budget.settle(request_id="before", operation="letter", **letter)
        clock.now = datetime.fromtimestamp(begins - 5 * 60, UTC)
        budget.authorize(request_id="late", operation="letter", max_output_tokens=0, **letter)
        clock.now = datetime.fromtimestamp(begins + 5 * 60, UTC)
        period_from(begins)
        budget.settle(request_id="late", **letter)
        clock.now = datetime.fromtimestamp(begins + 10 * 60, UTC)
        budget.settle(practice_id=practice_id, request_id="chat", operation="chat", model="gpt-4o-mini",
                      input_tokens=100_000)  # fmt: skip
    with server.admin() as api:
        assert api.get(f"/v1/practices/{practice_id}/budget").json()["used_usd"] == "0.015000"

    sign_in(page, server, server.admin_key)
    page.goto(f"{server.url}/admin/practices/{practice_id}")

    expect(page.locator("#by-model tbody td")).to_have_text(["gpt-4o-mini", "1", "0", "$0.015000"])
    expect(page.locator("#by-operation tbody td")).to_have_text(["chat", "1", "0", "$0.015000"])


@pytest.mark.parametrize(
    ("amount", "expires_on", "field"),
    [
        ("lots", "", "amount_usd"),
        ("1e3", "", "amount_usd"),  # Decimal reads 1000
        ("\uff15\uff10", "", "amount_usd"),  # full-width digits, as a Japanese keyboard types them
        ("5", "9999-12-31", "expires_on"),  # the day after it: past datetime's end
    ],
    ids=["amount", "amount with an exponent", "amount in full-width digits", "expiry past the year 9998"],
)
def test_bad_input_in_a_form_names_the_field_and_writes_nothing(
    page: Page, server: Server, practice: dict[str, object], amount: str, expires_on: str, field: str
) -> None:
    sign_in(page, server, server.admin_key)
    page.goto(f"{server.url}/admin/practices/{PRACTICE}")
    with server.budget() as budget:
        before = budget.grants(PRACTICE)
    page.evaluate("document.getElementById('amount_usd').removeAttribute('pattern')")
    page.get_by_label("Amount in USD").fill(amount)
    page.get_by_label("Expires after (optional)").fill(expires_on)
    page.get_by_role("button", name="Grant credit").click()
    expect(page.get_by_role("alert")).to_contain_text(field)
    with server.budget() as budget:
        assert budget.grants(PRACTICE) == before


def test_pages_fit_a_phone(phone: Page, server: Server, practice: dict[str, object], backend: str) -> None:
    page = phone
    sign_in(page, server, server.admin_key)
    page.goto(f"{server.url}/admin/practices/{PRACTICE}")
    expect(page.locator("#burn-down canvas")).to_have_count(1)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page scrolls sideways on a phone"
    screenshot(page, "practice-phone", backend)


def test_the_dashboard_works_from_the_keyboard(
    page: Page, server: Server, practice: dict[str, object]
) -> None:
    page.goto(f"{server.url}/admin")
    expect(page.get_by_label("Admin key")).to_be_focused()
    page.keyboard.type(server.admin_key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Practices")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()  # first stop: skip to the content
    page.keyboard.press("Enter")
    for _ in range(20):  # on through the search form to the first practice
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == PRACTICE:
            break
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=re.compile("Praxis Sonne"))).to_be_visible()
