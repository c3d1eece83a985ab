"""Routes of the gate: authorize before a call, settle (record usage) after it, void a hold.

Callers: the vendor's backend with a service key (naming the practice or a device), or the desktop
with a practice key (its own practice only, optionally naming its device). Replays are idempotent:
201 the first time, 200 with the same body after. On SQLite the ledger's work runs on the event
loop unless it would wait (`budget_call`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, StrictBool

from aibudget.api import observability
from aibudget.api.deps import BudgetDep, DeviceId, Gatekeeper, budget_call, practice_scope
from aibudget.api.errors import problems
from aibudget.api.schemas import Count, Model, Operation, PracticeId, RequestId, Seconds, Strict
from aibudget.errors import DatabaseUnavailable
from aibudget.ledger.fail_open import Admission
from aibudget.ledger.service import Authorization, UsageEvent
from aibudget.money import format_usd
from aibudget.views.snapshot import Snapshot

router = APIRouter(prefix="/v1", tags=["gate"])


class EstimateIn(Strict):
    input_tokens: Count | None = None
    prompt_chars: Count | None = Field(default=None, description="bound the input from the prompt's size")
    max_output_tokens: Count | None = None
    audio_seconds: Seconds | None = None


class AuthorizeIn(Strict):
    practice_id: PracticeId | None = None
    request_id: RequestId
    operation: Operation
    model: Model
    estimate: EstimateIn = EstimateIn()


class AuthorizationOut(BaseModel):
    authorization_id: str
    request_id: str
    practice_id: str
    status: str
    held_usd: str
    estimate_usd: str
    expires_at: datetime
    budget: dict[str, Any] | None = Field(
        description="the client view after the call; null when admitted without a hold (fail-open)"
    )


class UsageIn(Strict):
    input_tokens: Count = 0
    cached_input_tokens: Count = 0
    output_tokens: Count = 0
    input_audio_tokens: Count = 0
    audio_seconds: Seconds = Decimal(0)


class SettleIn(Strict):
    request_id: RequestId
    practice_id: PracticeId | None = None
    operation: Operation | None = None
    model: Model
    status: Literal["success", "error"] = "success"
    usage: UsageIn = UsageIn()
    error_code: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    meta: dict[str, Any] | None = Field(
        default=None, description="flat object, <= 32 scalar values; scrubbed"
    )
    estimated: StrictBool = Field(
        default=False,
        description="true when the usage is an estimate (e.g. a stream cut off before its usage)",
    )


class AllocationOut(BaseModel):
    pot: str
    amount_usd: str
    grant_id: int | None


class UsageOut(BaseModel):
    event_id: int
    request_id: str
    practice_id: str
    status: str
    model: str
    priced_as: str | None
    cost_usd: str
    overage_usd: str
    price_source: str | None
    price_version: str | None
    allocations: list[AllocationOut]
    budget: dict[str, Any]


class VoidIn(Strict):
    practice_id: PracticeId | None = None


def _client_view(snapshot: Snapshot | None) -> dict[str, Any]:
    assert snapshot is not None, "the ledger returns the budget after every operation"
    return snapshot.client_view().as_json()


def _authorization(authorization: Authorization) -> AuthorizationOut:
    return AuthorizationOut(
        authorization_id=authorization.authorization_id,
        request_id=authorization.request_id,
        practice_id=authorization.practice_id,
        status=authorization.status,
        held_usd=format_usd(authorization.held_micros),
        estimate_usd=format_usd(authorization.estimate_micros),
        expires_at=authorization.expires_at,
        budget=_client_view(authorization.budget),
    )


def _admission(admission: Admission, hold_ttl_seconds: int) -> AuthorizationOut:
    return AuthorizationOut(
        authorization_id=admission.admission_id,
        request_id=admission.request_id,
        practice_id=admission.practice_id,
        status="admitted_without_hold",
        held_usd=format_usd(0),
        estimate_usd=format_usd(admission.estimate_micros),
        expires_at=admission.admitted_at + timedelta(seconds=hold_ttl_seconds),
        budget=None,
    )


def _usage(event: UsageEvent) -> UsageOut:
    return UsageOut(
        event_id=event.event_id,
        request_id=event.request_id,
        practice_id=event.practice_id,
        status=event.status,
        model=event.model,
        priced_as=event.priced_as,
        cost_usd=format_usd(event.cost_micros),
        overage_usd=format_usd(event.overage_micros),
        price_source=event.price_source,
        price_version=event.price_version,
        allocations=[
            AllocationOut(pot=part.pot, amount_usd=format_usd(part.amount_micros), grant_id=part.grant_id)
            for part in event.allocations
        ],
        budget=_client_view(event.budget),
    )


@router.post(
    "/authorizations",
    status_code=201,
    responses={200: {"description": "a replay: the first result"}, **problems(402, 404, 409, body=True)},
)
async def authorize(
    body: AuthorizeIn,
    principal: Gatekeeper,
    budget: BudgetDep,
    response: Response,
    device_id: DeviceId = None,
) -> AuthorizationOut:
    """Hold the estimated cost of a call before making it; 402 with the refusal when nothing is left.

    With `AIBUDGET_FAIL_OPEN` on, a call the database cannot decide is admitted without a hold:
    status `admitted_without_hold`, `budget` null (see the README).
    """
    practice_id = practice_scope(principal, body.practice_id)
    call: dict[str, Any] = {"request_id": body.request_id, "operation": body.operation, "model": body.model}
    estimate = body.estimate.model_dump()
    try:
        authorization = await budget_call(
            budget, lambda: budget.authorize(practice_id=practice_id, device_id=device_id, **call, **estimate)
        )
    except DatabaseUnavailable:
        if not budget.settings.fail_open or practice_id is None:  # a device alone names no practice
            raise
        admission = await budget_call(
            budget, lambda: budget.admit_without_hold(practice_id=practice_id, **call, **estimate)
        )
        if admission.replayed:
            response.status_code = 200
        else:
            observability.record_fail_open()
        return _admission(admission, budget.settings.hold_ttl_seconds)
    observability.record_authorization(authorization)
    if authorization.replayed:
        response.status_code = 200
    return _authorization(authorization)


@router.post("/authorizations/{request_id:path}/void", responses=problems(404, 409, body=True))
async def void(
    request_id: RequestId,
    principal: Gatekeeper,
    budget: BudgetDep,
    body: VoidIn | None = None,
    device_id: DeviceId = None,
) -> AuthorizationOut:
    """Release the hold of a call that was not made (idempotent)."""
    practice_id = practice_scope(principal, body.practice_id if body else None)
    authorization = await budget_call(
        budget, lambda: budget.void(practice_id=practice_id, device_id=device_id, request_id=request_id)
    )
    return _authorization(authorization)


@router.post(
    "/usage",
    status_code=201,
    responses={200: {"description": "a replay: the first result"}, **problems(404, 409, body=True)},
)
async def settle(
    body: SettleIn, principal: Gatekeeper, budget: BudgetDep, response: Response, device_id: DeviceId = None
) -> UsageOut:
    """Record a call's real usage: priced, charged to the right pot, its hold released."""
    practice_id = practice_scope(principal, body.practice_id)
    event = await budget_call(
        budget,
        lambda: budget.settle(
            practice_id=practice_id,
            device_id=device_id,
            request_id=body.request_id,
            model=body.model,
            operation=body.operation,
            status=body.status,
            error_code=body.error_code,
            meta=body.meta,
            estimated=body.estimated,
            **body.usage.model_dump(),
        ),
    )
    observability.record_usage(event)
    if event.replayed:
        response.status_code = 200
    return _usage(event)
