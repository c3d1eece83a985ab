"""Routes that set up accounts, all admin: practices, plans, subscription mirrors, devices, API keys.

PUTs replace what they name and are idempotent by nature; POSTs that create answer 201. A device id
is a secret of the desktop installation: it is accepted, hashed, and never echoed — responses name
a device by the last 8 hex digits of its hash. An API key's text is shown once, in the response that
created it, and never again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field, StrictInt

from aibudget.accounts.service import Device, Practice, Subscription
from aibudget.api.deps import Admin, BudgetDep
from aibudget.api.errors import problems
from aibudget.api.schemas import PracticeId, Strict, Text, UnixSeconds, Usd
from aibudget.auth.service import ApiKey
from aibudget.money import format_usd

router = APIRouter(prefix="/v1", tags=["accounts"])


class PracticeIn(Strict):
    name: Annotated[str, Field(max_length=200)] | None = None
    locale: Annotated[str, Field(max_length=35, examples=["de-CH"])] | None = None
    timezone: Annotated[str, Field(max_length=64, examples=["Europe/Zurich"])] | None = None
    policy: Literal["allow_last_call", "strict"] | None = None
    warning_percent: Annotated[StrictInt, Field(ge=0, le=100)] | None = None


class PracticeOut(BaseModel):
    practice_id: str
    name: str
    locale: str
    timezone: str
    policy: str
    warning_percent: int


class PlanIn(Strict):
    included_usd: Usd


class PlanOut(BaseModel):
    lookup_key: str
    included_usd: str


class SubscriptionIn(Strict):
    practice_id: PracticeId
    status: Annotated[str, Field(min_length=1, max_length=40, examples=["active"])]
    plan: Text | None = None
    customer_id: Text | None = None
    customer_email: Annotated[str, Field(min_length=1, max_length=320)] | None = None
    current_period_start: UnixSeconds | None = None
    current_period_end: UnixSeconds | None = None
    updated_at: UnixSeconds | None = Field(default=None, description="the provider's clock; default now")


class SubscriptionOut(BaseModel):
    subscription_id: str
    practice_id: str
    customer_id: str | None
    customer_email: str | None
    plan: str | None
    status: str
    current_period_start: int | None
    current_period_end: int | None
    updated_at: int


class DeviceIn(Strict):
    device_id: Text
    practice_id: PracticeId
    user_key: Text | None = None


class DeviceOut(BaseModel):
    practice_id: str
    device_suffix: str = Field(description="the last 8 hex digits of the device's keyed hash")
    user_key: str | None
    active: bool


class KeyIn(Strict):
    role: Literal["admin", "service", "practice"]
    practice_id: PracticeId | None = Field(default=None, description="required for a practice key")
    label: Text | None = None


class KeyOut(BaseModel):
    key_id: str
    role: str
    practice_id: str | None
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreatedOut(BaseModel):
    key: str = Field(description="the key itself: shown this once, stored only as a hash")
    key_id: str
    role: str
    practice_id: str | None
    label: str | None
    created_at: datetime


class KeysOut(BaseModel):
    keys: list[KeyOut]


def _practice(practice: Practice) -> PracticeOut:
    return PracticeOut(
        practice_id=practice.practice_id,
        name=practice.name,
        locale=practice.locale,
        timezone=practice.timezone,
        policy=practice.policy,
        warning_percent=practice.warning_percent,
    )


def _device(device: Device) -> DeviceOut:
    suffix = device.suffix
    return DeviceOut(
        practice_id=device.practice_id, device_suffix=suffix, user_key=device.user_key, active=device.active
    )


def _key(key: ApiKey) -> KeyOut:
    return KeyOut(
        key_id=key.key_id,
        role=key.role,
        practice_id=key.practice_id,
        label=key.label,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


@router.put("/practices/{practice_id}", responses=problems(body=True))
def put_practice(practice_id: PracticeId, body: PracticeIn, _admin: Admin, budget: BudgetDep) -> PracticeOut:
    """Create a practice (locale de-CH, timezone Europe/Zurich, policy allow_last_call, warning at
    20 %) or change the fields given; fields left out keep their value."""
    return _practice(budget.put_practice(practice_id, **body.model_dump()))


@router.put("/plans/{lookup_key}", responses=problems(body=True))
def put_plan(
    lookup_key: Annotated[str, Path(min_length=1, max_length=200)],
    body: PlanIn,
    _admin: Admin,
    budget: BudgetDep,
) -> PlanOut:
    """Set the AI budget a plan (the price's lookup key) includes per billing period, in USD."""
    plan = budget.put_plan(lookup_key, included_usd=body.included_usd)
    return PlanOut(lookup_key=plan.lookup_key, included_usd=format_usd(plan.included_micros))


@router.put("/subscriptions/{subscription_id}", responses=problems(404, body=True))
def put_subscription(
    subscription_id: Annotated[str, Path(min_length=1, max_length=200)],
    body: SubscriptionIn,
    _admin: Admin,
    budget: BudgetDep,
) -> SubscriptionOut:
    """Mirror the payment provider's subscription (times in Unix seconds). An update whose
    `updated_at` is older than the stored one changes nothing; the stored mirror is returned."""
    subscription: Subscription = budget.put_subscription(subscription_id, **body.model_dump())
    return SubscriptionOut(**{name: getattr(subscription, name) for name in SubscriptionOut.model_fields})


@router.post("/devices", status_code=201, responses=problems(404, 409, body=True))
def bind_device(body: DeviceIn, _admin: Admin, budget: BudgetDep) -> DeviceOut:
    """Bind a desktop installation (its `X-Device-Id`) to a practice; binding it again reactivates
    it. A device bound to another practice is refused (409). The device id is never echoed."""
    device = budget.bind_device(body.device_id, practice_id=body.practice_id, user_key=body.user_key)
    return _device(device)


@router.post("/devices/{device_id:path}/deactivate", responses=problems(404))
def deactivate_device(device_id: str, _admin: Admin, budget: BudgetDep) -> DeviceOut:
    """Stop a device from spending; it stays bound to its practice (binding it again reactivates it)."""
    return _device(budget.deactivate_device(device_id))


@router.post("/keys", status_code=201, responses=problems(404, body=True))
def create_key(body: KeyIn, _admin: Admin, budget: BudgetDep, response: Response) -> KeyCreatedOut:
    """Create an API key: `admin`, `service` (the vendor's backend) or `practice` (one practice).
    The key is in this response only; store it now."""
    key, text = budget.create_key(role=body.role, practice_id=body.practice_id, label=body.label)
    response.headers["Cache-Control"] = "no-store"
    return KeyCreatedOut(
        key=text,
        key_id=key.key_id,
        role=key.role,
        practice_id=key.practice_id,
        label=key.label,
        created_at=key.created_at,
    )


@router.get("/keys", responses=problems())
def list_keys(_admin: Admin, budget: BudgetDep) -> KeysOut:
    """Every API key, revoked ones included, without secrets (only their hashes are stored)."""
    return KeysOut(keys=[_key(key) for key in budget.api_keys()])


@router.post("/keys/{key_id}/revoke", responses=problems(404))
def revoke_key(key_id: Annotated[str, Path(max_length=24)], _admin: Admin, budget: BudgetDep) -> KeyOut:
    """Revoke an API key at once; revoking again keeps the first revocation time."""
    return _key(budget.revoke_key(key_id))
