"""A local fake of an OpenAI-compatible upstream, served over real HTTP (HTTP/1.1) on 127.0.0.1.

Tests of the proxy point its upstream at `fake.url`; the official `openai` package can talk to it
directly too, so its parsing of every shape below is exercised, not mocked::

    with FakeOpenAI() as fake:
        client = openai.OpenAI(base_url=fake.url + "/v1", api_key=fake.api_key, max_retries=0)
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        assert fake.answers[-1].usage == completion.usage.model_dump(exclude_none=True) ...

Authentication: `Authorization: Bearer <api_key>` or Azure's `api-key: <api_key>`; anything else is
401 `invalid_request_error` / `invalid_api_key` (OpenAI's error shape, also when the key is missing).

What it covers (JSON bodies unless said; the model name is echoed, or mapped by `model_map`):

- `POST /v1/chat/completions`: a `chat.completion` with the reply text (`reply_text`, or the first
  `reply_words` words of a German letter, "Sehr geehrte Frau Muster, …") and `usage` with
  `prompt_tokens_details` / `completion_tokens_details`. `max_completion_tokens` (or `max_tokens`)
  cuts the reply to that many words, `finish_reason` "length". `stream: true` → SSE: a role chunk,
  one `chat.completion.chunk` per word, a chunk with `finish_reason`, then — only when the request had
  `stream_options: {"include_usage": true}` — a chunk with `choices: []` and `usage` (the earlier
  chunks then carry `"usage": null`, as OpenAI's do), then `data: [DONE]`.
- `POST /v1/responses`: a `response` with one assistant message and `usage` (`input_tokens_details`
  with `cached_tokens` and `cache_write_tokens` — the latter is required by openai 3.57's model,
  `output_tokens_details.reasoning_tokens`). `max_output_tokens` cuts the reply: status
  "incomplete", `incomplete_details.reason` "max_output_tokens". `stream: true` → the event sequence
  `response.created`, `response.in_progress`, `response.output_item.added`,
  `response.content_part.added`, one `response.output_text.delta` per word,
  `response.output_text.done`, `response.content_part.done`, `response.output_item.done`,
  `response.completed` (or `response.incomplete`) whose `response` carries `usage`; each as
  `event: <type>` + `data: {...}` with increasing `sequence_number`; no `[DONE]` (OpenAI sends none).
- `POST /v1/embeddings`: `input` a string, strings, or token arrays; one deterministic vector per
  input (`dimensions`, default `embedding_dimensions`). The `openai` package asks for
  `encoding_format: "base64"` unless told otherwise and decodes little-endian float32 itself — so
  that is honoured; the values are multiples of 1/256, exact in float32 and float alike.
- `POST /v1/audio/transcriptions` (multipart: `file`, `model`, optional `response_format`,
  `prompt`, `stream`): the text is `transcript`. Models with "transcribe" in the name
  (`gpt-4o-transcribe`, `gpt-4o-mini-transcribe`) answer `{"text", "usage": {"type": "tokens", …}}`
  for json, plain text for `text`, 400 for other formats; `stream=true` → SSE
  `transcript.text.delta` per word then `transcript.text.done` with `usage` (no `[DONE]`). Other
  models (`whisper-1`) answer `{"text"}` (json, no usage), plain text for `text`/`srt`/`vtt` (with a
  trailing newline, as OpenAI sends), and `verbose_json` with `duration`.
- `GET /v1/models`, `GET /v1/models/{id}` from `models`.
- Unknown paths → 404, bad JSON / missing fields → 400, all in OpenAI's error shape.

Deterministic usage (the module functions compute it; `answers` records what each successful answer
reported — put there just before its last bytes are written, so a client holding the answer finds it
recorded, and corrected if that write fails):

- chat `prompt_tokens` = `prompt_tokens_of(messages)`: characters of all text content // 4, at least 1
  (image/audio parts count nothing); Responses `input_tokens` = `input_tokens_of(input, instructions)`.
- `completion_tokens` / `output_tokens` = words of the (possibly cut) reply + `reasoning_tokens`
  (reported in the details) — the same whether streamed or not; `FakeOpenAI.words(limit)` tells the
  words.
- `cached_tokens` = `min(fake.cached_tokens, prompt tokens)`.
- embeddings `prompt_tokens` = `embedding_tokens_of(input)`: per string chars // 4 (at least 1), per
  token array its length.
- transcription tokens: `audio_tokens_of(file)` (10 per second of a WAV file, else one per 1000
  bytes, at least 1), `text_tokens` = chars of `prompt` // 4, `output_tokens` = words of the text.

Test controls: `fail_next` (count, status, body, headers, path, content_type: any answer, a scripted
stream too), `delay` (before any answer), `chunk_delay` (between SSE events), `drop_stream_after`
(cut the connection after N words, no end of body), `reply_words`, `reply_text`, `cached_tokens`,
`reasoning_tokens`, `transcript`, `model_map`, `models`, `embedding_dimensions`. Inspection:
`requests`, `answers`, `disconnects` (the client went away during `delay`, between SSE events, or
writing failed), `errors` (bugs in the fake itself), `wait_for(predicate, timeout)`.

What it does not do: tools/function calls, `n` > 1, logprobs, images/audio output, `stop`
sequences, the legacy `/v1/completions`, moderations, files/batches/assistants, Azure deployment
paths (`/openai/deployments/...`; only the `api-key` header is Azure's), request validation beyond
the fields it reads, rate-limit headers, gzip, HTTP/2, TLS.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import json
import math
import select
import socket
import struct
import threading
import time
import wave
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

API_KEY = "sk-upstream-fake"

REPLY_BASE = (
    "Sehr geehrte Frau Muster, vielen Dank für Ihre Nachricht vom Montag. Gerne bestätigen wir Ihnen "
    "den Termin am Donnerstag um zehn Uhr in unserer Praxis. Bitte bringen Sie Ihre Versichertenkarte "
    "und die aktuellen Befunde mit. Mit freundlichen Grüßen, Ihr Praxisteam"
)
TRANSCRIPT = "Guten Tag, hier spricht Frau Muster. Ich möchte meinen Termin am Donnerstag verschieben."
DEFAULT_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "o4-mini",
    "text-embedding-3-small",
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
)
AUDIO_TOKENS_PER_SECOND = 10

_T = TypeVar("_T")
JSON = dict[str, Any]


# -- deterministic token counting ------------------------------------------------------------


def reply_words(count: int) -> list[str]:
    """The first `count` words of the default reply (`REPLY_BASE`, repeated as often as needed)."""
    base = REPLY_BASE.split()
    return list(itertools.islice(itertools.cycle(base), max(count, 0)))


def reply_text(count: int) -> str:
    """The default reply of `count` words, as the chat/responses endpoints send it."""
    return " ".join(reply_words(count))


def text_of(value: object) -> str:
    """All text in a message list / Responses input: strings, `content`, and parts' `text`/`output`
    joined without separators; image, audio and file parts contribute nothing."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(text_of(item) for item in value)
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return str(value["text"])
        if "content" in value:
            return text_of(value["content"])
        if isinstance(value.get("output"), str):  # function_call_output items
            return str(value["output"])
    return ""


