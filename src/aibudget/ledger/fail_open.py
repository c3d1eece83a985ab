"""Calls let through without a hold while the database was unavailable: fail-open, off by default.

With `AIBUDGET_FAIL_OPEN` on, an authorization the database cannot take is admitted instead of being
refused with 503 — availability over the budget, for a vendor who would rather let some calls past a
budget than stop its customers' work during an outage. Nothing can be held or checked then (not the
balance, not the practice's subscription), so an admission holds nothing. The call's cost is charged
when its settle arrives, as a settle without a hold; settles never fail open, they wait for the
database (the caller sends them again, idempotently).

Every admission is recorded: logged and counted when it is made, kept in memory by the `Journal`,
and written to `fail_open_admissions` (one row per practice and request id) as soon as the database
answers again. The journal holds at most `JOURNAL_LIMIT` admissions: past that a call is refused as
if fail-open were off, so nothing is ever let through unrecorded. A process that stops before the
database is back loses the admissions it kept, not their log lines.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from aibudget.store import tables
from aibudget.store.dialect import insert_ignore, run_transaction

JOURNAL_LIMIT = 100_000  # ~300 bytes each: ~30 MB at most


@dataclass(frozen=True, slots=True)
class Admission:
    """One call admitted without a hold; `admission_id` is what the caller got as authorization id."""

    practice_id: str
    request_id: str
    operation: str
    model: str
    estimate_micros: int
    admitted_at: datetime
    admission_id: str = field(default_factory=lambda: f"fo_{secrets.token_hex(12)}")
    replayed: bool = False  # True when this is the kept admission of an earlier, identical call


class JournalFull(Exception):
    """`JOURNAL_LIMIT` admissions wait for the database: no more are made."""


class Journal:
    """Admissions not yet written to the database; thread-safe, one per `Budget`."""

    def __init__(self, limit: int = JOURNAL_LIMIT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], Admission] = {}

    def admit(self, admission: Admission) -> Admission:
        """Keep `admission`; a replay of a kept practice and request id gets the first one back."""
        key = (admission.practice_id, admission.request_id)
        with self._lock:
            if key not in self._pending and len(self._pending) >= self._limit:
                raise JournalFull(f"{self._limit} admissions wait for the database")
            kept = self._pending.setdefault(key, admission)
        return admission if kept is admission else replace(kept, replayed=True)

    def write(self, engine: Engine, now: datetime) -> int:
        """Write every kept admission (one transaction) and forget them; how many were written.

        Raises `DatabaseUnavailable` while the database is away; the admissions stay kept.
        """
        with self._lock:
            batch = list(self._pending.values())
        if not batch:
            return 0
        rows = [_row(admission, now) for admission in batch]

        def work(connection: Connection) -> None:
            table = tables.fail_open_admissions
            connection.execute(insert_ignore(connection, table, ["practice_id", "request_id"]), rows)

        run_transaction(engine, work, write=True)
        with self._lock:
            for admission in batch:
                key = (admission.practice_id, admission.request_id)
                if self._pending.get(key) is admission:
                    del self._pending[key]
        return len(batch)


def _row(admission: Admission, recorded_at: datetime) -> dict[str, object]:
    row = asdict(admission) | {"recorded_at": recorded_at}
    del row["replayed"]
    return row


def admissions(connection: Connection, practice_id: str | None = None) -> list[Admission]:
    """Recorded admissions, oldest first, of one practice or all."""
    table = tables.fail_open_admissions
    query = select(
        table.c.practice_id, table.c.request_id, table.c.operation, table.c.model,
        table.c.estimate_micros, table.c.admitted_at, table.c.admission_id,
    ).order_by(table.c.admitted_at, table.c.practice_id, table.c.request_id)  # fmt: skip
    if practice_id is not None:
        query = query.where(table.c.practice_id == practice_id)
    return [Admission(*row) for row in connection.execute(query)]
