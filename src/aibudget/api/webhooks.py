"""Incoming webhooks: `POST /v1/webhooks/stripe`, authenticated by Stripe's signature, not an API key.

The raw body is handed on untouched (the signature covers its exact bytes); verification, the
once-only record and the effect live in `payments.webhooks`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from aibudget.api.deps import BudgetDep
from aibudget.api.errors import problems
from aibudget.payments.webhooks import Outcome

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class WebhookOut(BaseModel):
    received: bool = True
    outcome: Outcome


@router.post(
    "/stripe",
    responses=problems(404, 409, body=True),
)
async def stripe_webhook(
    request: Request,
    budget: BudgetDep,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> WebhookOut:
    """A Stripe event: applied once (`duplicate` when delivered again), `ignored` for types aibudget
    does not use. Answers 400 and writes nothing when the signature is bad or older than 300 s; 4xx
    (nothing written, Stripe retries) when the event names an unknown practice."""
    payload = await request.body()
    outcome = await run_in_threadpool(budget.stripe_webhook, payload, stripe_signature)
    return WebhookOut(outcome=outcome)
