"""Shared fixtures: every test runs in its own directory, with no AIBUDGET_* variables leaking in,
on a real, migrated SQLite file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aibudget import Budget, Settings


class FakeClock:
    """A clock the test moves by hand; `Budget` calls it for every "now"."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AIBUDGET_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 15, 9, 30, tzinfo=UTC))


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'aibudget.sqlite3'}"


@pytest.fixture
def budget(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Budget]:
    with Budget.open(database_url, settings=Settings.load(data_dir=tmp_path / "var"), clock=clock) as opened:
        yield opened