def _chars_to_tokens(chars: int) -> int:
    return max(1, chars // 4)


def prompt_tokens_of(messages: object) -> int:
    """Chat `prompt_tokens`: characters of all text content // 4, at least 1."""
    return _chars_to_tokens(len(text_of(messages)))


def input_tokens_of(input: object, instructions: str | None = None) -> int:
    """Responses `input_tokens`: characters of `input`'s text plus `instructions` // 4, at least 1."""
    return _chars_to_tokens(len(text_of(input)) + len(instructions or ""))


def _embedding_inputs(value: object) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, int) for item in value):
        return [[int(item) for item in value]]
    if isinstance(value, list) and value:
        items: list[str | list[int]] = []
        for item in value:
            if isinstance(item, str):
                items.append(item)
            elif isinstance(item, list) and all(isinstance(token, int) for token in item):
                items.append([int(token) for token in item])
            else:
                raise ValueError("input items must be strings or token arrays")
        return items
    raise ValueError("input must be a non-empty string, list of strings or token arrays")


def embedding_tokens_of(input: object) -> int:
    """Embeddings `prompt_tokens`: per string chars // 4 (at least 1), per token array its length."""
    return sum(
        _chars_to_tokens(len(item)) if isinstance(item, str) else len(item)
        for item in _embedding_inputs(input)
    )


