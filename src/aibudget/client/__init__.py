"""A typed client for the HTTP API v1 (SPEC §11): gate, settle and read budgets from another process.

Usage::

    from aibudget.client import BudgetClient
    with BudgetClient("https://budget.example", api_key, device_id=device_id) as client:
        client.authorize(request_id="r1", operation="letter", model="gpt-4o-mini", input_tokens=1200)
        event = client.settle(request_id="r1", model="gpt-4o-mini", input_tokens=1180, output_tokens=640)
        print(event.cost_usd)              # Decimal('0.000561'); authorize raised BudgetExceeded if refused
        print(client.budget().user_label)  # "KI-Kontingent: 80 % verfügbar"

`BudgetClient` (sync, one pooled `httpx.Client`) and `AsyncBudgetClient` (the same methods, awaited,
over `httpx.AsyncClient`) share one pure layer, `calls`: each method builds a `Call` (method, path,
JSON body, headers, and how to read the answer) and the transport only sends it. Money comes back as
`Decimal`, never float; amounts and durations sent are JSON strings or integers.

Errors are the library's own classes, chosen by the problem's `error_code`, else by HTTP status::

    402  BudgetExceeded (.payload is the whole body: reason, message_user, renewal_date, …)
    401  Unauthorized                          403  Forbidden / DeviceNotInPractice
    404  NotFound / PaymentsOff                409  Conflict / IdempotencyConflict
    400, 413, 422  InvalidInput / UnknownModel / … with `.field`
    503  PaymentProviderUnavailable / DatabaseUnavailable (by their codes)
    anything else (5xx, a proxy's HTML page, a malformed body): UnexpectedResponse(.status)

Every write (authorize, settle, void) is idempotent on `request_id`, and reads change nothing, so
the client sends a call again — the same bytes — when it meets a transient failure: a transport
error after which the request may or may not have arrived (connection refused or reset, a read,
write, connect or pool timeout, a connection closed without an answer) or a 502, 503 or 504 answer
(a server restarting or without its database, a gateway in front of it). A few tries with
exponential backoff and jitter (`retries`, `backoff`, `max_backoff`; a short `Retry-After` is
honored; `retrying` decides); never after any other answer — a 4xx is the server's decision, another
5xx a fault that the same request would meet again. When the tries run out, the last failure is
raised: the error of the last answer, or the `httpx.TransportError`.

A try whose answer was lost may have been taken: the server then answers the next one with its
first result (200, a replay) — the call's own result, which the client returns as it would have
returned the first answer, with `replayed` False. `replayed` is True only when no earlier try of
the call can have been taken: the request id was used by an earlier call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any

import anyio
import httpx

from aibudget.auth.service import Unauthorized
from aibudget.client.calls import (
    Allocation,
    Authorization,
    Call,
    Json,
    OperatorView,
    T,
    UnexpectedResponse,
    UsageEvent,
    authorize_call,
    budget_call,
    operator_view_call,
    settle_call,
    void_call,
)
from aibudget.client.retrying import Retry, Tries
from aibudget.errors import BudgetExceeded
from aibudget.views.client import ClientView

__all__ = [
    "Allocation",
    "AsyncBudgetClient",
    "Authorization",
    "BudgetClient",
    "BudgetExceeded",
    "ClientView",
    "OperatorView",
    "Unauthorized",
    "UnexpectedResponse",
    "UsageEvent",
]


def _client_options(api_key: str, device_id: str | None, timeout: float, base_url: str) -> Json:
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    if device_id is not None:
        headers["X-Device-Id"] = device_id
    return {"base_url": base_url, "headers": headers, "timeout": timeout}


# the transports


class BudgetClient:
    """The API over one pooled, thread-safe `httpx.Client`; use it as a context manager or `close()` it.

    `api_key` is sent as `Authorization: Bearer`; `device_id`, when set, as `X-Device-Id` on every
    request (the desktop's installation). `timeout` (seconds) is for each try. `transport` swaps the
    network, e.g. `httpx.MockTransport`.

    A call that meets a transient failure (see the module doc) is sent again, with the same request
    id, up to `retries` more times: after `backoff` seconds, doubled each time up to `max_backoff`,
    jittered (half to all of it); an answer's `Retry-After` up to `max_backoff` is waited at least,
    a longer one ends the tries. The defaults try 4 times within about 3.5 s plus the tries' own
    time; `retries=0` sends each call once.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        device_id: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 4.0,
    ) -> None:
        self._retry = Retry(retries, backoff, max_backoff)
        self._http = httpx.Client(
            **_client_options(api_key, device_id, timeout, base_url), transport=transport
        )

    def _send(self, call: Call[T]) -> T:
        tries = Tries(self._retry)
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, content=call.content, headers=call.request_headers
                )
            except httpx.TransportError as error:
                wait = tries.after_error(error)
                if wait is None:
                    raise
            else:
                wait = tries.after_answer(response)
                if wait is None:
                    return call.answer(response.status_code, response.headers.get("content-type", ""),
                                       response.content, own_replay=tries.maybe_taken)  # fmt: skip
            time.sleep(wait)

    def authorize(
        self,
        *,
        request_id: str,
        operation: str,
        model: str,
        practice_id: str | None = None,
        input_tokens: int | None = None,
        prompt_chars: int | None = None,
        max_output_tokens: int | None = None,
        audio_seconds: Decimal | int | None = None,
    ) -> Authorization:
        """Hold the estimated cost of a call before making it; raises `BudgetExceeded` when refused.

        The estimate: `input_tokens`, or a bound from `prompt_chars`; `max_output_tokens` (default
        the server's cap); `audio_seconds` of an upload.
        """
        return self._send(authorize_call(
            request_id=request_id, operation=operation, model=model, practice_id=practice_id,
            input_tokens=input_tokens, prompt_chars=prompt_chars, max_output_tokens=max_output_tokens,
            audio_seconds=audio_seconds,
        ))  # fmt: skip

    def settle(
        self,
        *,
        request_id: str,
        model: str,
        practice_id: str | None = None,
        operation: str | None = None,
        status: str = "success",
        input_tokens: int = 0,
        cached_input_tokens: int = 0,
        output_tokens: int = 0,
        input_audio_tokens: int = 0,
        audio_seconds: Decimal | int = 0,
        error_code: str | None = None,
        meta: Mapping[str, Any] | None = None,
        estimated: bool = False,
    ) -> UsageEvent:
        """Record a call's real usage (with or without a prior `authorize`); its hold is released."""
        return self._send(settle_call(
            request_id=request_id, model=model, practice_id=practice_id, operation=operation, status=status,
            input_tokens=input_tokens, cached_input_tokens=cached_input_tokens, output_tokens=output_tokens,
            input_audio_tokens=input_audio_tokens, audio_seconds=audio_seconds, error_code=error_code,
            meta=meta, estimated=estimated,
        ))  # fmt: skip

    def void(self, *, request_id: str, practice_id: str | None = None) -> Authorization:
        """Release the hold of a call that was not made (idempotent)."""
        return self._send(void_call(request_id=request_id, practice_id=practice_id))

    def budget(self, *, locale: str | None = None) -> ClientView:
        """`GET /v1/budget`: what the desktop shows, in `locale` (default the practice's).

        A practice key reads its own practice; a service key needs the client's `device_id`.
        """
        return self._send(budget_call(locale=locale))

    def operator_view(self, practice_id: str) -> OperatorView:
        """`GET /v1/practices/{practice_id}/budget` (admin or service key): the USD amounts."""
        return self._send(operator_view_call(practice_id))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BudgetClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class AsyncBudgetClient:
    """`BudgetClient` for asyncio (or trio), over one `httpx.AsyncClient`: the same methods and
    options, awaited; `aclose()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        device_id: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 4.0,
    ) -> None:
        self._retry = Retry(retries, backoff, max_backoff)
        options = _client_options(api_key, device_id, timeout, base_url)
        self._http = httpx.AsyncClient(**options, transport=transport)

    async def _send(self, call: Call[T]) -> T:
        tries = Tries(self._retry)
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, content=call.content, headers=call.request_headers
                )
            except httpx.TransportError as error:
                wait = tries.after_error(error)
                if wait is None:
                    raise
            else:
                wait = tries.after_answer(response)
                if wait is None:
                    return call.answer(response.status_code, response.headers.get("content-type", ""),
                                       response.content, own_replay=tries.maybe_taken)  # fmt: skip
            await anyio.sleep(wait)

    async def authorize(
        self,
        *,
        request_id: str,
        operation: str,
        model: str,
        practice_id: str | None = None,
        input_tokens: int | None = None,
        prompt_chars: int | None = None,
        max_output_tokens: int | None = None,
        audio_seconds: Decimal | int | None = None,
    ) -> Authorization:
        """See `BudgetClient.authorize`."""
        return await self._send(authorize_call(
            request_id=request_id, operation=operation, model=model, practice_id=practice_id,
            input_tokens=input_tokens, prompt_chars=prompt_chars, max_output_tokens=max_output_tokens,
            audio_seconds=audio_seconds,
        ))  # fmt: skip

    async def settle(
        self,
        *,
        request_id: str,
        model: str,
        practice_id: str | None = None,
        operation: str | None = None,
        status: str = "success",
        input_tokens: int = 0,
        cached_input_tokens: int = 0,
        output_tokens: int = 0,
        input_audio_tokens: int = 0,
        audio_seconds: Decimal | int = 0,
        error_code: str | None = None,
        meta: Mapping[str, Any] | None = None,
        estimated: bool = False,
    ) -> UsageEvent:
        """See `BudgetClient.settle`."""
        return await self._send(settle_call(
            request_id=request_id, model=model, practice_id=practice_id, operation=operation, status=status,
            input_tokens=input_tokens, cached_input_tokens=cached_input_tokens, output_tokens=output_tokens,
            input_audio_tokens=input_audio_tokens, audio_seconds=audio_seconds, error_code=error_code,
            meta=meta, estimated=estimated,
        ))  # fmt: skip

    async def void(self, *, request_id: str, practice_id: str | None = None) -> Authorization:
        """See `BudgetClient.void`."""
        return await self._send(void_call(request_id=request_id, practice_id=practice_id))

    async def budget(self, *, locale: str | None = None) -> ClientView:
        """See `BudgetClient.budget`."""
        return await self._send(budget_call(locale=locale))

    async def operator_view(self, practice_id: str) -> OperatorView:
        """See `BudgetClient.operator_view`."""
        return await self._send(operator_view_call(practice_id))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBudgetClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()
