"""The fake OpenAI upstream, driven by the real `openai` package over HTTP (see `tests/fake_openai.py`).

Every answer is also validated against the package's pydantic models (the package itself only
`construct`s them, which would let a missing required field pass unnoticed).
"""

from __future__ import annotations

import io
import itertools
import threading
import time
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.audio import Transcription
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

from tests.fake_openai import (
    REPLY_BASE,
    TRANSCRIPT,
    FakeOpenAI,
    audio_tokens_of,
    chat_usage,
    embedding_tokens_of,
    input_tokens_of,
    prompt_tokens_of,
    reply_text,
    responses_usage,
    transcription_usage,
    wav_duration_of,
)

pytestmark = pytest.mark.timeout(10)

MESSAGES: list[Any] = [
    {"role": "system", "content": "Du schreibst höfliche Briefe an Patientinnen."},
    {"role": "user", "content": [{"type": "text", "text": "Bitte bestätige den Termin am Donnerstag."}]},
]
STREAM_EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.url + "/v1", api_key=fake.api_key, max_retries=0, timeout=5) as c:
        yield c


def silent_wav(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


# -- token helpers ------------------------------------------------------------------------------


def test_token_helpers_are_deterministic() -> None:
    chars = len("Du schreibst höfliche Briefe an Patientinnen.") + len(
        "Bitte bestätige den Termin am Donnerstag."
    )
    assert prompt_tokens_of(MESSAGES) == chars // 4
    assert prompt_tokens_of([{"role": "user", "content": "Hi"}]) == 1  # at least 1
    assert prompt_tokens_of([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]) == 1
    assert input_tokens_of("abcdefgh", "abcd") == 3
    assert input_tokens_of([{"role": "user", "content": [{"type": "input_text", "text": "x" * 40}]}]) == 10
    assert embedding_tokens_of("abcdefgh") == 2
    assert embedding_tokens_of(["abcdefgh", "a"]) == 3
    assert embedding_tokens_of([[1, 2, 3], [4]]) == 4
    assert embedding_tokens_of([1, 2, 3]) == 3
    assert wav_duration_of(silent_wav(1.0)) == 1.0
    assert audio_tokens_of(silent_wav(1.0)) == 10
    assert audio_tokens_of(silent_wav(0.25)) == 3
    assert audio_tokens_of(b"x" * 2500) == 2  # no WAV: by size
    assert reply_text(3) == "Sehr geehrte Frau"
    assert len(reply_text(100).split()) == 100  # the base text repeats
    assert reply_text(len(REPLY_BASE.split())) == REPLY_BASE


# -- chat completions ---------------------------------------------------------------------------


def test_chat_completion_reports_usage(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    ChatCompletion.model_validate(raw.http_response.json())
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == reply_text(12)
    assert completion.choices[0].finish_reason == "stop"
    expected = chat_usage(prompt_tokens_of(MESSAGES), 12)
    assert completion.usage is not None
    assert completion.usage.model_dump(exclude_none=True) == expected
    assert raw.headers["x-request-id"].startswith("req_")

    [answer] = fake.answers
    assert (answer.path, answer.model, answer.streaming, answer.completed) == (
        "/v1/chat/completions",
        "gpt-4o-mini",
        False,
        True,
    )
    assert answer.usage == expected
    [request] = fake.requests
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {fake.api_key}"
    assert request.json["messages"] == MESSAGES
    assert request.status == 200


def test_chat_cached_reasoning_and_model_map(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.reply_words = 5
    fake.cached_tokens = 7
    fake.reasoning_tokens = 30
    fake.model_map = {"gpt-4o": "gpt-4o-2024-08-06"}
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert completion.model == "gpt-4o-2024-08-06"
    prompt = prompt_tokens_of(MESSAGES)
    assert completion.usage is not None
    assert completion.usage.model_dump(exclude_none=True) == chat_usage(
        prompt, 35, cached_tokens=7, reasoning_tokens=30
    )
    assert fake.answers[-1].model == "gpt-4o"  # as requested

    fake.cached_tokens = 10_000  # never more than the prompt
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == prompt


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_chat_token_limit_cuts_the_reply(fake: FakeOpenAI, client: openai.OpenAI, limit: str) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_body={limit: 4})
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == reply_text(4)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4
    assert fake.answers[-1].finish_reason == "length"

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_body={limit: 0})
    assert caught.value.param == limit


def test_chat_stream_without_include_usage_has_no_usage_chunk(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake.reply_words = 6
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))

    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk.to_dict())
        assert chunk.usage is None
        assert "usage" not in chunk.to_dict()
        assert len(chunk.choices) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == reply_text(6)
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == "stop"
    assert len(chunks) == 6 + 2  # role, one per word, finish

    [answer] = fake.answers
    assert answer.streaming
    assert answer.completed
    assert answer.usage is None  # none was sent
    assert answer.text == reply_text(6)
    assert answer.finish_reason == "stop"


