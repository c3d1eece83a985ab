"""`create_app()`: the FastAPI application — routers, error mapping, body limit, and the lifetimes of
the background workers and the proxy's upstream client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aibudget.api import (
    accounts,
    budgets,
    credits,
    errors,
    gate,
    health,
    notifications,
    observability,
    webhooks,
)
from aibudget.auth.recent import RecentKeys
from aibudget.background import Periodic, return_free_memory
from aibudget.budget import Budget
from aibudget.config import Settings
from aibudget.dashboard import routes as dashboard
from aibudget.errors import DatabaseUnavailable
from aibudget.ledger.sweeper import Sweeper
from aibudget.proxy import PREFIX as PROXY_PREFIX
from aibudget.proxy import routes as proxy
from aibudget.proxy.routes import MAX_UPLOAD_BYTES
from aibudget.proxy.upstream import Upstream

MAX_BODY_BYTES = 64 * 1024
CHECKPOINT_INTERVAL_SECONDS = 0.1
CHECKPOINT_PAUSE_AFTER_FAILURE_SECONDS = 5
RETURN_MEMORY_INTERVAL_SECONDS = 60

log = logging.getLogger(__name__)


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, declared or streamed, before any route runs;
    the proxy's paths (long prompts, audio uploads) may send up to `proxy_limit`."""

    def __init__(
        self, app: ASGIApp, limit: int = MAX_BODY_BYTES, proxy_limit: int = MAX_UPLOAD_BYTES
    ) -> None:
        self.app = app
        self.limit = limit
        self.proxy_limit = proxy_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.proxy_limit if scope["path"].startswith(PROXY_PREFIX + "/") else self.limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._too_large(scope, receive, send, limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # an HTTPException, so the route's body parsing passes it on as is
                raise HTTPException(413, detail=f"request bodies are limited to {limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = errors.problem(
            413, error_code="BODY_TOO_LARGE", title="Body too large",
            detail=f"request bodies are limited to {limit} bytes",
        )  # fmt: skip
        await response(scope, receive, send)


def _last_pass(write: Callable[[], int], waiting: str) -> None:
    """At shutdown, once more: `write` what waits in a journal for the database (`ledger.journal`);
    when it still cannot, the journal's file keeps it for the next sweep on this data directory."""
    try:
        write()
    except DatabaseUnavailable:
        log.error("%s wait in their journal: the database is unavailable at shutdown", waiting)


def create_app(settings: Settings | None = None, *, budget: Budget | None = None) -> FastAPI:
    """The API over `budget`, or over a `Budget` opened from `settings` when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = budget or Budget.open(settings=settings or Settings.load(), background_checkpoints=True)
        app.state.budget = opened
        housekeepers = [
            Periodic(
                return_free_memory, interval=RETURN_MEMORY_INTERVAL_SECONDS, name="aibudget-memory", done=None
            ).start()
        ]
        if opened.embedded_database:  # SQLite's log copied here, not by whichever call's commit fills it
            checkpointer = Periodic(
                opened.checkpoint, interval=CHECKPOINT_INTERVAL_SECONDS, name="aibudget-checkpoint",
                done=None, pause_after_failure=CHECKPOINT_PAUSE_AFTER_FAILURE_SECONDS,
            )  # fmt: skip
            housekeepers.append(checkpointer.start())
        app.state.upstream = Upstream(opened.settings)
        notifier = opened.notifier()  # None without AIBUDGET_NOTIFY_URL; ConfigError without its secret
        sweeper = Sweeper(opened.sweep, interval=opened.settings.sweep_interval_seconds).start()
        if notifier is not None:
            notifier.start()
        app.state.recent_keys = RecentKeys() if opened.settings.fail_open else None
        recorder = None
        if opened.settings.fail_open:
            recorder = Periodic(
                opened.record_admissions, interval=1, name="aibudget-fail-open",
                done="recorded %d calls admitted while the database was unavailable",
            ).start()  # fmt: skip
        try:
            yield
        finally:
            if recorder is not None:
                recorder.stop()
                _last_pass(opened.record_admissions, "calls admitted without a hold")
            if notifier is not None:
                notifier.stop()
            sweeper.stop()
            _last_pass(opened.post_kept_settles, "kept settles")
            for housekeeper in housekeepers:
                housekeeper.stop()
            await app.state.upstream.aclose()
            if budget is None:
                opened.close()

    app = FastAPI(
        title="aibudget",
        version="1",
        summary="Prepaid AI budgets per customer: gate every AI call, price real usage, charge the right pot",
        lifespan=lifespan,
        # an id ending in an encoded `/` (`0%2F`) must be a 404, not a redirect to another id
        redirect_slashes=False,
    )
    errors.install(app)
    app.include_router(gate.router)
    app.include_router(accounts.router)
    app.include_router(budgets.router)
    app.include_router(credits.router)
    app.include_router(webhooks.router)
    app.include_router(notifications.router)
    app.include_router(health.router)
    app.router.routes[:0] = proxy.routes  # first: each call of the proxy is matched at once
    dashboard.install(app)
    app.add_middleware(BodyLimit)
    observability.install(app)  # after the error handlers; its middleware outermost
    return app
