"""A typed client for the HTTP API v1 (SPEC §11): gate, settle and read budgets from another process.

Usage::

    from aibudget.client import BudgetClient
    with BudgetClient("https://budget.example", api_key, device_id=device_id) as client:
        client.authorize(request_id="r1", operation="letter", model="gpt-4o-mini", input_tokens=1200)
        event = client.settle(request_id="r1", model="gpt-4o-mini", input_tokens=1180, output_tokens=640)
        print(event.cost_usd)              # Decimal('0.000561'); authorize raised BudgetExceeded if refused
        print(client.budget().user_label)  # "KI-Kontingent: 80 % verfügbar"

`BudgetClient` (sync, one pooled `httpx.Client`) and `AsyncBudgetClient` (the same methods, awaited,
over `httpx.AsyncClient`) share one pure layer: each method builds a `_Call` (method, path, JSON body,
headers, and how to read the answer) and the transport only sends it. Money comes back as `Decimal`,
never float; amounts and durations sent are JSON strings or integers.

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
honored); never after any other answer — a 4xx is the server's decision, another 5xx a fault that
the same request would meet again. When the tries run out, the last failure is raised: the error of
the last answer, or the `httpx.TransportError`.

A try whose answer was lost may have been taken: the server then answers the next one with its
first result (200, a replay) — the call's own result, which the client returns as it would have
returned the first answer, with `replayed` False. `replayed` is True only when no earlier try of
the call can have been taken: the request id was used by an earlier call.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import anyio
import httpx

from aibudget.auth.service import Unauthorized
from aibudget.errors import (
    AibudgetError,
    BudgetExceeded,
    Conflict,
    DatabaseUnavailable,
    DeviceNotInPractice,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    InvalidWebhook,
    NotFound,
    PaymentProviderUnavailable,
    PaymentsOff,
    UnknownModel,
    UnreadableAudio,
)
from aibudget.views.client import ClientView
from aibudget.views.snapshot import AutoTopupState

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

T = TypeVar("T")
Json = dict[str, Any]


class UnexpectedResponse(AibudgetError):
    """The server answered with neither a result nor a known error: a 5xx, a non-JSON page from a
    proxy, a malformed body. `status` is the HTTP status received; `error_code` the problem's, if any.
    Retrying a write with the same `request_id` is safe."""

    code = "UNEXPECTED_RESPONSE"
    http_status = 502
    title = "Unexpected response from the aibudget server"

    def __init__(self, detail: str, *, status: int, error_code: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error_code = error_code


# results


@dataclass(frozen=True, slots=True)
class Authorization:
    """A hold, as `POST /v1/authorizations` (or its void) answered. `replayed` is True when the server
    returned the first result of this request id (200 instead of 201) to an earlier call — not to a
    try of this call whose answer was lost (see the module doc); a void never says. A server
    with fail-open on admits a call without a hold while its database is unavailable: status
    `admitted_without_hold`, nothing held, `budget` None."""

    authorization_id: str
    request_id: str
    practice_id: str
    status: str  # active | settled | voided | expired | admitted_without_hold
    held_usd: Decimal
    estimate_usd: Decimal
    expires_at: datetime
    budget: ClientView | None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Allocation:
    """The part of a call's cost one pot paid: `included`, or a credit grant (`grant_id`)."""

    pot: str
    amount_usd: Decimal
    grant_id: int | None


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """A settled call, as `POST /v1/usage` answered; `replayed` as for `Authorization`."""

    event_id: int
    request_id: str
    practice_id: str
    status: str
    model: str
    priced_as: str | None
    cost_usd: Decimal
    overage_usd: Decimal
    price_source: str | None
    price_version: str | None
    allocations: tuple[Allocation, ...]
    budget: ClientView
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class OperatorView:
    """`GET /v1/practices/{id}/budget`: the operator view (SPEC §8), amounts in `Decimal` USD."""

    practice_id: str
    subscription_id: str | None
    plan: str | None
    policy: str
    period_start: int | None  # Unix seconds
    period_end: int | None
    included_usd: Decimal
    used_usd: Decimal
    held_usd: Decimal
    included_remaining_usd: Decimal
    extra_credit_remaining_usd: Decimal
    available_usd: Decimal
    overage_usd: Decimal
    auto_topup: AutoTopupState = field(default_factory=AutoTopupState)