def wav_duration_of(data: bytes) -> float | None:
    """Seconds of a WAV file, None if `data` is no WAV the stdlib `wave` module reads."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            rate = wav.getframerate()
            return wav.getnframes() / rate if rate else None
    except (wave.Error, EOFError, struct.error):
        return None


def audio_tokens_of(data: bytes) -> int:
    """Transcription audio tokens: 10 per second of a WAV file (rounded up), else 1 per 1000 bytes;
    at least 1."""
    duration = wav_duration_of(data)
    if duration is not None:
        return max(1, math.ceil(duration * AUDIO_TOKENS_PER_SECOND))
    return max(1, len(data) // 1000)


def chat_usage(
    prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> JSON:
    """A Chat Completions `usage` object; `completion_tokens` includes the reasoning tokens."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def responses_usage(
    input_tokens: int, output_tokens: int, *, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> JSON:
    """A Responses `usage` object; `output_tokens` includes the reasoning tokens."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def transcription_usage(audio_tokens: int, text_tokens: int, output_tokens: int) -> JSON:
    """The `usage` of a token-billed transcription (`gpt-4o-transcribe`, `gpt-4o-mini-transcribe`)."""
    return {
        "type": "tokens",
        "input_tokens": audio_tokens + text_tokens,
        "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": text_tokens},
        "output_tokens": output_tokens,
        "total_tokens": audio_tokens + text_tokens + output_tokens,
    }


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> JSON:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def default_error_body(status: int) -> JSON:
    """The error body `fail_next` sends for `status` when given none."""
    if status == 429:
        return error_body(
            "Rate limit reached for requests (fake). Please try again in 1s.",
            "requests",
            "rate_limit_exceeded",
        )
    if status == 401:
        return error_body("Incorrect API key provided (fake).", "invalid_request_error", "invalid_api_key")
    if status == 503:
        return error_body("The server is overloaded or not ready yet (fake).", "server_error")
    if status >= 500:
        return error_body("The server had an error while processing your request (fake).", "server_error")
    return error_body(f"Fake failure ({status}).", "invalid_request_error")


def embedding_vector(item: str | list[int], dimensions: int) -> list[float]:
    """The deterministic embedding of one input: multiples of 1/256 in [-0.5, 0.5)."""
    seed = item.encode() if isinstance(item, str) else json.dumps(item).encode()
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        values.extend(byte / 256 - 0.5 for byte in digest)
        counter += 1
    return values[:dimensions]


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedFile:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One request as the fake received it (before authentication or failures)."""

    method: str
    path: str  # without the query
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes
    json: Any = None  # the parsed JSON body, None if there was none or it was no JSON
    form: dict[str, str] = field(default_factory=dict)  # multipart text fields
    files: dict[str, UploadedFile] = field(default_factory=dict)  # multipart files by field name
    request_id: str = ""
    status: int | None = None  # the status answered, once known


@dataclass(frozen=True)
class Answer:
    """One successful (2xx) answer of an endpoint. `usage` is the usage object the client was sent —
    None when none was sent (a chat stream without `include_usage`, `whisper-1`, the stream broke off
    before the usage event, the client went away)."""

    path: str
    model: str | None
    streaming: bool
    usage: JSON | None
    text: str  # the reply / transcript / "" (embeddings, models) — as far as it was sent
    finish_reason: str | None  # chat: "stop"/"length"; responses: "completed"/"incomplete"
    completed: bool  # the whole body was written (a stream to its end)
    request_id: str


@dataclass(frozen=True)
class Disconnect:
    """The client went away before the answer was complete."""

    path: str
    phase: Literal["delay", "answer", "stream"]
    events_sent: int  # SSE events written before it was noticed
    request_id: str


@dataclass
class _Failure:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...]
    path: str | None


class _ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = error_body(message, "invalid_request_error", code, param)


# -- the fake --------------------------------------------------------------------------------


