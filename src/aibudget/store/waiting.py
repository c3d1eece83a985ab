"""Calls into the `Budget` from an event loop: made on the loop when they need not wait, else on a thread.

On SQLite a write transaction is a few hundred microseconds of this process's own work, less than
handing it to a worker thread and taking the answer back costs a request. So `off_or_on_the_loop`
runs such a call on the event loop that awaits it — unless a step of it would wait: for its turn
among the writers (another thread's or process's write transaction, `store.writers`) or for an
outside service (the card charge of an automatic top-up). Each such step asks `may_wait()` first
and, where it may not, raises `WouldWait` before waiting, with what remains to be done; the call
then goes on from there on a worker thread. So the loop never waits on another writer or a
network, and the answer is the same either way. PostgreSQL, a network away, and SQLite with
`synchronous=full`, whose every commit waits for the disk, are always called from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from anyio import to_thread

T = TypeVar("T")

_ON_THE_LOOP: ContextVar[bool] = ContextVar("aibudget_on_the_loop", default=False)


class WouldWait(Exception):
    """A step would wait, and runs on an event loop: `rest` does what remains of the call (None when
    nothing of it was done yet: the whole call is made again)."""

    def __init__(self, rest: Callable[[], Any] | None = None) -> None:
        super().__init__("this step would wait: go on on a worker thread")
        self.rest = rest


def may_wait() -> bool:
    """Whether the running step may wait (for a lock, a network); False on an event loop."""
    return not _ON_THE_LOOP.get()


def then(rest: Callable[[], T]) -> T:
    """`rest()`, a step that waits for something outside; on an event loop, `WouldWait(rest)`."""
    if _ON_THE_LOOP.get():
        raise WouldWait(rest)
    return rest()


@contextmanager
def _on_the_loop() -> Iterator[None]:
    token = _ON_THE_LOOP.set(True)
    try:
        yield
    finally:
        _ON_THE_LOOP.reset(token)


async def off_or_on_the_loop(call: Callable[[], T], *, quick_commits: bool) -> T:
    """`call()` on this event loop if it need not wait and the database's commits are quick (see
    `Budget.quick_commits`); on a worker thread if not, or from where it would have waited."""
    if not quick_commits:
        return await to_thread.run_sync(call)
    try:
        with _on_the_loop():
            return call()
    except WouldWait as wait:
        rest: Callable[[], T] = wait.rest or call
    return await to_thread.run_sync(rest)
