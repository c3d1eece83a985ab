"""Shared fixtures: every test runs in its own directory, with no AIBUDGET_* variables leaking in;
`budget` is the library over a fresh database of the engine under test (see `tests/databases.py`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from aibudget import Budget, Settings
from tests.api.conftest import Server, start_server, stop_server
from tests.fake_openai import FakeOpenAI

pytest_plugins = ["tests.databases"]


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
def budget(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Budget]:
    with Budget.open(database_url, settings=Settings.load(data_dir=tmp_path / "var"), clock=clock) as opened:
        yield opened


SCRIPT = Path(sys.executable).parent / "aibudget"
EXECUTABLE = str(SCRIPT) if SCRIPT.exists() else shutil.which("aibudget")


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        """stderr as one line, without the frame that the usage-error box draws around it."""
        return " ".join(self.stderr.translate(str.maketrans("│╭╮╰╯─", "      ")).split())


Aibudget = Callable[..., "Run"]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


@pytest.fixture
def aibudget(tmp_path: Path, workdir: Path) -> Aibudget:
    """Runs the console script in an empty working directory with only the given AIBUDGET_* set."""
    assert EXECUTABLE, "the aibudget console script is not installed"

    def run(*args: str, **env: str) -> Run:
        clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
        clean |= {"COLUMNS": "200", "NO_COLOR": "1", **env}
        done = subprocess.run(
            [EXECUTABLE, *args], cwd=workdir, env=clean, capture_output=True, text=True, timeout=60
        )
        return Run(done.returncode, done.stdout, done.stderr)

    return run


def wait_until(condition: Callable[[], Any], timeout: float = 10) -> Any:
    """`condition()`'s first true value, asked every 20 ms; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, server_database: str | None) -> Iterator[Server]:
    """A real `aibudget` server over a fresh database of the engine under test, for a module's tests."""
    started = start_server(tmp_path_factory.mktemp("server") / "var", server_database)
    try:
        yield started
    finally:
        stop_server(started)


# a fake OpenAI upstream, and the `openai` package's client of it
@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def provider(upstream: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{upstream.url}/v1", api_key=upstream.api_key, max_retries=0) as client:
        yield client
