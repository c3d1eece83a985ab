"""The OpenAI-compatible proxy over real HTTP: the official `openai` package as the desktop app, a
server the test starts, and a fake OpenAI upstream behind it (SPEC §9). What is charged is the
catalog price of the usage the upstream reported; streams and plain calls agree; errors void;
a client leaving mid-stream is charged what it consumed; an exhausted budget is a 402 the package
surfaces with our code."""

from __future__ import annotations

import io
import time
import uuid
import wave
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from aibudget import guard
from aibudget.client import BudgetClient
from aibudget.ledger.reports import UsageLine
from aibudget.proxy.usage import prompt_chars
from aibudget.views.texts import format_date, text
from tests.api.conftest import Server, start_server, stop_server
from tests.api.test_accounts import assert_problem, key
from tests.databases import server_databases
from tests.fake_openai import FakeOpenAI

MESSAGES = [{"role": "user", "content": "Bitte einen kurzen Brief an Frau Muster wegen des Termins."}]
DAY = 86_400


@pytest.fixture(autouse=True)
def fresh_upstream(upstream: FakeOpenAI) -> None:
    upstream.reply_words, upstream.chunk_delay, upstream.cached_tokens = 12, 0.0, 0
    upstream.drop_stream_after = None


def funded_practice(server: Server, included_usd: str = "20") -> tuple[str, str]:
    """A subscribed practice and its key."""
    practice_id, plan = f"p-{uuid.uuid4().hex[:10]}", f"plan-{uuid.uuid4().hex[:8]}"
    now = int(time.time())
    with server.budget() as budget:
        budget.put_practice(practice_id, name="Praxis Muster")
        budget.put_plan(plan, included_usd=included_usd)
        budget.put_subscription(f"sub-{practice_id}", practice_id=practice_id, plan=plan,
                                status="active", current_period_start=now - DAY,
                                current_period_end=now + 29 * DAY)  # fmt: skip
    return practice_id, key(server, "practice", practice_id)


def client(server: Server, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=api_key, max_retries=0, timeout=20)


def letter(app: openai.OpenAI, request_id: str | None = None, **options: Any) -> Any:
    """The letter of `MESSAGES` as a chat completion through the proxy, sent as `request_id` if given."""
    headers = {} if request_id is None else {"Idempotency-Key": request_id}
    return app.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        extra_headers=headers,
        **options,  # type: ignore[arg-type]
    )


def event_of(server: Server, practice_id: str, request_id: str, status: str = "success") -> UsageLine:
    with server.budget() as budget:
        rows = budget.usage_report(practice_id).rows
    [line] = [
        row
        for row in rows
        if isinstance(row, UsageLine) and row.request_id == request_id and row.status == status
    ]
    return line


def price_of(server: Server, model: str, usage: dict[str, Any]) -> int:
    with server.budget() as budget:
        return budget.price(model, **usage).cost_micros


def chat_usage(reported: dict[str, Any]) -> dict[str, Any]:
    details = reported.get("prompt_tokens_details") or {}
    return {
        "input_tokens": reported["prompt_tokens"],
        "cached_input_tokens": details.get("cached_tokens") or 0,
        "output_tokens": reported["completion_tokens"],
    }


def held_usd(server: Server, practice_id: str) -> Decimal:
    with server.budget() as budget:
        return budget.snapshot(practice_id).held_usd


def test_a_chat_completion_is_charged_the_catalog_price_of_the_upstreams_usage(
    server: Server, upstream: FakeOpenAI
) -> None:
    practice_id, api_key = funded_practice(server)
    upstream.cached_tokens = 5
    with client(server, api_key) as app:
        completion = app.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"Idempotency-Key": "letter-1"},  # type: ignore[arg-type]
        )
    reported = upstream.answers[-1].usage
    assert reported is not None
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == reported["prompt_tokens"]
    event = event_of(server, practice_id, "letter-1")
    assert event.cost_micros == price_of(server, "gpt-4o-mini", chat_usage(reported)) > 0
    assert (event.operation, event.cached_input_tokens, event.estimated) == ("chat", 5, False)
    assert held_usd(server, practice_id) == 0
    forwarded = upstream.requests[-1]
    assert forwarded.headers["authorization"] == f"Bearer {upstream.api_key}"  # the vendor's key, not ours


