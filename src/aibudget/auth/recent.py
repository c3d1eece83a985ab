"""Keys verified lately, so the gate still knows its callers while the database is unavailable.

Only with fail-open on (`ledger.fail_open`): a key the database confirmed within `REMEMBER_SECONDS`
is taken for its principal when the database cannot be asked. A key revoked during an outage is
thus honoured until the outage ends or the memory lapses — part of what failing open accepts. Keys
are kept as their SHA-256, never in clear.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from aibudget.auth.service import Principal, secret_hash

REMEMBER_SECONDS = 900.0
MAX_KEYS = 10_000


class RecentKeys:
    """The principals of the last `MAX_KEYS` keys verified, each for `REMEMBER_SECONDS`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def remember(self, presented: str, principal: Principal) -> None:
        digest = secret_hash(presented)
        with self._lock:
            self._seen[digest] = (principal, time.monotonic())
            self._seen.move_to_end(digest)
            if len(self._seen) > MAX_KEYS:
                self._seen.popitem(last=False)

    def recall(self, presented: str | None) -> Principal | None:
        """The principal `presented` had when last verified, if that was recent enough."""
        if not presented:
            return None
        with self._lock:
            seen = self._seen.get(secret_hash(presented))
        if seen is None or time.monotonic() - seen[1] > REMEMBER_SECONDS:
            return None
        return seen[0]
