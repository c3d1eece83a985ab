"""The notifications delivery log for the operator: `GET /v1/notifications` (admin only).

Each row is one notification sent (or being sent) to the vendor's backend: its signed payload, how
many attempts it took, the receiver's last answer, and when it is tried next (SPEC §6).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from aibudget.api.deps import Admin, BudgetDep
from aibudget.api.errors import problems
from aibudget.notify.outbox import MAX_LIMIT

router = APIRouter(prefix="/v1", tags=["notifications"])


class NotificationOut(BaseModel):
    notification_id: str = Field(description="also the `AIBudget-Delivery` header and the payload's `id`")
    event_type: str
    practice_id: str
    status: Literal["pending", "delivered", "failed"] = Field(
        description="failed: gave up after the configured number of attempts"
    )
    attempts: int
    last_status_code: int | None = Field(description="the receiver's last answer; null: none came")
    last_error: str | None
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime = Field(description="when a pending notification is tried next")
    delivered_at: datetime | None
    payload: dict[str, Any] = Field(description="the JSON body sent, exactly")


@router.get("/notifications", responses=problems(404))
def list_notifications(
    _admin: Admin,
    budget: BudgetDep,
    practice_id: Annotated[
        str | None,
        Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$", description="one practice's"),
    ] = None,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="newest first")] = 100,
) -> list[NotificationOut]:
    """The notifications sent to the vendor's backend, newest first: what was sent, how often it was
    tried, what the receiver last answered. Filter by practice and by status."""
    return [
        NotificationOut(**notification.as_json())
        for notification in budget.notifications(practice_id=practice_id, status=status, limit=limit)
    ]
