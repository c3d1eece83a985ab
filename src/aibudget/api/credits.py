"""Routes for extra credit: granting it, buying it (Stripe Checkout), and automatic top-up.

A grant is unique on its `reference` (the payment id): the first grant answers 201, the same
request again 200 with the same grant, and the same reference with another amount, source or
practice 409 — a payment credits exactly once. Automatic top-up settings are set by an admin or by
the practice itself (its own practice only) and read by those and the vendor's backend. A purchase
starts a Checkout session; the credit arrives with Stripe's `checkout.session.completed` webhook.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import AwareDatetime, BaseModel, Field, StrictBool, StrictInt

from aibudget.api.budgets import GrantOut, grant_out
from aibudget.api.deps import Admin, BudgetDep, Gatekeeper, practice_scope, require
from aibudget.api.errors import problems
from aibudget.api.schemas import PracticeId, Strict, Usd
from aibudget.auth.service import Principal
from aibudget.credit import topup
from aibudget.credit.service import DEFAULT_PRIORITY, Source
from aibudget.credit.topup import TopupSettings
from aibudget.money import format_usd

router = APIRouter(prefix="/v1", tags=["credit"])

Configurer = Annotated[Principal, Depends(require("admin", "practice"))]


class GrantIn(Strict):
    amount_usd: Usd
    source: Source
    reference: Annotated[str, Field(min_length=1, max_length=200, description="unique: the payment id")]
    expires_at: AwareDatetime | None = None
    priority: Annotated[StrictInt, Field(ge=0, le=1_000_000, description="lower pays first")] = (
        DEFAULT_PRIORITY
    )


class AutoTopupIn(Strict):
    enabled: StrictBool
    threshold_usd: Usd | None = Field(default=None, description="top up when availability falls below")
    threshold_percent: Annotated[StrictInt, Field(ge=0, le=100)] | None = Field(
        default=None, description="… or below this percentage of the included budget (give exactly one)"
    )
    package_usd: Usd
    monthly_max_count: Annotated[StrictInt, Field(ge=0, le=topup.MAX_MONTHLY_COUNT)]
    monthly_max_usd: Usd


class AutoTopupOut(BaseModel):
    practice_id: str
    enabled: bool
    threshold_usd: str | None
    threshold_percent: int | None
    package_usd: str
    monthly_max_count: int
    monthly_max_usd: str
    paused_reason: str | None = Field(
        description="why charging stopped; cleared by an explicit resume or a successful purchase"
    )
    paused_at: datetime | None
    updated_at: datetime | None = Field(description="null: never configured, these are the defaults")


def _settings(settings: TopupSettings) -> AutoTopupOut:
    return AutoTopupOut(
        practice_id=settings.practice_id,
        enabled=settings.enabled,
        threshold_usd=None if settings.threshold_micros is None else format_usd(settings.threshold_micros),
        threshold_percent=settings.threshold_percent,
        package_usd=format_usd(settings.package_micros),
        monthly_max_count=settings.monthly_max_count,
        monthly_max_usd=format_usd(settings.monthly_max_micros),
        paused_reason=settings.paused_reason,
        paused_at=settings.paused_at,
        updated_at=settings.updated_at,
    )


@router.post(
    "/practices/{practice_id}/credits",
    status_code=201,
    responses={
        200: {"description": "a replay: the grant made the first time", "model": GrantOut},
        **problems(404, 409, body=True),
    },
)
def grant_credit(
    practice_id: PracticeId, body: GrantIn, _admin: Admin, budget: BudgetDep, response: Response
) -> GrantOut:
    """Add prepaid extra credit, once per `reference`: repeating the request returns the first grant
    (200, `remaining_usd` as it is now); the same reference with another amount or source is 409."""
    grant = budget.grant_credit(practice_id, **body.model_dump())
    if grant.replayed:
        response.status_code = 200
    return grant_out(grant)


@router.put("/practices/{practice_id}/auto-topup", responses=problems(404, body=True))
def put_auto_topup(
    practice_id: PracticeId, body: AutoTopupIn, principal: Configurer, budget: BudgetDep
) -> AutoTopupOut:
    """Set automatic top-up: on or off, the trigger (`threshold_usd` or `threshold_percent` of the
    included budget, exactly one), the package, and the monthly caps (count and USD per calendar
    month in the practice's timezone). A practice key sets its own practice only. A pause after a
    declined charge is kept."""
    scoped = practice_scope(principal, practice_id)
    assert scoped is not None
    return _settings(budget.put_auto_topup(scoped, **body.model_dump()))


@router.get("/practices/{practice_id}/auto-topup", responses=problems(404))
def get_auto_topup(practice_id: PracticeId, principal: Gatekeeper, budget: BudgetDep) -> AutoTopupOut:
    """The practice's automatic top-up settings; the defaults (off) when never configured. A practice
    key reads its own practice only."""
    scoped = practice_scope(principal, practice_id)
    assert scoped is not None
    return _settings(budget.auto_topup(scoped))


@router.post("/practices/{practice_id}/auto-topup/resume", responses=problems(404))
def resume_auto_topup(practice_id: PracticeId, principal: Configurer, budget: BudgetDep) -> AutoTopupOut:
    """Resume automatic top-up after it paused on a declined card or a needed authentication: the
    next time the budget runs low it charges again. A practice key resumes its own practice only."""
    scoped = practice_scope(principal, practice_id)
    assert scoped is not None
    return _settings(budget.resume_auto_topup(scoped))


class AttemptOut(BaseModel):
    attempt_id: str
    practice_id: str
    month: str = Field(description="calendar month in the practice's timezone the caps count in")
    credit_usd: str
    charge_amount: int = Field(description="in the currency's smallest unit, as Stripe charges it")
    currency: str
    trigger: Literal["settle", "authorize"]
    status: Literal["pending", "succeeded", "failed"]
    payment_intent_id: str | None
    failure_code: str | None
    grant_id: int | None
    created_at: datetime
    closed_at: datetime | None


@router.get("/practices/{practice_id}/auto-topup/attempts", responses=problems(404))
def topup_attempts(
    practice_id: PracticeId,
    principal: Gatekeeper,
    budget: BudgetDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AttemptOut]:
    """The practice's automatic top-ups, newest first: what was charged, when, and how it ended."""
    scoped = practice_scope(principal, practice_id)
    assert scoped is not None
    return [AttemptOut(**attempt.as_json()) for attempt in budget.topup_attempts(scoped, limit=limit)]


class OfferOut(BaseModel):
    package_id: str
    credit_usd: str
    price: str = Field(description="in the currency's major unit")
    currency: str


@router.get("/practices/{practice_id}/credits/packages", responses=problems(404))
def credit_packages(practice_id: PracticeId, principal: Gatekeeper, budget: BudgetDep) -> list[OfferOut]:
    """The credit packages for sale to the practice, priced in its currency (from its locale)."""
    scoped = practice_scope(principal, practice_id)
    assert scoped is not None
    return [
        OfferOut(
            package_id=offer.package_id,
            credit_usd=format_usd(offer.credit_micros),
            price=str(offer.price),
            currency=offer.currency,
        )
        for offer in budget.credit_offers(scoped)
    ]


HttpUrl = Annotated[str, Field(min_length=8, max_length=2000, pattern=r"^https?://\S+$")]


class CheckoutIn(Strict):
    package_id: Annotated[str, Field(min_length=1, max_length=40)]
    success_url: HttpUrl | None = Field(default=None, description="default AIBUDGET_CHECKOUT_SUCCESS_URL")
    cancel_url: HttpUrl | None = Field(default=None, description="default AIBUDGET_CHECKOUT_CANCEL_URL")


class CheckoutOut(BaseModel):
    checkout_url: str
    session_id: str


@router.post(
    "/practices/{practice_id}/credits/checkout",
    status_code=201,
    responses=problems(404, 409, 503, body=True),
)
def checkout(
    practice_id: PracticeId, body: CheckoutIn, principal: Gatekeeper, budget: BudgetDep
) -> CheckoutOut:
    """Start buying a credit package: a Stripe Checkout URL to send the customer to. The credit is
    granted when Stripe confirms the payment (webhook `checkout.session.completed`), once per payment."""
    scoped = practice_scope(principal, practice_id)
    assert scoped is not None
    session = budget.checkout(scoped, **body.model_dump())
    return CheckoutOut(checkout_url=session.url, session_id=session.session_id)
