"""The background sweeper: releases expired holds and retires expired credit every few seconds.

The server runs one per process (several processes sweeping is safe: each expiry is a conditional
update under the practice's lock, so a hold expires exactly once). `aibudget sweep` runs one pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)


class Sweeper:
    """Calls `sweep` every `interval` seconds on a daemon thread until `stop()`."""

    def __init__(self, sweep: Callable[[], int], *, interval: float) -> None:
        self._sweep = sweep
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aibudget-sweeper", daemon=True)
        self.passes = 0

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stopped.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                expired = self._sweep()
            except SQLAlchemyError:
                # The database is away (restarting, locked too long): the holds stay held, which is
                # the safe side, and the next pass tries again. Logged, never swallowed silently.
                log.exception("sweep failed; retrying in %s s", self._interval)
                continue
            self.passes += 1
            if expired:
                log.info("released %d expired hold(s)", expired)
