"""The background sweeper: releases expired holds, retires expired credit, and charges again the
automatic top-ups Stripe never answered, every few seconds.

The server runs one per process (several processes sweeping is safe: each expiry is a conditional
update under the practice's lock, so a hold expires exactly once). `aibudget sweep` runs one pass.
A pass sweeps each practice in a transaction of its own (`Budget.sweep`): a practice whose row
another session keeps locked fails that pass — logged, tried again at the next — and delays no other
practice's expiry.
"""

from __future__ import annotations

from collections.abc import Callable

from aibudget.background import Periodic


class Sweeper(Periodic):
    """Calls `sweep` every `interval` seconds on a daemon thread until `stop()`."""

    def __init__(self, sweep: Callable[[], int], *, interval: float) -> None:
        super().__init__(
            sweep, interval=interval, name="aibudget-sweeper", done="released %d expired hold(s)"
        )
