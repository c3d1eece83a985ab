"""The core of `Budget`: the database it opens, one transaction per call, what it closes."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Self, TypeVar

from sqlalchemy import Connection, Engine

from aibudget.accounts.service import Rules
from aibudget.config import Settings
from aibudget.ledger.state import LedgerRules
from aibudget.money import parse_usd
from aibudget.pricing.catalog import PriceCatalog
from aibudget.store.dialect import checkpoint, is_embedded, run_transaction, shared_reads
from aibudget.store.engine import open_engine

Clock = Callable[[], datetime]
T = TypeVar("T")


def system_clock() -> datetime:
    return datetime.now(UTC)


class Core:
    """A `Budget`'s database, settings, clock, prices and ledger rules; the layers above add the rest."""

    def __init__(self, engine: Engine, settings: Settings, *, clock: Clock = system_clock) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.catalog = PriceCatalog.from_settings(settings)
        self.rules = LedgerRules(
            accounts=Rules(
                granting_statuses=settings.granting_statuses,
                default_included_micros=parse_usd(
                    settings.default_included_usd, field="default_included_usd"
                ),
            ),
            hold_ttl=timedelta(seconds=settings.hold_ttl_seconds),
            default_max_output_tokens=settings.default_max_output_tokens,
        )
        self._secret = settings.secret()

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock = system_clock,
        background_checkpoints: bool = False,
    ) -> Self:
        """Open (and migrate) the database at `url`, default the configured one.

        `background_checkpoints`: the caller calls `checkpoint` every fraction of a second on a
        thread of its own (the server does), so calls do not copy SQLite's log themselves.
        """
        settings = settings or Settings.load()
        engine = open_engine(
            url or settings.resolved_database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.pool_size,
            pool_max_overflow=settings.pool_max_overflow,
            background_checkpoints=background_checkpoints,
        )
        return cls(engine, settings, clock=clock)

    def _write(self, work: Callable[[Connection], T]) -> T:
        return run_transaction(self.engine, work, write=True)

    def _read(self, work: Callable[[Connection], T]) -> T:
        return run_transaction(self.engine, work, write=False)

    def consistent_reads(self) -> AbstractContextManager[None]:
        """`with budget.consistent_reads():` every read of this budget in the block sees one
        committed state, as of the block's first read (writes in the block are not seen).

        A `snapshot` of a practice whose period ended or whose credit expired writes first and
        answers from that write; take one before the block, so the block's state has it too."""
        return shared_reads(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def embedded_database(self) -> bool:
        """Whether the database runs inside this process (SQLite): no call waits on a network, and
        a long-running process should call `checkpoint`."""
        return is_embedded(self.engine)

    @property
    def quick_commits(self) -> bool:
        """Whether a commit is this process's own quick work, never a wait for a network or the disk:
        SQLite with `synchronous=normal`, whose commits only append to the write-ahead log (the
        server then makes its calls on the event loop, `store.waiting`)."""
        return self.embedded_database and self.settings.sqlite_synchronous == "normal"

    def checkpoint(self) -> int:
        """Copy SQLite's write-ahead log into the database file without waiting for any call; how
        many of the log's pages are in the file now (0 on PostgreSQL). See `store.dialect.checkpoint`."""
        return checkpoint(self.engine)