def test_chat_stream_with_include_usage_ends_with_usage_chunk(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake.reply_words = 6
    fake.cached_tokens = 3
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk.to_dict())
    *content, last = chunks
    assert all(chunk.usage is None and len(chunk.choices) == 1 for chunk in content)
    assert last.choices == []
    expected = chat_usage(prompt_tokens_of(MESSAGES), 6, cached_tokens=3)
    assert last.usage is not None
    assert last.usage.model_dump(exclude_none=True) == expected
    assert fake.answers[-1].usage == expected
    assert fake.answers[-1].completed


def test_chat_stream_helper_accumulates(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == reply_text(12)
    assert final.usage is not None
    assert final.usage.total_tokens == prompt_tokens_of(MESSAGES) + 12


# -- responses ----------------------------------------------------------------------------------


def test_responses_plain(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.cached_tokens = 2
    fake.reasoning_tokens = 8
    raw = client.responses.with_raw_response.create(
        model="gpt-4.1-mini", input="Bitte bestätige den Termin.", instructions="Sei höflich."
    )
    Response.model_validate(raw.http_response.json())
    response = raw.parse()

    assert response.status == "completed"
    assert response.output_text == reply_text(12)
    expected = responses_usage(
        input_tokens_of("Bitte bestätige den Termin.", "Sei höflich."),
        20,
        cached_tokens=2,
        reasoning_tokens=8,
    )
    assert response.usage is not None
    assert response.usage.model_dump(exclude_none=True) == expected
    assert fake.answers[-1].usage == expected
    assert fake.answers[-1].finish_reason == "completed"


def test_responses_stream_event_sequence(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.reply_words = 3
    events = list(client.responses.create(model="gpt-4.1-mini", input="Hallo", stream=True))

    for event in events:
        STREAM_EVENTS.validate_python(event.to_dict())
    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(
        event.delta for event in events if event.type == "response.output_text.delta"
    ) == reply_text(3)
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None
    expected = responses_usage(input_tokens_of("Hallo"), 3)
    assert completed.response.usage.model_dump(exclude_none=True) == expected
    assert completed.response.output_text == reply_text(3)
    assert fake.answers[-1].usage == expected
    assert fake.answers[-1].streaming


def test_responses_stream_helper_and_incomplete(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-4.1-mini", input="Hallo") as stream:
        final = stream.get_final_response()
    assert final.output_text == reply_text(12)
    assert final.usage is not None
    assert final.usage.output_tokens == 12

    events = list(
        client.responses.create(model="gpt-4.1-mini", input="Hallo", stream=True, max_output_tokens=2)
    )
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.usage is not None
    assert last.response.usage.output_tokens == 2


# -- embeddings ---------------------------------------------------------------------------------


def test_embeddings(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    texts = ["Termin am Donnerstag", "Befunde"]
    default = client.embeddings.create(model="text-embedding-3-small", input=texts)  # base64 on the wire
    assert fake.requests[-1].json["encoding_format"] == "base64"
    as_float = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=texts, encoding_format="float"
    )
    CreateEmbeddingResponse.model_validate(as_float.http_response.json())
    parsed = as_float.parse()

    assert [item.embedding for item in default.data] == [item.embedding for item in parsed.data]
    assert [len(item.embedding) for item in parsed.data] == [8, 8]
    assert [item.index for item in parsed.data] == [0, 1]
    assert parsed.data[0].embedding != parsed.data[1].embedding
    assert embedding_tokens_of(texts) == 20 // 4 + 1  # "Befunde": 7 chars, at least 1
    assert parsed.usage.model_dump() == {"prompt_tokens": 6, "total_tokens": 6}
    assert fake.answers[-1].usage == {"prompt_tokens": 6, "total_tokens": 6}

    sized = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3]], dimensions=3)
    assert len(sized.data[0].embedding) == 3
    assert sized.usage.prompt_tokens == 3


# -- transcriptions -----------------------------------------------------------------------------


def test_whisper_transcription_json_and_text(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    audio = silent_wav()
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("silence.wav", audio, "audio/wav")
    )
    assert raw.http_response.json() == {"text": TRANSCRIPT}
    assert raw.parse().text == TRANSCRIPT
    request = fake.requests[-1]
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.form["model"] == "whisper-1"
    assert request.files["file"].filename == "silence.wav"
    assert request.files["file"].data == audio
    assert fake.answers[-1].usage is None

    text = client.audio.transcriptions.create(
        model="whisper-1", file=("silence.wav", audio, "audio/wav"), response_format="text"
    )
    assert text == TRANSCRIPT + "\n"
    assert fake.requests[-1].form["response_format"] == "text"

    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("silence.wav", audio), response_format="verbose_json"
    )
    assert verbose.duration == 1.0


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "gpt-4o-mini-transcribe"])
def test_token_transcription_reports_usage(fake: FakeOpenAI, client: openai.OpenAI, model: str) -> None:
    raw = client.audio.transcriptions.with_raw_response.create(
        model=model, file=("silence.wav", silent_wav(), "audio/wav"), prompt="Praxis Muster"
    )
    Transcription.model_validate(raw.http_response.json())
    result = raw.parse()

    expected = transcription_usage(10, len("Praxis Muster") // 4, len(TRANSCRIPT.split()))
    assert result.text == TRANSCRIPT
    assert result.usage is not None
    assert result.usage.model_dump(exclude_none=True) == expected
    assert fake.answers[-1].usage == expected

    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model=model, file=("a.wav", silent_wav()), response_format="srt")


