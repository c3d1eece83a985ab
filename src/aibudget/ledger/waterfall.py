"""The funding waterfall: which pot pays how much of a cost. Pure, no I/O.

A cost is taken from the period's included budget first, then from credit grants in the order
(priority, earliest expiry, oldest), and whatever no pot covers is overage: recorded, never dropped.
Every micro-USD of the cost lands in exactly one allocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Pot = Literal["included", "credit", "overage"]


@dataclass(frozen=True, slots=True)
class GrantFunds:
    """What the waterfall needs to know of a grant."""

    grant_id: int
    remaining_micros: int
    priority: int
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Allocation:
    pot: Pot
    amount_micros: int
    grant_id: int | None = None


def funding_order(grants: Sequence[GrantFunds]) -> list[GrantFunds]:
    """Grants in the order they pay: lowest priority number first, then soonest to expire, then oldest."""
    return sorted(
        grants,
        key=lambda g: (g.priority, g.expires_at is None, g.expires_at or datetime.max, g.grant_id),
    )


def allocate(
    cost_micros: int, *, included_remaining_micros: int, grants: Sequence[GrantFunds]
) -> list[Allocation]:
    """Split `cost_micros` over the pots; the amounts always add up to the cost."""
    if cost_micros < 0:
        raise ValueError(f"a cost cannot be negative: {cost_micros}")
    allocations: list[Allocation] = []
    left = cost_micros
    from_included = min(left, max(0, included_remaining_micros))
    if from_included:
        allocations.append(Allocation("included", from_included))
        left -= from_included
    for grant in funding_order(grants):
        if not left:
            break
        taken = min(left, grant.remaining_micros)
        if taken > 0:
            allocations.append(Allocation("credit", taken, grant.grant_id))
            left -= taken
    if left:
        allocations.append(Allocation("overage", left))
    return allocations