class FakeOpenAI:
    """The fake upstream; see the module doc. Thread-safe; one instance per test."""

    api_key = API_KEY

    def __init__(self, api_key: str | None = None) -> None:
        if api_key is not None:
            self.api_key = api_key
        # behaviour; tests assign these directly
        self.delay: float = 0.0
        self.chunk_delay: float = 0.0
        self.reply_words: int = 12
        self.reply_text: str | None = None  # overrides `reply_words` (split on whitespace)
        self.cached_tokens: int = 0
        self.reasoning_tokens: int = 0
        self.transcript: str = TRANSCRIPT
        self.embedding_dimensions: int = 8
        self.models: list[str] = list(DEFAULT_MODELS)
        self.model_map: dict[str, str] = {}  # requested model -> model name reported
        self.drop_stream_after: int | None = None  # words; then the connection is cut mid-body
        # state
        self._cond = threading.Condition()  # guards the records below; notified on every change
        self._requests: list[RecordedRequest] = []
        self._answers: list[Answer] = []
        self._disconnects: list[Disconnect] = []
        self._errors: list[str] = []
        self._failures: list[_Failure] = []
        self._ids = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        if self._server is not None:
            raise RuntimeError("FakeOpenAI is already running")
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: running delays and streams end, open (keep-alive) connections are closed."""
        self._stopping.set()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            with self._cond:
                connections = list(self._connections)
            for connection in connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, without `/v1`."""
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- controls ------------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        body: Mapping[str, Any] | str | bytes | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        path: str | None = None,
        content_type: str | None = None,
    ) -> None:
        """Answer the next `count` authenticated requests (only those to `path`, e.g.
        "/v1/chat/completions", if given) with `status` and `body`: a mapping is sent as JSON, str/bytes
        as-is (text/plain, or `content_type` if given: "text/event-stream" for a scripted stream),
        None → OpenAI's error shape for the status (`default_error_body`). Adds to failures already
        queued."""
        if body is None or isinstance(body, Mapping):
            raw = json.dumps(dict(body) if body is not None else default_error_body(status)).encode()
            content_type = "application/json"
        else:
            raw = body.encode() if isinstance(body, str) else body
            content_type = content_type or "text/plain; charset=utf-8"
        failure = _Failure(status, raw, content_type, tuple((headers or {}).items()), path)
        with self._cond:
            self._failures.extend(failure for _ in range(count))

    def wait_for(self, predicate: Callable[[], _T], timeout: float = 5) -> _T:
        """Wait until `predicate()` (called with the fake's lock held) is truthy and return its value;
        `TimeoutError` after `timeout` seconds. Re-checked on every request, answer and disconnect."""
        with self._cond:
            result = self._cond.wait_for(predicate, timeout)
        if not result:
            raise TimeoutError(f"condition not met within {timeout} s")
        return result

    def reset(self) -> None:
        """Forget the records and queued failures (the settings stay)."""
        with self._cond:
            self._requests.clear()
            self._answers.clear()
            self._disconnects.clear()
            self._errors.clear()
            self._failures.clear()
            self._cond.notify_all()

    # -- inspection ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order (a snapshot)."""
        with self._cond:
            return list(self._requests)

    @property
    def answers(self) -> list[Answer]:
        """Every successful endpoint answer, in the order they finished (a snapshot)."""
        with self._cond:
            return list(self._answers)

    @property
    def disconnects(self) -> list[Disconnect]:
        with self._cond:
            return list(self._disconnects)

    @property
    def errors(self) -> list[str]:
        """Exceptions raised inside the fake (its own bugs), answered with 500."""
        with self._cond:
            return list(self._errors)

    def words(self, limit: int | None = None) -> tuple[list[str], bool]:
        """The reply words the next answer sends with a token limit `limit`, and whether it was cut."""
        words = self.reply_text.split() if self.reply_text is not None else reply_words(self.reply_words)
        if limit is not None and len(words) > limit:
            return words[:limit], True
        return words, False

    # -- internals -----------------------------------------------------------------------------

    def _next_id(self) -> int:
        with self._cond:
            return next(self._ids)

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._cond:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _record(self, request: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()

    def _answered(self, request: RecordedRequest, status: int) -> None:
        with self._cond:
            request.status = status
            self._cond.notify_all()

    def _add_answer(self, answer: Answer) -> None:
        with self._cond:
            self._answers.append(answer)
            self._cond.notify_all()

    def _add_disconnect(self, disconnect: Disconnect) -> None:
        with self._cond:
            self._disconnects.append(disconnect)
            self._cond.notify_all()

    def _add_error(self, error: str) -> None:
        with self._cond:
            self._errors.append(error)
            self._cond.notify_all()

    def _take_failure(self, path: str) -> _Failure | None:
        with self._cond:
            for index, failure in enumerate(self._failures):
                if failure.path is None or failure.path == path:
                    return self._failures.pop(index)
        return None

    def _reported_model(self, model: str) -> str:
        return self.model_map.get(model, model)

    def _serve(self, ex: _Exchange, request: RecordedRequest) -> None:
        if not ex.sleep(self.delay):
            if ex.gone:
                self._add_disconnect(Disconnect(request.path, "delay", 0, request.request_id))
            return
        if not self._authorized(request.headers):
            key = _presented_key(request.headers)
            message = (
                f"Incorrect API key provided: {_mask(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
                if key
                else "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            body = error_body(message, "invalid_request_error", "invalid_api_key")
            ex.send_json(401, body)
            return
        failure = self._take_failure(request.path)
        if failure is not None:
            ex.send(failure.status, failure.body, failure.content_type, failure.headers)
            return
        try:
            self._route(ex, request)
        except _ApiError as err:
            ex.send_json(err.status, err.body)

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        authorization = headers.get("authorization", "")
        bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        return self.api_key in (bearer, headers.get("api-key"))

    def _route(self, ex: _Exchange, request: RecordedRequest) -> None:
        method, path = request.method, request.path
        if method == "POST" and path == "/v1/chat/completions":
            self._chat(ex, request, _json_object(request))
        elif method == "POST" and path == "/v1/responses":
            self._responses(ex, request, _json_object(request))
        elif method == "POST" and path == "/v1/embeddings":
            self._embeddings(ex, request, _json_object(request))
        elif method == "POST" and path == "/v1/audio/transcriptions":
            self._transcriptions(ex, request)
        elif method == "GET" and path == "/v1/models":
            data = [_model_object(model) for model in self.models]
            self._expect(ex, request, model=None, streaming=False, usage=None, text="", finish_reason=None)
            ex.send_json(200, {"object": "list", "data": data})
            self._finish(ex, request, model=None, streaming=False, usage=None, text="", finish_reason=None)
        elif method == "GET" and path.startswith("/v1/models/"):
            model = unquote(path.removeprefix("/v1/models/"))
            if model not in self.models:
                raise _ApiError(
                    404, f"The model '{model}' does not exist", param="model", code="model_not_found"
                )
            self._expect(ex, request, model=model, streaming=False, usage=None, text="", finish_reason=None)
            ex.send_json(200, _model_object(model))
            self._finish(ex, request, model=model, streaming=False, usage=None, text="", finish_reason=None)
        else:
            raise _ApiError(404, f"Invalid URL ({method} {path})")

    def _expect(
        self,
        ex: _Exchange,
        request: RecordedRequest,
        *,
        model: str | None,
        streaming: bool,
        usage: JSON | None,
        text: str,
        finish_reason: str | None,
    ) -> None:
        """Say what the answer will be if its last bytes get out: it is put into `answers` just
        before they are written, so a client that has the answer also finds it recorded."""
        ex.pending = Answer(
            request.path, model, streaming, usage, text, finish_reason, True, request.request_id
        )

    def _finish(
        self,
        ex: _Exchange,
        request: RecordedRequest,
        *,
        model: str | None,
        streaming: bool,
        usage: JSON | None,
        text: str,
        finish_reason: str | None,
    ) -> None:
        """Record the answer as it went out (replacing the `_expect`ed one if that differs)."""
        if ex.gone:
            phase: Literal["answer", "stream"] = "stream" if streaming else "answer"
            self._add_disconnect(Disconnect(request.path, phase, ex.events_sent, request.request_id))
        completed = not ex.gone and not ex.dropped
        actual = Answer(
            request.path, model, streaming, usage, text, finish_reason, completed, request.request_id
        )
        with self._cond:
            for index, answer in enumerate(self._answers):
                if answer is ex.pending and ex.committed:
                    self._answers[index] = actual
                    break
            else:
                self._answers.append(actual)
            self._cond.notify_all()

    def _limit(self, body: JSON, *names: str) -> int | None:
        for name in names:
            value = body.get(name)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _ApiError(400, f"Invalid '{name}': integer below minimum value 1.", param=name)
            return value
        return None

    # -- chat completions --------------------------------------------------------------------

    def _chat(self, ex: _Exchange, request: RecordedRequest, body: JSON) -> None:
        model = _required_str(body, "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _ApiError(400, "Missing required parameter: 'messages'.", param="messages")
        words, cut = self.words(self._limit(body, "max_completion_tokens", "max_tokens"))
        finish_reason = "length" if cut else "stop"
        prompt_tokens = prompt_tokens_of(messages)
        usage = chat_usage(
            prompt_tokens,
            len(words) + self.reasoning_tokens,
            cached_tokens=min(self.cached_tokens, prompt_tokens),
            reasoning_tokens=self.reasoning_tokens,
        )
        completion_id = f"chatcmpl-fake{self._next_id():06d}"
        created = int(time.time())
        reported = self._reported_model(model)
        text = " ".join(words)
        if not body.get("stream"):
            self._expect(
                ex, request, model=model, streaming=False, usage=usage, text=text, finish_reason=finish_reason
            )
            ex.send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": reported,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": text,
                                "refusal": None,
                                "annotations": [],
                            },
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": usage,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                },
            )
            self._finish(
                ex,
                request,
                model=model,
                streaming=False,
                usage=None if ex.gone else usage,
                text=text,
                finish_reason=finish_reason,
            )
            return

        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True

        def chunk(delta: JSON, finish: str | None = None) -> bytes:
            data: JSON = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": reported,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                data["usage"] = None
            return _sse(data)

        sent: list[str] = []
        usage_sent = False
        if ex.start_stream() and ex.event(chunk({"role": "assistant", "content": "", "refusal": None})):
            for index, word in enumerate(words):
                if self.drop_stream_after is not None and index >= self.drop_stream_after:
                    ex.drop()
                    break
                piece = word if index == 0 else " " + word
                if not (ex.sleep(self.chunk_delay) and ex.event(chunk({"content": piece}))):
                    break
                sent.append(piece)
            else:
                tail = [chunk({}, finish_reason)]
                if include_usage:
                    final: JSON = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": reported,
                        "service_tier": "default",
                        "system_fingerprint": "fp_fake",
                        "choices": [],
                        "usage": usage,
                    }
                    tail.append(_sse(final))
                tail.append(b"data: [DONE]\n\n")
                self._expect(
                    ex,
                    request,
                    model=model,
                    streaming=True,
                    usage=usage if include_usage else None,
                    text=text,
                    finish_reason=finish_reason,
                )
                for position, event in enumerate(tail):
                    last = position == len(tail) - 1
                    if not (ex.sleep(self.chunk_delay) and ex.event(event, last=last)):
                        break
                else:
                    usage_sent = include_usage
        self._finish(
            ex,
            request,
            model=model,
            streaming=True,
            usage=usage if usage_sent else None,
            text="".join(sent),
            finish_reason=finish_reason if ex.events_sent >= len(words) + 2 else None,
        )

    # -- responses -----------------------------------------------------------------------------

    def _responses(self, ex: _Exchange, request: RecordedRequest, body: JSON) -> None:
        model = _required_str(body, "model")
        if "input" not in body:
            raise _ApiError(400, "Missing required parameter: 'input'.", param="input")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise _ApiError(400, "Invalid 'instructions': expected a string.", param="instructions")
        max_output_tokens = self._limit(body, "max_output_tokens")
        words, cut = self.words(max_output_tokens)
        status = "incomplete" if cut else "completed"
        input_tokens = input_tokens_of(body["input"], instructions)
        usage = responses_usage(
            input_tokens,
            len(words) + self.reasoning_tokens,
            cached_tokens=min(self.cached_tokens, input_tokens),
            reasoning_tokens=self.reasoning_tokens,
        )
        number = self._next_id()
        response_id, message_id = f"resp_fake{number:06d}", f"msg_fake{number:06d}"
        created = int(time.time())
        text = " ".join(words)
        reported = self._reported_model(model)

        def part(content: str) -> JSON:
            return {"type": "output_text", "text": content, "annotations": [], "logprobs": []}

        def message(state: str, content: list[JSON]) -> JSON:
            return {
                "id": message_id,
                "type": "message",
                "status": state,
                "role": "assistant",
                "content": content,
            }

        def response(state: str, output: list[JSON], final_usage: JSON | None) -> JSON:
            return {
                "id": response_id,
                "object": "response",
                "created_at": created,
                "status": state,
                "completed_at": int(time.time()) if state == "completed" else None,
                "background": False,
                "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if state == "incomplete" else None,
                "instructions": instructions,
                "max_output_tokens": max_output_tokens,
                "max_tool_calls": None,
                "model": reported,
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": body.get("previous_response_id"),
                "reasoning": {"effort": None, "summary": None},
                "service_tier": "default",
                "store": body.get("store", True),
                "temperature": body.get("temperature", 1.0),
                "text": {"format": {"type": "text"}, "verbosity": "medium"},
                "tool_choice": "auto",
                "tools": [],
                "top_logprobs": 0,
                "top_p": body.get("top_p", 1.0),
                "truncation": "disabled",
                "usage": final_usage,
                "user": None,
                "metadata": body.get("metadata") or {},
            }

        final_message = message(status, [part(text)])
        if not body.get("stream"):
            self._expect(
                ex, request, model=model, streaming=False, usage=usage, text=text, finish_reason=status
            )
            ex.send_json(200, response(status, [final_message], usage))
            self._finish(
                ex,
                request,
                model=model,
                streaming=False,
                usage=None if ex.gone else usage,
                text=text,
                finish_reason=status,
            )
            return

        sequence = itertools.count()

        def event(type_: str, **fields: Any) -> bytes:
            data = {"type": type_, "sequence_number": next(sequence), **fields}
            return f"event: {type_}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

        where: JSON = {"item_id": message_id, "output_index": 0, "content_index": 0}
        head = [
            event("response.created", response=response("in_progress", [], None)),
            event("response.in_progress", response=response("in_progress", [], None)),
            event("response.output_item.added", output_index=0, item=message("in_progress", [])),
            event("response.content_part.added", **where, part=part("")),
        ]
        sent: list[str] = []
        usage_sent = False
        finished = False
        if ex.start_stream() and all(ex.sleep(self.chunk_delay) and ex.event(item) for item in head):
            for index, word in enumerate(words):
                if self.drop_stream_after is not None and index >= self.drop_stream_after:
                    ex.drop()
                    break
                piece = word if index == 0 else " " + word
                delta = event("response.output_text.delta", **where, delta=piece, logprobs=[])
                if not (ex.sleep(self.chunk_delay) and ex.event(delta)):
                    break
                sent.append(piece)
            else:
                tail = [
                    event("response.output_text.done", **where, text=text, logprobs=[]),
                    event("response.content_part.done", **where, part=part(text)),
                    event("response.output_item.done", output_index=0, item=final_message),
                    event(f"response.{status}", response=response(status, [final_message], usage)),
                ]
                self._expect(
                    ex, request, model=model, streaming=True, usage=usage, text=text, finish_reason=status
                )
                for position, item in enumerate(tail):
                    last = position == len(tail) - 1
                    if not (ex.sleep(self.chunk_delay) and ex.event(item, last=last)):
                        break
                else:
                    usage_sent = finished = True
        self._finish(
            ex,
            request,
            model=model,
            streaming=True,
            usage=usage if usage_sent else None,
            text="".join(sent),
            finish_reason=status if finished else None,
        )

    # -- embeddings ----------------------------------------------------------------------------

    def _embeddings(self, ex: _Exchange, request: RecordedRequest, body: JSON) -> None:
        model = _required_str(body, "model")
        try:
            inputs = _embedding_inputs(body.get("input"))
        except ValueError as err:
            raise _ApiError(400, f"Invalid 'input': {err}.", param="input") from None
        dimensions = body.get("dimensions", self.embedding_dimensions)
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise _ApiError(400, "Invalid 'dimensions': integer below minimum value 1.", param="dimensions")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise _ApiError(
                400, "Invalid 'encoding_format': expected 'float' or 'base64'.", param="encoding_format"
            )
        data: list[JSON] = []
        for index, item in enumerate(inputs):
            vector = embedding_vector(item, dimensions)
            encoded: list[float] | str = vector
            if encoding == "base64":
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = embedding_tokens_of(body.get("input"))
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._expect(ex, request, model=model, streaming=False, usage=usage, text="", finish_reason=None)
        ex.send_json(
            200, {"object": "list", "data": data, "model": self._reported_model(model), "usage": usage}
        )
        self._finish(
            ex,
            request,
            model=model,
            streaming=False,
            usage=None if ex.gone else usage,
            text="",
            finish_reason=None,
        )

    # -- transcriptions ------------------------------------------------------------------------

    def _transcriptions(self, ex: _Exchange, request: RecordedRequest) -> None:
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise _ApiError(400, "Expected a multipart/form-data body.")
        model = request.form.get("model")
        if not model:
            raise _ApiError(400, "Missing required parameter: 'model'.", param="model")
        upload = request.files.get("file")
        if upload is None:
            raise _ApiError(400, "Missing required parameter: 'file'.", param="file")
        response_format = request.form.get("response_format") or "json"
        streaming = request.form.get("stream", "").lower() == "true"
        text = self.transcript
        duration = wav_duration_of(upload.data)
        by_tokens = "transcribe" in model
        usage: JSON | None = None
        if by_tokens:
            if response_format not in ("json", "text"):
                raise _ApiError(
                    400,
                    f"response_format '{response_format}' is not compatible with model '{model}'.",
                    param="response_format",
                )
            text_tokens = len(request.form.get("prompt", "")) // 4
            usage = transcription_usage(audio_tokens_of(upload.data), text_tokens, len(text.split()))
        elif streaming:
            raise _ApiError(400, f"Streaming is not supported for model '{model}'.", param="stream")

        if streaming and usage is not None:
            words = text.split()
            usage_sent = False
            sent: list[str] = []
            if ex.start_stream():
                for index, word in enumerate(words):
                    piece = word if index == 0 else " " + word
                    delta = _sse({"type": "transcript.text.delta", "delta": piece, "logprobs": []})
                    if not (ex.sleep(self.chunk_delay) and ex.event(delta)):
                        break
                    sent.append(piece)
                else:
                    done = _sse(
                        {"type": "transcript.text.done", "text": text, "logprobs": [], "usage": usage}
                    )
                    self._expect(
                        ex, request, model=model, streaming=True, usage=usage, text=text, finish_reason=None
                    )
                    usage_sent = ex.sleep(self.chunk_delay) and ex.event(done, last=True)
            self._finish(
                ex,
                request,
                model=model,
                streaming=True,
                usage=usage if usage_sent else None,
                text="".join(sent),
                finish_reason=None,
            )
            return

        if response_format not in ("json", "verbose_json", "text", "srt", "vtt"):
            raise _ApiError(400, f"Invalid 'response_format': '{response_format}'.", param="response_format")
        if response_format != "json":
            usage = None  # plain text and (whisper's) verbose_json carry none here
        self._expect(ex, request, model=model, streaming=False, usage=usage, text=text, finish_reason=None)
        if response_format == "json":
            payload: JSON = {"text": text}
            if usage is not None:
                payload["usage"] = usage
            ex.send_json(200, payload)
        elif response_format == "verbose_json":
            seconds = duration if duration is not None else 0.0
            ex.send_json(
                200,
                {
                    "task": "transcribe",
                    "language": "german",
                    "duration": seconds,
                    "text": text,
                    "segments": [],
                },
            )
        else:
            seconds = duration if duration is not None else 1.0
            if response_format == "srt":
                plain = f"1\n00:00:00,000 --> {_timestamp(seconds, ',')}\n{text}\n\n"
            elif response_format == "vtt":
                plain = f"WEBVTT\n\n00:00:00.000 --> {_timestamp(seconds, '.')}\n{text}\n\n"
            else:
                plain = text + "\n"
            ex.send(200, plain.encode(), "text/plain; charset=utf-8")
        self._finish(
            ex,
            request,
            model=model,
            streaming=False,
            usage=None if ex.gone else usage,
            text=text,
            finish_reason=None,
        )


