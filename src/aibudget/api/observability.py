"""What an operator watches: request ids, one JSON log line per request, Prometheus metrics.

Metrics (served at `/metrics` by `api.health`) carry bounded labels only: the route *template*
(`/v1/authorizations/{request_id}/void`, never the path), the method, the status, a refusal reason
from a fixed list, the model as priced and the operation (each capped at a number of distinct
values per process, past which they count as `other`). Never a practice id, device id, request id
or key. Each worker process counts on its own: with `PROMETHEUS_MULTIPROC_DIR` set (`aibudget serve
--workers N` sets it) the values live in files there and `/metrics` sums all workers
(prometheus-client's multiprocess mode); without it, the process's default registry.

Logs are JSON lines. The request id is the caller's `X-Request-Id` when it is a plain token of at
most 128 characters, else a new one; it is echoed in the response and added to every line logged
while the request runs. Logs never contain keys, tokens, the `Authorization` header, device ids or
metadata values: the request line is built from a fixed set of fields, and every other message and
traceback is scrubbed of anything shaped like an aibudget key, a provider key or a bearer token, and
of the parameters SQLAlchemy quotes in its errors.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import re
import threading
import time
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aibudget.errors import AibudgetError, BudgetExceeded
from aibudget.ledger.service import Authorization, UsageEvent
from aibudget.views.refusal import REASONS

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_CONVERTER = re.compile(r"\{(\w+):\w+\}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SECRETS = (
    (re.compile(r"aib_[0-9a-f]{16}_[A-Za-z0-9_-]+"), "aib_[redacted]"),
    (re.compile(r"(?i)\bbearer\s+[^\s\"',;]+"), "Bearer [redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-[redacted]"),
    # SQLAlchemy errors quote the statement's parameters: metadata values, hashes, amounts
    (re.compile(r"\[parameters: [^\n]*\]"), "[parameters: redacted]"),
)

request_id: ContextVar[str | None] = ContextVar("aibudget_request_id", default=None)
access_log = logging.getLogger("aibudget.http")

REQUESTS = Counter("aibudget_http_requests", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "aibudget_http_request_duration_seconds", "Time to answer an HTTP request, to the last body byte",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
AUTHORIZATIONS = Counter(
    "aibudget_authorizations",
    "Authorization decisions: new holds, admissions without a hold (fail-open), every refusal served (402)",
    ["outcome", "reason"],
)  # fmt: skip
SETTLEMENTS = Counter("aibudget_settlements", "Calls settled (replays not counted)", ["status"])
COST = Counter(
    "aibudget_cost_micro_usd", "Cost posted by settlements, in micro-USD (1e-6 USD)",
    ["priced_as", "operation"],
)  # fmt: skip


class _Bounded:
    """Passes the first `limit` distinct values of a label through; later ones become `other`."""

    def __init__(self, limit: int) -> None:
        self._seen: set[str] = set()
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if value is None:
            return "none"
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return "other"


_priced_as, _operation = _Bounded(200), _Bounded(50)


def record_authorization(authorization: Authorization) -> None:
    """Count a new hold (a replay is the same decision, already counted)."""
    if not authorization.replayed:
        AUTHORIZATIONS.labels("authorized", "none").inc()


def record_fail_open() -> None:
    """Count a call admitted without a hold because the database was unavailable (fail-open)."""
    AUTHORIZATIONS.labels("admitted_without_hold", "database_unavailable").inc()


def record_refusal(reason: str) -> None:
    AUTHORIZATIONS.labels("refused", reason if reason in REASONS else "other").inc()


def record_usage(event: UsageEvent) -> None:
    """Count a settled call and its cost by model as priced and operation (replays not counted)."""
    if event.replayed:
        return
    SETTLEMENTS.labels(event.status if event.status in ("success", "error") else "other").inc()
    if event.cost_micros:
        COST.labels(_priced_as(event.priced_as), _operation(event.operation)).inc(event.cost_micros)


def render_metrics() -> tuple[bytes, str]:
    """The Prometheus text exposition of every worker's metrics, and its content type."""
    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def scrub(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, request fields, exception."""

    _second = -1
    _stamp = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime a second: this runs for every request
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            # a request line is made of bounded fields only; anything else may quote what it should not
            "message": message if isinstance(fields, dict) else scrub(message),
        }
        if isinstance(fields, dict):
            entry.update(fields)
        elif (current := request_id.get()) is not None:
            entry["request_id"] = current
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_config(level: str = "INFO") -> dict[str, Any]:
    """Logging for `aibudget serve` (a `logging.config.dictConfig` dict): aibudget's and uvicorn's own
    lines as JSON on stderr; uvicorn's access log off, as every request has its JSON line already."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "aibudget": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure_logging() -> None:
    """JSON lines on stderr for the `aibudget` loggers, unless logging is set up already (by `aibudget
    serve`, the application embedding this one, or a test runner)."""
    logger = logging.getLogger("aibudget")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@functools.cache
def _template(path: str) -> str:
    """A route's path as its label: `/v1/authorizations/{request_id:path}/void` loses the `:path`."""
    return _CONVERTER.sub(r"{\1}", path)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            presented: str = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(presented):
                return presented
            break
    return os.urandom(16).hex()


def _route_of(scope: Scope) -> str:
    """The matched route's template; the path of a route without parameters that is not the API's
    own (`/docs`, `/openapi.json`); "unmatched" for anything else (a 404, a file of a mount)."""
    route = getattr(scope.get("route"), "path", None)
    if route is not None:
        return str(route)
    if "endpoint" in scope and not scope.get("path_params"):
        return str(scope["path"])
    return "unmatched"


class RequestObserver:
    """ASGI middleware: a request id, one log line and the request metrics for every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        current = _request_id(scope)
        request_id.set(current)
        echoed = (REQUEST_ID_HEADER.encode(), current.encode())
        status = 500  # if the app raises before answering, the server answers 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            self._observe(scope, status, time.perf_counter() - started, current)

    def _observe(self, scope: Scope, status: int, seconds: float, current: str) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "other"
        route = _template(_route_of(scope))
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            labels = (method, route, str(status))
            series = self._series[key] = (REQUESTS.labels(*labels), LATENCY.labels(*labels))
        series[0].inc()
        series[1].observe(seconds)
        duration_ms = round(seconds * 1000, 3)
        fields = {"request_id": current, "method": method, "route": route, "status": status,
                  "duration_ms": duration_ms}  # fmt: skip
        access_log.info("%s %s %d %.3f ms", method, route, status, duration_ms, extra={"fields": fields})


def install(app: FastAPI) -> None:
    """Observe every request of `app` (the outermost middleware) and count refusals as they are served.

    Call after the error handlers are installed: a refusal's answer stays theirs.
    """
    configure_logging()
    app.add_middleware(RequestObserver)
    answer = app.exception_handlers.get(AibudgetError)
    if answer is None:
        return

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BudgetExceeded)
        record_refusal(exc.reason)
        response = answer(request, exc)
        return await response if inspect.isawaitable(response) else response

    app.add_exception_handler(BudgetExceeded, refused)
