"""The proxy's tests: a fake OpenAI upstream and an `aibudget` server forwarding to it, per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.conftest import Server, start_server, stop_server
from tests.fake_openai import FakeOpenAI


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, server_database: str | None, upstream: FakeOpenAI
) -> Iterator[Server]:
    started = start_server(
        tmp_path_factory.mktemp("proxy") / "var", server_database,
        AIBUDGET_UPSTREAM_BASE_URL=f"{upstream.url}/v1", AIBUDGET_UPSTREAM_API_KEY=upstream.api_key,
    )  # fmt: skip
    try:
        yield started
    finally:
        stop_server(started)