def test_token_transcription_stream(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    events = list(
        client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=("silence.wav", silent_wav()), stream=True
        )
    )
    assert "".join(event.delta for event in events if event.type == "transcript.text.delta") == TRANSCRIPT
    done = events[-1]
    assert done.type == "transcript.text.done"
    assert done.usage is not None
    assert done.usage.input_tokens == 10
    assert fake.answers[-1].usage == done.usage.model_dump(exclude_none=True)


# -- models -------------------------------------------------------------------------------------


def test_models(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == fake.models
    assert client.models.retrieve("whisper-1").owned_by == "system"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-99")
    assert caught.value.code == "model_not_found"


# -- failures and authentication ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "type_", "code"),
    [
        (400, openai.BadRequestError, "invalid_request_error", None),
        (429, openai.RateLimitError, "requests", "rate_limit_exceeded"),
        (500, openai.InternalServerError, "server_error", None),
        (503, openai.InternalServerError, "server_error", None),
    ],
)
def test_fail_next(
    fake: FakeOpenAI,
    client: openai.OpenAI,
    status: int,
    error: type[openai.APIStatusError],
    type_: str,
    code: str | None,
) -> None:
    fake.fail_next(2, status)
    for _ in range(2):
        with pytest.raises(error) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert caught.value.status_code == status
        assert caught.value.type == type_
        assert caught.value.code == code
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).usage is not None
    assert [request.status for request in fake.requests] == [status, status, 200]
    assert len(fake.answers) == 1  # failures are no answers


