"""The OpenAI-compatible proxy under `/openai/v1/`: every call authorized, forwarded, settled (SPEC §9).

The desktop app sets its OpenAI base address to `<aibudget>/openai/v1` and its API key to its
practice key (or a service key with `X-Device-Id`). For each call:

1. **Authorize** from the request: the prompt's size, its output cap, an upload's audio duration.
   Refused → 402 in OpenAI's error shape (`error.code` = `AI_BUDGET_EXCEEDED`) plus our payload.
2. **Forward** to the upstream with the vendor's key; streams are passed through as they come.
3. **Settle** from the response's `usage`. A chat stream gets `stream_options.include_usage`
   injected, and the usage chunk is taken out again if the client did not ask for it. The upstream
   failing (4xx, 5xx, timeout) voids the hold and records an `error` event. A client that goes
   away mid-stream is charged what was consumed: the usage if it arrived, otherwise an estimate
   from the streamed text, flagged `estimated`; so is a stream the upstream breaks off, which ends
   for the client with an error event in OpenAI's shape. A settle the database cannot take then is
   kept on disk and posted once it is back (`ledger.kept_settles`); the caller gets its answer
   meanwhile. No path leaves a hold open or a cost unrecorded.

The call's request id is the caller's `Idempotency-Key` or `X-Request-Id` header, else a new one;
its operation is `X-Aibudget-Operation`, else the route's kind (`chat`, `embed`, `transcribe`).
"""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anyio
import httpx
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from aibudget.api.deps import budget_call, gate_caller
from aibudget.api.errors import refusal_payload
from aibudget.auth.service import Principal
from aibudget.budget import Budget
from aibudget.errors import BudgetExceeded, Conflict, InvalidInput
from aibudget.pricing.audio import read_duration
from aibudget.proxy import PREFIX, usage
from aibudget.proxy.upstream import ANSWERED, Upstream
from aibudget.proxy.usage import SettleUsage

log = logging.getLogger(__name__)
MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # above OpenAI's own 25 MB limit for audio
MAX_NESTING = 100  # arrays and objects in a body; a tool's JSON schema nests a few levels
_TOO_DEEP = f"the body nests arrays and objects more than {MAX_NESTING} deep"


@dataclass(frozen=True, slots=True)
class Call:
    """One proxied call's identity in the ledger; its methods call the `Budget` through `budget_call`."""

    budget: Budget
    request_id: str
    operation: str
    model: str
    practice_id: str | None
    device_id: str | None

    async def authorize(self, **estimate: Any) -> None:
        held = await budget_call(
            self.budget,
            lambda: self.budget.authorize(
                request_id=self.request_id, operation=self.operation, model=self.model,
                practice_id=self.practice_id, device_id=self.device_id, **estimate,
            ),
        )  # fmt: skip
        if held.replayed:  # a call sent again, in flight or answered: forwarding it would pay twice
            raise Conflict(
                f"request {self.request_id!r} was sent before (it is in flight or was answered); "
                "send each call with its own id",
                field="Idempotency-Key",
            )

    async def settle(self, used: SettleUsage, *, estimated: bool = False) -> None:
        """Post the served call's cost; kept on disk and posted later while the database is away."""
        await budget_call(
            self.budget,
            lambda: self.budget.settle_or_keep(
                request_id=self.request_id, operation=self.operation, model=self.model,
                practice_id=self.practice_id, device_id=self.device_id, estimated=estimated, **used,
            ),
        )  # fmt: skip

    async def fail(self, error_code: str) -> None:
        """The upstream did not serve the call: release the hold and record an `error` event."""
        await budget_call(
            self.budget,
            lambda: self.budget.void(
                request_id=self.request_id, practice_id=self.practice_id, device_id=self.device_id
            ),
        )
        await budget_call(
            self.budget,
            lambda: self.budget.settle(
                request_id=self.request_id, operation=self.operation, model=self.model,
                practice_id=self.practice_id, device_id=self.device_id, status="error", error_code=error_code,
            ),
        )  # fmt: skip


def _call(
    request: Request, budget: Budget, principal: Principal, device_id: str | None, kind: str, model: str
) -> Call:
    headers = request.headers
    request_id = (
        headers.get("idempotency-key") or headers.get("x-request-id") or f"oai_{secrets.token_urlsafe(18)}"
    )
    operation = headers.get("x-aibudget-operation") or kind
    practice_id = principal.practice_id if principal.role == "practice" else None
    return Call(budget, request_id, operation, model, practice_id, device_id)


def refusal(request: Request, exc: BudgetExceeded) -> JSONResponse:
    """The 402 in OpenAI's error shape, which the `openai` package surfaces with `code`, plus our
    payload (in the language of `Accept-Language`, as on the API)."""
    payload = refusal_payload(request, exc)
    error = {
        "message": payload.get("message_user"),
        "type": "insufficient_quota",
        "param": None,
        "code": payload.get("error_code"),
    }
    return JSONResponse({"error": error, **payload}, status_code=402)