def test_streaming_and_plain_calls_cost_the_same_and_the_injected_usage_chunk_stays_hidden(
    server: Server, upstream: FakeOpenAI
) -> None:
    practice_id, api_key = funded_practice(server)
    with client(server, api_key) as app:
        letter(app, "plain")
        chunks = list(letter(app, "streamed", stream=True))
        with_usage = list(letter(app, "streamed-usage", stream=True, stream_options={"include_usage": True}))

    assert upstream.requests[-2].json["stream_options"] == {"include_usage": True}  # injected upstream
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert with_usage[-1].usage is not None
    assert with_usage[-1].choices == []
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text.split() == upstream.words()[0]
    costs = {request_id: event_of(server, practice_id, request_id).cost_micros
             for request_id in ("plain", "streamed", "streamed-usage")}  # fmt: skip
    assert len(set(costs.values())) == 1
    assert costs["plain"] > 0
    assert held_usd(server, practice_id) == 0


def test_responses_plain_and_streaming_are_charged_from_their_usage(
    server: Server, upstream: FakeOpenAI
) -> None:
    practice_id, api_key = funded_practice(server)
    with client(server, api_key) as app:
        app.responses.create(
            model="gpt-4o-mini", input="Ein Brief, bitte.", extra_headers={"Idempotency-Key": "r-plain"}
        )
        plain_usage = upstream.answers[-1].usage
        with app.responses.create(model="gpt-4o-mini", input="Ein Brief, bitte.", stream=True,
                                  extra_headers={"Idempotency-Key": "r-stream"}) as stream:  # fmt: skip
            events = list(stream)
    assert events[-1].type == "response.completed"
    assert plain_usage is not None
    expected = price_of(server, "gpt-4o-mini", {"input_tokens": plain_usage["input_tokens"],
                                                "output_tokens": plain_usage["output_tokens"]})  # fmt: skip
    assert event_of(server, practice_id, "r-plain").cost_micros == expected
    assert event_of(server, practice_id, "r-stream").cost_micros == expected


def test_embeddings_are_charged_by_their_input_tokens(server: Server, upstream: FakeOpenAI) -> None:
    practice_id, api_key = funded_practice(server)
    with client(server, api_key) as app:
        app.embeddings.create(model="text-embedding-3-small",
                              input=["Befund", "Überweisung an die Kardiologie"],
                              extra_headers={"Idempotency-Key": "embed-1"})  # fmt: skip
    reported = upstream.answers[-1].usage
    assert reported is not None
    event = event_of(server, practice_id, "embed-1")
    assert event.input_tokens == reported["prompt_tokens"]
    assert event.cost_micros == price_of(
        server, "text-embedding-3-small", {"input_tokens": reported["prompt_tokens"]}
    )
    assert event.operation == "embed"


def wav(seconds: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * 16_000 * seconds)
    return buffer.getvalue()


def test_a_transcription_is_charged_by_the_uploads_real_duration(
    server: Server, upstream: FakeOpenAI
) -> None:
    practice_id, api_key = funded_practice(server)
    with client(server, api_key) as app:
        result = app.audio.transcriptions.create(
            model="whisper-1", file=("diktat.wav", wav(90), "audio/wav"),
            extra_headers={"Idempotency-Key": "dictation-1"},
        )  # fmt: skip
    assert result.text
    event = event_of(server, practice_id, "dictation-1")
    assert event.audio_ms == 90_000
    assert event.cost_micros == price_of(server, "whisper-1", {"audio_seconds": 90})
    assert event.operation == "transcribe"
    [upload] = upstream.requests[-1].files.values()
    assert upload.data == wav(90)


def test_a_token_priced_transcription_is_charged_by_its_reported_tokens(
    server: Server, upstream: FakeOpenAI
) -> None:
    practice_id, api_key = funded_practice(server)
    with client(server, api_key) as app:
        app.audio.transcriptions.create(model="gpt-4o-transcribe", file=("diktat.wav", wav(20), "audio/wav"),
                                        extra_headers={"Idempotency-Key": "dictation-2"})  # fmt: skip
    reported = upstream.answers[-1].usage
    assert reported is not None
    usage = {"input_tokens": reported["input_tokens"], "output_tokens": reported["output_tokens"],
             "input_audio_tokens": reported["input_token_details"]["audio_tokens"]}  # fmt: skip
    assert event_of(server, practice_id, "dictation-2").cost_micros == price_of(
        server, "gpt-4o-transcribe", usage
    )