# reading answers


class _Malformed(Exception):
    """A 2xx body that does not have the shape this client knows."""


def _get(body: Json, name: str, kind: type[T]) -> T:
    value = body.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Malformed(f"{name}: expected {kind.__name__}, got {value!r}")
    return value


def _optional(body: Json, name: str, kind: type[T]) -> T | None:
    return None if body.get(name) is None else _get(body, name, kind)


def _usd(body: Json, name: str) -> Decimal:
    try:
        amount = Decimal(_get(body, name, str))
    except InvalidOperation:
        raise _Malformed(f"{name}: {body[name]!r} is not a decimal amount") from None
    if not amount.is_finite():
        raise _Malformed(f"{name}: {body[name]!r} is not a finite amount")
    return amount


def _client_view(body: Json) -> ClientView:
    return ClientView(
        available_percent=_get(body, "available_percent", int),
        show_warning=_get(body, "show_warning", bool),
        warning_level=_get(body, "warning_level", str),  # type: ignore[arg-type]  # the server's Literal
        user_label=_get(body, "user_label", str),
        period_end=_optional(body, "period_end", int),
        renewal_date=_optional(body, "renewal_date", str),
        renewal_date_display=_optional(body, "renewal_date_display", str),
        extra_credit_active=_get(body, "extra_credit_active", bool),
        locale=_get(body, "locale", str),
    )


def _authorization(replayed: bool, body: Json) -> Authorization:
    try:
        expires_at = datetime.fromisoformat(_get(body, "expires_at", str))
    except ValueError:
        raise _Malformed(f"expires_at: {body['expires_at']!r} is not an ISO date-time") from None
    return Authorization(
        authorization_id=_get(body, "authorization_id", str),
        request_id=_get(body, "request_id", str),
        practice_id=_get(body, "practice_id", str),
        status=_get(body, "status", str),
        held_usd=_usd(body, "held_usd"),
        estimate_usd=_usd(body, "estimate_usd"),
        expires_at=expires_at,
        budget=None if body.get("budget") is None else _client_view(_get(body, "budget", dict)),
        replayed=replayed,
    )


def _void(_replayed: bool, body: Json) -> Authorization:
    return _authorization(False, body)  # a void answers 200 whether it is the first or a replay


def _allocation(part: object) -> Allocation:
    if not isinstance(part, dict):
        raise _Malformed(f"allocations: {part!r} is not an object")
    return Allocation(
        pot=_get(part, "pot", str),
        amount_usd=_usd(part, "amount_usd"),
        grant_id=_optional(part, "grant_id", int),
    )


def _usage_event(replayed: bool, body: Json) -> UsageEvent:
    return UsageEvent(
        event_id=_get(body, "event_id", int),
        request_id=_get(body, "request_id", str),
        practice_id=_get(body, "practice_id", str),
        status=_get(body, "status", str),
        model=_get(body, "model", str),
        priced_as=_optional(body, "priced_as", str),
        cost_usd=_usd(body, "cost_usd"),
        overage_usd=_usd(body, "overage_usd"),
        price_source=_optional(body, "price_source", str),
        price_version=_optional(body, "price_version", str),
        allocations=tuple(_allocation(part) for part in _get(body, "allocations", list)),
        budget=_client_view(_get(body, "budget", dict)),
        replayed=replayed,
    )


def _operator_view(_replayed: bool, body: Json) -> OperatorView:
    topup = _optional(body, "auto_topup", dict) or {}
    return OperatorView(
        practice_id=_get(body, "practice_id", str),
        subscription_id=_optional(body, "subscription_id", str),
        plan=_optional(body, "plan", str),
        policy=_get(body, "policy", str),
        period_start=_optional(body, "period_start", int),
        period_end=_optional(body, "period_end", int),
        included_usd=_usd(body, "included_usd"),
        used_usd=_usd(body, "used_usd"),
        held_usd=_usd(body, "held_usd"),
        included_remaining_usd=_usd(body, "included_remaining_usd"),
        extra_credit_remaining_usd=_usd(body, "extra_credit_remaining_usd"),
        available_usd=_usd(body, "available_usd"),
        overage_usd=_usd(body, "overage_usd"),
        auto_topup=AutoTopupState(
            enabled=bool(topup.get("enabled", False)), paused_reason=_optional(topup, "paused_reason", str)
        ),
    )