def _unavailable(status: int, message: str) -> JSONResponse:
    error = {"message": message, "type": "upstream_error", "param": None, "code": "UPSTREAM_UNAVAILABLE"}
    return JSONResponse({"error": error}, status_code=status)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInput("the body is not JSON", field="body") from None
    except RecursionError:  # arrays or objects nested about a thousand deep
        raise InvalidInput(_TOO_DEEP, field="body") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    if not _nested_at_most(body, MAX_NESTING):
        raise InvalidInput(_TOO_DEEP, field="body")
    return body


def _nested_at_most(value: object, levels: int) -> bool:
    """Whether arrays and objects in `value` nest at most `levels` deep (counted without recursion:
    reading the prompt's texts and encoding the body again both recurse)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        inner = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if inner is None:
            continue
        if depth > levels:
            return False
        pending.extend((child, depth + 1) for child in inner)
    return True


def _upstream(request: Request) -> Upstream:
    upstream: Upstream = request.app.state.upstream
    return upstream


def _reported_usage(response: httpx.Response) -> dict[str, Any] | None:
    """The `usage` object of a JSON answer; None for other answers (plain-text transcripts)."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        answer = response.json()
    except ValueError:
        return None
    reported = answer.get("usage") if isinstance(answer, dict) else None
    return reported if isinstance(reported, dict) else None


def _passthrough(response: httpx.Response) -> Response:
    media = response.headers.get("content-type", "application/json")
    answered = {name: response.headers[name] for name in ANSWERED if name in response.headers}
    return Response(
        content=response.content, status_code=response.status_code, media_type=media, headers=answered
    )


async def _forward(call: Call, send: Callable[[], Any]) -> httpx.Response | Response:
    """Send the request upstream; on an upstream failure, void, record the error and answer it."""
    try:
        response: httpx.Response = await send()
    except httpx.TimeoutException:
        await call.fail("upstream_timeout")
        return _unavailable(504, "the upstream did not answer in time")
    except httpx.HTTPError as exc:
        await call.fail("upstream_unreachable")
        return _unavailable(502, f"the upstream could not be reached ({type(exc).__name__})")
    if response.status_code >= 400:
        await call.fail(f"upstream_{response.status_code}")
        return _passthrough(response)
    return response


async def _plain(
    call: Call,
    upstream: Upstream,
    outgoing: httpx.Request,
    body: dict[str, Any],
    read: Callable[[dict[str, Any]], SettleUsage],
) -> Response:
    response = await _forward(call, lambda: upstream.send(outgoing))
    if not isinstance(response, httpx.Response):
        return response
    reported = _reported_usage(response)
    if reported is not None:
        await call.settle(read(reported))
    else:  # a success without usage: charge the bound of both sides' text rather than nothing
        log.warning("upstream answered %s without usage; charged by estimate", outgoing.url.path)
        try:
            answer: object = response.json()
        except ValueError:  # not JSON (or not UTF-8): its text is the answer
            answer = response.text
        await call.settle(usage.estimated_answer_usage(body, answer), estimated=True)
    return _passthrough(response)


def _pass_on(tally: usage.StreamTally, line: str) -> bool:
    """Whether an SSE line goes on to the client; `data:` lines with a JSON object are tallied."""
    if not line.startswith("data:"):
        return True
    try:
        event = json.loads(line[5:])
    except json.JSONDecodeError:  # `[DONE]`, or whatever the upstream sends: passed on as it is
        return True
    return not isinstance(event, dict) or tally.take(event)


def _broken_off(exc: httpx.HTTPError) -> bytes:
    """The event that ends a stream the upstream broke off: OpenAI's error object, which OpenAI's
    client libraries raise as an error rather than taking the stream for complete."""
    timed_out = isinstance(exc, httpx.TimeoutException)
    error = {
        "message": f"the upstream's stream broke off ({type(exc).__name__}); the answer is incomplete",
        "type": "api_error",
        "param": None,
        "code": "upstream_timeout" if timed_out else "upstream_stream_broken",
    }
    return f"\ndata: {json.dumps({'error': error})}\n\n".encode()


