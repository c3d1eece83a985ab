"""`WriterQueue`: SQLite's writers wait their turn in line, not in SQLite's busy loop.

SQLite lets one transaction at a time write a file. Its own wait for that lock (the busy handler)
sleeps between tries — 1, 2, 5, 10 … up to 100 ms a try — and serves nobody in order: under load a
writer that keeps losing waits on and on while later ones pass. Measured on one server process with
12 clients at saturation: p99 184 ms, max 1.7 s per request; a writer that loses for 30 s in a row
(the busy timeout) fails with 503.

So before `BEGIN IMMEDIATE`, a write transaction takes its turn here: the threads of a process wait
on one lock of the engine's, the processes on an advisory lock (`flock`) of the file
`<database>-writers` beside the database; both wake the next writer the moment the last one is
done. Same load: p99 ~31 ms, max 60-70 ms, as many calls per second (`bench/http_api.py` measures
it at saturation). A writer on an event loop does not wait in line: it raises `WouldWait` and goes
on on a worker thread (`store.waiting`).

SQLite's lock still guards the data: whatever does not pass here (the `sqlite3` shell, another
program) meets it as before — except a writer on an event loop, which does not wait for it either
(`store.dialect`) — and should the queue's file be shared by mistake (a process forked with the lock
held), the busy handler takes over — slower, never wrong.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import weakref
from types import TracebackType

from aibudget.errors import DatabaseUnavailable
from aibudget.store.waiting import WouldWait, may_wait

log = logging.getLogger(__name__)

WAIT_SECONDS = 30  # as long as SQLite's busy timeout (see `store.dialect`)
SUFFIX = "-writers"


class WriterQueue:
    """One write transaction at a time on the SQLite file `database`, across threads and processes:
    `with queue:` waits for this writer's turn (`DatabaseUnavailable` after `wait_seconds` in this
    process's line) and holds it while the block runs."""

    def __init__(self, database: str, *, unavailable: str, wait_seconds: float = WAIT_SECONDS) -> None:
        self.path = database + SUFFIX
        self._unavailable = unavailable
        self._wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._fd: int | None = None
        _QUEUES.add(self)

    def __enter__(self) -> None:
        wait = may_wait()
        if not wait and not self._lock.acquire(blocking=False):
            raise WouldWait
        if wait and not self._lock.acquire(timeout=self._wait_seconds):
            raise DatabaseUnavailable(self._unavailable)
        try:
            # without a timeout: the writer of another process ends its transaction, or its process ends
            fcntl.flock(self._open(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process writes, and this writer may not wait
            self._lock.release()
            raise WouldWait from None
        except OSError as error:  # the file cannot be made or locked (permissions, a full disk, ...)
            self._lock.release()
            log.error("the writers' queue %s cannot be used: %s", self.path, error.strerror)
            raise DatabaseUnavailable(self._unavailable) from error
        except BaseException:
            self._lock.release()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            assert self._fd is not None
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close the queue's file (opened again by the next turn)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _open(self) -> int:
        if self._fd is None:  # read-only is enough to lock it
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    def _forked(self) -> None:
        """In a forked child: a line and an open file of its own (the parent's lock stays the
        parent's: an flock belongs to the parent's open file as well)."""
        if self._fd is not None:
            os.close(self._fd)
        self._lock, self._fd = threading.Lock(), None


_QUEUES: weakref.WeakSet[WriterQueue] = weakref.WeakSet()


def _after_fork() -> None:
    for queue in list(_QUEUES):
        queue._forked()


os.register_at_fork(after_in_child=_after_fork)
