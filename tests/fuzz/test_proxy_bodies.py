"""Fuzzing the proxy's request bodies (SPEC §9): whatever an app sends to `/openai/v1/…`, the answer is
ours (a clear 4xx) or the upstream's, never a 5xx of ours, and no call leaves a hold behind.

A real server per engine, with a fake OpenAI upstream behind it, gets on chat completions, responses
and embeddings the bodies of `tests.fuzz.bodies`: valid ones (plain and streaming, so calls also go
through and are charged), valid ones mutated at any depth, arbitrary JSON — NaN, infinities and lone
surrogates included, which Python reads and no JSON encoder writes back — and bytes that are not
JSON. On audio transcriptions it gets uploads: WAV headers with any rate, channel count, sample size
and data length (zero, huge, more than the file holds), the magic bytes of every container the
duration reader knows followed by anything, arbitrary bytes; any file name, model and form fields;
sent as multipart, as a multipart body that is not one, as JSON or as a urlencoded form. Every
answer is below 500 but for the upstream's own 502/504 class, which the fake never sends here; after
each route's run every hold is settled or voided, the books balance, and neither the server nor the
fake logged an error.
"""

from __future__ import annotations

import struct
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


def wav_header(
    rate: int, channels: int, bits: int, byte_rate: int, format_tag: int, data_length: int, data: bytes
) -> bytes:
    """A RIFF/WAVE file whose `fmt ` chunk and `data` length say whatever they are given."""
    block = channels * bits // 8 % 2**16
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, byte_rate, block, bits)
    chunks = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", data_length)
        + data
    )
    return b"RIFF" + struct.pack("<I", len(chunks) % 2**32) + chunks


dword = st.sampled_from([0, 1, 8_000, 16_000, 44_100, 2**31, 2**32 - 1])
wav_files = st.builds(
    wav_header, rate=dword, channels=st.sampled_from([0, 1, 2, 255, 2**16 - 1]),
    bits=st.sampled_from([0, 8, 16, 24, 32, 2**16 - 1]), byte_rate=dword,
    format_tag=st.sampled_from([0, 1, 3, 85, 0xFFFE, 2**16 - 1]), data_length=dword,
    data=st.binary(max_size=4_000),
)  # fmt: skip
MAGIC = [b"fLaC", b"\x00\x00\x00\x18ftypM4A ", b"OggS", b"OggS\x00\x02OpusHead", b"\x1aE\xdf\xa3webm",
         b"ID3\x04\x00\x00\x00\x00\x00\x10", b"ID3\x04\x00\x10\x7f\x7f\x7f\x7f", b"\xff\xfb\x90\x64",
         b"\xff\xfb\x90\x64" + bytes(32) + b"Xing\x00\x00\x00\x03"]  # fmt: skip
uploads = st.one_of(
    wav_files,
    st.builds(bytes.__add__, st.sampled_from(MAGIC), st.binary(max_size=3_000)),
    st.binary(max_size=300),
)
TRANSCRIBERS = ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]
FORM_FIELDS = ["response_format", "prompt", "language", "temperature", "stream", "include[]"]
MULTIPART = "multipart/form-data; boundary=b"


def test_any_upload_is_answered_below_500_and_leaves_no_hold(proxy: Proxy) -> None:
    path = "audio/transcriptions"
    reached = len([request for request in proxy.upstream.requests if request.path.endswith(path)])

    @bounded
    @given(
        audio=uploads,
        filename=st.text(max_size=30),
        model=st.sampled_from(TRANSCRIBERS) | st.text(max_size=40) | st.none(),
        fields=st.dictionaries(st.sampled_from(FORM_FIELDS), st.text(max_size=20), max_size=3),
        sent_as=st.just("multipart") | st.sampled_from(["not multipart", "json", "form"]),
    )
    def run(audio: bytes, filename: str, model: str | None, fields: dict[str, str], sent_as: str) -> None:
        form = fields if model is None else fields | {"model": model}
        if sent_as == "multipart":
            response = proxy.http.post(path, data=form, files={"file": (filename, audio, "audio/wav")})
        elif sent_as == "not multipart":
            response = proxy.http.post(path, content=audio, headers={"Content-Type": MULTIPART})
        elif sent_as == "json":
            response = proxy.http.post(path, json=form)
        else:
            response = proxy.http.post(path, data=form)
        assert response.status_code < 500, f"{sent_as} -> {response.status_code}: {response.text[:2000]}"

    run()
    assert len([request for request in proxy.upstream.requests if request.path.endswith(path)]) > reached
    assert_nothing_left_behind(proxy)