def test_an_upstream_error_voids_the_hold_and_records_an_error(server: Server, upstream: FakeOpenAI) -> None:
    practice_id, api_key = funded_practice(server)
    upstream.fail_next(1, status=500, path="/v1/chat/completions")
    with client(server, api_key) as app, pytest.raises(openai.InternalServerError):
        letter(app, "broken")
    failed = event_of(server, practice_id, "broken", status="error")
    assert (failed.cost_micros, failed.error_code) == (0, "upstream_500")
    event_of(server, practice_id, "broken", status="voided")
    assert held_usd(server, practice_id) == 0


def test_an_upstream_error_to_a_stream_reaches_the_app_and_voids_the_hold(
    server: Server, upstream: FakeOpenAI
) -> None:
    """An upstream refusing a streaming call (a prompt too long, say) answers with a plain error, not
    a stream: it reaches the app as that error, not as a 500 of the proxy's."""
    practice_id, api_key = funded_practice(server)
    too_long = {"error": {"message": "maximum context length exceeded", "type": "invalid_request_error",
                          "param": "messages", "code": "context_length_exceeded"}}  # fmt: skip
    for attempt in range(3):  # each one's connection to the upstream is let go, not kept busy
        upstream.fail_next(1, status=400, body=too_long, path="/v1/chat/completions")
        with client(server, api_key) as app, pytest.raises(openai.BadRequestError) as refused:
            letter(app, f"too-long-{attempt}", stream=True)
        assert refused.value.code == "context_length_exceeded"
        failed = event_of(server, practice_id, f"too-long-{attempt}", status="error")
        assert failed.error_code == "upstream_400"
    assert held_usd(server, practice_id) == 0


def test_a_client_leaving_mid_stream_is_charged_what_was_streamed_and_the_hold_released(
    server: Server, upstream: FakeOpenAI
) -> None:
    practice_id, api_key = funded_practice(server)
    upstream.reply_words, upstream.chunk_delay = 200, 0.02
    with client(server, api_key) as app:
        stream = letter(app, "walked-away", stream=True)
        received = [next(stream) for _ in range(5)]
        stream.close()
    assert received

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and held_usd(server, practice_id) > 0:
        time.sleep(0.05)
    assert held_usd(server, practice_id) == 0
    event = event_of(server, practice_id, "walked-away")
    assert event.estimated is True  # the usage never came: charged by the text streamed so far
    assert 0 < event.output_tokens < 200
    assert event.cost_micros > 0


def test_an_upstream_stream_breaking_off_is_an_error_the_app_reads_and_is_charged_what_came(
    server: Server, upstream: FakeOpenAI
) -> None:
    """The provider's connection breaking mid-stream ends the app's stream with an error event the
    `openai` package raises as an `APIError` (not a cut connection), and the proxy logs no traceback."""
    practice_id, api_key = funded_practice(server)
    upstream.reply_words, upstream.drop_stream_after = 40, 6
    logged = len(server.logs())
    with client(server, api_key) as app:
        stream = letter(app, "broken-off", stream=True)
        received: list[str] = []

        def read_all() -> None:
            for chunk in stream:
                received.extend(choice.delta.content or "" for choice in chunk.choices)

        with pytest.raises(openai.APIError) as broken:
            read_all()
    assert type(broken.value) is openai.APIError  # an error event, not APIConnectionError
    assert "broke off" in broken.value.message
    assert "".join(received).split() == upstream.words(6)[0]

    event = event_of(server, practice_id, "broken-off")
    assert event.estimated is True  # no usage came: charged by the text streamed
    assert 0 < event.output_tokens < 40
    assert held_usd(server, practice_id) == 0
    assert "Traceback" not in server.logs()[logged:]


