"""`Outage`: a PostgreSQL server that did not answer is not waited for again for a moment.

When the network to PostgreSQL is cut — packets dropped, nothing refused — a transaction finds out
only when its connection's timeouts run out (about 15 s with its retries, `store.engine`), and every
call after it would wait as long, with a worker thread each. So once a transaction waited at least
`SLOW_SECONDS` and then gave up because the server could not be reached, the engine's next calls
fail at once with `DatabaseUnavailable` (503 with `Retry-After`, or an admission without a hold
under fail-open) for `QUIET_SECONDS`. Then one call tries the server again while the others still
fail at once; its success lets every call through again, its failure starts another quiet spell.

A server that refuses at once (stopped, restarting) is simply asked again by the next call: asking
costs nothing then. Errors of the request, and of a server that answers (read-only, disk full, a
serialization failure), never count. SQLite, a file in the process, has no such outage.
"""

from __future__ import annotations

import threading
import time

SLOW_SECONDS = 1.0
QUIET_SECONDS = 2.0
# how long the other calls fail at once while one call tries the server again; it ends earlier
# when that call is answered or gives up (a call gives up in ~15 s)
PROBE_SECONDS = 60.0


class Outage:
    """Whether one engine's database is taken to be out of reach; thread-safe."""

    def __init__(self) -> None:
        self._until = 0.0  # time.monotonic() until which calls fail at once; 0: the server is reached
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """Whether a call may try the database now; when it may not, it should fail at once."""
        if not self._until:
            return True
        now = time.monotonic()
        with self._lock:
            if now < self._until:
                return False
            self._until = now + PROBE_SECONDS  # this call tries the server; the others wait for it
        return True

    def reached(self) -> None:
        """The database answered a call."""
        if self._until:
            self._until = 0.0

    def unreached(self, waited: float) -> None:
        """A call gave up on the database after waiting `waited` seconds for it."""
        if waited >= SLOW_SECONDS:
            self._until = time.monotonic() + QUIET_SECONDS
        else:  # refused at once: the next call may ask again
            self.reached()
