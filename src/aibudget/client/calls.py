"""The API's calls as data, no I/O: result types, each call's request, reading its answer, error mapping."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar
from urllib.parse import quote

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
    try of this call whose answer was lost (see the `aibudget.client` doc); a void never says. A server
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


def json_object(content_type: str, content: bytes) -> Json | None:
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
class Call(Generic[T]):
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
        body = json_object(content_type, content)
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


def authorize_call(
    *, request_id: str, operation: str, model: str, practice_id: str | None, input_tokens: int | None,
    prompt_chars: int | None, max_output_tokens: int | None, audio_seconds: Decimal | int | None,
) -> Call[Authorization]:  # fmt: skip
    estimate = _present(input_tokens=input_tokens, prompt_chars=prompt_chars,
                        max_output_tokens=max_output_tokens,
                        audio_seconds=_seconds(audio_seconds, "estimate.audio_seconds"))  # fmt: skip
    body = _present(practice_id=practice_id, request_id=request_id, operation=operation, model=model)
    return Call("POST", "/v1/authorizations", _authorization, body | {"estimate": estimate})


def settle_call(
    *, request_id: str, model: str, practice_id: str | None, operation: str | None, status: str,
    input_tokens: int, cached_input_tokens: int, output_tokens: int, input_audio_tokens: int,
    audio_seconds: Decimal | int, error_code: str | None, meta: Mapping[str, Any] | None,
    estimated: bool = False,
) -> Call[UsageEvent]:  # fmt: skip
    usage = {"input_tokens": input_tokens, "cached_input_tokens": cached_input_tokens,
             "output_tokens": output_tokens, "input_audio_tokens": input_audio_tokens,
             "audio_seconds": _seconds(audio_seconds, "usage.audio_seconds")}  # fmt: skip
    body = _present(request_id=request_id, practice_id=practice_id, operation=operation, model=model,
                    status=status, error_code=error_code)  # fmt: skip
    if meta is not None:
        body["meta"] = dict(meta)
    if estimated:
        body["estimated"] = True
    return Call("POST", "/v1/usage", _usage_event, body | {"usage": usage})


def void_call(*, request_id: str, practice_id: str | None) -> Call[Authorization]:
    path = f"/v1/authorizations/{_segment(request_id)}/void"
    return Call("POST", path, _void, _present(practice_id=practice_id))


def budget_call(*, locale: str | None) -> Call[ClientView]:
    headers = {} if locale is None else {"Accept-Language": locale}
    return Call("GET", "/v1/budget", lambda _replayed, body: _client_view(body), headers=headers)


def operator_view_call(practice_id: str) -> Call[OperatorView]:
    return Call("GET", f"/v1/practices/{_segment(practice_id)}/budget", _operator_view)