_BY_CODE: dict[str, type[AibudgetError]] = {
    error.code: error
    for error in (Unauthorized, Forbidden, DeviceNotInPractice, NotFound, PaymentsOff, Conflict,
                  IdempotencyConflict, InvalidInput, UnknownModel, UnreadableAudio, InvalidWebhook,
                  PaymentProviderUnavailable, DatabaseUnavailable)
}  # fmt: skip
_BY_STATUS: dict[int, type[AibudgetError]] = {
    400: InvalidInput, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: InvalidInput,
    422: InvalidInput,
}  # fmt: skip


def _error(status: int, body: Json | None, text: str) -> AibudgetError:
    """The library error a non-2xx answer stands for."""
    if body is None:
        snippet = " ".join(text.split())[:200] or "(empty)"
        return UnexpectedResponse(f"HTTP {status} with a body that is not JSON: {snippet}", status=status)
    code, given = body.get("error_code"), body.get("detail")
    code = code if isinstance(code, str) and code else None
    label = f"HTTP {status} {code}" if code else f"HTTP {status}"
    detail = given if isinstance(given, str) and given else label
    if status == 402 and isinstance(body.get("reason"), str) and isinstance(body.get("message_user"), str):
        return BudgetExceeded(body)
    kind = _BY_CODE.get(code) if code else None
    if kind is None or kind.http_status != status:
        kind = _BY_STATUS.get(status)
    if kind is None:
        return UnexpectedResponse(f"{label}: {detail}", status=status, error_code=code)
    field_name = body.get("field")
    error = kind(detail, field=field_name if isinstance(field_name, str) else None)
    error.http_status = status  # 400 and 413 are bad input too, but keep the status the server gave
    return error