# -- helpers -----------------------------------------------------------------------------------


def _presented_key(headers: Mapping[str, str]) -> str:
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return headers.get("api-key", "")


def _mask(key: str) -> str:
    return key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 8 else "*" * len(key)


def _model_object(model: str) -> JSON:
    return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "system"}


def _required_str(body: JSON, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _ApiError(400, f"Missing required parameter: '{name}'.", param=name)
    return value


def _json_object(request: RecordedRequest) -> JSON:
    if not isinstance(request.json, dict):
        raise _ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
        )
    return request.json


def _sse(data: JSON) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """Split a multipart/form-data body into text fields and files (parts with a filename)."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ValueError("multipart body without boundary")
    form: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    for raw in body.split(b"--" + boundary.encode())[1:]:
        if raw.startswith(b"--"):
            break
        head, _, data = raw.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        part = Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                part[name.strip()] = value.strip()
        field_name = part.get_param("name", header="content-disposition")
        if not isinstance(field_name, str):
            continue
        filename = part.get_filename()
        if filename is not None:
            files[field_name] = UploadedFile(filename, part.get("content-type"), data)
        else:
            form[field_name] = data.decode("utf-8", "replace")
    return form, files


# -- HTTP plumbing -------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI


class _Exchange:
    """Writes one answer; notices a client that went away (write failed, or EOF on its socket)."""

    def __init__(self, handler: _Handler, fake: FakeOpenAI, request_id: str) -> None:
        self.handler = handler
        self.fake = fake
        self.request_id = request_id
        self.connection: socket.socket = handler.connection
        self.request: RecordedRequest | None = None
        self.events_sent = 0
        self.gone = False  # the client went away
        self.dropped = False  # we cut the answer short (`drop_stream_after`, `stop()`)
        self.pending: Answer | None = None  # the answer, if its last bytes get out (`_expect`)
        self.committed = False  # `pending` is in `answers`

    def _commit(self) -> None:
        if self.pending is not None and not self.committed:
            self.committed = True
            self.fake._add_answer(self.pending)

    def _headers(self, status: int, content_type: str, extra: Iterable[tuple[str, str]]) -> None:
        handler = self.handler
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("x-request-id", self.request_id)
        handler.send_header("openai-processing-ms", "1")
        for name, value in extra:
            handler.send_header(name, value)

    def send(
        self, status: int, body: bytes, content_type: str, headers: Iterable[tuple[str, str]] = ()
    ) -> bool:
        if self.request is not None:
            self.fake._answered(self.request, status)
        if 200 <= status < 300:
            self._commit()
        try:
            self._headers(status, content_type, headers)
            self.handler.send_header("Content-Length", str(len(body)))
            self.handler.end_headers()
            self.handler.wfile.write(body)
            self.handler.wfile.flush()
            return True
        except OSError:
            self._lost()
            return False

    def send_json(self, status: int, body: JSON) -> bool:
        return self.send(status, json.dumps(body, ensure_ascii=False).encode(), "application/json")

    def start_stream(self) -> bool:
        if self.request is not None:
            self.fake._answered(self.request, 200)
        try:
            self._headers(200, "text/event-stream; charset=utf-8", [("Cache-Control", "no-cache")])
            self.handler.send_header("Transfer-Encoding", "chunked")
            self.handler.end_headers()
            self.handler.wfile.flush()
            return True
        except OSError:
            self._lost()
            return False

    def event(self, data: bytes, *, last: bool = False) -> bool:
        """Write one SSE event as one chunk (with the terminating chunk if `last`) and flush. After a
        non-last event, also checks whether the client has closed its end."""
        frame = b"%x\r\n%s\r\n" % (len(data), data)
        if last:
            frame += b"0\r\n\r\n"
            self._commit()
        try:
            self.handler.wfile.write(frame)
            self.handler.wfile.flush()
        except OSError:
            self._lost()
            return False
        self.events_sent += 1
        if not last and self._peer_closed():
            self._lost()
            return False
        return True

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds`; False early if the client closes its end (then `gone`) or the fake stops."""
        deadline = time.monotonic() + seconds
        while True:
            if self.fake._stopping.is_set():
                self.dropped = True
                self.handler.close_connection = True
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            try:
                readable, _, _ = select.select([self.connection], [], [], min(remaining, 0.05))
            except (OSError, ValueError):
                self._lost()
                return False
            if readable:
                if self._peer_closed():
                    self._lost()
                    return False
                self.fake._stopping.wait(min(remaining, 0.01))  # data (a pipelined request): just wait

    def drop(self) -> None:
        """Cut the connection mid-body, as a crashing upstream would."""
        self.dropped = True
        self.handler.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _peer_closed(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _lost(self) -> None:
        self.gone = True
        self.handler.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # answers leave at once, not after the client's delayed ACK
    server_version = "FakeOpenAI/1.0"

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline(65_537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65_537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65_537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        fake = self.server.fake
        request_id = f"req_fake{fake._next_id():06d}"
        ex = _Exchange(self, fake, request_id)
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            ex.send_json(400, error_body("Malformed request body.", "invalid_request_error"))
            return
        split = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = RecordedRequest(
            method=self.command,
            path=split.path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=headers,
            body=body,
            request_id=request_id,
        )
        content_type = headers.get("content-type", "")
        try:
            if content_type.lower().startswith("multipart/form-data"):
                request.form, request.files = parse_multipart(content_type, body)
            elif body:
                request.json = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            pass  # recorded as sent; the endpoint answers 400
        ex.request = request
        fake._record(request)
        try:
            fake._serve(ex, request)
        except Exception as err:  # noqa: BLE001 - a bug in the fake: make it visible, answer 500
            fake._add_error(f"{request.method} {request.path}: {err!r}")
            if request.status is None:
                ex.send_json(500, default_error_body(500))
            else:
                ex.drop()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are in `FakeOpenAI.requests`."""
