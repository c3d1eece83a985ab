"""`create_app()`: the FastAPI application — routers, error mapping, body limit, the sweeper's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
from aibudget.budget import Budget
from aibudget.config import Settings
from aibudget.ledger.sweeper import Sweeper

MAX_BODY_BYTES = 64 * 1024


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, declared or streamed, before any route runs."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # an HTTPException, so the route's body parsing passes it on as is
                raise HTTPException(413, detail=f"request bodies are limited to {self.limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = errors.problem(
            413, error_code="BODY_TOO_LARGE", title="Body too large",
            detail=f"request bodies are limited to {self.limit} bytes",
        )  # fmt: skip
        await response(scope, receive, send)


def create_app(settings: Settings | None = None, *, budget: Budget | None = None) -> FastAPI:
    """The API over `budget`, or over a `Budget` opened from `settings` when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = budget or Budget.open(settings=settings or Settings.load())
        app.state.budget = opened
        notifier = opened.notifier()  # None without AIBUDGET_NOTIFY_URL; ConfigError without its secret
        sweeper = Sweeper(opened.sweep, interval=opened.settings.sweep_interval_seconds).start()
        if notifier is not None:
            notifier.start()
        try:
            yield
        finally:
            if notifier is not None:
                notifier.stop()
            sweeper.stop()
            if budget is None:
                opened.close()

    app = FastAPI(
        title="aibudget",
        version="1",
        summary="Prepaid AI budgets per customer: gate every AI call, price real usage, charge the right pot",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(gate.router)
    app.include_router(accounts.router)
    app.include_router(budgets.router)
    app.include_router(credits.router)
    app.include_router(webhooks.router)
    app.include_router(notifications.router)
    app.include_router(health.router)
    app.add_middleware(BodyLimit)
    observability.install(app)  # after the error handlers; its middleware outermost
    return app