def _json_object(content_type: str, content: bytes) -> Json | None:
    if "json" not in content_type.lower():
        return None
    try:
        parsed = json.loads(content)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _json_value(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One API call as data: what to send, and how to read what comes back. No I/O."""

    method: str
    path: str
    read: Callable[[bool, Json], T]  # (replayed, body) -> result
    body: Json | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def content(self) -> bytes | None:
        if self.body is None:
            return None
        return json.dumps(self.body, default=_json_value, separators=(",", ":")).encode()

    @property
    def request_headers(self) -> dict[str, str]:
        json_header = {} if self.body is None else {"Content-Type": "application/json"}
        return {**json_header, **self.headers}

    def answer(self, status: int, content_type: str, content: bytes, *, own_replay: bool = False) -> T:
        """The result of a 2xx answer; otherwise raises the error it stands for.

        A 200 to a write is the server's replay of the request id's first result (`replayed`), unless
        `own_replay`: an earlier attempt of this same call may have been taken, and its result is
        what comes back."""
        body = _json_object(content_type, content)
        if not 200 <= status < 300:
            raise _error(status, body, content.decode(errors="replace"))
        if body is None:
            raise UnexpectedResponse(f"HTTP {status} without a JSON object body", status=status)
        try:
            return self.read(status == 200 and not own_replay, body)
        except _Malformed as malformed:
            raise UnexpectedResponse(
                f"HTTP {status} with a malformed body: {malformed}", status=status
            ) from None


# building calls


def _segment(text: str) -> str:
    return quote(text, safe="")


def _seconds(value: Decimal | int | None, name: str) -> Decimal | int | None:
    if isinstance(value, float | bool):  # durations travel exactly, like money
        raise InvalidInput(f"{name}: {value!r} must be a Decimal or int, not a float", field=name)
    return value


def _present(**values: object) -> Json:
    return {name: value for name, value in values.items() if value is not None}


def _authorize_call(
    *, request_id: str, operation: str, model: str, practice_id: str | None, input_tokens: int | None,
    prompt_chars: int | None, max_output_tokens: int | None, audio_seconds: Decimal | int | None,
) -> _Call[Authorization]:  # fmt: skip
    estimate = _present(input_tokens=input_tokens, prompt_chars=prompt_chars,
                        max_output_tokens=max_output_tokens,
                        audio_seconds=_seconds(audio_seconds, "estimate.audio_seconds"))  # fmt: skip
    body = _present(practice_id=practice_id, request_id=request_id, operation=operation, model=model)
    return _Call("POST", "/v1/authorizations", _authorization, body | {"estimate": estimate})


def _settle_call(
    *, request_id: str, model: str, practice_id: str | None, operation: str | None, status: str,
    input_tokens: int, cached_input_tokens: int, output_tokens: int, input_audio_tokens: int,
    audio_seconds: Decimal | int, error_code: str | None, meta: Mapping[str, Any] | None,
    estimated: bool = False,
) -> _Call[UsageEvent]:  # fmt: skip
    usage = {"input_tokens": input_tokens, "cached_input_tokens": cached_input_tokens,
             "output_tokens": output_tokens, "input_audio_tokens": input_audio_tokens,
             "audio_seconds": _seconds(audio_seconds, "usage.audio_seconds")}  # fmt: skip
    body = _present(request_id=request_id, practice_id=practice_id, operation=operation, model=model,
                    status=status, error_code=error_code)  # fmt: skip
    if meta is not None:
        body["meta"] = dict(meta)
    if estimated:
        body["estimated"] = True
    return _Call("POST", "/v1/usage", _usage_event, body | {"usage": usage})


def _void_call(*, request_id: str, practice_id: str | None) -> _Call[Authorization]:
    path = f"/v1/authorizations/{_segment(request_id)}/void"
    return _Call("POST", path, _void, _present(practice_id=practice_id))


def _budget_call(*, locale: str | None) -> _Call[ClientView]:
    headers = {} if locale is None else {"Accept-Language": locale}
    return _Call("GET", "/v1/budget", lambda _replayed, body: _client_view(body), headers=headers)


def _operator_view_call(practice_id: str) -> _Call[OperatorView]:
    return _Call("GET", f"/v1/practices/{_segment(practice_id)}/budget", _operator_view)


# retrying

# failures after which the request may or may not have reached the server: sent again
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# of those, the ones that came before anything was sent: no connection was made
_UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# a server restarting, overloaded or without its database; a gateway in front of it
_TRANSIENT_STATUSES = frozenset({502, 503, 504})
# the 503s of the aibudget server that say nothing of the request was recorded
_RECORDED_NOTHING = frozenset({DatabaseUnavailable.code, PaymentProviderUnavailable.code})


def _retry_after(value: str | None) -> float | None:
    """The seconds a `Retry-After` header asks to wait (delay-seconds or an HTTP date); None if it is
    absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True, slots=True)
