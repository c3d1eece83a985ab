"""Fuzzing the proxy's request bodies (SPEC §9): whatever an app sends to `/openai/v1/…`, the answer is
ours (a clear 4xx) or the upstream's, never a 5xx of ours, and no call leaves a hold behind.

A real server per engine, with a fake OpenAI upstream behind it, gets on chat completions, responses
and embeddings the bodies of `tests.fuzz.bodies`: valid ones (plain and streaming, so calls also go
through and are charged), valid ones mutated at any depth, arbitrary JSON — NaN, infinities and lone
surrogates included, which Python reads and no JSON encoder writes back — and bytes that are not
JSON. Every answer is below 500 but for the upstream's own 502/504 class, which the fake never
sends here; after each route's run every hold is settled or voided, the books balance, and neither
the server nor the fake logged an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import Server, start_server, stop_server
from tests.conftest import wait_until
from tests.fake_openai import FakeOpenAI
from tests.fuzz.bodies import Body, bodies
from tests.proxy.test_proxy import funded_practice

bounded = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
LETTER = "Bitte einen kurzen Brief an Frau Muster."
CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": LETTER}],
    "max_completion_tokens": 64,
}
RESPONSES = {"model": "gpt-4o-mini", "input": LETTER, "max_output_tokens": 64}
EMBEDDINGS = {"model": "text-embedding-3-small", "input": LETTER}


@dataclass
class Proxy:
    server: Server
    upstream: FakeOpenAI
    practice_id: str
    http: httpx.Client


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, server_database: str | None) -> Iterator[Proxy]:
    with FakeOpenAI() as upstream:
        server = start_server(
            tmp_path_factory.mktemp("proxy-fuzz") / "var", server_database,
            AIBUDGET_UPSTREAM_BASE_URL=f"{upstream.url}/v1", AIBUDGET_UPSTREAM_API_KEY=upstream.api_key,
        )  # fmt: skip
        try:
            practice_id, api_key = funded_practice(server, included_usd="100000")
            headers = {"Authorization": f"Bearer {api_key}"}
            with httpx.Client(base_url=f"{server.url}/openai/v1", headers=headers, timeout=30) as http:
                yield Proxy(server, upstream, practice_id, http)
        finally:
            stop_server(server)


def streaming(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The valid body, plain or streaming (asking for the usage chunk or not)."""
    return st.sampled_from([
        valid, valid | {"stream": True}, valid | {"stream": True, "stream_options": {"include_usage": True}},
    ])  # fmt: skip


def send(proxy: Proxy, path: str, body: Body) -> None:
    headers = {} if body.content_type is None else {"Content-Type": body.content_type}
    response = proxy.http.post(path, content=body.content, headers=headers)
    assert response.status_code < 500, f"{path} -> {response.status_code}: {response.text[:2000]}"


def assert_nothing_left_behind(proxy: Proxy) -> None:
    def released() -> bool:  # a stream is settled just after its last event went out
        with proxy.server.budget() as books:
            return books.snapshot(proxy.practice_id).held_micros == 0

    wait_until(released)
    with proxy.server.budget() as books:
        assert books.verify() == []
    assert "Traceback" not in proxy.server.logs()
    assert proxy.upstream.errors == []


@pytest.mark.parametrize(
    ("path", "valid"),
    [("chat/completions", streaming(CHAT)), ("responses", streaming(RESPONSES)),
     ("embeddings", st.just(EMBEDDINGS))],
    ids=["chat", "responses", "embeddings"],
)  # fmt: skip
def test_any_body_is_answered_below_500_and_leaves_no_hold(
    proxy: Proxy, path: str, valid: st.SearchStrategy[dict[str, Any]]
) -> None:
    @bounded
    @given(body=bodies(valid))
    def run(body: Body) -> None:
        send(proxy, path, body)

    run()
    assert_nothing_left_behind(proxy)
