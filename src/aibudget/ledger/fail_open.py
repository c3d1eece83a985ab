"""Calls let through without a hold while the database was unavailable: fail-open, off by default.

With `AIBUDGET_FAIL_OPEN` on, an authorization the database cannot take is admitted instead of being
refused with 503 — availability over the budget, for a vendor who would rather let some calls past a
budget than stop its customers' work during an outage. Nothing can be held or checked then (not the
balance, not the practice's subscription), so an admission holds nothing. The call's cost is charged
when its settle arrives, as a settle without a hold; settles never fail open, they wait for the
database (the caller sends them again, idempotently).

Every admission is recorded: logged and counted when it is made, kept by the `AdmissionJournal`,
and written to `fail_open_admissions` (one row per practice and request id) as soon as the database
answers again. The journal (`ledger.journal`) keeps each admission, before the call is admitted, in
a file under `<data_dir>/fail-open/` that outlives the process, `kill -9` included. A call whose
admission cannot be written to that file is refused, as is one past `JOURNAL_LIMIT` waiting
admissions, as if fail-open were off: nothing is ever let through unrecorded.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

from aibudget.ledger.journal import Journal
from aibudget.store import tables
from aibudget.store.dialect import insert_ignore, run_transaction

JOURNAL_LIMIT = 100_000  # ~300 bytes each: ~30 MB at most
JOURNAL_DIRECTORY = "fail-open"  # under the data directory


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


class AdmissionJournal(Journal[Admission]):
    """Admissions not yet written to the database (see `ledger.journal`); one per `Budget`."""

    def __init__(self, directory: Path, limit: int = JOURNAL_LIMIT) -> None:
        super().__init__(
            directory, name="fail-open journal", noun="admission", encode=_fields, decode=_admission,
            key=lambda admission: (admission.practice_id, admission.request_id), limit=limit,
        )  # fmt: skip

    def admit(self, admission: Admission) -> Admission:
        """Keep `admission` (on disk first); a replay of a kept practice and request id gets the first."""
        kept = self.keep(admission)
        return admission if kept is admission else replace(kept, replayed=True)

    def write(self, engine: Engine, now: datetime) -> int:
        """Write every kept admission, and those in files of journals that died (one transaction);
        how many were written.

        Raises `DatabaseUnavailable` while the database is away; the admissions stay kept.
        """

        def take(batch: list[Admission]) -> None:
            rows = [_fields(admission) | {"admitted_at": admission.admitted_at, "recorded_at": now}
                    for admission in batch]  # fmt: skip

            def work(connection: Connection) -> None:
                table = tables.fail_open_admissions
                connection.execute(insert_ignore(connection, table, ["practice_id", "request_id"]), rows)

            run_transaction(engine, work, write=True)

        return self.drain(take)


def _fields(admission: Admission) -> dict[str, Any]:
    """The admission as a journal line keeps it (the instant as ISO text)."""
    fields = asdict(admission)
    del fields["replayed"]
    return fields | {"admitted_at": admission.admitted_at.isoformat()}


def _admission(line: dict[str, Any]) -> Admission:
    return Admission(**line | {"admitted_at": datetime.fromisoformat(line["admitted_at"])})


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
