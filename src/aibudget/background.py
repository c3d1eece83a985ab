"""`Periodic`: the server's background workers — one daemon thread calling one pass every few seconds.

The sweeper (`ledger.sweeper`), the notification delivery (`notify.delivery`), the server's SQLite
checkpoints and `return_free_memory` are such workers. A pass that fails because the database is
away (`DatabaseUnavailable`) is logged as a warning, any other database error with its traceback,
and either is tried again at the next interval (a frequent worker may pause longer after a failure);
whatever it would have done stays to do (holds held, notifications in the outbox, the log not yet
copied), which is the safe side. Any other error is a bug and ends the thread loudly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable
from typing import Self

from sqlalchemy.exc import SQLAlchemyError

from aibudget.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`; None with another C library (musl, macOS), which needs no such call."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


def return_free_memory() -> int:
    """Give the heap's free pages back to the system; 1 if there were any (with glibc), else 0.

    glibc keeps memory freed between live objects for reuse, in one heap per thread that allocated
    it: in a server that runs for weeks, with dozens of threads, resident memory creeps up with pages
    nobody uses. The server calls this every minute.
    """
    return 0 if _MALLOC_TRIM is None else int(_MALLOC_TRIM(0))


class Periodic:
    """Calls `work` every `interval` seconds on a daemon thread named `name` until `stop()`; logs
    `done % n` after a pass that did `n` > 0 things, unless `done` is None."""

    def __init__(
        self,
        work: Callable[[], int],
        *,
        interval: float,
        name: str,
        done: str | None,
        pause_after_failure: float | None = None,
    ) -> None:
        self._work = work
        self._interval = interval
        # a frequent worker waits longer after a failure, so an outage is not logged ten times a second
        self._pause = interval if pause_after_failure is None else max(interval, pause_after_failure)
        self._done = done
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.passes = 0

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stopped.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        wait = self._interval
        while not self._stopped.wait(wait):
            wait = self._pause
            try:
                count = self._work()
            except DatabaseUnavailable:
                log.warning("%s: the database is unavailable; retrying in %s s", self._thread.name, wait)
                continue
            except SQLAlchemyError:
                log.exception("%s: pass failed; retrying in %s s", self._thread.name, wait)
                continue
            wait = self._interval
            self.passes += 1
            if count and self._done is not None:
                log.info(self._done, count)