def test_what_the_upstream_sets_for_one_practices_call_is_not_sent_with_anothers(
    server: Server, upstream: FakeOpenAI
) -> None:
    """The proxy keeps no cookies: a cookie the upstream sets in one practice's answer never goes
    upstream again, with that practice's next call or another's."""
    _first, first_key = funded_practice(server)
    _second, second_key = funded_practice(server)
    upstream.fail_next(1, status=429, headers={"Set-Cookie": "session=first-practice; Path=/"},
                       path="/v1/chat/completions")  # fmt: skip
    with client(server, first_key) as app, pytest.raises(openai.RateLimitError):
        letter(app)
    for api_key in (first_key, second_key):
        with client(server, api_key) as app:
            letter(app)
        assert "cookie" not in upstream.requests[-1].headers


def test_an_upstream_refusal_tells_the_app_when_to_try_again(server: Server, upstream: FakeOpenAI) -> None:
    """The upstream's retry headers reach the `openai` package, which times its retries by them."""
    _practice_id, api_key = funded_practice(server)
    told = {"retry-after": "7", "retry-after-ms": "7000", "x-should-retry": "true"}
    upstream.fail_next(1, status=429, headers=told | {"x-internal": "no"}, path="/v1/chat/completions")
    with client(server, api_key) as app, pytest.raises(openai.RateLimitError) as refused:
        letter(app)
    headers = refused.value.response.headers
    assert {name: headers.get(name) for name in told} == told
    assert "x-internal" not in headers


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Brief"}], "temperature": NaN}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Brief \\ud800"}]}',
        b'{"model": "gpt-4o-mini", "messages": [], "stream": true, "stream_options": {"x": Infinity}}',
        b'{"model": "gpt-4o-mini", "input": "Brief", "max_output_tokens": 1e400}',
        b'{"model": "gpt-4o-mini", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"model": "gpt-4o-mini", "messages": [' + b'{"content": ' * 900 + b'"Brief"' + b"}" * 900 + b"]}",
    ],
    ids=["NaN", "lone surrogate", "Infinity in a stream", "a number too large for a float",
         "nested past the parser's depth", "nested past what is read and sent on"],
)  # fmt: skip
def test_a_body_that_cannot_be_sent_on_is_refused_before_anything_is_held(
    server: Server, upstream: FakeOpenAI, body: bytes
) -> None:
    """JSON that Python reads but no JSON encoder writes back (NaN, Infinity, lone surrogates) was a
    500 after the hold was taken, and the hold stayed until it expired; a body nested a thousand
    deep was a 500 too."""
    practice_id, api_key = funded_practice(server)
    calls_before = len(upstream.requests)
    with server.client(api_key) as app:
        for path in ("/openai/v1/chat/completions", "/openai/v1/responses"):
            refused = app.post(path, content=body, headers={"Content-Type": "application/json"})
            assert_problem(refused, 422, "body")
        assert app.get("/openai/v1/models").status_code == 200  # the connection is still good
    assert len(upstream.requests) == calls_before + 1  # the models list only
    assert held_usd(server, practice_id) == 0
    assert "Traceback" not in server.logs()


def test_usage_details_of_an_unexpected_shape_are_ignored_not_a_failure(
    server: Server, upstream: FakeOpenAI
) -> None:
    """An OpenAI-compatible upstream that sends its usage breakdown as something other than an
    object is charged by its token counts; the answer still reaches the caller."""
    practice_id, api_key = funded_practice(server)
    answer = {"id": "chatcmpl-odd", "object": "chat.completion", "model": "gpt-4o-mini",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "Sehr geehrte Frau Muster"}}],
              "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160,
                        "prompt_tokens_details": "none"}}  # fmt: skip
    upstream.fail_next(1, status=200, body=answer, path="/v1/chat/completions")
    with client(server, api_key) as app:
        completion = letter(app, "odd-usage")
    assert completion.choices[0].message.content == "Sehr geehrte Frau Muster"
    charged = event_of(server, practice_id, "odd-usage")
    assert charged.cost_micros == price_of(server, "gpt-4o-mini", {"input_tokens": 120, "output_tokens": 40})
    assert held_usd(server, practice_id) == 0


