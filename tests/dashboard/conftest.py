"""Dashboard fixtures: the API tests' real server per module and engine, and Debian's Chromium driven
headless by Playwright (`AIBUDGET_TEST_CHROMIUM` names another binary). Without a Chromium the
browser tests are skipped with the reason — or fail, when `AIBUDGET_REQUIRE_BROWSER=1` (set by CI).
Every test can save screenshots to `tests/artifacts/`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    sync_playwright,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# Chromium's own background traffic is refused on a closed network; these flags keep it quiet.
CHROMIUM_ARGS = [
    *("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
    *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one module: Playwright's sync API runs an event loop in this thread while it is
    open, which would stand in the way of later tests that start one of their own."""
    executable = os.environ.get("AIBUDGET_TEST_CHROMIUM", "/usr/bin/chromium")
    if not os.access(executable, os.X_OK):
        message = f"the dashboard's browser tests need Chromium at {executable} (scripts/ensure-chromium)"
        if os.environ.get("AIBUDGET_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (AIBUDGET_REQUIRE_BROWSER=1)", pytrace=False)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page that fails the test on a script error, a Content-Security-Policy violation or a
    stylesheet, script or image that did not load (pages themselves may answer 4xx on purpose)."""
    opened = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console error: {message.text}")

    def on_response(response: Response) -> None:
        if response.request.resource_type != "document" and response.status >= 400:
            problems.append(f"{response.status} for {response.url}")

    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    opened.on("console", on_console)
    opened.on("response", on_response)
    yield opened
    assert not problems, problems


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    """A page on a phone-sized screen."""
    opened = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        yield opened.new_page()
    finally:
        opened.close()


def screenshot(page: Page, name: str, backend: str) -> Path:
    """Save the whole page as `tests/artifacts/dashboard-<name>-<backend>.png`."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}-{backend}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
