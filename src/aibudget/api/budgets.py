"""Routes that read budgets: the desktop's client view, the operator view, usage reports, grants.

The desktop reads `GET /v1/budget` with its practice key, or the vendor's backend reads it for a
device with a service key and `X-Device-Id`; it is localized by `Accept-Language` (de, fr, it, en),
else in the practice's locale. The operator routes take the practice from the path and need an
admin or service key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from aibudget.api.deps import BudgetDep, DeviceId, Gatekeeper, Reader, practice_scope
from aibudget.api.errors import problems
from aibudget.api.schemas import PracticeId
from aibudget.credit.service import CreditGrant
from aibudget.errors import InvalidInput
from aibudget.ledger.reports import DEFAULT_LIMIT, MAX_LIMIT, parse_bound
from aibudget.money import format_usd
from aibudget.views import report, texts

router = APIRouter(prefix="/v1", tags=["budgets"])


class GrantOut(BaseModel):
    grant_id: int
    practice_id: str
    amount_usd: str
    remaining_usd: str
    source: str
    priority: int
    reference: str
    created_at: datetime
    expires_at: datetime | None
    expired_at: datetime | None


class GrantsOut(BaseModel):
    practice_id: str
    grants: list[GrantOut]


def grant_out(grant: CreditGrant) -> GrantOut:
    """A grant as the API shows it; `remaining_usd` is what is left now."""
    return GrantOut(
        grant_id=grant.grant_id,
        practice_id=grant.practice_id,
        amount_usd=format_usd(grant.amount_micros),
        remaining_usd=format_usd(grant.remaining_micros),
        source=grant.source,
        priority=grant.priority,
        reference=grant.reference,
        created_at=grant.created_at,
        expires_at=grant.expires_at,
        expired_at=grant.expired_at,
    )


@router.get("/budget", responses=problems(404))
def client_budget(
    principal: Gatekeeper,
    budget: BudgetDep,
    response: Response,
    device_id: DeviceId = None,
    accept_language: Annotated[str | None, Header(description="e.g. fr-CH, de;q=0.8")] = None,
) -> dict[str, Any]:
    """What the desktop shows: percent available, warning, localized label and renewal date.

    With a practice key: its own practice (and `X-Device-Id`, if sent, must be one of its devices).
    With a service or admin key: the practice of the device named by `X-Device-Id`.
    """
    if principal.role != "practice" and device_id is None:
        detail = "a service key reads the budget of a device: send X-Device-Id"
        raise InvalidInput(detail, field="X-Device-Id")
    practice = budget.resolve_practice(practice_id=practice_scope(principal, None), device_id=device_id)
    locale = texts.negotiate(accept_language, practice.locale)
    response.headers["Content-Language"] = locale
    response.headers["Vary"] = "Accept-Language"
    return budget.snapshot(practice.practice_id).client_view(locale=locale).as_json()


@router.get("/practices/{practice_id}/budget", responses=problems(404))
def operator_budget(practice_id: PracticeId, _reader: Reader, budget: BudgetDep) -> dict[str, Any]:
    """The operator view: USD included, used, held, left, extra credit, overage; period, plan, policy,
    automatic top-up state. Amounts are decimal strings."""
    return budget.snapshot(practice_id).as_json()


@router.get(
    "/practices/{practice_id}/usage",
    responses={
        200: {
            "description": "the report: JSON, or CSV with a header row",
            "content": {"application/json": {}, "text/csv": {}},
        },
        **problems(404),
    },
)
def usage(
    practice_id: PracticeId,
    _reader: Reader,
    budget: BudgetDep,
    since: Annotated[
        str | None, Query(description="from (inclusive): ISO date or date-time", examples=["2026-11-01"])
    ] = None,
    until: Annotated[
        str | None, Query(description="to (exclusive): ISO date or date-time", examples=["2026-12-01"])
    ] = None,
    group_by: Annotated[
        Literal["day", "model", "operation"] | None, Query(description="totals per group; else the events")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="events only: newest first")] = DEFAULT_LIMIT,
    report_format: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
    status: Annotated[
        Literal["success", "error", "blocked", "voided", "expired"] | None,
        Query(description="only events of this status"),
    ] = None,
    model: Annotated[str | None, Query(description="only calls of this model, as sent")] = None,
    operation: Annotated[str | None, Query(description="only calls of this operation")] = None,
) -> Response:
    """The practice's usage in `[since, until)`: its ledger events, newest first, or their totals per
    day (in the practice's timezone), model or operation — calls, success/error/blocked counts, USD
    cost and overage, tokens, audio seconds. Dates are midnight in the practice's timezone. `status`,
    `model` and `operation` keep only the events equal to them."""
    usage_report = budget.usage_report(
        practice_id,
        since=None if since is None else parse_bound(since, field="since"),
        until=None if until is None else parse_bound(until, field="until"),
        group_by=group_by,
        limit=limit,
        status=status,
        model=model,
        operation=operation,
    )
    if report_format == "csv":
        name = f"usage-{practice_id}-{group_by or 'events'}.csv".replace(":", "_")
        return Response(
            report.to_csv(usage_report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return JSONResponse(report.as_json(usage_report))


@router.get("/practices/{practice_id}/credits", responses=problems(404))
def credits(practice_id: PracticeId, _reader: Reader, budget: BudgetDep) -> GrantsOut:
    """The practice's credit grants, oldest first, with what is left on each."""
    grants = budget.grants(practice_id)
    return GrantsOut(practice_id=practice_id, grants=[grant_out(grant) for grant in grants])