class _Retry:
    """How often and when a call is sent again after a transient failure (see `BudgetClient`)."""

    retries: int
    backoff: float
    max_backoff: float

    def __post_init__(self) -> None:
        for name in ("retries", "backoff", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not 0 <= value < float("inf"):
                raise InvalidInput(f"{name}: {value!r} must be a finite number >= 0", field=name)

    def wait(self, failed: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next try of a call that failed `failed + 1` times, the last one
        with an answer that said `Retry-After`; None: give up. The wait doubles from `backoff` up to
        `max_backoff`, jittered (half to all of it) so that clients cut off together do not come back
        together; a `Retry-After` up to `max_backoff` is waited at least, a longer one gives up."""
        if failed >= self.retries or (retry_after is not None and retry_after > self.max_backoff):
            return None
        doubled = self.backoff * 2.0 ** min(failed, 64)  # no float overflow with many retries
        delay: float = min(doubled, self.max_backoff) * random.uniform(0.5, 1.0)
        return delay if retry_after is None else max(delay, retry_after)


class _Tries:
    """The tries of one call: after each failure, whether and when to send it again; and whether an
    earlier try may have been taken by the server, so that a 200 may be the replay of its own result."""

    def __init__(self, retry: _Retry) -> None:
        self._retry, self._failed = retry, 0
        self.maybe_taken = False

    def after_error(self, error: httpx.TransportError) -> float | None:
        """Seconds to wait before sending again after `error`; None: raise it."""
        if not isinstance(error, _TRANSIENT_ERRORS):
            return None  # a bad URL, a local protocol error: the same again would fail the same
        return self._again(taken=not isinstance(error, _UNSENT_ERRORS), retry_after=None)

    def after_answer(self, response: httpx.Response) -> float | None:
        """Seconds to wait before sending again after `response`; None: it is the answer."""
        if response.status_code not in _TRANSIENT_STATUSES:
            return None
        body = _json_object(response.headers.get("content-type", ""), response.content) or {}
        code = body.get("error_code")
        nothing = response.status_code == 503 and isinstance(code, str) and code in _RECORDED_NOTHING
        return self._again(taken=not nothing, retry_after=_retry_after(response.headers.get("retry-after")))

    def _again(self, *, taken: bool, retry_after: float | None) -> float | None:
        wait = self._retry.wait(self._failed, retry_after)
        if wait is not None:
            self._failed += 1
            self.maybe_taken = self.maybe_taken or taken
        return wait


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
        self._retry = _Retry(retries, backoff, max_backoff)
        self._http = httpx.Client(
            **_client_options(api_key, device_id, timeout, base_url), transport=transport
        )

    def _send(self, call: _Call[T]) -> T:
        tries = _Tries(self._retry)
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
        return self._send(_authorize_call(
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
        return self._send(_settle_call(
            request_id=request_id, model=model, practice_id=practice_id, operation=operation, status=status,
            input_tokens=input_tokens, cached_input_tokens=cached_input_tokens, output_tokens=output_tokens,
            input_audio_tokens=input_audio_tokens, audio_seconds=audio_seconds, error_code=error_code,
            meta=meta, estimated=estimated,
        ))  # fmt: skip

    def void(self, *, request_id: str, practice_id: str | None = None) -> Authorization:
        """Release the hold of a call that was not made (idempotent)."""
        return self._send(_void_call(request_id=request_id, practice_id=practice_id))

    def budget(self, *, locale: str | None = None) -> ClientView:
        """`GET /v1/budget`: what the desktop shows, in `locale` (default the practice's).

        A practice key reads its own practice; a service key needs the client's `device_id`.
        """
        return self._send(_budget_call(locale=locale))

    def operator_view(self, practice_id: str) -> OperatorView:
        """`GET /v1/practices/{practice_id}/budget` (admin or service key): the USD amounts."""
        return self._send(_operator_view_call(practice_id))

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
        self._retry = _Retry(retries, backoff, max_backoff)
        options = _client_options(api_key, device_id, timeout, base_url)
        self._http = httpx.AsyncClient(**options, transport=transport)

    async def _send(self, call: _Call[T]) -> T:
        tries = _Tries(self._retry)
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
        return await self._send(_authorize_call(
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
        return await self._send(_settle_call(
            request_id=request_id, model=model, practice_id=practice_id, operation=operation, status=status,
            input_tokens=input_tokens, cached_input_tokens=cached_input_tokens, output_tokens=output_tokens,
            input_audio_tokens=input_audio_tokens, audio_seconds=audio_seconds, error_code=error_code,
            meta=meta, estimated=estimated,
        ))  # fmt: skip

    async def void(self, *, request_id: str, practice_id: str | None = None) -> Authorization:
        """See `BudgetClient.void`."""
        return await self._send(_void_call(request_id=request_id, practice_id=practice_id))

    async def budget(self, *, locale: str | None = None) -> ClientView:
        """See `BudgetClient.budget`."""
        return await self._send(_budget_call(locale=locale))

    async def operator_view(self, practice_id: str) -> OperatorView:
        """See `BudgetClient.operator_view`."""
        return await self._send(_operator_view_call(practice_id))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBudgetClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()
