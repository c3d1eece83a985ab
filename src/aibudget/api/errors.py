"""Every error response is `application/problem+json` (RFC 9457) with an `error_code`; mapped here once.

Deliberate errors carry their status (`AibudgetError.http_status`); a refused authorization is a 402
whose body is the refusal payload of SPEC §4 plus the problem fields; bad input is a 422 naming the
field. Anything unexpected is logged with its traceback and answered with a bare 500 problem: the
client never sees a traceback. On the proxy's routes a problem also carries OpenAI's `error` object
(message, type, param, code), which OpenAI's client libraries read.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aibudget.errors import AibudgetError, BudgetExceeded
from aibudget.proxy import PREFIX as PROXY_PREFIX
from aibudget.views import refusal, texts

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE", 409: "CONFLICT", 413: "BODY_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
    422: "INVALID_INPUT", 429: "TOO_MANY_REQUESTS", 503: "UNAVAILABLE",
}  # fmt: skip


_MEANINGS = {
    400: "the body is not JSON (a webhook: or its signature is bad, missing or stale)",
    401: "no API key, or an unknown or revoked one",
    402: "refused: nothing (or, in strict mode, not enough) is left; the SPEC §4 payload",
    403: "the key's role or practice may not do this",
    404: "a named thing does not exist",
    409: "conflicts with what is stored",
    413: "the body is larger than 64 KiB",
    422: "invalid input; `field` names it",
    503: "the database (or, for payments, the payment provider) is unavailable; send the same request again"
    " or charged, and the same request may be sent again later",
}


def problems(*statuses: int, body: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route's error statuses: problem+json bodies (RFC 9457). Any route
    may answer 401, 403, 422 and 503; a route that reads a body also 400 and 413."""
    always = {401, 403, 422, 503} | ({400, 413} if body else set())
    return {
        status: {"description": _MEANINGS[status], "content": {PROBLEM_JSON: {}}}
        for status in sorted(always | set(statuses))
    }


def problem(status: int, *, error_code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"/problems/{error_code.lower().replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "error_code": error_code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _openai_error(request: Request, status: int, code: str, detail: str, field: str | None) -> dict[str, Any]:
    """OpenAI's error object, for a problem answered on the proxy's routes; nothing elsewhere."""
    if not request.url.path.startswith(f"{PROXY_PREFIX}/"):
        return {}
    kind = "invalid_request_error" if status < 500 else "api_error"
    return {"error": {"message": detail, "type": kind, "param": field, "code": code}}


def _field(location: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in location]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def refusal_payload(request: Request, exc: BudgetExceeded) -> dict[str, Any]:
    """The 402 payload, its `message_user` in the language the request's `Accept-Language` prefers
    among de, fr, it and en; without one of them, in the practice's language as recorded."""
    locale = texts.negotiate(request.headers.get("accept-language"), "")
    return refusal.in_language(exc.payload, locale) if locale else exc.payload


async def _aibudget_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AibudgetError)
    if isinstance(exc, BudgetExceeded):
        return problem(402, title=exc.title, detail=exc.detail, **refusal_payload(request, exc))
    extra = _openai_error(request, exc.http_status, exc.code, exc.detail, exc.field)
    if exc.field:  # the same shape as a validation error's, so clients read one kind of 422
        extra |= {"field": exc.field, "errors": [{"field": exc.field, "message": exc.detail}]}
    response = problem(exc.http_status, error_code=exc.code, title=exc.title, detail=exc.detail, **extra)
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status == 503:
        response.headers["Retry-After"] = "1"
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": "body" if error["type"] == "json_invalid" else _field(error["loc"]),
            "message": error["msg"],
        }
        for error in exc.errors()
    ]
    detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
    field = errors[0]["field"] if errors else "body"
    return problem(422, error_code="INVALID_INPUT", title="Invalid input", detail=detail, field=field,
                   errors=errors, **_openai_error(request, 422, "INVALID_INPUT", detail, field))  # fmt: skip


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status, code, detail = exc.status_code, _HTTP_CODES.get(exc.status_code, "HTTP_ERROR"), str(exc.detail)
    response = problem(status, error_code=code, title=code.replace("_", " ").capitalize(), detail=detail,
                       **_openai_error(request, status, code, detail, None))  # fmt: skip
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    detail = "the request failed on our side; retrying with the same request_id is safe"
    return problem(500, error_code="INTERNAL", title="Internal error", detail=detail,
                   **_openai_error(request, 500, "INTERNAL", detail, None))  # fmt: skip


def install(app: FastAPI) -> None:
    app.add_exception_handler(AibudgetError, _aibudget_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