def test_the_proxys_own_errors_carry_openais_error_object(server: Server, upstream: FakeOpenAI) -> None:
    """An app on OpenAI's client libraries reads `error.message`, `.code` and `.param` of the proxy's
    own refusals as of OpenAI's; the problem fields stay beside them."""
    _practice_id, api_key = funded_practice(server)
    with client(server, api_key) as app, pytest.raises(openai.UnprocessableEntityError) as invalid:
        app.chat.completions.create(model="", messages=MESSAGES)  # type: ignore[arg-type]
    error = invalid.value
    assert (error.code, error.param, error.type) == ("INVALID_INPUT", "model", "invalid_request_error")
    assert error.message == "Error code: 422 - model is required: the model to call"
    assert invalid.value.response.json()["error_code"] == "INVALID_INPUT"
    with client(server, "not-a-key") as app, pytest.raises(openai.AuthenticationError) as unknown:
        app.models.list()
    assert unknown.value.code == "UNAUTHORIZED"
    with server.client(api_key) as http:  # the API's own routes answer plain problems
        assert "error" not in http.post("/v1/authorizations", json={}).json()


def test_a_bad_device_id_a_wrong_method_or_an_unknown_path_is_a_problem_with_nothing_held(
    server: Server, upstream: FakeOpenAI
) -> None:
    """The proxy's routes check `X-Device-Id` as the API's do, and answer unknown paths and methods
    with problems in OpenAI's shape too."""
    practice_id, api_key = funded_practice(server)
    calls_before = len(upstream.requests)
    with client(server, api_key) as app, pytest.raises(openai.UnprocessableEntityError) as invalid:
        app.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,  # type: ignore[arg-type]
                                    extra_headers={"X-Device-Id": "d" * 201})  # fmt: skip
    assert (invalid.value.code, invalid.value.param) == ("INVALID_INPUT", "X-Device-Id")
    with server.client(api_key) as http:
        wrong_method = http.get("/openai/v1/chat/completions")
        unknown = http.post("/openai/v1/completions-of-tomorrow", json={})
    assert assert_problem(wrong_method, 405)["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert assert_problem(unknown, 404)["error"]["code"] == "NOT_FOUND"
    assert len(upstream.requests) == calls_before
    assert held_usd(server, practice_id) == 0
    with server.budget() as budget:
        assert not budget.usage_report(practice_id).rows


def test_an_exhausted_budget_is_a_402_the_openai_package_surfaces_with_our_code(
    server: Server, upstream: FakeOpenAI
) -> None:
    _practice_id, api_key = funded_practice(server, included_usd="0")
    calls_before = len(upstream.requests)
    with client(server, api_key) as app, pytest.raises(openai.APIStatusError) as refused:
        letter(app)
    assert refused.value.status_code == 402
    assert refused.value.code == "AI_BUDGET_EXCEEDED"
    body = refused.value.response.json()
    assert body["reason"] == "included_exhausted_no_credit"
    assert body["message_user"]
    assert len(upstream.requests) == calls_before  # never forwarded


def test_the_proxys_402_speaks_the_language_the_app_asks_for(server: Server, upstream: FakeOpenAI) -> None:
    _practice_id, api_key = funded_practice(server, included_usd="0")
    app = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=api_key, max_retries=0,
                        default_headers={"Accept-Language": "it-CH"})  # fmt: skip
    with app, pytest.raises(openai.APIStatusError) as refused:
        letter(app)
    body = refused.value.response.json()
    renews = date.fromisoformat(body["renewal_date"])
    italian = text("Refusal: allowance used up, renews on {renewal_date}", "it-CH",
                   renewal_date=format_date(renews, "it-CH"))  # fmt: skip
    assert body["message_user"] == body["error"]["message"] == italian


def test_models_are_listed_from_the_upstream(server: Server, upstream: FakeOpenAI) -> None:
    _practice_id, api_key = funded_practice(server)
    with client(server, api_key) as app:
        listed = [model.id for model in app.models.list()]
    assert listed == upstream.models


def test_a_wrong_key_is_refused_before_anything_is_forwarded(server: Server, upstream: FakeOpenAI) -> None:
    calls_before = len(upstream.requests)
    with client(server, "not-a-key") as app, pytest.raises(openai.AuthenticationError):
        letter(app)
    assert len(upstream.requests) == calls_before