def _asking_for_usage(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A chat stream's body with `stream_options.include_usage` set, and whether the caller's own
    body left it out (then the usage chunk is hidden from it)."""
    given = body.get("stream_options")
    options: dict[str, Any] = given if isinstance(given, dict) else {}
    hidden = options.get("include_usage") is not True
    return {**body, "stream_options": {**options, "include_usage": True}}, hidden


async def _stream(
    call: Call, upstream: Upstream, outgoing: httpx.Request, body: dict[str, Any], kind: str, *, hide: bool
) -> Response:
    response = await _forward(call, lambda: upstream.send(outgoing, stream=True))
    if not isinstance(response, httpx.Response):
        return response
    tally = usage.StreamTally(kind, hide_usage_chunk=hide)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for line in response.aiter_lines():
                if _pass_on(tally, line):
                    yield (line + "\n").encode()
        except httpx.HTTPError as exc:  # the upstream's connection broke, or it stopped sending
            log.warning("the upstream's stream on %s broke off (%s); charged by what came", outgoing.url.path,
                        type(exc).__name__)  # fmt: skip
            yield _broken_off(exc)
        finally:
            # runs when the stream ends, breaks or the client goes away: the cost is always posted
            with anyio.CancelScope(shield=True):
                await response.aclose()
                used, estimated = tally.settle_usage(body)
                await call.settle(used, estimated=estimated)

    return StreamingResponse(
        relay(),
        status_code=response.status_code,
        media_type=response.headers.get("content-type", "text/event-stream"),
        headers={"Cache-Control": "no-cache"},
    )


async def _gated(
    request: Request, budget: Budget, principal: Principal, device_id: str | None, *,
    path: str, kind: str, read: Callable[[dict[str, Any]], SettleUsage],
) -> Response:  # fmt: skip
    body = await _json_body(request)
    call = _call(request, budget, principal, device_id, kind, usage.model_of(body))
    streaming = body.get("stream") is True and kind != "embed"
    sent, hide = _asking_for_usage(body) if streaming and kind == "chat" else (body, False)
    upstream = _upstream(request)
    # made before the hold: a body that cannot be sent on is refused with nothing held
    outgoing = upstream.request("POST", path, dict(request.headers), json=sent)
    try:
        await call.authorize(prompt_chars=usage.prompt_chars(body), max_output_tokens=usage.output_cap(body))
    except BudgetExceeded as exc:
        return refusal(request, exc)
    if streaming:
        return await _stream(call, upstream, outgoing, body, kind, hide=hide)
    return await _plain(call, upstream, outgoing, body, read)


async def chat_completions(request: Request) -> Response:
    """OpenAI's chat completions, plain or streaming, within the practice's budget."""
    budget, principal, device_id = await gate_caller(request)
    return await _gated(
        request, budget, principal, device_id, path="chat/completions", kind="chat", read=usage.chat_usage
    )


async def responses(request: Request) -> Response:
    """OpenAI's Responses API, plain or streaming, within the practice's budget."""
    budget, principal, device_id = await gate_caller(request)
    return await _gated(
        request, budget, principal, device_id, path="responses", kind="responses", read=usage.responses_usage
    )


async def embeddings(request: Request) -> Response:
    """OpenAI's embeddings, within the practice's budget."""
    budget, principal, device_id = await gate_caller(request)
    return await _gated(
        request, budget, principal, device_id, path="embeddings", kind="embed", read=usage.embeddings_usage
    )


async def transcriptions(request: Request) -> Response:
    """OpenAI's audio transcriptions (multipart upload): held and charged by the upload's real
    duration, or by the tokens a token-priced model reports."""
    budget, principal, device_id = await gate_caller(request)
    form = await request.form(max_part_size=MAX_UPLOAD_BYTES)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("file is required: the audio to transcribe", field="file")
    model = form.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("model is required: the model to call", field="model")
    audio = await upload.read()
    duration = await run_in_threadpool(read_duration, io.BytesIO(audio), filename=upload.filename)
    call = _call(request, budget, principal, device_id, "transcribe", model)
    fields = {name: value for name, value in form.multi_items() if isinstance(value, str)}
    files = {"file": (upload.filename or "audio", audio, upload.content_type or "application/octet-stream")}
    upstream = _upstream(request)
    incoming = dict(request.headers)
    outgoing = upstream.request("POST", "audio/transcriptions", incoming, data=fields, files=files)
    try:
        await call.authorize(audio_seconds=duration.seconds)
    except BudgetExceeded as exc:
        return refusal(request, exc)
    response = await _forward(call, lambda: upstream.send(outgoing))
    if not isinstance(response, httpx.Response):
        return response
    await call.settle(usage.transcription_usage(_reported_usage(response), Decimal(duration.seconds)))
    return _passthrough(response)


async def models(request: Request) -> Response:
    """The upstream's models, as it lists them."""
    await gate_caller(request)
    upstream = _upstream(request)
    try:
        response = await upstream.send(upstream.request("GET", "models", dict(request.headers)))
    except httpx.HTTPError as exc:
        return _unavailable(502, f"the upstream could not be reached ({type(exc).__name__})")
    return _passthrough(response)


# Plain Starlette routes, not in the OpenAPI document: the bodies are OpenAI's (see their reference),
# the answers the upstream's; without FastAPI's dependency injection, a few hundred microseconds less
# on every call
routes = [
    Route(f"{PREFIX}/chat/completions", chat_completions, methods=["POST"]),
    Route(f"{PREFIX}/responses", responses, methods=["POST"]),
    Route(f"{PREFIX}/embeddings", embeddings, methods=["POST"]),
    Route(f"{PREFIX}/audio/transcriptions", transcriptions, methods=["POST"]),
    Route(f"{PREFIX}/models", models, methods=["GET"]),
]
