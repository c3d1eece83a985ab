"""The database goes away while the proxy's calls are at the upstream: the provider is paid and
answers, so the caller gets the answer — plain and streamed — and the calls' costs are posted once
the database is back, each once (`ledger.kept_settles`). The server reaches PostgreSQL through a
relay the test cuts; the `openai` package is the caller, a fake OpenAI the upstream."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.databases import PostgresServer
from tests.fake_openai import FakeOpenAI
from tests.proxy.test_proxy import chat_usage, client, event_of, funded_practice, held_usd, letter, price_of
from tests.relay import relayed_server


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def test_calls_answered_while_the_database_is_gone_are_delivered_and_charged_once_it_is_back(
    postgres: PostgresServer, tmp_path: Path, upstream: FakeOpenAI
) -> None:
    env = {"AIBUDGET_UPSTREAM_BASE_URL": f"{upstream.url}/v1", "AIBUDGET_UPSTREAM_API_KEY": upstream.api_key}
    with relayed_server(postgres, tmp_path / "var", **env) as (server, relay):
        practice_id, api_key = funded_practice(server)
        upstream.delay, upstream.chunk_delay = 0.5, 0.02

        def plain() -> Any:
            with client(server, api_key) as app:
                return letter(app, "plain")

        def streamed() -> list[Any]:
            with client(server, api_key) as app:
                return list(letter(app, "streamed", stream=True, stream_options={"include_usage": True}))

        with ThreadPoolExecutor(2) as pool:
            answers = pool.submit(plain), pool.submit(streamed)
            upstream.wait_for(lambda: len(upstream.requests) == 2)  # both authorized, at the upstream now
            relay.stop()
            completion, chunks = answers[0].result(timeout=30), answers[1].result(timeout=30)
        assert completion.choices[0].message.content
        assert chunks[-1].usage is not None
        reported = {answer.streaming: answer.usage for answer in upstream.answers}
        assert reported[False] is not None
        assert completion.usage is not None
        assert completion.usage.total_tokens == reported[False]["total_tokens"]
        assert "kept to post later" in server.logs()

        relay.start()

        def posted() -> bool:
            try:
                event_of(server, practice_id, "plain"), event_of(server, practice_id, "streamed")
            except ValueError:  # not both there yet
                return False
            return True

        wait_until(posted, 15)
        for request_id, streaming in (("plain", False), ("streamed", True)):
            usage = reported[streaming]
            assert usage is not None
            charged = event_of(server, practice_id, request_id)
            assert charged.cost_micros == price_of(server, "gpt-4o-mini", chat_usage(usage))
        assert held_usd(server, practice_id) == 0
        with server.budget() as books:
            assert books.verify() == []
        assert "Traceback" not in server.logs()