def test_a_guard_over_the_http_client_charges_the_same_as_the_proxy(
    server: Server, upstream: FakeOpenAI
) -> None:
    """In-process calls to the provider, gated over HTTP by a `BudgetClient`: a stream closed early is
    posted as an estimate through `POST /v1/usage` too."""
    practice_id, api_key = funded_practice(server)
    upstream.reply_words, upstream.chunk_delay = 60, 0.01
    with (
        BudgetClient(server.url, api_key) as gate,
        openai.OpenAI(base_url=f"{upstream.url}/v1", api_key=upstream.api_key, max_retries=0) as provider,
    ):
        client = guard(provider, gate)
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, request_id="guarded")
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, request_id="guarded-cut"
        )
        next(iter(stream))
        stream.close()
    reported = upstream.answers[-2].usage
    assert reported is not None
    guarded = event_of(server, practice_id, "guarded")
    assert guarded.cost_micros == price_of(server, "gpt-4o-mini", chat_usage(reported))
    assert event_of(server, practice_id, "guarded-cut").estimated is True
    assert held_usd(server, practice_id) == 0


def test_an_azure_style_upstream_gets_its_api_key_header_and_a_timeout_voids(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, upstream: FakeOpenAI
) -> None:
    """`AIBUDGET_UPSTREAM_AUTH_HEADER=api-key` (Azure OpenAI) sends the key as `api-key`, and the base
    address's `api-version` goes with every call; an upstream slower than
    `AIBUDGET_UPSTREAM_TIMEOUT_SECONDS` is a 504, its hold released, an error recorded."""
    for database in server_databases(backend, request):
        base_url = f"{upstream.url}/v1?api-version=2024-10-21"
        azure = start_server(
            tmp_path / "var", database, AIBUDGET_UPSTREAM_BASE_URL=base_url,
            AIBUDGET_UPSTREAM_API_KEY=upstream.api_key, AIBUDGET_UPSTREAM_AUTH_HEADER="api-key",
            AIBUDGET_UPSTREAM_TIMEOUT_SECONDS="0.5",
        )  # fmt: skip
        try:
            practice_id, api_key = funded_practice(azure)
            with client(azure, api_key) as app:
                letter(app)
                forwarded = upstream.requests[-1].headers
                assert upstream.requests[-1].query == {"api-version": "2024-10-21"}
                upstream.delay = 2
                try:
                    with pytest.raises(openai.APIStatusError) as slow:
                        letter(app, "slow")
                finally:
                    upstream.delay = 0
            assert slow.value.status_code == 504
            timed_out = event_of(azure, practice_id, "slow", status="error")
            assert timed_out.error_code == "upstream_timeout"
            assert held_usd(azure, practice_id) == 0
        finally:
            stop_server(azure)
    assert forwarded["api-key"] == upstream.api_key
    assert "authorization" not in forwarded


def test_a_retry_of_a_call_in_flight_is_refused_instead_of_paying_the_provider_twice(
    server: Server, upstream: FakeOpenAI
) -> None:
    practice_id, api_key = funded_practice(server)
    with server.budget() as budget:  # the first attempt's hold, its answer not yet back
        budget.authorize(request_id="in-flight", practice_id=practice_id, operation="chat",
                         model="gpt-4o-mini", prompt_chars=prompt_chars({"messages": MESSAGES}))  # fmt: skip
    calls_before = len(upstream.requests)
    with client(server, api_key) as app, pytest.raises(openai.ConflictError) as refused:
        letter(app, "in-flight")
    assert refused.value.response.json()["error_code"] == "CONFLICT"  # not another body: the same call
    assert len(upstream.requests) == calls_before


def test_a_call_sent_again_after_its_answer_is_refused_and_charged_once(
    server: Server, upstream: FakeOpenAI
) -> None:
    practice_id, api_key = funded_practice(server)
    with client(server, api_key) as app:
        letter(app, "answered")
        calls_before = len(upstream.requests)
        with pytest.raises(openai.ConflictError) as refused:
            letter(app, "answered")
    assert "was sent before" in refused.value.response.json()["detail"]
    assert len(upstream.requests) == calls_before
    event_of(server, practice_id, "answered")  # one event, charged once
