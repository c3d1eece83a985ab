"""What routes depend on, as `Annotated` aliases: the `Budget`, the caller, the role it must have.

The dependencies are `async`: most are microseconds of work, less than handing them to a worker
thread would cost on every request. The key check reads the database, and the gate's routes write
to it, through `budget_call`: on SQLite with quick commits (`synchronous=normal`, a file in this
process), on the event loop, unless a write would wait for another writer or for Stripe
(`store.waiting`); otherwise on a worker thread — a call over the network may be slow or, when the
network is cut, wait for seconds, and a commit under `synchronous=full` waits for the disk: the
event loop would stop every other request, the health checks included, meanwhile.

The proxy's routes, outside the OpenAPI document, skip dependency injection: they get the same from
`gate_caller`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request

from aibudget.auth.recent import RecentKeys
from aibudget.auth.service import ROLES, Principal, Role
from aibudget.budget import Budget
from aibudget.errors import DatabaseUnavailable, Forbidden, InvalidInput
from aibudget.store.waiting import off_or_on_the_loop

T = TypeVar("T")


async def get_budget(request: Request) -> Budget:
    budget: Budget = request.app.state.budget
    return budget


BudgetDep = Annotated[Budget, Depends(get_budget)]


async def get_principal(
    request: Request,
    budget: BudgetDep,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
) -> Principal:
    presented = None
    if authorization and authorization[:7].lower() == "bearer ":
        presented = authorization[7:].strip()
    recent: RecentKeys | None = request.app.state.recent_keys  # set with fail-open only
    return await budget_call(budget, lambda: _principal(budget, presented, recent))


async def budget_call(budget: Budget, call: Callable[[], T]) -> T:
    """`call()`, a call into `budget`, made on the event loop where it need not wait, else on a
    worker thread (see `store.waiting`)."""
    return await off_or_on_the_loop(call, quick_commits=budget.quick_commits)


def _principal(budget: Budget, presented: str | None, recent: RecentKeys | None) -> Principal:
    if recent is None:
        return budget.authenticate(presented)
    try:
        principal = budget.authenticate(presented)
    except DatabaseUnavailable:
        remembered = recent.recall(presented)
        if remembered is None:
            raise
        return remembered
    assert presented is not None, "authenticate refuses a missing key"
    recent.remember(presented, principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"this needs a key with role {' or '.join(roles)}; yours is {principal.role}")
        return principal

    return check


Admin = Annotated[Principal, Depends(require("admin"))]
Gatekeeper = Annotated[Principal, Depends(require(*ROLES))]
Reader = Annotated[Principal, Depends(require("admin", "service"))]
DEVICE_ID_HEADER = "X-Device-Id"
_DEVICE_ID = re.compile(r"[\x20-\x7e]{1,200}")  # printable ASCII
DeviceId = Annotated[
    str | None,
    Header(
        alias=DEVICE_ID_HEADER,
        description="the desktop installation making the call",
        min_length=1,
        max_length=200,
        pattern=f"^{_DEVICE_ID.pattern}$",
    ),
]


async def gate_caller(request: Request) -> tuple[Budget, Principal, str | None]:
    """What `BudgetDep`, `Gatekeeper` and `DeviceId` give a route, for a route without dependency
    injection: the `Budget`, the caller (any valid key) and its device id."""
    budget = await get_budget(request)
    principal = await get_principal(request, budget, request.headers.get("authorization"))
    device_id = request.headers.get(DEVICE_ID_HEADER)
    if device_id is not None and not _DEVICE_ID.fullmatch(device_id):
        raise InvalidInput("must be 1 to 200 printable ASCII characters", field=DEVICE_ID_HEADER)
    return budget, principal, device_id


def practice_scope(principal: Principal, practice_id: str | None) -> str | None:
    """The practice a request may act on: a practice key only ever its own (G7)."""
    if principal.role != "practice":
        return practice_id
    if practice_id is not None and practice_id != principal.practice_id:
        raise Forbidden("this key belongs to another practice", field="practice_id")
    return principal.practice_id