def test_fail_next_with_path_body_and_headers(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.fail_next(
        1,
        429,
        {
            "error": {
                "message": "quota",
                "type": "insufficient_quota",
                "param": None,
                "code": "insufficient_quota",
            }
        },
        headers={"retry-after": "7"},
        path="/v1/embeddings",
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # not this path
    with pytest.raises(openai.RateLimitError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert caught.value.code == "insufficient_quota"
    assert caught.value.response.headers["retry-after"] == "7"

    fake.fail_next(1, 502, "<html>Bad Gateway</html>")
    with pytest.raises(openai.InternalServerError) as caught_502:
        client.models.list()
    assert caught_502.value.status_code == 502
    assert caught_502.value.response.text == "<html>Bad Gateway</html>"


def test_wrong_or_missing_key_is_401(fake: FakeOpenAI) -> None:
    wrong = openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-wrong-key-123", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"
    assert "sk-wrong-key-123" not in caught.value.message  # masked, as OpenAI does

    missing = httpx.post(
        fake.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}
    )
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert fake.answers == []


def test_azure_api_key_header_and_chunked_request_body(fake: FakeOpenAI) -> None:
    def body() -> Iterator[bytes]:  # no Content-Length: httpx sends Transfer-Encoding: chunked
        yield b'{"model": "text-embedding-3-small", '
        yield b'"input": "abcdefgh"}'

    answer = httpx.post(
        fake.url + "/v1/embeddings",
        content=body(),
        headers={"api-key": fake.api_key, "content-type": "application/json"},
    )
    assert answer.status_code == 200
    assert answer.json()["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    request = fake.requests[-1]
    assert request.headers["transfer-encoding"] == "chunked"
    assert request.json == {"model": "text-embedding-3-small", "input": "abcdefgh"}

    not_found = httpx.post(fake.url + "/v1/nothing", headers={"api-key": fake.api_key})
    assert not_found.status_code == 404
    assert not_found.json()["error"]["type"] == "invalid_request_error"
    bad_json = httpx.post(fake.url + "/v1/chat/completions", content=b"{", headers={"api-key": fake.api_key})
    assert bad_json.status_code == 400


# -- timing, slow streams and clients that go away ----------------------------------------------


def test_slow_stream_spaces_the_events(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.reply_words = 4
    fake.chunk_delay = 0.1
    arrivals: list[float] = []
    started = time.monotonic()
    for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap >= 0.07 for gap in gaps), gaps  # flushed per event, not buffered to the end
    assert fake.answers[-1].completed


def test_client_going_away_mid_stream_is_recorded(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.reply_words = 50
    fake.chunk_delay = 0.05
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    for index, _chunk in enumerate(stream):
        if index == 3:
            break
    stream.close()

    [disconnect] = fake.wait_for(lambda: fake.disconnects, timeout=2)
    assert disconnect.phase == "stream"
    assert disconnect.path == "/v1/chat/completions"
    assert 4 <= disconnect.events_sent < 50
    answer = fake.wait_for(lambda: fake.answers, timeout=2)[-1]
    assert not answer.completed
    assert answer.usage is None
    assert answer.finish_reason is None


def test_delay_and_client_timeout(fake: FakeOpenAI) -> None:
    fake.delay = 5
    with openai.OpenAI(base_url=fake.url + "/v1", api_key=fake.api_key, max_retries=0, timeout=0.3) as hasty:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            hasty.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [disconnect] = fake.wait_for(lambda: fake.disconnects, timeout=2)
    assert disconnect.phase == "delay"
    assert time.monotonic() - started < 2  # noticed while waiting, not after the delay
    assert fake.answers == []

    fake.delay = 0.2
    with openai.OpenAI(base_url=fake.url + "/v1", api_key=fake.api_key, max_retries=0) as patient:
        started = time.monotonic()
        patient.models.list()
        assert time.monotonic() - started >= 0.2


def test_upstream_cut_mid_stream(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.drop_stream_after = 2
    received: list[str] = []

    def consume() -> None:
        for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIConnectionError):
        consume()
    assert "".join(received) == reply_text(2)
    answer = fake.answers[-1]
    assert not answer.completed
    assert answer.text == reply_text(2)
    assert fake.disconnects == []  # we cut it, the client did not go away

    with pytest.raises(openai.APIConnectionError):
        list(client.responses.create(model="gpt-4.1-mini", input="x", stream=True))


def test_stop_ends_a_running_stream() -> None:
    fake = FakeOpenAI().start()
    fake.reply_words = 1000
    fake.chunk_delay = 0.05
    errors: list[BaseException] = []

    def consume() -> None:
        with openai.OpenAI(base_url=fake.url + "/v1", api_key=fake.api_key, max_retries=0, timeout=5) as c:
            try:
                list(c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
            except openai.APIError as err:
                errors.append(err)

    consumer = threading.Thread(target=consume)
    consumer.start()
    fake.wait_for(lambda: fake.requests)
    time.sleep(0.1)
    started = time.monotonic()
    fake.stop()
    consumer.join(timeout=2)
    assert not consumer.is_alive()
    assert time.monotonic() - started < 1.5
    assert len(errors) == 1  # the body never ended
    assert fake.errors == []
